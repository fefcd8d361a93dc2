#!/usr/bin/env bash
# Issue 20 target 0: the publish call's latency, measured from a process of its own.
#
#   loadtest/bench-publish-latency.sh          # standalone, then a cluster over nats-server -js
#   SPLIT=1 loadtest/bench-publish-latency.sh  # the cluster with the publish path on CPU 0
#                                              # (control, nats-server, the publisher) and the
#                                              # fan-out on CPU 1 (edge, origin, subscribers)
#
# 1,000 WebSocket subscribers on channel pub0 are held by `gripmesh-loadtest run` (publishing
# nothing of its own that matters: one item per second on the same channel), while
# `gripmesh-loadtest publish --rate R --batch 1 --channels 1` makes single-item calls at R
# calls/s from another process, so the tool's fan-out does not delay the publisher. Every
# publish item reaches the 1,000 subscribers (R × 1,000 deliveries/s). Results in
# $BENCH_DIR/gripmesh-publish-latency-*.json, the log in $BENCH_DIR/publish-latency.log.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
GRIPMESH=$(realpath "${GRIPMESH:-target/release/gripmesh}")
LOADTEST=$(realpath "${LOADTEST:-target/release/gripmesh-loadtest}")
RATES=${RATES:-100 1000}
SPLIT=${SPLIT:-0}
# Prefixes of the publish path's and the fan-out's commands (empty: no pinning). Set for the
# cluster only; standalone publishes and fans out in one process.
API_CPU=() FAN_CPU=()
DURATION=${DURATION:-20}
mkdir -p "$BENCH_DIR"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=loadtest/procs.sh
. loadtest/procs.sh  # (the script runs from the repository root)
procs_init gm-publat
log() { echo "$*" | tee -a "$BENCH_DIR/publish-latency.log" >&2; }

start origin "$LOADTEST" origin --listen 127.0.0.1:0
ORIGIN=$(addr origin origin)
printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes"

# measure SETUP EDGE PUBLISH SERVER_PID
measure() {
  local setup=$1 edge=$2 pub=$3 pid=$4 rate
  for rate in $RATES; do
    log "== $setup: 1,000 WebSocket subscribers, single-item publish calls at $rate/s ($(uptime))"
    "${FAN_CPU[@]}" "$LOADTEST" run --system gripmesh --scenario "publish-latency-holders-$setup-$rate" \
      --transport ws --clients 1000 --channels 1 --channel-prefix pub --rate 1 \
      --duration $((DURATION + 8)) --settle 1 --edge "$edge" --publish "http://$pub" \
      --connect-concurrency 32 --quiet > "$TMP/holders.out" 2>&1 &
    local holders=$!
    sleep 5
    "${API_CPU[@]}" "$LOADTEST" publish --system gripmesh --scenario "publish-latency-$setup-$rate" --api http \
      --batch 1 --concurrency 4 --rate "$rate" --channels 1 --channel-prefix pub \
      --duration "$DURATION" --publish "http://$pub" --server-pid "$pid" \
      --json "$BENCH_DIR/gripmesh-publish-latency-$setup-$rate.json" 2>&1 | tee -a "$BENCH_DIR/publish-latency.log" >&2
    wait "$holders" || true
    tail -3 "$TMP/holders.out" | tee -a "$BENCH_DIR/publish-latency.log" >&2
  done
}

start gm "$GRIPMESH" standalone --routes "$TMP/routes" --listen 127.0.0.1:0 \
  --publish-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --max-connections 1000000 --log-format json
measure standalone "$(addr gm edge)" "$(addr gm publish)" "$PID_gm"
kill -TERM "$PID_gm"; wait "$PID_gm" 2>/dev/null || true

if [ "$SPLIT" = 1 ]; then
  API_CPU=(taskset -c 0) FAN_CPU=(taskset -c 1)
  taskset -a -p -c 1 "$PID_origin" > /dev/null
fi
start_nats 24300
[ "$SPLIT" = 1 ] && taskset -a -p -c 0 "$PID_nats" > /dev/null
start control "${API_CPU[@]}" "$GRIPMESH" control --nats "$NATS" --routes "$TMP/routes" \
  --publish-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json
start edge "${FAN_CPU[@]}" "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" \
  --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --max-connections 1000000 --log-format json
sleep 1
measure "cluster$([ "$SPLIT" = 1 ] && echo -split)" "$(addr edge edge)" "$(addr control publish)" "$PID_control"
