#!/usr/bin/env bash
# Set up dedupkit in ./.venv (if needed) and run the main job on the bundled example corpus:
# exact + fuzzy deduplication, then apply. Prints where the manifest and the clean corpus are.
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
.venv/bin/dedupkit exact examples/corpus -o "$OUT/exact" --id-column id -q
.venv/bin/dedupkit apply examples/corpus -m "$OUT/exact" -o "$OUT/clean"
echo "manifest:     $OUT/exact/manifest/ (summary: $OUT/exact/summary.json)"
echo "clean corpus: $OUT/clean/"
