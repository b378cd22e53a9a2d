#!/usr/bin/env bash
# Check dedupkit on every Python from 3.10 to 3.13 this machine has (pyproject declares >=3.10).
# For each interpreter other than the one of ./.venv (scripts/test.sh runs the whole suite there):
# a venv .venv-pyX.Y with dedupkit's core dependencies (no extras: torch, Ray, faiss... are not
# needed for these checks) plus pytest and hypothesis, then
#   1. byte-compile src/ and tests/,
#   2. import every dedupkit module and run `dedupkit --help` and `dedupkit exact` on examples/,
#   3. the fast tests that need only the core dependencies (CORE_TESTS).
# An interpreter is found as pythonX.Y on PATH or in pyenv. Versions not found are listed; the
# script fails when a found one fails, or when FAIL_MISSING=1 and one is missing.
# PYTHONS="3.12 3.13" checks only those.
set -euo pipefail
cd "$(dirname "$0")/.."

CORE_TESTS=(tests/test_imports.py tests/test_config.py tests/test_normalize.py tests/test_minhash.py
            tests/stages/test_exact.py tests/stages/test_fuzzy.py tests/stages/test_substring.py
            tests/io/test_read.py tests/test_apply.py tests/test_spans.py tests/test_runner.py
            tests/test_decontaminate.py tests/test_pipeline.py tests/cli/test_docs.py)

main_minor=$(.venv/bin/python -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
found=() missing=() failed=()

find_python() {
  local v=$1 p
  if p=$(command -v "python$v" 2>/dev/null) && "$p" -c 1 2>/dev/null; then echo "$p"; return; fi
  if command -v pyenv >/dev/null 2>&1; then
    for p in "$(pyenv root)"/versions/"$v".*/bin/python"$v"; do
      [ -x "$p" ] && { echo "$p"; return; }
    done
  fi
}

for v in ${PYTHONS:-3.10 3.11 3.12 3.13}; do
  if [ "$v" = "$main_minor" ]; then
    echo "python $v: the ./.venv interpreter (scripts/test.sh ran the whole suite with it)"
    found+=("$v")
    continue
  fi
  py=$(find_python "$v")
  if [ -z "$py" ]; then
    echo "python $v: not found on this machine (not checked)"
    missing+=("$v")
    continue
  fi
  found+=("$v")
  env=".venv-py$v"
  echo "python $v: $py -> $env"
  if ! {
    { [ -x "$env/bin/python" ] || "$py" -m venv "$env"; } &&
    "$env/bin/python" -m pip install -q --upgrade pip >/dev/null &&
    "$env/bin/python" -m pip install -q -e . pytest hypothesis &&
    "$env/bin/python" -m compileall -q src tests >/dev/null &&
    "$env/bin/python" -c '
import importlib, pkgutil, dedupkit
for m in pkgutil.walk_packages(dedupkit.__path__, "dedupkit."):
    importlib.import_module(m.name)  # extras are imported lazily, so every module loads without them
' &&
    "$env/bin/dedupkit" --help >/dev/null &&
    "$env/bin/dedupkit" exact examples/corpus -o "$env/_exact" --id-column id --overwrite -q >/dev/null &&
    "$env/bin/python" -m pytest -q -p no:cacheprovider "${CORE_TESTS[@]}"
  }; then
    echo "python $v: FAILED" >&2
    failed+=("$v")
  fi
done

echo "pythons checked: ${found[*]:-none}; not found: ${missing[*]:-none}; failed: ${failed[*]:-none}"
[ ${#failed[@]} -eq 0 ] || exit 1
[ "${FAIL_MISSING:-0}" != "1" ] || [ ${#missing[@]} -eq 0 ] || exit 1
