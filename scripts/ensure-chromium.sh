#!/usr/bin/env bash
# The chat page's tests drive headless Chromium (Debian's package) with Playwright: install
# it if it is missing, or fail saying so. Playwright's own browser download is never used.
set -euo pipefail

found() {
    command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ]
}

if found; then
    exit 0
fi
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: chromium is not installed; install Debian's chromium package" \
        "(apt-get install chromium) or run the tests as root so that this script installs it." >&2
    exit 1
fi
echo "chromium is missing; installing Debian's package (a few minutes)" >&2
log=/tmp/llm-service-chromium-install.log
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    apt-get install -y -q --no-install-recommends chromium fonts-dejavu-core >>"$log" 2>&1 || {
        echo "error: could not install chromium (log: $log)" >&2
        exit 1
    }
fi
found || { echo "error: chromium installed but not found on PATH or in /usr/bin" >&2; exit 1; }
