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
# policy-rc.d 101: the package's service is not started (port 9090 stays free).
policy=/usr/sbin/policy-rc.d
restore=""
if [ "$(id -u)" = 0 ] && [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    restore="$policy"
fi
trap '[ -z "$restore" ] || rm -f "$restore"' EXIT
"$(dirname "$0")/apt-install.sh" /tmp/llm-service-prometheus-install.log prometheus
found || { echo "error: prometheus installed but promtool not found on PATH" >&2; exit 1; }
