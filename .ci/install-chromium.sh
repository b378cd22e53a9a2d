#!/usr/bin/env bash
# Install Debian's chromium for the headless report test (tests/report/test_html_browser.py).
# Idempotent and quiet: does nothing when chromium is already on PATH.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null
$SUDO apt-get install -y -qq chromium >/dev/null
command -v chromium >/dev/null
