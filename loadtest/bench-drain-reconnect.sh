#!/usr/bin/env bash
# The clients of a drained edge reconnecting to another (BENCHMARKS.md, "Reconnect storms"):
#
#   loadtest/bench-drain-reconnect.sh                     # 19,000 SSE clients (release build)
#   KIND=stream CLIENTS=19000 loadtest/bench-drain-reconnect.sh
#   CLIENTS=500 GRIPMESH=target/debug/gripmesh LOADTEST=target/debug/gripmesh-loadtest \
#     loadtest/bench-drain-reconnect.sh                   # checks the setup
#
# nats-server -js on a free port, `gripmesh control`, edges A and B on it, and a
# `gripmesh-loadtest origin`. `gripmesh-loadtest drain` holds CLIENTS clients (KIND: sse,
# stream or ws) on edge A, sends A SIGTERM and times every client reconnecting to B as soon as
# A closed it (target: all back within 5 s, zero failures). The edge closes held connections
# at its fixed drain rate of 10,000/s (1,000 every 100 ms; there is no flag for it), so 19,000
# are closed within about 1.9 s. Result: $BENCH_DIR/drain-reconnect-$KIND.json.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
GRIPMESH=${GRIPMESH:-target/release/gripmesh}
LOADTEST=${LOADTEST:-target/release/gripmesh-loadtest}
CLIENTS=${CLIENTS:-19000}
KIND=${KIND:-sse}
mkdir -p "$BENCH_DIR"
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=loadtest/procs.sh
. loadtest/procs.sh  # (the script runs from the repository root)
procs_init gm-drain

start origin "$LOADTEST" origin --listen 127.0.0.1:0
ORIGIN=$(addr origin origin)
printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes"

start_nats

start control "$GRIPMESH" control --nats "$NATS" --routes "$TMP/routes" --publish-listen 127.0.0.1:0 \
  --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json
limits=(--max-connections 1000000 --send-queue-messages 100000 --send-queue-bytes 100000000 --log-format json)
for e in edge-a edge-b; do
  start "$e" "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 \
    --admin-listen 127.0.0.1:0 "${limits[@]}"
done
sleep 1

echo "== gripmesh: drain-reconnect-$KIND ($CLIENTS clients on edge A, SIGTERM, reconnect to edge B) ($(uptime))" >&2
status=0
"$LOADTEST" drain --system gripmesh --scenario "drain-reconnect-$KIND" --kind "$KIND" \
  --clients "$CLIENTS" --edge "$(addr edge-a edge)" --edge-b "$(addr edge-b edge)" \
  --drain-pid "$PID_edge_a" --json "$BENCH_DIR/drain-reconnect-$KIND.json" || status=$?
# Edge A exits once drained; anything it logged about the drain is worth a look on failure.
if [ "$status" != 0 ]; then
  echo "-- edge A's last log lines:" >&2; tail -5 "$TMP/edge-a.log" >&2
  echo "-- edge B's last log lines:" >&2; tail -5 "$TMP/edge-b.log" >&2
fi
exit "$status"
