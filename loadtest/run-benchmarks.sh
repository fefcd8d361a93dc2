#!/usr/bin/env bash
# Every benchmark of BENCHMARKS.md in one command:
#
#   loadtest/run-benchmarks.sh              # release build, then ~15 min of benchmarks
#   QUICK=1 loadtest/run-benchmarks.sh      # tiny sizes, checks the setup (~2 min)
#
# 1. `cargo build --release -p gripmesh -p gripmesh-loadtest` (skip with NO_BUILD=1).
# 2. loadtest/compare-pushpin.sh: idle RSS / ramp, fan-outs, HTTP publish — gripmesh and Pushpin
#    one after the other through the same origin.
# 3. gripmesh only: gRPC streaming publish (standalone), and a cluster — nats-server on a free
#    port, `gripmesh control`, two `gripmesh edge` — for cross-edge delivery latency and the
#    publish API of a separate control process.
# 4. loadtest/bench-features.sh: usage records, filters, history (publish, live latency, edge
#    CPU, resume) and per-key limits, each on vs off (FEATURES=… to pick; "" to skip).
# 5. Prints the markdown rows for BENCHMARKS.md (also in $BENCH_DIR/table.md).
#
# 6. loadtest/bench-scale-out.sh: 6 edges + control over NATS, 1k to 100k WebSocket clients
#    ($BENCH_DIR/scale-out.md; ~4 min; SCALE_OUT=0 skips it), and
#    loadtest/bench-drain-reconnect.sh: 19,000 clients of a drained edge reconnecting to
#    another, for SSE, HTTP stream and WebSocket (~1 min; DRAIN=0 skips it), and
#    loadtest/bench-publish-latency.sh: the single-item publish call's latency from a process of
#    its own, standalone and cluster, then again with the cluster's publish path pinned to a
#    CPU of its own (SPLIT=1) (~5 min; PUBLISH_LATENCY=0 skips it).
#
# Results (JSON + HTML per run) go to $BENCH_DIR (default target/bench).
set -euo pipefail
cd "$(dirname "$0")/.."

export BENCH_DIR=${BENCH_DIR:-target/bench}
export GRIPMESH=${GRIPMESH:-target/release/gripmesh}
export LOADTEST=${LOADTEST:-target/release/gripmesh-loadtest}
export DURATION=${DURATION:-10}
export QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] && DURATION=2
mkdir -p "$BENCH_DIR"
rm -f "$BENCH_DIR"/*.json "$BENCH_DIR"/*.html

if [ "${NO_BUILD:-0}" != 1 ]; then
  echo "== cargo build --release -p gripmesh -p gripmesh-loadtest" >&2
  cargo build --release -p gripmesh -p gripmesh-loadtest
fi
export NO_BUILD=1
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

{
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/^Mem:/ {print $2}') GiB, kernel $(uname -r), $(rustc --version)"
  echo "fd limit: soft $(ulimit -Sn), hard $(ulimit -Hn)"
  echo "start: $(uptime)"
} | tee "$BENCH_DIR/machine.txt" >&2

# --- 2. paired with Pushpin -------------------------------------------------------------------
loadtest/compare-pushpin.sh > "$BENCH_DIR/compare.md"

# --- 3. gripmesh only -------------------------------------------------------------------------
# shellcheck source=loadtest/procs.sh
. loadtest/procs.sh  # (the script runs from the repository root)
procs_init gm-bench

echo "== gripmesh: publish-grpc (standalone)" >&2
"$LOADTEST" publish --system gripmesh --scenario publish-grpc --api grpc --batch 100 \
  --concurrency 2 --window 8 --duration "$DURATION" --spawn-gripmesh "$GRIPMESH" \
  --json "$BENCH_DIR/gripmesh-publish-grpc.json" || true

start origin "$LOADTEST" origin --listen 127.0.0.1:0
ORIGIN=$(addr origin origin)
printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes"

start_nats
limits=(--max-connections 1000000 --send-queue-messages 100000 --send-queue-bytes 100000000 --log-format json)
start control "$GRIPMESH" control --nats "$NATS" --routes "$TMP/routes" --publish-listen 127.0.0.1:0 \
  --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json
start edge1 "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${limits[@]}"
start edge2 "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${limits[@]}"
PUB=http://$(addr control publish); GRPC=http://$(addr control grpc)
sleep 1

if [ "$QUICK" = 1 ]; then n=200; rates=10,100; else n=1000; rates=10,100,1000; fi
echo "== gripmesh: cross-edge-nats ($n WS over 2 edges, control and nats-server)" >&2
"$LOADTEST" run --system gripmesh --scenario cross-edge-nats --transport ws --clients "$n" \
  --edge "$(addr edge1 edge)" --edge "$(addr edge2 edge)" --publish "$PUB" --grpc "$GRPC" \
  --server-pid "$PID_control" --server-pid "$PID_edge1" --server-pid "$PID_edge2" --server-pid "$PID_nats" \
  --rate "$rates" --duration "$DURATION" --json "$BENCH_DIR/gripmesh-cross-edge-nats.json" \
  --html "$BENCH_DIR/gripmesh-cross-edge-nats.html" || true

for api in http grpc; do
  echo "== gripmesh: publish-$api-nats (control process publishing into NATS)" >&2
  "$LOADTEST" publish --system gripmesh --scenario "publish-$api-nats" --api "$api" --batch 100 \
    --concurrency "$([ "$api" = http ] && echo 4 || echo 2)" --window 8 --duration "$DURATION" \
    --publish "$PUB" --grpc "$GRPC" --server-pid "$PID_control" \
    --json "$BENCH_DIR/gripmesh-publish-$api-nats.json" || true
done

# --- issue 20, round 2: reconnect storms and publish latency -------------------------------
# Storms: HTTP-stream, SSE and long-poll holds opened back to back against one origin address
# (standalone, the loadtest origin), 64 in flight, $STORM_DURATION s each; target >= 5,000
# opens/s with zero failures. Publish latency: one item per call at 100 and 1,000 calls/s to a
# channel with 1,000 WebSocket subscribers (standalone); target p99 < 2 ms.
STORM_DURATION=${STORM_DURATION:-60}
[ "$QUICK" = 1 ] && STORM_DURATION=5
printf '* %s\n' "$ORIGIN" > "$TMP/routes-storm"
start storm-gm "$GRIPMESH" standalone --routes "$TMP/routes-storm" --listen 127.0.0.1:0 \
  --publish-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
  --max-connections 1000000 --log-format json
for kind in stream sse poll; do
  echo "== gripmesh: storm-$kind ($STORM_DURATION s, 64 in flight, one origin address)" >&2
  extra=()
  [ "$kind" = poll ] && extra=(--publish "http://$(addr storm-gm publish)")
  "$LOADTEST" storm --system gripmesh --scenario "storm-$kind" --kind "$kind" \
    --edge "$(addr storm-gm edge)" --concurrency 64 --duration "$STORM_DURATION" \
    --server-pid "$PID_storm_gm" "${extra[@]}" --json "$BENCH_DIR/storm-$kind.json" || true
done
kill -TERM "$PID_storm_gm" 2>/dev/null || true

if [ "$QUICK" = 1 ]; then n=100; else n=1000; fi
echo "== gripmesh: publish-latency ($n WS subscribers, one item per call, 100 and 1000 calls/s)" >&2
"$LOADTEST" run --system gripmesh --scenario publish-latency-1item --transport ws --clients "$n" \
  --channels 1 --rate 100,1000 --max-batch 1 --duration "$DURATION" --spawn-gripmesh "$GRIPMESH" \
  --json "$BENCH_DIR/gripmesh-publish-latency-1item.json" || true

# --- 4. features on vs off ---------------------------------------------------------------------
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
PIDS=()
if [ -n "${FEATURES-usage filters history limits}" ]; then
  FEATURES=${FEATURES-usage filters history limits} loadtest/bench-features.sh || true
fi

# --- 6. scale out and drain -----------------------------------------------------------------
if [ "${SCALE_OUT:-1}" = 1 ]; then
  if [ "$QUICK" = 1 ]; then SIZES=${SIZES:-600 3000} loadtest/bench-scale-out.sh || true
  else loadtest/bench-scale-out.sh || true; fi
fi
if [ "${DRAIN:-1}" = 1 ]; then
  for kind in sse stream ws; do
    if [ "$QUICK" = 1 ]; then KIND=$kind CLIENTS=${CLIENTS:-500} loadtest/bench-drain-reconnect.sh || true
    else KIND=$kind loadtest/bench-drain-reconnect.sh || true; fi
  done
fi

if [ "${PUBLISH_LATENCY:-1}" = 1 ]; then
  for split in 0 1; do
    if [ "$QUICK" = 1 ]; then SPLIT=$split RATES=100 DURATION=3 loadtest/bench-publish-latency.sh || true
    else SPLIT=$split loadtest/bench-publish-latency.sh || true; fi
  done
fi

# --- 5. the table -----------------------------------------------------------------------------
echo "end: $(uptime)" | tee -a "$BENCH_DIR/machine.txt" >&2
files=()
for f in "$BENCH_DIR"/gripmesh-*.json "$BENCH_DIR"/pushpin-*.json; do [ -f "$f" ] && files+=("$f"); done
"$LOADTEST" table "${files[@]}" | tee "$BENCH_DIR/table.md"
echo >&2
echo "results: $BENCH_DIR/*.json, *.html; rows: $BENCH_DIR/table.md" >&2
