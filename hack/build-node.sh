#!/usr/bin/env bash
# Builds the binaries of a local Kubernetes node from the Go module proxy, at the same pins as
# the control plane (hack/controlplane/go.mod): kubelet, kube-proxy, kube-scheduler,
# kube-controller-manager, the pod sandbox process `pause` (hack/node/pause.go), and the cluster
# DNS server CoreDNS (pinned by hack/node/coredns/go.mod).
#
# Output: .cache/node/<pins-hash>/bin/ (MODELDEPLOY_CACHE_DIR replaces .cache), rebuilt only
# when the pins, pause.go or this script change. Prints the bin directory on stdout,
# progress and timings on stderr. ~7 min on 2 cores with a warm module cache.
#
# Usage: hack/build-node.sh [--print-dir]   (--print-dir: only print the directory)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod_dir="$root/hack/controlplane"
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"

pins_hash=$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" "$root/hack/node/pause.go" \
    "$root/hack/node/coredns/go.mod" "$root/hack/node/coredns/go.sum" "${BASH_SOURCE[0]}" \
    "$root/hack/lib/k8s-ldflags.sh" |
    sha256sum | cut -c1-16)
out="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/node/$pins_hash"
bin="$out/bin"
binaries=(kubelet kube-proxy kube-scheduler kube-controller-manager pause coredns)

log() { echo "build-node: $*" >&2; }
# shellcheck source=lib/progress.sh
source "$root/hack/lib/progress.sh"
# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
cached_build_begin "$@"

cd "$mod_dir"
# The same version stamps as the control plane: the kubelet reports them on its Node.
# shellcheck source=lib/k8s-ldflags.sh
source "$root/hack/lib/k8s-ldflags.sh"

tmp="$out/tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

log "$(go env GOVERSION): kubernetes $k8s_version node -> $bin"
t_all=$SECONDS
t=$SECONDS
with_progress "build-node: downloading modules" go mod download
log "modules downloaded in $((SECONDS - t))s"

for cmd in kube-scheduler kube-proxy kube-controller-manager kubelet; do
    t=$SECONDS
    with_progress "build-node: building $cmd" \
        go build -trimpath -ldflags "$k8s_ldflags" -o "$tmp/$cmd" "k8s.io/kubernetes/cmd/$cmd"
    log "$cmd built in $((SECONDS - t))s"
done
# Only the standard library: built as a file, outside the Kubernetes module.
(cd "$root/hack/node" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags "-s -w" \
    -o "$tmp/pause" pause.go)
log "pause built"
t=$SECONDS
(cd "$root/hack/node/coredns" && with_progress "build-node: building coredns" \
    go build -trimpath -ldflags "-s -w" -o "$tmp/coredns" github.com/coredns/coredns)
log "coredns $(cd "$root/hack/node/coredns" && go list -m -f '{{.Version}}' github.com/coredns/coredns) built in $((SECONDS - t))s"

cached_build_finish
