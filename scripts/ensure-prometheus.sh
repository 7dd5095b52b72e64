#!/usr/bin/env bash
# The monitoring tests (tests/unit/test_monitoring.py) check deploy/prometheus's alert rules
# with promtool (Debian's prometheus package): install it if it is missing, or fail saying
# so. Only promtool is used; the package's own service is kept from starting.
set -euo pipefail

found() {
    command -v promtool >/dev/null 2>&1 || [ -x /usr/bin/promtool ]
}

if found; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" /tmp/llm-service-prometheus-install.log prometheus
found || { echo "error: prometheus installed but promtool not found on PATH" >&2; exit 1; }
