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
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: nginx is not installed; install Debian's nginx package (apt-get install nginx)" \
        "or run the tests as root so that this script installs it." >&2
    exit 1
fi
echo "nginx is missing; installing Debian's package" >&2
# policy-rc.d 101: the package's service is not started (port 80 stays free).
policy=/usr/sbin/policy-rc.d
restore=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    restore="$policy"
fi
trap '[ -z "$restore" ] || rm -f "$restore"' EXIT
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y -q --no-install-recommends nginx >/tmp/llm-service-nginx-install.log 2>&1; then
    apt-get update -q >>/tmp/llm-service-nginx-install.log 2>&1 || true
    apt-get install -y -q --no-install-recommends nginx >>/tmp/llm-service-nginx-install.log 2>&1 || {
        echo "error: could not install nginx (log: /tmp/llm-service-nginx-install.log)" >&2
        exit 1
    }
fi
found || { echo "error: nginx installed but not found on PATH or in /usr/sbin" >&2; exit 1; }
