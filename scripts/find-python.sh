#!/usr/bin/env bash
# Print the path of a Python the service supports (3.11 to 3.13), or fail saying so.
# With an argument (3.12), only that version. Looks on PATH, then in pyenv's versions.
set -euo pipefail

wanted="${1:-3.11 3.12 3.13}"
supported() {
    "$1" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] <= (3, 13)))' 2>/dev/null
}
for version in $wanted; do
    for candidate in "python$version" "$(pyenv root 2>/dev/null)/versions/$version"*/bin/"python$version"; do
        path="$(command -v "$candidate" 2>/dev/null || true)"
        if [ -n "$path" ] && supported "$path"; then
            echo "$path"
            exit 0
        fi
    done
done
if [ -z "${1:-}" ] && command -v python3 >/dev/null && supported python3; then
    command -v python3
    exit 0
fi
echo "error: no Python ${1:-3.11 to 3.13} found; install one, or set PYTHON=/path/to/python" >&2
exit 1
