# Process helpers shared by the benchmark scripts (sourced, not run):
#   procs_init PREFIX       a temporary directory $TMP, the list $PIDS, cleanup on exit
#   start NAME CMD…         runs CMD (stdout $TMP/NAME.out, stderr $TMP/NAME.log) and waits for
#                           its `ready` line; its pid is $PID_<NAME> (dashes as underscores)
#   stop NAME…              SIGTERM and wait
#   addr NAME LISTENER      the address NAME printed as `listening LISTENER ADDR`
#   free_port [FIRST]       a TCP port nothing listens on, from FIRST (24222) up
#   start_nats [FIRST]      nats-server -js -sd $TMP/js on a free port; sets NATS (its URL) and
#                           PID_nats once it accepts connections
#   cpu_s PID…              CPU seconds (user + system) the processes have used
# shellcheck shell=bash

procs_init() {
  TMP=$(mktemp -d "/tmp/$1.XXXXXX")
  PIDS=()
  trap procs_cleanup EXIT
}
procs_cleanup() {
  local p
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
  rm -rf "$TMP"
}
start() {
  local name=$1; shift
  "$@" > "$TMP/$name.out" 2> "$TMP/$name.log" &
  PIDS+=($!)
  eval "PID_${name//-/_}=$!"
  for _ in $(seq 1 300); do grep -q '^ready' "$TMP/$name.out" && return 0; sleep 0.1; done
  echo "$name did not start:" >&2; tail -5 "$TMP/$name.log" >&2; exit 1
}
stop() {
  local n p
  for n in "$@"; do
    p=$(eval echo "\${PID_${n//-/_}:-}")
    [ -n "$p" ] || continue
    kill -TERM "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
}
addr() { awk -v n="$2" '$1 == "listening" && $2 == n {print $3}' "$TMP/$1.out"; }
free_port() {
  local p
  for p in $(seq "${1:-24222}" 1 29999); do ! ss -Htln "sport = :$p" | grep -q . && { echo "$p"; return; }; done
}
cpu_s() {
  local t=0 p
  for p in "$@"; do
    t=$(( t + $(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0) ))
  done
  awk -v t="$t" -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", t / hz}'
}
start_nats() {
  local port
  port=$(free_port "${1:-24222}")
  mkdir -p "$TMP/js"
  "$(command -v nats-server || echo /usr/sbin/nats-server)" -a 127.0.0.1 -p "$port" -js \
    -sd "$TMP/js" > "$TMP/nats.log" 2>&1 &
  PIDS+=($!)
  PID_nats=$!
  for _ in $(seq 1 50); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
  NATS=nats://127.0.0.1:$port
}
