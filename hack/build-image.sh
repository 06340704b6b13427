#!/usr/bin/env bash
# Builds the operator image from the unchanged Dockerfile with podman, without a Docker engine:
#   base   the Dockerfile's python base when a registry serves it; otherwise (this project's
#          machines reach no registry) a Debian bookworm root filesystem made by mmdebstrap from
#          Debian's packages (python3, venv, pip, CA certificates), imported into podman
#   image  `podman build` with --build-arg PYTHON_IMAGE=<that base>; `docker build .` elsewhere
#          builds the same Dockerfile on python:3.11.14-slim-bookworm
# Output: .cache/image/<key>/modeldeploy.oci.tar (an OCI archive for `podman load` and
# `ctr images import`) and the tag localhost/modeldeploy:<version> in podman's store. The key
# hashes the Dockerfile, the build context and this script, so an unchanged tree is a no-op.
# Prints the archive's path on stdout; progress, size and timings on stderr.
#
# Needs root (rootful podman) and apt for podman, mmdebstrap and runc when they are missing.
# Usage: hack/build-image.sh [--print-path]
set -euo pipefail
shopt -s inherit_errexit  # a failure inside $(...) stops the build too

root=$(cd "$(dirname "$0")/.." && pwd)
script="$root/hack/build-image.sh"
cache="${MODELDEPLOY_CACHE_DIR:-$root/.cache}/image"
suite=bookworm
base_packages=python3,python3-venv,python3-pip,python-is-python3,ca-certificates
upstream_base=$(sed -n 's/^ARG PYTHON_IMAGE=//p' "$root/Dockerfile")
version=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$root/operator/modeldeploy/__init__.py")
tag="localhost/modeldeploy:$version"

log() { echo "build-image: $*" >&2; }

context_hash() {
    # What the build reads (.dockerignore keeps only these), byte for byte.
    (cd "$root" && find Dockerfile .dockerignore pyproject.toml requirements/runtime.txt \
        operator training -type f ! -name '*.pyc' ! -path '*/__pycache__/*' \
        ! -path '*.egg-info/*' -print0 | sort -z | xargs -0 sha256sum
     sha256sum < "$script") | sha256sum | cut -c1-16
}

key=$(context_hash)
out="$cache/$key"
archive="$out/modeldeploy.oci.tar"
if [[ ${1:-} == --print-path ]]; then
    echo "$archive"
    exit 0
fi
if [[ -s $archive ]]; then
    log "up to date ($archive)"
    echo "$archive"
    exit 0
fi

[[ $(id -u) == 0 ]] || { log "needs root (rootful podman): sudo make image"; exit 1; }
missing=()
for tool in podman mmdebstrap runc; do command -v "$tool" >/dev/null || missing+=("$tool"); done
if ((${#missing[@]})); then
    log "installing ${missing[*]} from Debian (apt-get install ${missing[*]})"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >&2
fi

# podman on this kernel: runc (crun refuses its hybrid cgroups), cgroupfs, and ulimits within
# root's hard limits (root here lacks CAP_SYS_RESOURCE, so podman's defaults fail).
podman=(podman --runtime runc --cgroup-manager cgroupfs)
ulimits=(--ulimit nofile=1024:1024 --ulimit nproc=1000:1000)
mkdir -p "$out"
exec 9>"$cache/.lock"
flock 9
t_all=$SECONDS

base_image() {
    if timeout 60 "${podman[@]}" pull -q "docker.io/library/$upstream_base" >/dev/null 2>&1; then
        echo "docker.io/library/$upstream_base"
        return
    fi
    local base_key base_tar
    base_key=$(echo "$suite $base_packages" | sha256sum | cut -c1-12)
    base_tar="$cache/base-$base_key.tar"
    if "${podman[@]}" image exists "localhost/modeldeploy-base:$base_key"; then
        echo "localhost/modeldeploy-base:$base_key"  # imported by an earlier build
        return
    fi
    if [[ ! -s $base_tar ]]; then
        log "no registry serves $upstream_base: making a $suite base with mmdebstrap"
        # The output's extension picks mmdebstrap's format: keep .tar on the partial file.
        mmdebstrap --quiet --variant=minbase --include="$base_packages" "$suite" \
            "$base_tar.partial.tar" >&2
        mv "$base_tar.partial.tar" "$base_tar"
    fi
    "${podman[@]}" import -q "$base_tar" "localhost/modeldeploy-base:$base_key" >/dev/null
    echo "localhost/modeldeploy-base:$base_key"
}

base=$(base_image)
log "base $base ($((SECONDS - t_all))s)"
# pip reaches the package index through a TLS chain only the host's CA bundle trusts: lend it
# (and pip's settings) to the build read-only; neither is copied into the image.
lend=(-v /etc/ssl/certs:/etc/ssl/certs:ro)
[[ -f /etc/pip.conf ]] && lend+=(-v /etc/pip.conf:/etc/pip.conf:ro)
t_build=$SECONDS
build=("${podman[@]}" build --quiet --network host "${ulimits[@]}" "${lend[@]}"
    --build-arg "PYTHON_IMAGE=$base" -f "$root/Dockerfile")
# The builder stage under a tag of its own: the next build's cache, which the prune below keeps.
"${build[@]}" --target builder -t localhost/modeldeploy-builder:cache "$root" >/dev/null
"${build[@]}" -t "$tag" "$root" >/dev/null
log "built $tag in $((SECONDS - t_build))s"
# Earlier builds left untagged (~0.9 GB each) are dead weight.
"${podman[@]}" image prune -f >/dev/null
"${podman[@]}" save --quiet --format oci-archive -o "$archive.tmp" "$tag"
mv "$archive.tmp" "$archive"
size=$("${podman[@]}" image inspect --format '{{.Size}}' "$tag")
log "image $((size / 1000000)) MB, archive $(($(stat -c %s "$archive") / 1000000)) MB;" \
    "done in $((SECONDS - t_all))s"
for old in "$cache"/*/; do
    [[ ${old%/} == "$out" ]] || { rm -rf "${old%/}" && log "removed stale ${old%/}"; }
done
echo "$archive"
