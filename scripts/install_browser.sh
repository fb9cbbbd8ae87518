#!/usr/bin/env bash
# Install headless Chromium for the browser tests (pytest -m browser) from the Debian
# package `chromium` (/usr/bin/chromium). Idempotent: does nothing when chromium is on PATH.
# Playwright drives this system binary (executable_path=/usr/bin/chromium); never run
# `playwright install`.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "install_browser: $(command -v chromium) already installed"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    SUDO="sudo"
fi

echo "install_browser: installing Debian package chromium"
$SUDO apt-get update
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y --no-install-recommends chromium
echo "install_browser: $(command -v chromium) installed"
