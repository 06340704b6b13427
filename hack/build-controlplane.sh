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

pins_hash=$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16)
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
k8s_version=$(go list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$(go list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
# The release tag's time: a reproducible build date.
k8s_date=$(go list -m -f '{{.Time.UTC.Format "2006-01-02T15:04:05Z"}}' k8s.io/kubernetes)
minor=${k8s_version#v1.}
minor=${minor%%.*}
# What the release build stamps (Kubernetes' hack/lib/version.sh): the servers read
# component-base's variables, kubectl's client version reads client-go's. The module zip carries
# no commit, so gitCommit keeps its placeholder.
k8s_ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    k8s_ldflags+=" -X $pkg.gitVersion=$k8s_version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    k8s_ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$k8s_date"
done

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
