#!/usr/bin/env bash
# apt-install.sh LOG PACKAGE...: install Debian packages for the tests (as root), updating
# the package lists once if the first try fails; says where the log is when it cannot.
# Packages' services are kept from starting.
set -euo pipefail
log=$1
shift
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "error: $* missing; install Debian's package (apt-get install $*)" \
        "or run the tests as root so that this script installs it." >&2
    exit 1
fi
echo "$* missing; installing Debian's package" >&2
export DEBIAN_FRONTEND=noninteractive
# policy-rc.d 101: a package's own service is not started (its port stays free: the tests
# run the binaries themselves, on ports of their own).
policy=/usr/sbin/policy-rc.d
restore=""
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod +x "$policy"
    restore="$policy"
fi
trap '[ -z "$restore" ] || rm -f "$restore"' EXIT
if ! apt-get install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
    apt-get update -q >>"$log" 2>&1 || true
    apt-get install -y -q --no-install-recommends "$@" >>"$log" 2>&1 || {
        echo "error: could not install $* (log: $log)" >&2
        exit 1
    }
fi
