#!/usr/bin/env bash
# Installs Debian's `chromium` for the headless-browser test of the HTML reports
# (tests/pipeline/test_report_browser.py). Idempotent; called by `make test`.
# Not root or no apt-get: prints how to install it and goes on (the test then skips, or fails under CI=true).
set -euo pipefail
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
  exit 0
fi
if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "chromium: installing Debian's chromium (headless report test)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
  echo "chromium: not found; the report browser test needs it: apt-get install -y chromium (as root)" >&2
fi
