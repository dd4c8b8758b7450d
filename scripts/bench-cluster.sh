#!/usr/bin/env bash
# Bench (issue 7): N logged-in connections spread over several gate processes of a local
# cluster (docs/benchmarks.md, "Cluster: 100k connections over several gates").
#
# Starts redis-server, postgres and nats-server -js (as scripts/dev-cluster.sh does), then
# LOGICS logic processes, GATES gate processes and 1 api process, all `longlink serve --roles …`
# on loopback. Then one `longlink bench idle --server <gate i> --server-pid <pid>` per gate, all
# at once, each with CONNECTIONS / GATES connections (its own uid prefix, so no login replaces
# another). Once every gate's run has measured and holds its connections, the script reads
# VmRSS of every process from /proc (all CONNECTIONS logged in at the same time) and the CPU
# time (utime + stime) every process used since the runs were launched; then, while the
# connections are still held, runs `longlink bench c2c` with the senders on gate-0 and the
# receivers on gate-1 (cross-gate latency), and waits for the runs to end. Prints a summary
# and writes it to $OUT/summary.json.
# Everything it started is killed at the end (trap), also on failure or Ctrl-C.
#
#   bash scripts/bench-cluster.sh                        # 100,000 connections over 7 gates
#   CONNECTIONS=20000 GATES=2 bash scripts/bench-cluster.sh
#
# Settings (environment): CONNECTIONS (100000), GATES (7), LOGICS (2), CONCURRENCY (logins in
# flight per gate run, 100), HOLD_SECS (how long each run holds its connections after its own
# measurement, 120: long enough for the c2c run to happen while all are held), C2C_RATE (msg/s of the cross-gate c2c run, 500; 0 = no c2c run),
# C2C_SECS (20), GATE_LOG (LONGLINK_LOG of the gates, info), OUT (directory for the JSON and
# logs, default a temp dir that is kept), LONGLINK_DEV_PORT_BASE (18000). A process may open
# at most 20,000 files here: keep CONNECTIONS / GATES ≤ ~17,000.
# The binary is target/release/longlink (built when missing), or $LONGLINK_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

connections=${CONNECTIONS:-100000}
gates=${GATES:-7}
logics=${LOGICS:-2}
concurrency=${CONCURRENCY:-100}
hold_secs=${HOLD_SECS:-120}
c2c_rate=${C2C_RATE:-500}
c2c_secs=${C2C_SECS:-20}
gate_log=${GATE_LOG:-info}
base=${LONGLINK_DEV_PORT_BASE:-18000}
redis_port=$((base + 379)) pg_port=$((base + 432)) nats_port=$((base + 422))
api_port=$((base + 780)) grpc_port=$((base + 790))
gate_port() { echo $((base + 700 + 2 * $1)); }   # gate i (0-based): base+700, +702, …
per_gate=$(((connections + gates - 1) / gates))
if [ "$per_gate" -gt 17000 ]; then
  echo "bench-cluster: $per_gate connections per gate is above ~17,000 (20,000 open files per process): add GATES" >&2
  exit 1
fi

bin=${LONGLINK_BIN:-target/release/longlink}
if [ ! -x "$bin" ]; then
  echo "==> building $bin (cargo build --release)"
  cargo build --release --locked --bin longlink
fi
bin=$(realpath "$bin")

for tool in redis-server nats-server jq; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "bench-cluster: $tool is not installed: apt-get install redis-server nats-server postgresql jq" >&2; exit 1; }
done
pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1)")
[ -x "$pg_bin/initdb" ] || { echo "bench-cluster: PostgreSQL is not installed" >&2; exit 1; }
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $redis_port $pg_port $nats_port $api_port $grpc_port; do
  port_free "$port" || { echo "bench-cluster: port $port is taken (set LONGLINK_DEV_PORT_BASE)" >&2; exit 1; }
done
for ((i = 0; i < gates; i++)); do
  port_free "$(gate_port "$i")" || { echo "bench-cluster: port $(gate_port "$i") is taken" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/longlink-bench-cluster.XXXXXX)
out=${OUT:-$dir/out}
mkdir -p "$out"
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "==> stopping everything (logs in $dir, results in $out)"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  sleep 2
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir/pg" "$dir/jetstream"
}
trap cleanup EXIT INT TERM

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "bench-cluster: $2 did not start on port $1" >&2; tail -n 20 "$dir/$2.log" >&2 || true; exit 1
}

echo "==> engines in $dir"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$dir" \
  --maxclients 10000 > "$dir/redis.log" 2>&1 &
pids+=($!); redis_pid=$!
"$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -m -1 -sd "$dir/jetstream" > "$dir/nats.log" 2>&1 &
pids+=($!); nats_pid=$!
mkdir -p "$dir/pg"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir" "$dir/pg"; as_pg=(runuser -u postgres --); fi
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U longlink --no-sync -E UTF8 -D "$dir/pg/data" > "$dir/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/postgres" -D "$dir/pg/data" -p "$pg_port" -k "$dir/pg" \
  -c listen_addresses=127.0.0.1 > "$dir/postgres.log" 2>&1 &
pids+=($!); pg_pid=$!
wait_port "$redis_port" redis
wait_port "$nats_port" nats
wait_port "$pg_port" postgres
for _ in $(seq 1 300); do grep -q "ready to accept connections" "$dir/postgres.log" && break; sleep 0.1; done

export LONGLINK_CLUSTER_REDIS_URL="redis://127.0.0.1:$redis_port/"
export LONGLINK_CLUSTER_POSTGRES_URL="postgres://longlink@127.0.0.1:$pg_port/postgres"
export LONGLINK_CLUSTER_NATS_URL="nats://127.0.0.1:$nats_port"
"$bin" migrate > "$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; exit 1; }

declare -A pid_of
serve() {
  local name=$1 roles=$2; shift 2
  mkdir -p "$dir/$name"
  env "$@" LONGLINK_STORE_DATA_DIR="$dir/$name" "$bin" serve --roles "$roles" > "$dir/$name.log" 2>&1 &
  pids+=($!); pid_of[$name]=$!
}
names=()
for ((i = 1; i <= logics; i++)); do serve "logic-$i" logic; names+=("logic-$i"); done
# Gate limits the bench needs: no admission limiter in the way of the load generator (as
# `bench idle` sets on the servers it spawns), no per-IP connect flapping ban (all
# connections come from a few loopback addresses).
for ((i = 0; i < gates; i++)); do
  serve "gate-$i" gate LONGLINK_LOG="$gate_log" LONGLINK_GATE_GATE_ID="\"gate-$i\"" \
    LONGLINK_GATE_LISTEN="\"127.0.0.1:$(gate_port "$i")\"" \
    LONGLINK_GATE_WS_LISTEN='""' \
    LONGLINK_GATE_MAX_CONNECTIONS=20000 LONGLINK_GATE_LOGIN_RATE_PER_SEC=1000000 \
    LONGLINK_GATE_LOGIN_BURST=1000000 LONGLINK_GUARD_IP_MAX_CONNECTS=0
  names+=("gate-$i")
done
serve api api LONGLINK_API_LISTEN="\"127.0.0.1:$api_port\"" LONGLINK_API_GRPC_LISTEN="\"127.0.0.1:$grpc_port\""
names+=(api)
for name in "${names[@]}"; do
  for _ in $(seq 1 300); do grep -q "longlink ready" "$dir/$name.log" && break; sleep 0.1; done
  grep -q "longlink ready" "$dir/$name.log" || { echo "bench-cluster: $name did not start:" >&2; tail -n 20 "$dir/$name.log" >&2; exit 1; }
done
echo "==> $logics logic, $gates gates, 1 api up"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
# utime + stime in clock ticks (fields 14 and 15 of /proc/<pid>/stat; the command name, field
# 2, has no spaces here).
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
clk_tck=$(getconf CLK_TCK)
snapshot() { # one JSON object: name → VmRSS in KiB; `snapshot cpu`: name → CPU ticks
  local what=${1:-rss} name first=true
  local read=rss_kib
  [ "$what" = cpu ] && read=cpu_ticks
  printf '{'
  for name in "${names[@]}" redis nats postgres; do
    local pid
    case $name in redis) pid=$redis_pid ;; nats) pid=$nats_pid ;; postgres) pid=$pg_pid ;; *) pid=${pid_of[$name]} ;; esac
    local kib
    if [ "$name" = postgres ]; then # the postmaster and its backends
      kib=$(for p in $pid $(pgrep -P "$pid"); do $read "$p"; done | awk '{s += $1} END {print s}')
    else
      kib=$($read "$pid")
    fi
    $first || printf ','
    first=false
    printf '"%s":%s' "$name" "$kib"
  done
  printf '}\n'
}
snapshot > "$out/rss-before.json"

echo "==> $connections connections: $gates × bench idle ($per_gate each), all at once"
runs=()
snapshot cpu > "$out/cpu-before.json"
start_ns=$(date +%s%N)
left=$connections
for ((i = 0; i < gates; i++)); do
  n=$((left < per_gate ? left : per_gate))
  left=$((left - n))
  "$bin" bench idle --server "127.0.0.1:$(gate_port "$i")" --server-pid "${pid_of[gate-$i]}" \
    --connections "$n" --concurrency "$concurrency" --hold-secs "$hold_secs" \
    --uid-prefix "bench-cluster-g$i-" --json "$out/idle-gate-$i.json" \
    > "$out/idle-gate-$i.log" 2>&1 &
  runs+=($!); pids+=($!)
done
# Wait until every run measured and holds (or one ended early: then the snapshot is not of
# all connections at once, and the script says so).
all_held=false
while true; do
  held=0 ended=0
  for ((i = 0; i < gates; i++)); do
    grep -q "^measured; holding" "$out/idle-gate-$i.log" 2>/dev/null && held=$((held + 1))
    kill -0 "${runs[$i]}" 2>/dev/null || ended=$((ended + 1))
  done
  if [ "$held" -eq "$gates" ] && [ "$ended" -eq 0 ]; then all_held=true; break; fi
  [ "$ended" -gt 0 ] && break
  sleep 0.5
done
held_ns=$(date +%s%N)
if $all_held; then
  sleep 1
  snapshot > "$out/rss-held.json"
  snapshot cpu > "$out/cpu-held.json"
  ended=0
  for ((i = 0; i < gates; i++)); do kill -0 "${runs[$i]}" 2>/dev/null || ended=$((ended + 1)); done
  [ "$ended" -eq 0 ] || all_held=false
  echo "==> every gate holds its connections; RSS read"
fi
c2c_ok=false c2c_during_hold=$all_held
if [ "$c2c_rate" -gt 0 ] && [ "$gates" -ge 2 ]; then
  # While the idle connections are still held (HOLD_SECS covers it), so the gates carry
  # their share of the CONNECTIONS during the run.
  echo "==> cross-gate c2c: $c2c_rate msg/s for $c2c_secs s, senders on gate-0, receivers on gate-1"
  if "$bin" bench c2c --server "127.0.0.1:$(gate_port 0)" --server-pid "${pid_of[gate-0]}" \
    --receivers-server "127.0.0.1:$(gate_port 1)" --rate "$c2c_rate" --duration-secs "$c2c_secs" \
    --json "$out/c2c-cross-gate.json" > "$out/c2c-cross-gate.log" 2>&1; then
    c2c_ok=true
    for ((i = 0; i < gates; i++)); do kill -0 "${runs[$i]}" 2>/dev/null || c2c_during_hold=false; done
  else
    echo "bench-cluster: the c2c run failed:" >&2; tail -n 5 "$out/c2c-cross-gate.log" >&2
  fi
fi

failed_runs=0
for ((i = 0; i < gates; i++)); do
  wait "${runs[$i]}" || { failed_runs=$((failed_runs + 1)); echo "bench-cluster: the run on gate-$i failed:" >&2; tail -n 5 "$out/idle-gate-$i.log" >&2; }
done

jq -n --argjson before "$(cat "$out/rss-before.json")" \
  --argjson held "$( [ -f "$out/rss-held.json" ] && cat "$out/rss-held.json" || echo null)" \
  --argjson all_held "$all_held" --argjson c2c_during_hold "${c2c_during_hold:-false}" --argjson gates "$gates" --argjson logics "$logics" \
  --argjson connections "$connections" --argjson tck "$clk_tck" \
  --argjson cpu0 "$(cat "$out/cpu-before.json")" \
  --argjson cpu1 "$( [ -f "$out/cpu-held.json" ] && cat "$out/cpu-held.json" || echo null)" --argjson span "$(( (held_ns - start_ns) / 1000000 ))" \
  --slurpfile runs <(cat "$out"/idle-gate-*.json 2>/dev/null) \
  --slurpfile c2c <( $c2c_ok && cat "$out/c2c-cross-gate.json" || true) '
  def sum_of(prefix; obj): [obj | to_entries[] | select(.key | startswith(prefix)) | .value] | add // 0;
  ($runs | map(.results)) as $r
  | ($r | map(.logged_in) | add // 0) as $logged
  | {
      gates: $gates, logics: $logics, connections_asked: $connections,
      logged_in: $logged, failed: ($r | map(.failed) | add // 0),
      all_held_at_snapshot: $all_held,
      per_gate_logged_in: ($r | map(.logged_in)),
      longest_login_wall_secs: ($r | map(.login_wall_secs) | max),
      logins_per_sec_aggregate: (if $logged > 0 then ($logged / ($r | map(.login_wall_secs) | max) | floor) else 0 end),
      logins_per_sec_per_gate: ($r | map(.logins_per_sec)),
      launch_to_all_measured_secs: ($span / 1000),
      gate_cpu_secs: ($r | map(.server_cpu_secs) | add),
      gate_cpu_us_per_login: (if $logged > 0 then (($r | map(.server_cpu_secs) | add) * 1e6 / $logged * 10 | round / 10) else null end),
      cpu_secs_launch_to_all_measured: (if $cpu1 then ($cpu1 | to_entries | map({key, value: ((.value - $cpu0[.key]) / $tck)}) | from_entries) else null end),
      cluster_cpu_us_per_login: (if $cpu1 and $logged > 0 then ((($cpu1 | to_entries | map(.value - $cpu0[.key]) | add) / $tck * 1e6 / $logged) | round) else null end),
      gate_rss_per_connection_bytes_per_gate: ($r | map(.rss_per_connection_bytes)),
      gates_rss_before_mib: (sum_of("gate-"; $before) / 1024 | round),
      gates_rss_held_mib: (if $held then (sum_of("gate-"; $held) / 1024 | round) else null end),
      gates_rss_per_connection_bytes: (if $held and $logged > 0 then ((sum_of("gate-"; $held) - sum_of("gate-"; $before)) * 1024 / $logged | round) else null end),
      logic_rss_held_mib: (if $held then (sum_of("logic-"; $held) / 1024 | round) else null end),
      api_rss_held_mib: (if $held then ($held.api / 1024 | round) else null end),
      engines_rss_held_mib: (if $held then {redis: ($held.redis / 1024 | round), nats: ($held.nats / 1024 | round), postgres: ($held.postgres / 1024 | round)} else null end),
      engines_rss_before_mib: {redis: ($before.redis / 1024 | round), nats: ($before.nats / 1024 | round), postgres: ($before.postgres / 1024 | round)},
      c2c_cross_gate: (if ($c2c | length) > 0 then ($c2c[0] | {
        during_hold_of_all_connections: $c2c_during_hold,
        inputs: .inputs | {rate, duration_secs, senders, receivers, endpoint, receivers_endpoint},
        sent: .results.sent, acked: .results.acked, errors: .results.errors, lost: .results.lost,
        ack_ms: .results.ack_latency_ms | {p50, p99, p999, max},
        e2e_ms: .results.e2e_latency_ms | {p50, p99, p999, max}
      }) else null end)
    }' > "$out/summary.json"
echo "==> summary ($out/summary.json)"
jq . "$out/summary.json"
if $c2c_ok; then
  echo "--- cross-gate c2c ($out/c2c-cross-gate.log)"
  grep -E "^(transport|sent|answers|delivered|ACK latency|end to end) " "$out/c2c-cross-gate.log" || tail -n 20 "$out/c2c-cross-gate.log"
fi
[ "$failed_runs" -eq 0 ] && $all_held
