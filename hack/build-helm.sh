#!/usr/bin/env bash
# Builds the helm v3 CLI from the Go module proxy (pin: the helm.sh/helm/v3 line of
# hack/helm/go.mod). CI and developer machines cannot download release binaries, but they reach
# the module proxy, so helm is compiled here the way its own Makefile builds a release.
#
# Output: .cache/helm/<version>-<pins-hash>/helm (MODELDEPLOY_CACHE_DIR replaces .cache). The hash
# covers go.mod, go.sum and this script (its build flags), so helm is rebuilt only when those
# change (older builds are then removed); otherwise this is a no-op. Prints the binary's path on
# stdout, progress and timings on stderr.
#
# Usage: hack/build-helm.sh [--print-path]   (--print-path: only print where the binary goes)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod_dir="$root/hack/helm"
# The machine's own Go, never a downloaded toolchain; -mod=readonly: go.mod/go.sum are the pins.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"

log() { echo "build-helm: $*" >&2; }
# shellcheck source=lib/progress.sh
source "$root/hack/lib/progress.sh"

# The version is read from go.mod text (not `go list`) so that --print-path and the up-to-date
# check need neither Go nor the module cache.
helm_version=$(sed -n 's#^[[:space:]]*helm\.sh/helm/v3 \(v[0-9.]*\).*#\1#p' "$mod_dir/go.mod")
[[ -n $helm_version ]] || { log "no helm.sh/helm/v3 requirement in $mod_dir/go.mod"; exit 1; }
pins_hash=$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-12)
out="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/helm/$helm_version-$pins_hash"
bin="$out/helm"

if [[ ${1:-} == --print-path ]]; then
    echo "$bin"
    exit 0
fi

if [[ -x $bin ]]; then
    log "up to date ($bin)"
    echo "$bin"
    exit 0
fi

command -v go >/dev/null || { log "needs Go >= 1.24 on PATH"; exit 1; }

mkdir -p "$out"
# One build per pin at a time (parallel test runs): a second run waits, then finds the binary.
exec 9>"$out/.lock"
flock 9
if [[ -x $bin ]]; then
    log "built by a concurrent run ($bin)"
    echo "$bin"
    exit 0
fi

cd "$mod_dir"
# helm's Makefile stamps its version and the Kubernetes version that `helm lint` and
# `.Capabilities.KubeVersion` assume: client-go v0.X.Y means Kubernetes 1.X.
client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
k8s_minor=${client_go#v0.}
k8s_minor=${k8s_minor%%.*}
ldflags="-s -w"
ldflags+=" -X helm.sh/helm/v3/internal/version.version=$helm_version"
ldflags+=" -X helm.sh/helm/v3/internal/version.metadata="
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ldflags+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$k8s_minor"
done

log "$(go env GOVERSION): helm $helm_version (client-go $client_go) -> $bin"
t=$SECONDS
tmp="$out/helm.tmp.$$"
trap 'rm -f "$tmp"' EXIT
with_progress "build-helm: building helm" go build -trimpath -ldflags "$ldflags" -o "$tmp" helm.sh/helm/v3/cmd/helm
mv "$tmp" "$bin"
log "built in $((SECONDS - t))s"
for old in "$(dirname "$out")"/*/; do
    [[ ${old%/} == "$out" ]] || { rm -rf "${old%/}" && log "removed stale ${old%/}"; }
done
echo "$bin"
