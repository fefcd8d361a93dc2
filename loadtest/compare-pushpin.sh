#!/usr/bin/env bash
# gripmesh vs Pushpin 1.36 (and Nchan 1.3.6) under the same load, one after the other, through
# the SAME origin (`gripmesh-loadtest origin`, equivalent to gripmesh's built-in `test` target).
#
#   loadtest/compare-pushpin.sh            # all paired scenarios (release build, ~10 min)
#   QUICK=1 loadtest/compare-pushpin.sh    # tiny sizes, to check the setup (~1 min)
#   SCENARIOS="ws-idle publish-http" loadtest/compare-pushpin.sh
#   SYSTEMS="gripmesh nchan pushpin" SCENARIOS="ws-fanout-1k-1item sse-fanout-1k-1item" \
#     loadtest/compare-pushpin.sh
#
# Nchan (Debian's `nginx-light` + `libnginx-mod-nchan`, installed with apt-get when missing) is
# configured fairly: worker_processes = cores, message buffer off
# (`nchan_message_buffer_length 0`), one location `/sub?channel=C` for WebSocket and
# EventSource subscribers, publishing with `POST /pub?id=C` and the payload as the raw body,
# one item per call. It has no origin, so only the scenarios without one apply (fan-outs over
# WebSocket/SSE, idle memory, WebSocket opens). The `*-1item` scenarios publish one item per
# call for every system (`--max-batch 1`), as the comparison with Nchan needs.
#
# Installs Debian's `pushpin` when missing (apt-get). Pushpin is configured per
# Pushpin's documented setup in a temp dir: zurl under the runner, distinct free ports,
# message_rate/message_hwm raised (shipped 2500 msg/s / 25000 would throttle it),
# client_maxconn raised, log level 2. gripmesh is started by the tool (`--spawn-gripmesh`,
# routes `*,proto=ws ORIGIN,over_http` + `* ORIGIN`, high --max-connections/--send-queue-*).
#
# Results: $BENCH_DIR/<system>-<scenario>.json and .html; prints the markdown rows with the
# gripmesh/Pushpin ratios at the end. Environment: GRIPMESH (binary), LOADTEST (binary),
# BENCH_DIR (target/bench), DURATION (s per step, 10), IDLE_CLIENTS (default: fd limit − 1000,
# at most 19000), SCENARIOS, QUICK, NO_BUILD, KEEP_TMP=1 (keep Pushpin's config and logs).
set -euo pipefail
cd "$(dirname "$0")/.."

BENCH_DIR=${BENCH_DIR:-target/bench}
GRIPMESH=${GRIPMESH:-target/release/gripmesh}
LOADTEST=${LOADTEST:-target/release/gripmesh-loadtest}
DURATION=${DURATION:-10}
QUICK=${QUICK:-0}
ALL_PAIRED="ws-idle ws-ramp ws-ramp-burst ws-fanout-1k ws-fanout-10k ws-1kch-10 stream-fanout-1k sse-fanout-1k publish-http"
SCENARIOS=${SCENARIOS:-$ALL_PAIRED}
SYSTEMS=${SYSTEMS:-gripmesh pushpin}
# Scenarios Nchan takes part in (no origin: fan-outs, idle memory, opens).
NCHAN_OK=" ws-idle ws-idle-10k ws-ramp ws-ramp-burst ws-fanout-1k-1item sse-fanout-1k-1item ws-1kch-10-1item "
mkdir -p "$BENCH_DIR"

if [ "${NO_BUILD:-0}" != 1 ] && { [ ! -x "$GRIPMESH" ] || [ ! -x "$LOADTEST" ]; }; then
  echo "== cargo build --release -p gripmesh -p gripmesh-loadtest" >&2
  cargo build --release -p gripmesh -p gripmesh-loadtest
fi

if [[ " $SYSTEMS " == *" nchan "* ]] && [ ! -e /usr/lib/nginx/modules/ngx_nchan_module.so ]; then
  echo "== installing nginx-light and libnginx-mod-nchan (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nginx-light libnginx-mod-nchan
fi

if [[ " $SYSTEMS " == *" pushpin "* ]] && ! command -v pushpin >/dev/null 2>&1; then
  echo "== installing pushpin (Debian)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq pushpin
fi

hard=$(ulimit -Hn)
ulimit -n "$hard" 2>/dev/null || true
idle_default=$(( hard - 1000 )); [ "$idle_default" -gt 19000 ] && idle_default=19000
IDLE_CLIENTS=${IDLE_CLIENTS:-$idle_default}
if [ "$QUICK" = 1 ]; then
  IDLE_CLIENTS=500; DURATION=2
fi

TMP=$(mktemp -d /tmp/gm-compare.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "${KEEP_TMP:-0}" = 1 ]; then echo "kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT

port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
# A base port B with B..B+9 free.
free_base() {
  local b
  for b in $(seq 21000 20 40000); do
    local ok=1 i
    for i in $(seq 0 9); do port_free $((b + i)) || { ok=0; break; }; done
    [ "$ok" = 1 ] && { echo "$b"; return; }
  done
  echo "no free port range" >&2; exit 1
}
wait_port() { # host port seconds
  local i
  for i in $(seq 1 $(( $3 * 10 ))); do
    (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listening on $1:$2" >&2; return 1
}

# The shared origin.
"$LOADTEST" origin --listen 127.0.0.1:0 > "$TMP/origin.out" 2>&1 &
PIDS+=($!)
for _ in $(seq 1 50); do grep -q '^ready' "$TMP/origin.out" && break; sleep 0.1; done
ORIGIN=$(awk '/^listening origin/ {print $3}' "$TMP/origin.out")
[ -n "$ORIGIN" ] || { echo "origin did not start" >&2; cat "$TMP/origin.out" >&2; exit 1; }
echo "== origin $ORIGIN" >&2

PUSHPIN_PID=
start_pushpin() {
  local dir="$TMP/pushpin" b
  rm -rf "$dir"; mkdir -p "$dir/run" "$dir/log"
  b=$(free_base)
  PP_EDGE=127.0.0.1:$((b + 9)); PP_PUBLISH=http://127.0.0.1:$((b + 1))
  printf '*,proto=ws %s,over_http\n* %s\n' "$ORIGIN" "$ORIGIN" > "$dir/routes"
  sed -e "s|^rundir=.*|rundir=$dir/run|" \
      -e "s|^services=.*|services=condure,zurl,pushpin-proxy,pushpin-handler|" \
      -e "s|^http_port=.*|http_port=$PP_EDGE|" \
      -e "s|^logdir=.*|logdir=$dir/log|" \
      -e "s|^log_level=.*|log_level=2|" \
      -e "s|^client_maxconn=.*|client_maxconn=200000|" \
      -e "s|^routesfile=.*|routesfile=$dir/routes|" \
      -e "s|^push_in_spec=.*|push_in_spec=tcp://127.0.0.1:$b|" \
      -e "s|^push_in_http_port=.*|push_in_http_port=$((b + 1))|" \
      -e "s|^push_in_sub_specs=.*|push_in_sub_specs=tcp://127.0.0.1:$((b + 2))|" \
      -e "s|^command_spec=tcp.*|command_spec=tcp://127.0.0.1:$((b + 3))|" \
      -e "s|^message_rate=.*|message_rate=100000000|" \
      -e "s|^message_hwm=.*|message_hwm=10000000|" \
      /etc/pushpin/pushpin.conf > "$dir/pushpin.conf"
  # zurl runs under the runner; point the proxy's outbound specs into our run dir.
  sed -i "/^\[proxy\]/a zurl_out_specs=ipc://{rundir}/{ipc_prefix}zurl-in\nzurl_out_stream_specs=ipc://{rundir}/{ipc_prefix}zurl-in-stream\nzurl_in_specs=ipc://{rundir}/{ipc_prefix}zurl-out" "$dir/pushpin.conf"
  pushpin --config "$dir/pushpin.conf" --merge-output --loglevel=2 > "$dir/pushpin.log" 2>&1 &
  PUSHPIN_PID=$!
  PIDS+=("$PUSHPIN_PID")
  wait_port 127.0.0.1 $((b + 9)) 20
  wait_port 127.0.0.1 $((b + 1)) 20
  sleep 1 # proxy and handler connect their ZeroMQ sockets
}
stop_pushpin() {
  [ -n "$PUSHPIN_PID" ] || return 0
  kill -TERM "$PUSHPIN_PID" 2>/dev/null || true
  wait "$PUSHPIN_PID" 2>/dev/null || true
  PUSHPIN_PID=
  sleep 1
}

NCHAN_PID=
start_nchan() {
  local dir="$TMP/nchan" b
  rm -rf "$dir"; mkdir -p "$dir/tmp"
  b=$(free_base)
  NC_EDGE=127.0.0.1:$b
  cat > "$dir/nginx.conf" <<NGINX
worker_processes $(nproc);
worker_rlimit_nofile $(ulimit -Hn);
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
load_module /usr/lib/nginx/modules/ngx_nchan_module.so;
events { worker_connections $(ulimit -Hn); }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  server {
    listen $NC_EDGE backlog=4096;
    location = /pub {
      nchan_publisher;
      nchan_channel_id \$arg_id;
      nchan_message_buffer_length 0;
    }
    location = /sub {
      nchan_subscriber websocket eventsource;
      nchan_channel_id \$arg_channel;
      nchan_message_buffer_length 0;
    }
  }
}
NGINX
  nginx -p "$dir" -c "$dir/nginx.conf" > "$dir/nginx.log" 2>&1 &
  NCHAN_PID=$!
  PIDS+=("$NCHAN_PID")
  wait_port 127.0.0.1 "$b" 20
  sleep 0.5
}
stop_nchan() {
  [ -n "$NCHAN_PID" ] || return 0
  kill -TERM "$NCHAN_PID" 2>/dev/null || true
  wait "$NCHAN_PID" 2>/dev/null || true
  NCHAN_PID=
  sleep 1
}

# Scenario flags (the same for every system). Fan-outs connect gently (32 opens in flight:
# Pushpin 1.36 answers part of a larger burst of WebSocket-over-HTTP opens with 502, which would
# leave it fewer subscribers). ws-ramp opens 10k WebSockets-over-HTTP with 100 in flight (below
# the 128 that tokio's default listen backlog would queue), ws-ramp-burst with 1000 in flight.
scenario_args() {
  local q=$QUICK gentle="--connect-concurrency 32"
  case "$1" in
    ws-idle)          echo "run --transport ws --clients $IDLE_CLIENTS --settle 3 $gentle" ;;
    ws-ramp)          echo "run --transport ws --clients $([ "$q" = 1 ] && echo 500 || echo 10000) --settle 0 --connect-concurrency 100" ;;
    ws-ramp-burst)    echo "run --transport ws --clients $([ "$q" = 1 ] && echo 500 || echo 10000) --settle 0 --connect-concurrency 1000" ;;
    ws-fanout-1k)     [ "$q" = 1 ] && echo "run --transport ws --clients 100 --rate 100,1000 $gentle" \
                                   || echo "run --transport ws --clients 1000 --rate 100,250,500,1000,2000 $gentle" ;;
    ws-fanout-10k)    [ "$q" = 1 ] && echo "run --transport ws --clients 300 --rate 10,100 $gentle" \
                                   || echo "run --transport ws --clients 10000 --rate 2,5,10,25,50,100 $gentle" ;;
    ws-1kch-10)       [ "$q" = 1 ] && echo "run --transport ws --clients 200 --channels 20 --rate 1,10 $gentle" \
                                   || echo "run --transport ws --clients 10000 --channels 1000 --rate 1,2,5,10,20,50 $gentle" ;;
    stream-fanout-1k) [ "$q" = 1 ] && echo "run --transport stream --clients 100 --rate 100,1000 $gentle" \
                                   || echo "run --transport stream --clients 1000 --rate 100,250,500,1000,2000 $gentle" ;;
    sse-fanout-1k)    [ "$q" = 1 ] && echo "run --transport sse --clients 100 --rate 100,1000 $gentle" \
                                   || echo "run --transport sse --clients 1000 --rate 100,250,500,1000,2000 $gentle" ;;
    publish-http)     echo "publish --api http --batch 100 --concurrency 4" ;;
    # One item per publish call (the comparison with Nchan).
    ws-idle-10k)      echo "run --transport ws --clients $([ "$q" = 1 ] && echo 500 || echo 10000) --settle 3 $gentle" ;;
    ws-fanout-1k-1item)  [ "$q" = 1 ] && echo "run --transport ws --clients 100 --rate 10,100 --max-batch 1 $gentle" \
                                      || echo "run --transport ws --clients 1000 --rate 10,100,250,500,1000 --max-batch 1 $gentle" ;;
    sse-fanout-1k-1item) [ "$q" = 1 ] && echo "run --transport sse --clients 100 --rate 10,100 --max-batch 1 $gentle" \
                                      || echo "run --transport sse --clients 1000 --rate 10,100,250,500,1000 --max-batch 1 $gentle" ;;
    ws-1kch-10-1item)    [ "$q" = 1 ] && echo "run --transport ws --clients 200 --channels 20 --rate 1,10 --max-batch 1 $gentle" \
                                      || echo "run --transport ws --clients 10000 --channels 1000 --rate 1,2,5,10 --max-batch 1 $gentle" ;;
    *) echo "unknown scenario $1" >&2; return 1 ;;
  esac
}

run_one() { # system scenario
  local sys=$1 sc=$2 args common out
  args=$(scenario_args "$sc")
  out="$BENCH_DIR/$sys-$sc"
  if [[ $args == publish* ]]; then
    common="--system $sys --scenario $sc --duration $DURATION --json $out.json"
  else
    common="--system $sys --scenario $sc --duration $DURATION --size 100 --tick-ms 50 --json $out.json --html $out.html"
  fi
  echo "== $sys: $sc" >&2
  if [ "$sys" = gripmesh ]; then
    # shellcheck disable=SC2086
    "$LOADTEST" $args $common --spawn-gripmesh "$GRIPMESH" $( [[ $args == run* ]] && echo "--origin $ORIGIN" ) || true
  elif [ "$sys" = nchan ]; then
    [[ $NCHAN_OK == *" $sc "* ]] || return 0
    start_nchan
    # shellcheck disable=SC2086
    "$LOADTEST" $args $common --edge "$NC_EDGE" --publish "http://$NC_EDGE" --api nchan \
      --ws-path /sub --sse-path /sub --server-pid "$NCHAN_PID" || true
    stop_nchan
    cp "$TMP/nchan/error.log" "$BENCH_DIR/nchan-$sc.log" 2>/dev/null || true
  else
    start_pushpin
    # shellcheck disable=SC2086
    if [[ $args == run* ]]; then
      "$LOADTEST" $args $common --edge "$PP_EDGE" --publish "$PP_PUBLISH" --server-pid "$PUSHPIN_PID" || true
    else
      "$LOADTEST" $args $common --publish "$PP_PUBLISH" --server-pid "$PUSHPIN_PID" || true
    fi
    stop_pushpin
    cp "$TMP/pushpin/pushpin.log" "$BENCH_DIR/pushpin-$sc.log" 2>/dev/null || true
  fi
}

echo "== load: $(cut -d' ' -f1-3 /proc/loadavg)" >&2
for sc in $SCENARIOS; do
  for sys in $SYSTEMS; do run_one "$sys" "$sc"; done
done

files=()
for sc in $SCENARIOS; do
  for sys in $SYSTEMS; do
    [ -f "$BENCH_DIR/$sys-$sc.json" ] && files+=("$BENCH_DIR/$sys-$sc.json")
  done
done
echo
"$LOADTEST" table "${files[@]}"
