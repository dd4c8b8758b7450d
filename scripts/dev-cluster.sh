#!/usr/bin/env bash
# A local longlink cluster for development (docs/operations.md): redis-server, postgres and
# nats-server -js, then 2 gates + 2 logic + 1 api as separate `longlink serve --roles …`
# processes, all on loopback, with their data in one temp dir. Prints how to connect and runs
# until Ctrl-C, which stops everything.
#
#   bash scripts/dev-cluster.sh            # run until Ctrl-C
#   bash scripts/dev-cluster.sh --smoke    # start, chat once across the two gates, stop (exit 0 = it works)
#
# Ports (change with LONGLINK_DEV_PORT_BASE, default 17000): redis +379, postgres +432,
# nats +422, gate A +700, gate B +702, WebSocket A +701, WebSocket B +703, API +780, gRPC +790.
# The binary is target/release/longlink (built when missing), or $LONGLINK_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."

smoke=false
[ "${1:-}" = "--smoke" ] && smoke=true
base=${LONGLINK_DEV_PORT_BASE:-17000}
redis_port=$((base + 379)) pg_port=$((base + 432)) nats_port=$((base + 422))
gate_a=$((base + 700)) gate_b=$((base + 702)) ws_a=$((base + 701)) ws_b=$((base + 703))
api_port=$((base + 780)) grpc_port=$((base + 790))

bin=${LONGLINK_BIN:-target/release/longlink}
if [ ! -x "$bin" ]; then
  echo "==> building $bin (cargo build --release)"
  cargo build --release --locked --bin longlink
fi
bin=$(realpath "$bin")

for tool in redis-server nats-server; do
  command -v "$tool" >/dev/null || [ -x "/usr/sbin/$tool" ] || {
    echo "dev-cluster: $tool is not installed: apt-get install redis-server nats-server postgresql" >&2; exit 1; }
done
pg_bin=$(dirname "$(command -v initdb 2>/dev/null || ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n 1)")
[ -x "$pg_bin/initdb" ] || { echo "dev-cluster: PostgreSQL is not installed: apt-get install postgresql" >&2; exit 1; }
nats_bin=$(command -v nats-server || echo /usr/sbin/nats-server)

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in $redis_port $pg_port $nats_port $gate_a $gate_b $ws_a $ws_b $api_port $grpc_port; do
  port_free "$port" || { echo "dev-cluster: port $port is taken (set LONGLINK_DEV_PORT_BASE)" >&2; exit 1; }
done

dir=$(mktemp -d /tmp/longlink-dev-cluster.XXXXXX)
pids=()
cleanup() {
  trap - EXIT INT TERM
  echo "==> stopping the cluster"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  rm -rf "$dir"
}
trap cleanup EXIT INT TERM

# wait_port PORT WHAT: until something accepts on the port (at most 30 s).
wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "dev-cluster: $2 did not start on port $1; its log: $dir/$2.log" >&2
  tail -n 20 "$dir/$2.log" >&2 || true
  exit 1
}

echo "==> engines in $dir"
redis-server --bind 127.0.0.1 --port "$redis_port" --save "" --appendonly no --dir "$dir" \
  > "$dir/redis.log" 2>&1 &
pids+=($!)
"$nats_bin" -js -a 127.0.0.1 -p "$nats_port" -m -1 -sd "$dir/jetstream" > "$dir/nats.log" 2>&1 &
pids+=($!)
# initdb and postgres refuse to run as root: then they run as the postgres user.
mkdir -p "$dir/pg"
as_pg=()
if [ "$(id -u)" -eq 0 ]; then chown postgres "$dir" "$dir/pg"; as_pg=(runuser -u postgres --); fi
"${as_pg[@]}" "$pg_bin/initdb" -A trust -U longlink --no-sync -E UTF8 -D "$dir/pg/data" > "$dir/initdb.log" 2>&1
"${as_pg[@]}" "$pg_bin/postgres" -D "$dir/pg/data" -p "$pg_port" -k "$dir/pg" \
  -c listen_addresses=127.0.0.1 > "$dir/postgres.log" 2>&1 &
pids+=($!)
wait_port "$redis_port" redis
wait_port "$nats_port" nats
wait_port "$pg_port" postgres
for _ in $(seq 1 300); do grep -q "ready to accept connections" "$dir/postgres.log" && break; sleep 0.1; done

export LONGLINK_CLUSTER_REDIS_URL="redis://127.0.0.1:$redis_port/"
export LONGLINK_CLUSTER_POSTGRES_URL="postgres://longlink@127.0.0.1:$pg_port/postgres"
export LONGLINK_CLUSTER_NATS_URL="nats://127.0.0.1:$nats_port"
"$bin" migrate > "$dir/migrate.log" 2>&1 || { cat "$dir/migrate.log" >&2; exit 1; }

# serve NAME ROLES [ENV=VALUE…]: one longlink process with its own data dir and log.
serve() {
  local name=$1 roles=$2; shift 2
  mkdir -p "$dir/$name"
  env "$@" LONGLINK_STORE_DATA_DIR="$dir/$name" "$bin" serve --roles "$roles" > "$dir/$name.log" 2>&1 &
  pids+=($!)
}
echo "==> 2 logic, 2 gates, 1 api"
serve logic-1 logic
serve logic-2 logic
serve gate-a gate LONGLINK_GATE_GATE_ID='"gate-a"' LONGLINK_GATE_LISTEN="\"127.0.0.1:$gate_a\"" \
  LONGLINK_GATE_WS_LISTEN="\"127.0.0.1:$ws_a\""
serve gate-b gate LONGLINK_GATE_GATE_ID='"gate-b"' LONGLINK_GATE_LISTEN="\"127.0.0.1:$gate_b\"" \
  LONGLINK_GATE_WS_LISTEN="\"127.0.0.1:$ws_b\""
serve api api LONGLINK_API_LISTEN="\"127.0.0.1:$api_port\"" LONGLINK_API_GRPC_LISTEN="\"127.0.0.1:$grpc_port\""
for name in logic-1 logic-2 gate-a gate-b api; do
  for _ in $(seq 1 300); do grep -q "longlink ready" "$dir/$name.log" && break; sleep 0.1; done
  grep -q "longlink ready" "$dir/$name.log" || { echo "dev-cluster: $name did not start:" >&2; tail -n 20 "$dir/$name.log" >&2; exit 1; }
done

cat <<EOF

longlink cluster up (logs and data in $dir)
  gates      127.0.0.1:$gate_a (gate-a, ws://127.0.0.1:$ws_a)   127.0.0.1:$gate_b (gate-b, ws://127.0.0.1:$ws_b)
  api        http://127.0.0.1:$api_port  (dashboard /, chat page /chat, /v1/gates)   gRPC 127.0.0.1:$grpc_port
  engines    $LONGLINK_CLUSTER_REDIS_URL  $LONGLINK_CLUSTER_POSTGRES_URL  $LONGLINK_CLUSTER_NATS_URL

  chat across the gates:
    $bin client chat --server 127.0.0.1:$gate_a --appcode 129 --uid alice --to 130:bob
    $bin client chat --server 127.0.0.1:$gate_b --appcode 130 --uid bob --to 129:alice
  the gates the API sees:
    curl -s -H 'authorization: Bearer dev-api-key-change-me' http://127.0.0.1:$api_port/v1/gates

EOF

if $smoke; then
  # bob listens on gate B; alice sends on gate A; bob must print it.
  "$bin" client listen --server "127.0.0.1:$gate_b" --appcode 130 --uid bob --count 1 --timeout-secs 30 \
    > "$dir/listen.out" 2>&1 &
  listener=$!
  for _ in $(seq 1 300); do
    "$bin" presence --appcode 130 --uid bob --json --api "http://127.0.0.1:$api_port" 2>/dev/null | grep -q gate-b && break
    sleep 0.1
  done
  "$bin" client send --server "127.0.0.1:$gate_a" --appcode 129 --uid alice --to 130:bob "hello across the gates"
  if wait "$listener" && grep -q "hello across the gates" "$dir/listen.out"; then
    echo "smoke: bob on gate-b got alice's message from gate-a"
    exit 0
  fi
  echo "smoke: bob did not get the message:" >&2
  cat "$dir/listen.out" >&2
  exit 1
fi
echo "Ctrl-C stops the cluster."
wait
