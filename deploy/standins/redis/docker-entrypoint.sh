#!/bin/bash
# As the official redis image: `redis-server [args]` runs as the redis user, reachable from
# other containers (protected mode off, since no config file binds it).
set -euo pipefail
if [ "${1:-}" = redis-server ]; then
    exec setpriv --reuid=redis --regid=redis --init-groups "$@" --protected-mode no
fi
exec "$@"
