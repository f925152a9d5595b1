#!/usr/bin/env bash
# Headless Chromium for the Prefect UI test (tests/ops/test_up_browser.py), from Debian's packages.
# Idempotent: returns at once when a Chromium is already on PATH (or $CHROMIUM names one).
# Needs root or passwordless sudo to install; otherwise it says so and leaves the test to skip.
set -euo pipefail

for candidate in "${CHROMIUM:-}" chromium chromium-browser google-chrome; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1; then
    exit 0
  fi
done

if [ "$(id -u)" -eq 0 ]; then
  SUDO=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO="sudo -n"
else
  echo "install-browser: no Chromium and no root to install it (apt-get install chromium); the browser test will skip" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-browser: no apt-get here; install Chromium and set CHROMIUM=/path/to/it" >&2
  exit 0
fi

echo "install-browser: installing chromium (Debian package) ..." >&2
export DEBIAN_FRONTEND=noninteractive
# The package lists may be missing or stale on a fresh machine: update once, then install.
$SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null 2>&1 || {
  $SUDO apt-get update -q >/dev/null
  $SUDO apt-get install -y -q --no-install-recommends chromium >/dev/null
}
command -v chromium >/dev/null
