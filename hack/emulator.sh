#!/usr/bin/env bash
# Start or stop the local AWS emulator (moto in server mode) for the quick start.
#   eval "$(hack/emulator.sh start)"   starts it (or reuses a running one) and prints the
#                                      AWS_* settings to export
#   hack/emulator.sh stop
set -euo pipefail
cd "$(dirname "$0")/.."
PORT="${EMULATOR_PORT:-4566}"
STATE=.cache/emulator
BUCKET="${EMULATOR_BUCKET:-modeldeploy-quickstart}"
mkdir -p "$STATE"

running() { [[ -f $STATE/pid ]] && kill -0 "$(cat "$STATE/pid")" 2>/dev/null; }

case "${1:-}" in
start)
    if running; then
        PORT="$(cat "$STATE/port")"
    else
        nohup .venv/bin/moto_server -H 127.0.0.1 -p "$PORT" >"$STATE/log" 2>&1 &
        echo $! >"$STATE/pid"
        echo "$PORT" >"$STATE/port"
        # Importing moto takes seconds on a busy machine: wait up to 60 s, and say so if not up.
        up=""
        for _ in $(seq 600); do
            curl -sf "http://127.0.0.1:$PORT/moto-api/data.json" >/dev/null && { up=1; break; }
            running || { echo "emulator failed to start; see $STATE/log" >&2; exit 1; }
            sleep 0.1
        done
        [[ -n $up ]] || { echo "emulator did not answer within 60 s; see $STATE/log" >&2; exit 1; }
    fi
    export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=testing \
        AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
    .venv/bin/python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$BUCKET')"
    echo "export AWS_ENDPOINT_URL=$AWS_ENDPOINT_URL AWS_ACCESS_KEY_ID=testing" \
        "AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1"
    echo "echo 'AWS emulator on $AWS_ENDPOINT_URL, bucket $BUCKET' >&2"
    ;;
stop)
    if running; then kill "$(cat "$STATE/pid")"; fi
    rm -f "$STATE/pid" "$STATE/port"
    ;;
*)
    echo "usage: $0 start|stop" >&2
    exit 2
    ;;
esac
