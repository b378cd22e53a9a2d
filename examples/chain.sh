#!/usr/bin/env bash
# Chain the three stages and apply them, in plain shell.
#
#   bash examples/chain.sh [CORPUS] [OUT]      (defaults: examples/corpus, examples/out/chain)
#
# Every stage prints only its output folder on stdout, and `--skip -` reads the previous stage's
# folder from stdin, so each stage sees only the rows the earlier ones kept. The last stage's
# manifest carries every earlier stage's drops, so `apply` needs only that one.
# `dedupkit run CORPUS -o OUT --stages exact,fuzzy,semantic` does the same in one command and
# also writes a combined manifest with duplicate_of resolved through the chain.
#
# Exits non-zero when any stage fails (pipefail). The status is that of the last stage that
# failed: a stage after a failed one finds no folder on stdin and exits 2, so the first Error:
# line on stderr names the cause (4 = a stage would drop more than MAX_DROP_RATE).
set -euo pipefail

CORPUS=${1:-examples/corpus}
OUT=${2:-examples/out/chain}
DEDUPKIT=${DEDUPKIT:-dedupkit}     # e.g. DEDUPKIT="python -m dedupkit"
MAX_DROP_RATE=${MAX_DROP_RATE:-0.5}

mkdir -p "$OUT"
common=(--id-column id --max-drop-rate "$MAX_DROP_RATE" --overwrite --quiet)

last=$(
  $DEDUPKIT exact "$CORPUS" -o "$OUT/exact" "${common[@]}" \
    | $DEDUPKIT fuzzy "$CORPUS" -o "$OUT/fuzzy" "${common[@]}" --skip - \
    | $DEDUPKIT semantic "$CORPUS" -o "$OUT/semantic" "${common[@]}" --skip -
)

for stage in exact fuzzy semantic; do
  $DEDUPKIT stats "$OUT/$stage" >&2
done
# apply prints the clean folder on stdout, like every command
$DEDUPKIT apply "$CORPUS" --manifest "$last" -o "$OUT/clean" --overwrite
