#!/usr/bin/env bash
# The feature rows of BENCHMARKS.md: each feature on vs off under the same load, back to back
# (gripmesh only; run by loadtest/run-benchmarks.sh, or alone):
#
#   loadtest/bench-features.sh                          # every group (~20 min)
#   FEATURES="usage filters" loadtest/bench-features.sh
#   PAIRS=2 loadtest/bench-features.sh                  # each on/off pair twice (off,on then on,off)
#   FEATURES=history HISTORY_PARTS=live LIVE_RATES=10 DURATION=30 PAIRS=3 loadtest/bench-features.sh
#                                                       # one part of the history group, one rate
#   QUICK=1 loadtest/bench-features.sh                  # tiny sizes, checks the setup
#
# Groups:
#   usage   (issue 18) 1,000 WebSocket subscribers with 1,000 keys on one channel: a route
#           with `authz` (every connection metered, records to a webhook every second) vs the
#           same keyed clients on a route without it.
#   filters (issue 21) 1,000 WebSocket subscribers, every subscription with `skip-self` and a
#           user, items with a `sender` nobody is (nothing skipped) vs no filter; plus a run
#           where the sender is half the subscribers' user (half skipped).
#   history (issue 16) a cluster (nats-server -js -sd, `gripmesh control --history 'h*=…'`,
#           two edges): gRPC publishing into history vs not; live delivery latency and edge CPU
#           for a history channel vs a plain one (1,000 WS subscribers over the 2 edges, same
#           processes); resume of 1,000 missed items (SSE and WebSocket, one at a time and 20
#           in flight); then standalone with in-memory history for reference.
#   limits  (issue 17) as `usage`, with `--key-max-connections` and `--key-message-quota` set
#           too high to trigger vs without them; and connection open latency with a warm
#           authorization cache.
#
# Results: $BENCH_DIR/gripmesh-<scenario>.json (+ .html), the markdown rows at the end and in
# $BENCH_DIR/features.md. Each run goes through `flock $BENCH_LOCK` (default /tmp/bench.lock)
# so it never overlaps another benchmark; `uptime` is logged before and after each run.
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
GRIPMESH=${GRIPMESH:-target/release/gripmesh}
LOADTEST=${LOADTEST:-target/release/gripmesh-loadtest}
DURATION=${DURATION:-10}
QUICK=${QUICK:-0}
PAIRS=${PAIRS:-1}
FEATURES=${FEATURES:-usage filters history limits}
BENCH_LOCK=${BENCH_LOCK:-/tmp/bench.lock}
[ "$QUICK" = 1 ] && DURATION=2
mkdir -p "$BENCH_DIR"
GRIPMESH=$(realpath "$GRIPMESH"); LOADTEST=$(realpath "$LOADTEST")

if [ "${NO_BUILD:-0}" != 1 ] && { [ ! -x "$GRIPMESH" ] || [ ! -x "$LOADTEST" ]; }; then
  cargo build --release -p gripmesh -p gripmesh-loadtest
fi
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

# shellcheck source=loadtest/procs.sh
. loadtest/procs.sh  # (the script runs from the repository root)
procs_init gm-features

log() { echo "$*" | tee -a "$BENCH_DIR/features.log" >&2; }
# lt ARGS… : one loadtest invocation under the benchmark lock, with uptime around it.
lt() {
  log "\$ gripmesh-loadtest $*"
  log "   before: $(uptime)"
  flock "$BENCH_LOCK" "$LOADTEST" "$@" 2>&1 | tee -a "$BENCH_DIR/features.log" >&2 || true
  log "   after:  $(uptime)"
}
start origin "$LOADTEST" origin --listen 127.0.0.1:0
ORIGIN=$(addr origin origin)
printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes"
printf '*,authz,proto=ws %s,over_http\n*,authz %s\n' "$ORIGIN" "$ORIGIN" > "$TMP/routes-authz"

if [ "$QUICK" = 1 ]; then N=100; RATES=100,1000; else N=1000; RATES=100,1000,1500,2000; fi
fanout=(run --system gripmesh --transport ws --clients "$N" --channels 1 --rate "$RATES"
        --duration "$DURATION" --size 100 --tick-ms 50 --connect-concurrency 32
        --spawn-gripmesh "$GRIPMESH" --origin "$ORIGIN")
out() { echo "--json $BENCH_DIR/gripmesh-$1.json --html $BENCH_DIR/gripmesh-$1.html"; }
# pair OFF_SCENARIO ON_SCENARIO "OFF flags" "ON flags": PAIRS times, alternating the order.
pair() {
  local off=$1 on=$2 offf=$3 onf=$4 i sfx
  for i in $(seq 1 "$PAIRS"); do
    sfx=$([ "$i" = 1 ] && echo "" || echo "-r$i")
    if [ $(( i % 2 )) = 1 ]; then
      # shellcheck disable=SC2086
      lt "${fanout[@]}" --scenario "$off$sfx" $offf $(out "$off$sfx")
      # shellcheck disable=SC2086
      lt "${fanout[@]}" --scenario "$on$sfx" $onf $(out "$on$sfx")
    else
      # shellcheck disable=SC2086
      lt "${fanout[@]}" --scenario "$on$sfx" $onf $(out "$on$sfx")
      # shellcheck disable=SC2086
      lt "${fanout[@]}" --scenario "$off$sfx" $offf $(out "$off$sfx")
    fi
  done
}

# part NAME: whether the history group runs NAME (HISTORY_PARTS, default all of
# "publish live resume standalone").
part() { [[ " ${HISTORY_PARTS:-publish live resume standalone} " == *" $1 "* ]]; }

AUTH="--authz-route --gripmesh-arg=--authz-gateway=http://$ORIGIN/auth"
USAGE="--gripmesh-arg=--usage-interval=1s --gripmesh-arg=--usage-webhook=http://$ORIGIN/usage"
KEYS="--keys $N"

for f in $FEATURES; do
  case $f in
  usage)
    log "== usage on vs off (issue 18)"
    pair ws-fanout-1k-usage-off ws-fanout-1k-usage-on "$KEYS" "$KEYS $AUTH $USAGE"
    ;;
  filters)
    log "== skip-self on every subscription vs none (issue 21)"
    pair ws-fanout-1k-filter-none ws-fanout-1k-skip-self \
      "--users $N --sender publisher" "--users $N --sender publisher --filter skip-self"
    # Half the subscribers are the sender's user: the edge skips them.
    # shellcheck disable=SC2046
    lt "${fanout[@]}" --scenario ws-fanout-1k-skip-self-half --users 2 --sender u-0 \
      --filter skip-self $(out ws-fanout-1k-skip-self-half)
    ;;
  limits)
    log "== limits on vs off (issue 17)"
    LIMITS="--gripmesh-arg=--key-max-connections=1000000 --gripmesh-arg=--key-message-quota=4000000000/1d"
    pair ws-fanout-1k-limits-off ws-fanout-1k-limits-on "$KEYS $AUTH $USAGE" "$KEYS $AUTH $USAGE $LIMITS"
    # Connection opens with a warm authorization cache: a standalone gripmesh run by this
    # script, one pass of $N keyed clients to fill the cache, then the measured pass.
    for mode in off on; do
      extra=()
      [ "$mode" = on ] && extra=(--key-max-connections 1000000 --key-message-quota 4000000000/1d)
      start gm "$GRIPMESH" standalone --routes "$TMP/routes-authz" --listen 127.0.0.1:0 \
        --publish-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
        --log-format json --max-connections 1000000 --authz-gateway "http://$ORIGIN/auth" \
        --usage-interval 1s --usage-webhook "http://$ORIGIN/usage" "${extra[@]}"
      for pass in warmup measured; do
        # shellcheck disable=SC2046
        lt run --system gripmesh --scenario "ws-open-limits-$mode-$pass" --transport ws \
          --clients "$N" --keys "$N" --connect-concurrency 8 --settle 0.5 \
          --edge "$(addr gm edge)" --publish "http://$(addr gm publish)" --server-pid "$PID_gm" \
          $(out "ws-open-limits-$mode-$pass")
      done
      stop gm
    done
    ;;
  history)
    log "== history (issue 16): cluster over nats-server -js"
    start_nats
    # Channels h* keep history (1,000 items / 5 min); the others do not: one set of
    # processes serves both sides of each pair.
    HIST='h*=2000/5m'
    elimits=(--max-connections 1000000 --send-queue-messages 100000 --send-queue-bytes 100000000 --log-format json)
    start control "$GRIPMESH" control --nats "$NATS" --routes "$TMP/routes" --history "$HIST" \
      --publish-listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --log-format json
    start edge1 "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${elimits[@]}"
    start edge2 "$GRIPMESH" edge --nats "$NATS" --routes "$TMP/routes" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 "${elimits[@]}"
    PUB=http://$(addr control publish); GRPC=http://$(addr control grpc)
    E1=$(addr edge1 edge); E2=$(addr edge2 edge)
    sleep 1
    # (a) publishing: gRPC stream, batches of 100 items with ids.
    for i in $(part publish && seq 1 "$PAIRS"); do
      for kind in plain history; do
        prefix=$([ "$kind" = history ] && echo hpub || echo pub)
        lt publish --system gripmesh --scenario "publish-grpc-nats-$kind" --api grpc --batch 100 \
          --concurrency 2 --window 8 --duration "$DURATION" --ids --channel-prefix "$prefix" \
          --publish "$PUB" --grpc "$GRPC" --server-pid "$PID_control" --server-pid "$PID_nats" \
          --json "$BENCH_DIR/gripmesh-publish-grpc-nats-$kind$([ "$i" = 1 ] || echo "-r$i").json"
      done
    done
    # (b) + (d) live latency and edge CPU: the edges are the measured servers; control's and
    # nats-server's CPU is logged around each run.
    rates=${LIVE_RATES:-$([ "$QUICK" = 1 ] && echo 10 || echo 10,100,1000)}
    for i in $(part live && seq 1 "$PAIRS"); do
      # Alternating order (plain first, then history first), as in the other pairs.
      for kind in $([ $(( i % 2 )) = 1 ] && echo plain history || echo history plain); do
        prefix=$([ "$kind" = history ] && echo hlt || echo lt)
        sc="cross-edge-nats-$kind$([ "$i" = 1 ] || echo "-r$i")"
        c0=$(cpu_s "$PID_control"); n0=$(cpu_s "$PID_nats")
        # shellcheck disable=SC2046
        lt run --system gripmesh --scenario "$sc" --transport ws --clients "$N" \
          --channel-prefix "$prefix" --ids --edge "$E1" --edge "$E2" --publish "$PUB" --grpc "$GRPC" \
          --server-pid "$PID_edge1" --server-pid "$PID_edge2" --rate "$rates" --duration "$DURATION" \
          --connect-concurrency 32 $(out "$sc")
        log "   $sc: control CPU $(awk -v a="$c0" -v b="$(cpu_s "$PID_control")" 'BEGIN {print b - a}') s, nats-server CPU $(awk -v a="$n0" -v b="$(cpu_s "$PID_nats")" 'BEGIN {print b - a}') s during the run"
      done
    done
    # (c) resume of 1,000 missed items from JetStream (the edge reads the stream).
    for t in $(part resume && echo sse ws); do
      for c in 1 20; do
        lt resume --system gripmesh --scenario "resume-1000-$t-x$c-nats" --transport "$t" \
          --items 1000 --clients "$([ "$QUICK" = 1 ] && echo 20 || echo 200)" --concurrency "$c" \
          --channel "hresume-$t-$c" --edge "$E1" --publish "$PUB" --server-pid "$PID_edge1" \
          --json "$BENCH_DIR/gripmesh-resume-1000-$t-x$c-nats.json"
      done
    done
    stop edge1 edge2 control
    if part standalone; then
    log "== history: standalone, in memory"
    lt publish --system gripmesh --scenario publish-grpc-standalone-history --api grpc --batch 100 \
      --concurrency 2 --window 8 --duration "$DURATION" --ids --channel-prefix hpub \
      --spawn-gripmesh "$GRIPMESH" --gripmesh-arg="--history=$HIST" \
      --json "$BENCH_DIR/gripmesh-publish-grpc-standalone-history.json"
    lt publish --system gripmesh --scenario publish-grpc-standalone-plain --api grpc --batch 100 \
      --concurrency 2 --window 8 --duration "$DURATION" --ids --channel-prefix pub \
      --spawn-gripmesh "$GRIPMESH" --gripmesh-arg="--history=$HIST" \
      --json "$BENCH_DIR/gripmesh-publish-grpc-standalone-plain.json"
    for kind in plain history; do
      prefix=$([ "$kind" = history ] && echo hlt || echo lt)
      # shellcheck disable=SC2046
      lt "${fanout[@]}" --scenario "ws-fanout-1k-standalone-$kind" --channel-prefix "$prefix" --ids \
        --gripmesh-arg="--history=$HIST" $(out "ws-fanout-1k-standalone-$kind")
    done
    for t in sse ws; do
      lt resume --system gripmesh --scenario "resume-1000-$t-x1-memory" --transport "$t" \
        --items 1000 --clients "$([ "$QUICK" = 1 ] && echo 20 || echo 200)" --concurrency 1 \
        --channel "hresume" --spawn-gripmesh "$GRIPMESH" --origin "$ORIGIN" \
        --gripmesh-arg="--history=$HIST" --json "$BENCH_DIR/gripmesh-resume-1000-$t-x1-memory.json"
    done
    fi
    stop nats
    ;;
  *) echo "unknown feature group $f" >&2; exit 1 ;;
  esac
done

files=()
for f in "$BENCH_DIR"/gripmesh-*.json; do
  case $f in
    *usage*|*filter*|*skip-self*|*limits*|*history*|*plain*|*resume*) files+=("$f") ;;
  esac
done
[ "${#files[@]}" -gt 0 ] && "$LOADTEST" table "${files[@]}" | tee "$BENCH_DIR/features.md"
