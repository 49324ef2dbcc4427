#!/usr/bin/env bash
# Install headless Chromium for the report's browser test (tests/test_report.py). Idempotent.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    SUDO="sudo"
fi
$SUDO apt-get update -qq && $SUDO apt-get install -y -qq chromium
