#!/usr/bin/env bash
# Builds the real GitOps engines of `make gitops-e2e` from the Go module proxy:
#   source-controller, kustomize-controller   Flux (pins below; v1.10 needs modules not served here)
#   argocd                                    Argo CD's multi-call binary (repo-server and
#                                             application-controller by ARGOCD_BINARY_NAME)
# and copies what running them needs from the same module versions into share/: Flux's CRDs,
# Argo CD's CRDs, its base config (argocd-cm, argocd-rbac-cm, ...) and git-verify-wrapper.sh.
#
# Output: .cache/gitops/<pins-hash>/{bin,share} (MODELDEPLOY_CACHE_DIR replaces .cache). The hash
# covers this script, so a pin change rebuilds (older builds are then removed); otherwise this
# is a no-op. Cold: ~15-20 min and 2.4 GB peak on 2 cores (Argo CD alone is ~320 s of CPU), so
# the builds run one after the other. Prints the bin directory on stdout, progress on stderr.
#
# Usage: hack/build-gitops.sh [--print-dir]   (--print-dir: only print the directory)
set -euo pipefail

SOURCE_CONTROLLER=v1.9.0
KUSTOMIZE_CONTROLLER=v1.9.6
ARGOCD=v3.6.1
# Argo CD v3.6 needs Go 1.27; the go command fetches this approved toolchain from the module
# proxy (the machine's own Go is 1.26). Flux v1.9 builds with the machine's own.
ARGOCD_GO=go1.27.3

root=$(cd "$(dirname "$0")/.." && pwd)
export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"

pins_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)
out="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/gitops/$pins_hash"
bin="$out/bin"
binaries=(source-controller kustomize-controller argocd)

log() { echo "build-gitops: $*" >&2; }
# shellcheck source=lib/progress.sh
source "$root/hack/lib/progress.sh"

# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
cached_build_begin "$@"

tmp="$out/tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/src" "$tmp/share"
trap 'chmod -R u+w "$tmp" 2>/dev/null; rm -rf "$tmp"' EXIT

module_dir() { # module@version -> its directory in the module cache (downloaded if needed)
    GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p'
}

# A main module whose go.mod replaces a nested module by a folder the zip leaves out (Flux's
# ./api, Argo CD's ./gitops-engine): copy the module, then the served nested module into it.
unpack() { # dest, module@version, nested folder, nested module@version
    cp -r "$(module_dir "$2")" "$1"
    chmod -R u+w "$1"
    rm -rf "${1:?}/$3"
    cp -r "$(module_dir "$4")" "$1/$3"
    chmod -R u+w "$1/$3"
}

build() { # name, source dir, package, ldflags
    local t=$SECONDS
    (cd "$2" && with_progress "build-gitops: building $1" \
        go build -trimpath -ldflags "$4" -o "$tmp/$1" "$3")
    log "$1 built in $((SECONDS - t))s"
}

log "source-controller $SOURCE_CONTROLLER, kustomize-controller $KUSTOMIZE_CONTROLLER," \
    "argocd $ARGOCD ($ARGOCD_GO) -> $bin"
t_all=$SECONDS

export GOTOOLCHAIN=local
for pair in "source-controller:$SOURCE_CONTROLLER" "kustomize-controller:$KUSTOMIZE_CONTROLLER"; do
    name=${pair%%:*} version=${pair#*:}
    unpack "$tmp/src/$name" "github.com/fluxcd/$name@$version" api "github.com/fluxcd/$name/api@$version"
    build "$name" "$tmp/src/$name" . "-s -w"
    mkdir -p "$tmp/share/flux-crds"
    cp "$tmp/src/$name"/config/crd/bases/*.yaml "$tmp/share/flux-crds/"
done

export GOTOOLCHAIN=$ARGOCD_GO
argo="$tmp/src/argo-cd"
unpack "$argo" "github.com/argoproj/argo-cd/v3@$ARGOCD" gitops-engine \
    "github.com/argoproj/argo-cd/gitops-engine/v3@$ARGOCD"
build argocd "$argo" ./cmd "-s -w -X github.com/argoproj/argo-cd/v3/common.version=${ARGOCD#v}"
mkdir -p "$tmp/share/argocd"
cp -r "$argo/manifests/crds" "$argo/manifests/base/config" "$tmp/share/argocd/"
cp "$argo/hack/git-verify-wrapper.sh" "$tmp/share/argocd/"

rm -rf "$out/share"
mv "$tmp/share" "$out/share"
cached_build_finish
