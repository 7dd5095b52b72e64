#!/usr/bin/env bash
# docker-base-images.sh: make sure the base images that Dockerfile and docker-compose.yml
# name are in the local Docker engine. Each is pulled when a registry answers; otherwise a
# stand-in is built under the same name from Debian's packages (deploy/standins/README.md):
# a minimal bookworm from debootstrap, imported once as llm-service-standin/debian:bookworm.
# Images already present are kept. Needs a running engine (scripts/ensure-docker.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
standins=deploy/standins
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
cache=${STANDIN_CACHE:-/var/tmp/llm-service-standin}
base=llm-service-standin/debian:bookworm

# name -> stand-in directory under deploy/standins
images=(
    "python:3.11-slim-bookworm python"
    "pgvector/pgvector:pg15 postgres"
    "redis:7-alpine redis"
    "nginx:1.27-alpine nginx"
    "prom/prometheus:v2.53.0 prometheus"
)

have() { docker image inspect "$1" >/dev/null 2>&1; }

debian_base() {
    have "$base" && return
    command -v debootstrap >/dev/null || scripts/apt-install.sh /tmp/debootstrap-apt.log debootstrap
    local root="$cache/rootfs"
    rm -rf "$root"
    mkdir -p "$cache"
    echo "debootstrap: a minimal bookworm from $mirror (log: $cache/debootstrap.log)" >&2
    debootstrap --variant=minbase bookworm "$root" "$mirror" >"$cache/debootstrap.log" 2>&1 || {
        echo "error: debootstrap failed (log: $cache/debootstrap.log)" >&2
        exit 1
    }
    # As Debian's official images: services never start during a build, no recommends,
    # no package cache left in a layer.
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod +x "$root/usr/sbin/policy-rc.d"
    printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
        >"$root/etc/apt/apt.conf.d/90-standin"
    printf 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n' \
        >"$root/etc/apt/apt.conf.d/docker-clean"
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar -C "$root" -c . | docker import \
        -c 'ENV DEBIAN_FRONTEND=noninteractive' \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["bash"]' - "$base" >/dev/null
    rm -rf "$root"
}

for entry in "${images[@]}"; do
    read -r name dir <<<"$entry"
    have "$name" && continue
    if timeout 120 docker pull -q "$name" >/dev/null 2>&1; then
        echo "pulled $name" >&2
        continue
    fi
    echo "no registry for $name: building its stand-in ($standins/$dir)" >&2
    debian_base
    docker build -t "$name" "$standins/$dir" >"$cache/$dir.log" 2>&1 || {
        echo "error: the stand-in for $name did not build (log: $cache/$dir.log)" >&2
        exit 1
    }
done
