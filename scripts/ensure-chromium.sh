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
"$(dirname "$0")/apt-install.sh" /tmp/llm-service-chromium-install.log chromium fonts-dejavu-core
found || { echo "error: chromium installed but not found on PATH or in /usr/bin" >&2; exit 1; }
