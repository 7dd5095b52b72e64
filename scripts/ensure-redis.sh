#!/usr/bin/env bash
# The tests of the Redis-backed cache and the shared rate limits need Redis on
# 127.0.0.1:6379: start a local one if it is down, or fail saying so.
set -euo pipefail

ready() {
    (exec 3<>/dev/tcp/127.0.0.1/6379) 2>/dev/null
}

if ready; then
    exit 0
fi
if command -v redis-server >/dev/null 2>&1; then
    echo "Redis is down; starting a local one (no persistence)" >&2
    mkdir -p /tmp/llm-service-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
        --dir /tmp/llm-service-redis --logfile /tmp/llm-service-redis/redis.log
    for _ in $(seq 1 20); do
        if ready; then
            exit 0
        fi
        sleep 0.5
    done
fi
echo "error: Redis is not reachable on 127.0.0.1:6379 and could not be started." >&2
exit 1
