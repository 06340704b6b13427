#!/usr/bin/env bash
# Builds kube-apiserver, kubectl and etcd from the Go module proxy (pins: hack/controlplane/go.mod).
#
# Output: .cache/controlplane/<pins-hash>/bin/{kube-apiserver,kubectl,etcd} (MODELDEPLOY_CACHE_DIR
# replaces .cache). The hash covers go.mod, go.sum and this script (its build flags), so the
# binaries are rebuilt only when those change (older builds are then removed); otherwise this
# is a no-op. Prints the bin directory on stdout, progress and timings on stderr.
#
# Usage: hack/build-controlplane.sh [--print-dir]   (--print-dir: only print the directory)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod_dir="$root/hack/controlplane"
# The machine's own Go, never a downloaded toolchain; -mod=readonly: go.mod/go.sum are the pins.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"

pins_hash=$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" "${BASH_SOURCE[0]}" "$root/hack/lib/k8s-ldflags.sh" |
    sha256sum | cut -c1-16)
out="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/controlplane/$pins_hash"
bin="$out/bin"
binaries=(kube-apiserver kubectl etcd)

log() { echo "build-controlplane: $*" >&2; }
# shellcheck source=lib/progress.sh
source "$root/hack/lib/progress.sh"

# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
cached_build_begin "$@"

cd "$mod_dir"
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
# shellcheck source=lib/k8s-ldflags.sh
source "$root/hack/lib/k8s-ldflags.sh"

tmp="$out/tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "$(go env GOVERSION): kubernetes $k8s_version, etcd $etcd_version -> $bin"
t_all=$SECONDS

t=$SECONDS
with_progress "build-controlplane: downloading modules" go mod download
log "modules downloaded in $((SECONDS - t))s"

build() { # name, ldflags, package
    local t=$SECONDS
    with_progress "build-controlplane: building $1" go build -trimpath -ldflags "$2" -o "$tmp/$1" "$3"
    log "$1 built in $((SECONDS - t))s"
}
build kube-apiserver "$k8s_ldflags" k8s.io/kubernetes/cmd/kube-apiserver
build kubectl "$k8s_ldflags" k8s.io/kubernetes/cmd/kubectl
build etcd "-s -w" go.etcd.io/etcd/server/v3

cached_build_finish
