#!/usr/bin/env bash
# Every `longlink bench` scenario once, with the peers (mosquitto QoS 0/1, nats-server) in the
# same run where a scenario has a peer workload: the figures of docs/benchmarks.md "Where
# longlink stands". Writes JSON, HDR histograms and plots to OUT (default target/bench/all) and
# each scenario's summary to OUT/<scenario>.txt. Bounded: each scenario stops by itself.
#
#   bash scripts/bench-all.sh [OUT]          # builds the release binary first
#   LONGLINK_BIN=/tmp/longlink bash scripts/bench-all.sh   # measure that binary instead
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-target/bench/all}"
mkdir -p "$out"

if [[ -z "${LONGLINK_BIN:-}" ]]; then
  cargo build --release -p longlink-cli
  # A copy: a build started meanwhile cannot replace the binary mid-run.
  cp target/release/longlink "$out/longlink"
  LONGLINK_BIN="$out/longlink"
fi

peers=()
if command -v mosquitto >/dev/null || [[ -x /usr/sbin/mosquitto ]]; then
  if command -v nats-server >/dev/null || [[ -x /usr/sbin/nats-server ]]; then
    peers=(--peers mosquitto,nats)
  fi
fi
if [[ ${#peers[@]} -eq 0 ]]; then
  echo "note: mosquitto or nats-server missing (apt-get install -y mosquitto nats-server): peers not run" >&2
  peers=(--peers none)
fi

run() {
  local name="$1"
  shift
  echo "== longlink bench $*" | tee "$out/$name.txt"
  cat /proc/loadavg | sed 's/^/loadavg before: /' | tee -a "$out/$name.txt"
  "$LONGLINK_BIN" bench "$@" --json "$out/$name.json" 2>&1 | tee -a "$out/$name.txt"
}

run idle idle --connections 10000 "${peers[@]}"
run push push "${peers[@]}"
run push-noack push --no-client-ack --peers none
run broadcast broadcast --users 15000 "${peers[@]}"
run c2c c2c --rate 10000 --duration-secs 10 "${peers[@]}"
run c2c-1k c2c --rate 1000 --duration-secs 15 --peers none
run offline offline
run reconnect-storm reconnect-storm --clients 10000
run notify notify
echo "results in $out"
