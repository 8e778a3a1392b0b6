#!/usr/bin/env bash
# The browser tests need a real headless Chromium: Debian's chromium (Python Playwright drives
# it through executable_path, downloading nothing). Installed with apt-get when missing and
# we may (root, or password-less sudo); otherwise the browser tests are skipped with a reason.
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "No /usr/bin/chromium and no right to install it: the browser tests will be skipped (apt-get install chromium chromium-driver)." >&2
  exit 0
fi
echo "Installing Debian chromium + chromium-driver for the browser tests (about a minute)..."
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
