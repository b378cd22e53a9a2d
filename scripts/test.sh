#!/usr/bin/env bash
# Set up everything the test suite needs on a fresh machine, then run it.
# - ./.venv with dedupkit and its dev extras; torch 2.13.0 is installed first, explicitly, so that
#   sentence-transformers does not pull a multi-GB CUDA build (on this project's machines that
#   version is a CPU build; elsewhere pip picks what your platform offers).
# - Debian packages for the service tests: redis-server and chromium (when running as root), and
#   Azurite from npm when npm is there.
# Runs every test, the slow ones too (--run-slow; a plain `pytest` skips them). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  need=()
  command -v redis-server >/dev/null || need+=(redis-server)
  command -v chromium >/dev/null || need+=(chromium)
  if [ ${#need[@]} -gt 0 ]; then
    echo "installing ${need[*]} ..." >&2
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
  fi
fi
# Azurite (Azure Blob emulator, from npm) for the az:// tests; they skip with a reason without it.
if ! command -v azurite-blob >/dev/null && command -v npm >/dev/null; then
  echo "installing azurite (npm) ..." >&2
  npm install -g --silent azurite >/dev/null 2>&1 || echo "warning: npm install -g azurite failed; the az:// tests will skip" >&2
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -c "import torch" 2>/dev/null || .venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
.venv/bin/python -c "import dedupkit._speedups" 2>/dev/null \
  || echo "warning: the optional C speed-ups did not build (pip install -e . -v shows why); using numpy" >&2
exec .venv/bin/python -m pytest -q --run-slow "$@"
