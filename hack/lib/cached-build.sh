# The start every cached build shares: binaries under "$bin" (inside "$out", a directory keyed by
# the build's pins). The caller sets out, bin, binaries=(...) and log() before sourcing this file
# and calling `cached_build_begin "$@"`; it builds into "$tmp" and ends with `cached_build_finish`.
#
# `--print-dir` prints "$bin" and exits; so does a complete cache (the build is skipped). Else the
# per-pins lock is taken, so a concurrent run (parallel tests, make -j) waits and then finds the
# binaries, and the caller goes on to build.

have_all() {
    local b
    for b in "${binaries[@]}"; do [[ -x "$bin/$b" ]] || return 1; done
}

cached_build_begin() {
    if [[ ${1:-} == --print-dir ]]; then
        echo "$bin"
        exit 0
    fi
    if have_all; then
        log "up to date ($bin)"
        echo "$bin"
        exit 0
    fi
    command -v go >/dev/null || { log "needs Go >= 1.24 on PATH (go.dev toolchain)"; exit 1; }
    mkdir -p "$out"
    exec 9>"$out/.lock"
    flock 9
    if have_all; then
        log "built by a concurrent run ($bin)"
        echo "$bin"
        exit 0
    fi
}

# Moves the built binaries into "$bin", prints it, and removes the binaries of earlier pins (dead
# weight, up to ~250 MB each; running processes keep their inode).
cached_build_finish() {
    local b old
    mkdir -p "$bin"
    for b in "${binaries[@]}"; do mv "$tmp/$b" "$bin/$b"; done
    log "done in $((SECONDS - t_all))s"
    for old in "$(dirname "$out")"/*/; do
        [[ ${old%/} == "$out" ]] || { rm -rf "${old%/}" && log "removed stale ${old%/}"; }
    done
    echo "$bin"
}
