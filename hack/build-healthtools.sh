#!/usr/bin/env bash
# Builds the GitOps health-check helpers from the Go module proxy (pins: hack/healthtools/go.mod):
#   luahealth  Argo CD's Lua health-script setup on gopher-lua (the fixtures of manifests/argocd/)
#   kstatus    sigs.k8s.io/cli-utils kstatus, what Flux's `wait: true` computes for an object
#
# Output: .cache/healthtools/<pins-hash>/bin/{luahealth,kstatus} (MODELDEPLOY_CACHE_DIR replaces
# .cache). The hash covers go.mod, go.sum, the helpers' sources and this script (its build
# flags), so they are rebuilt only when those change (older builds are then removed); otherwise
# this is a no-op. Prints the bin directory on stdout, progress and timings on stderr.
#
# Usage: hack/build-healthtools.sh [--print-dir]   (--print-dir: only print the directory)
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
mod_dir="$root/hack/healthtools"
# The machine's own Go, never a downloaded toolchain; -mod=readonly: go.mod/go.sum are the pins.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-buildvcs=false -mod=readonly"

pins_hash=$(cat "$mod_dir/go.mod" "$mod_dir/go.sum" "$mod_dir"/*/main.go "${BASH_SOURCE[0]}" |
    sha256sum | cut -c1-16)
out="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/healthtools/$pins_hash"
bin="$out/bin"
binaries=(luahealth kstatus)

log() { echo "build-healthtools: $*" >&2; }
# shellcheck source=lib/progress.sh
source "$root/hack/lib/progress.sh"

# shellcheck source=lib/cached-build.sh
source "$root/hack/lib/cached-build.sh"
cached_build_begin "$@"

tmp="$out/tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp"
trap 'rm -rf "$tmp"' EXIT

cd "$mod_dir"
log "$(go env GOVERSION): gopher-lua $(go list -m -f '{{.Version}}' github.com/yuin/gopher-lua)," \
    "cli-utils $(go list -m -f '{{.Version}}' sigs.k8s.io/cli-utils) -> $bin"
t_all=$SECONDS
with_progress "build-healthtools: downloading modules" go mod download
for b in "${binaries[@]}"; do
    t=$SECONDS
    with_progress "build-healthtools: building $b" go build -trimpath -ldflags "-s -w" -o "$tmp/$b" "./$b"
    log "$b built in $((SECONDS - t))s"
done

cached_build_finish
