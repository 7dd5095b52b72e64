#!/usr/bin/env bash
# The scale-out tests put nginx (Debian's package) in front of two gateway replicas:
# install it if it is missing, or fail saying so. Only the binary is used; the package's
# own service is kept from starting (the tests run their own nginx on a free port).
set -euo pipefail

found() {
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]
}

if found; then
    exit 0
fi
"$(dirname "$0")/apt-install.sh" /tmp/llm-service-nginx-install.log nginx
found || { echo "error: nginx installed but not found on PATH or in /usr/sbin" >&2; exit 1; }
