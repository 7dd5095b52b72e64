#!/usr/bin/env bash
# Make sure the PostgreSQL the tests use is up: start the local cluster if it is down,
# or fail saying so. Tests never skip PostgreSQL silently.
set -euo pipefail

host="${PGHOST:-127.0.0.1}"
port="${PGPORT:-5432}"

ready() {
    if command -v pg_isready >/dev/null 2>&1; then
        pg_isready -q -h "$host" -p "$port"
    else
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
    fi
}

if ready; then
    exit 0
fi
if [ -n "${TEST_POSTGRES_URL:-}" ]; then
    echo "TEST_POSTGRES_URL is set; not starting a local cluster" >&2
    exit 0
fi
if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    version="$(ls /etc/postgresql | sort -V | tail -n 1)"
    echo "PostgreSQL is down; starting cluster $version/main" >&2
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 30); do
        if ready; then
            exit 0
        fi
        sleep 1
    done
fi
echo "error: PostgreSQL is not reachable on $host:$port and could not be started." >&2
echo "Start it, or point TEST_POSTGRES_URL at a server (user with CREATEDB)." >&2
exit 1
