#!/usr/bin/env bash
# Set up dedupkit in ./.venv (if needed) and run the main job on the bundled example corpus:
# `dedupkit run` with configs/default.toml (exact, then fuzzy), then `apply`.
# Prints where the manifest and the clean corpus are.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e . >/dev/null
OUT=examples/out
rm -rf "$OUT"
.venv/bin/dedupkit run examples/corpus -o "$OUT/run" -c configs/default.toml --id-column id -q >/dev/null
.venv/bin/dedupkit stats "$OUT/run"
.venv/bin/dedupkit apply examples/corpus -m "$OUT/run" -o "$OUT/clean" >/dev/null
echo "manifest:     $OUT/run/manifest/ (summary: $OUT/run/summary.json; per stage: $OUT/run/NN-stage/)"
echo "clean corpus: $OUT/clean/"
