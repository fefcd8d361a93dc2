#!/usr/bin/env bash
# Scale out on one machine (BENCHMARKS.md, "Scale out"): 6 edges and 1 control over NATS,
# from 1,000 to 100,000 WebSocket clients, all subscribed, publishing through control.
#
#   loadtest/bench-scale-out.sh                          # SIZES="1000 10000 50000 100000"
#   SIZES="600 3000" DURATION=3 GRIPMESH=target/debug/gripmesh \
#     LOADTEST=target/debug/gripmesh-loadtest loadtest/bench-scale-out.sh   # checks the setup
#
# nats-server -js on a free port, `gripmesh control`, EDGES (6) `gripmesh edge` processes and
# a `gripmesh-loadtest origin`. For each N in SIZES the edges are started afresh (so "at 0" is
# an idle edge, not one holding what the allocator kept of the previous size), then N clients
# are spread over the edges by several `gripmesh-loadtest run` shards of at most SHARD_MAX
# clients each (a process may open 20,000 files). Every shard subscribes its clients to
# CHANNELS channels of its own (`--channel-prefix`, so shards don't count each other's items)
# and publishes RATE messages/s per channel through control for DURATION s.
#
# One row per N: clients held, failed, delivered/s (sum over shards), p99 (the largest of the
# shards' p99s: an upper bound, the shards' histograms are not merged), lost (sum), the edges'
# RSS per connection (sum of the edges' VmRSS once every shard's clients are connected, minus
# the sum before they connected, divided by the clients held), and the edges' CPU per delivery
# (their CPU time while the shards published and drained, divided by the deliveries).
#
# The shards connect at the same time and each waits SETTLE s (default 5 + N/5000) after its
# own clients are connected before publishing; the RSS is sampled a second after the last
# shard is connected, and a warning says when that came after the first shard began
# publishing (raise SETTLE).
#
# Results: $BENCH_DIR/scale-out-N-sI.json per shard, the rows in $BENCH_DIR/scale-out.md.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
GRIPMESH=${GRIPMESH:-target/release/gripmesh}
LOADTEST=${LOADTEST:-target/release/gripmesh-loadtest}
SIZES=${SIZES:-1000 10000 50000 100000}
DURATION=${DURATION:-10}
RATE=${RATE:-1}
CHANNELS=${CHANNELS:-100}
EDGES=${EDGES:-6}
SHARD_MAX=${SHARD_MAX:-15000}
CONNECT_CONCURRENCY=${CONNECT_CONCURRENCY:-128}
mkdir -p "$BENCH_DIR"
command -v jq > /dev/null || { echo "bench-scale-out.sh needs jq" >&2; exit 2; }
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
# shellcheck source=loadtest/procs.sh
. loadtest/procs.sh  # (the script runs from the repository root)
procs_init gm-scale
log() { echo "$*" | tee -a "$BENCH_DIR/scale-out.log" >&2; }

# Each edge holds N/EDGES client connections; each shard SHARD_MAX. The shards bind their
# clients to 127.X.Y.Z source addresses, 500 per address, so loopback's ephemeral ports
# (ip_local_port_range, per source address) are not the limit.
read -r port_lo port_hi < /proc/sys/net/ipv4/ip_local_port_range
log "fd limit $(ulimit -n); ephemeral ports $port_lo-$port_hi ($((port_hi - port_lo + 1)) per source address)"
for n in $SIZES; do
  if [ $((n / EDGES + 1000)) -gt "$(ulimit -n)" ] || [ $((SHARD_MAX + 1000)) -gt "$(ulimit -n)" ]; then
    log "warning: $n clients over $EDGES edges ($((n / EDGES)) each) or $SHARD_MAX per shard come close to the fd limit $(ulimit -n)"
  fi
done

start origin "$LOADTEST" origin --listen 127.0.0.1:0
ORIGIN=$(addr origin origin)
printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes"

start_nats
start control "$GRIPMESH" control --nats "$NATS" --routes "$TMP/routes" --publish-listen 127.0.0.1:0 \
  --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json
PUB=http://$(addr control publish)

# Fresh edges: sets EDGE_ARGS (--edge ADDR …) and EDGE_PIDS.
start_edges() {
  local i limits=(--max-connections 1000000 --send-queue-messages 100000 --send-queue-bytes 100000000 --log-format json)
  EDGE_ARGS=(); EDGE_PIDS=()
  for i in $(seq 1 "$EDGES"); do
    start "edge$i" "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 \
      --admin-listen 127.0.0.1:0 "${limits[@]}"
    EDGE_ARGS+=(--edge "$(addr "edge$i" edge)")
    EDGE_PIDS+=("$(eval echo "\$PID_edge$i")")
  done
  sleep 1  # the edges' bus subscriptions
}
stop_edges() { local i; for i in $(seq 1 "$EDGES"); do stop "edge$i"; done; }
rss_kib() { local p t=0; for p in "$@"; do t=$((t + $(awk '/^VmRSS:/ {print $2}' "/proc/$p/status"))); done; echo "$t"; }

# Starts the shards of N clients in the background: sets SHARD_PIDS and SHARD_LOGS.
start_shards() {
  local n=$1 shards=$(( ($1 + SHARD_MAX - 1) / SHARD_MAX )) i k settle=$2
  SHARD_PIDS=(); SHARD_LOGS=()
  for i in $(seq 0 $((shards - 1))); do
    k=$(( n / shards + (i < n % shards ? 1 : 0) ))
    "$LOADTEST" run --system gripmesh --scenario "scale-out-$n-s$i" --transport ws --clients "$k" \
      --channels "$CHANNELS" --channel-prefix "so$n-s$i-" "${EDGE_ARGS[@]}" --publish "$PUB" \
      --rate "$RATE" --duration "$DURATION" --settle "$settle" \
      --connect-concurrency "$CONNECT_CONCURRENCY" --quiet \
      --json "$BENCH_DIR/scale-out-$n-s$i.json" > "$TMP/shard-$i.out" 2> "$TMP/shard-$i.log" &
    SHARD_PIDS+=($!); SHARD_LOGS+=("$TMP/shard-$i.log")
  done
}

# Waits until every shard logged its `connected …` line; prints the seconds between the first
# and the last (empty when a shard exited first).
wait_connected() {
  local first="" f n p
  while :; do
    n=0
    for f in "${SHARD_LOGS[@]}"; do grep -q '^connected ' "$f" && n=$((n + 1)); done
    [ "$n" -gt 0 ] && [ -z "$first" ] && first=$(date +%s.%N)
    [ "$n" = "${#SHARD_LOGS[@]}" ] && { awk -v a="$first" -v b="$(date +%s.%N)" 'BEGIN {printf "%.1f", b - a}'; return; }
    for p in "${SHARD_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || return 0; done
    sleep 0.1
  done
}

# row N RSS0 RSS1 CPU_S: one markdown row from the shards' JSON files.
row() {
  local n=$1
  jq -rs --argjson n "$n" --argjson rss0 "$2" --argjson rss1 "$3" --argjson cpu "$4" '
    (map(.connect.connected) | add) as $held
    | (map(.steps[0].received // 0) | add) as $recv
    | "| \($n) | \($held) | \(map(.connect.failed) | add) | \(map(.steps[0].delivered_per_s // 0) | add | round)"
      + " | \(map(.steps[0].latency.p99_ms // 0) | max) | \(map(.total_lost) | add)"
      + " | \(if $held > 0 then (($rss1 - $rss0) / $held * 100 | round) / 100 else "—" end)"
      + " | \(if $recv > 0 then ($cpu * 1e6 / $recv * 100 | round) / 100 else "—" end) |"
  ' "$BENCH_DIR"/scale-out-"$n"-s*.json
}

header="| clients | held | failed | delivered/s | p99 ms (max over shards) | lost | edge RSS KiB/conn | edge CPU µs/delivery |"
rows=("$header" "|---|---|---|---|---|---|---|---|")
for n in $SIZES; do
  rm -f "$BENCH_DIR"/scale-out-"$n"-s*.json
  settle=${SETTLE:-$((5 + n / 5000))}
  log "== scale-out: $n WebSocket clients over $EDGES edges, $(( (n + SHARD_MAX - 1) / SHARD_MAX )) shards, $RATE msg/s on $CHANNELS channels per shard, ${DURATION} s ($(uptime))"
  start_edges
  rss0=$(rss_kib "${EDGE_PIDS[@]}")
  start_shards "$n" "$settle"
  spread=$(wait_connected)
  # A second for the last subscriptions to settle, when the first shard is not publishing yet.
  if [ -n "$spread" ] && awk -v s="$spread" -v l="$settle" 'BEGIN {exit !(s + 1.5 < l)}'; then sleep 1; fi
  rss1=$(rss_kib "${EDGE_PIDS[@]}")
  cpu0=$(cpu_s "${EDGE_PIDS[@]}")
  if [ -z "$spread" ]; then
    log "warning: a shard exited before connecting: $(tail -3 "${SHARD_LOGS[@]}")"
  elif awk -v s="$spread" -v l="$settle" 'BEGIN {exit !(s >= l)}'; then
    log "warning: the shards finished connecting $spread s apart, more than SETTLE=$settle s: the RSS was sampled after publishing began"
  fi
  for p in "${SHARD_PIDS[@]}"; do wait "$p" || true; done
  cpu1=$(cpu_s "${EDGE_PIDS[@]}")
  for f in "${SHARD_LOGS[@]}"; do grep -E '^(connected|step|server)' "$f" | sed 's/^/  /' >&2 || true; done
  rows+=("$(row "$n" "$rss0" "$rss1" "$(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN {print b - a}')")")
  log "${rows[-1]}"
  stop_edges
done
printf '%s\n' "${rows[@]}" | tee "$BENCH_DIR/scale-out.md"
