#!/usr/bin/env bash
# Install Debian's Chromium and its WebDriver (one package version, so they match) for the
# report's browser test (tests/results/test_report_browser.py). A no-op when both are on PATH.
# Needs root (apt).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then echo "chromium: already installed ($(chromium --version 2>/dev/null))"; exit 0; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium chromium-driver fonts-dejavu-core
echo "chromium: installed ($(chromium --version 2>/dev/null))"
