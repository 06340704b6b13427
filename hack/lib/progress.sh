# Sourced by the build scripts. `with_progress LABEL CMD...` runs CMD; when stderr is a terminal
# it redraws "LABEL 42s" in place every second until CMD ends (a cold Go build is minutes of
# silence otherwise); elsewhere (CI logs, pipes) it prints nothing of its own.
with_progress() {
    local label=$1
    shift
    if [[ ! -t 2 ]]; then
        "$@"
        return
    fi
    local start=$SECONDS pid status=0
    "$@" &
    pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        printf '\r\033[K%s %ds' "$label" $((SECONDS - start)) >&2
        sleep 1
    done
    printf '\r\033[K' >&2
    wait "$pid" || status=$?
    return "$status"
}
