#!/usr/bin/env bash
# CI gate: fail when a new data drop is mostly copies of the corpus we already hold.
#
#   bash examples/ci/dedup-gate.sh CORPUS DROP [INDEX] [OUT]
#
# Builds the index of CORPUS once (reuse it between jobs with a cache, or share one on Redis with
# INDEX=redis://host:6379/0), then deduplicates DROP against it. Exit codes of `dedupkit check`:
# 0 the drop's duplicate rate is at most MAX_DUP_RATE, 3 it is above (the job fails; the manifest
# in OUT names every duplicate and the indexed document it matched), 1 a failure such as a missing
# or damaged index.
set -euo pipefail

CORPUS=$1
DROP=$2
INDEX=${3:-.dedupkit/index}
OUT=${4:-out/dedup-gate}
DEDUPKIT=${DEDUPKIT:-dedupkit}            # e.g. DEDUPKIT="python -m dedupkit"
MAX_DUP_RATE=${MAX_DUP_RATE:-0.05}        # a drop with more than 5% duplicates is rejected
INDEX_STAGES=${INDEX_STAGES:-exact,fuzzy} # keys the index keeps: exact hashes and MinHash bands
ID_COLUMN=${ID_COLUMN:-id}

if ! $DEDUPKIT index info "$INDEX" >/dev/null 2>&1; then
  echo "building the index of $CORPUS at $INDEX" >&2
  $DEDUPKIT index create "$INDEX" --from "$CORPUS" --stages "$INDEX_STAGES" --id-column "$ID_COLUMN" \
    --overwrite --quiet >/dev/null
fi

status=0
$DEDUPKIT check "$DROP" --against "$INDEX" -o "$OUT" --max-dup-rate "$MAX_DUP_RATE" \
  --id-column "$ID_COLUMN" --overwrite --quiet >/dev/null || status=$?
if [ -f "$OUT/summary.json" ]; then
  $DEDUPKIT stats "$OUT" >&2
fi
if [ "$status" = 3 ]; then
  echo "dedup gate: $DROP has more than $MAX_DUP_RATE duplicates of $CORPUS or of itself; see $OUT/manifest" >&2
fi
exit "$status"
