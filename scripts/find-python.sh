#!/usr/bin/env bash
# Print the path of a Python the service supports (3.11 to 3.13), or fail saying so.
# With an argument (3.12), only that version. Looks on PATH, in pyenv's versions, then in
# /usr/bin. A Python whose sqlite3 can load extensions comes first: the embedded database's
# memory search then ranks with sqlite-vec (other builds fall back to a scan).
set -euo pipefail

wanted="${1:-3.11 3.12 3.13}"
supported() {
    "$1" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null
}
loads_extensions() {
    "$1" -c 'import sqlite3, sys; sys.exit(not hasattr(sqlite3.Connection, "enable_load_extension"))' 2>/dev/null
}
candidates=()
for version in $wanted; do
    for candidate in "python$version" "$(pyenv root 2>/dev/null)/versions/$version"*/bin/"python$version" "/usr/bin/python$version"; do
        path="$(command -v "$candidate" 2>/dev/null || true)"
        if [ -n "$path" ] && supported "$path"; then
            candidates+=("$path")
        fi
    done
done
for path in "${candidates[@]}"; do
    if loads_extensions "$path"; then
        echo "$path"
        exit 0
    fi
done
if [ "${#candidates[@]}" -gt 0 ]; then
    echo "${candidates[0]}"
    exit 0
fi
if [ -z "${1:-}" ] && command -v python3 >/dev/null && supported python3; then
    command -v python3
    exit 0
fi
echo "error: no Python ${1:-3.11 to 3.13} found; install one, or set PYTHON=/path/to/python" >&2
exit 1
