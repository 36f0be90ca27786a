#!/usr/bin/env bash
# gRPC and WebSocket through claimgate against the same servers directly,
# side by side in one run (loopback): a grpcio echo server over h2c and a
# `websockets` echo server, Python clients (benches/load/proto_client.py).
# Prints round trips per second, the mean round-trip latency and, through
# claimgate, its µs of CPU per round trip (from /proc). The Python clients
# are the bottleneck of the throughput: compare latencies and CPU.
# PERF="gRPC unary, via claimgate" records a perf profile of that run.
#
#   bash benches/protocols.sh [seconds=8] [threads=4]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
threads=${2:-4}
bash scripts/install-deps.sh
cargo build --release --quiet --bin claimgate --example loadkit
py=.venv/bin/python
source benches/load/work.sh
./target/release/examples/loadkit "$work/kit" 1 >/dev/null
token=$(cat "$work/kit/token")

"$py" tests/interop/grpc_echo.py >"$work/grpc.port" &
pids+=($!)
"$py" tests/interop/ws.py serve >"$work/ws.port" &
pids+=($!)
for _ in $(seq 100); do [ -s "$work/grpc.port" ] && [ -s "$work/ws.port" ] && break; sleep 0.1; done
gport=$(cat "$work/grpc.port")
wport=$(cat "$work/ws.port")

base=$((20000 + RANDOM % 20000))
cg=$base adm=$((base + 1))
mkdir -p "$work/cg/policies"
cat >"$work/cg/claimgate.yaml" <<YAML
listen: 127.0.0.1:$cg
admin_listen: 127.0.0.1:$adm
policies: ./policies
log_format: json
reload: { watch: false, poll_interval: 0s }
YAML
cat >"$work/cg/policies/p.yaml" <<YAML
issuers:
  bench:
    issuer: https://idp.bench.local
    audience: [bench-api]
    jwks_file: $work/kit/jwks.json
    algorithms: [RS256]
    claims:
      roles: \$.roles
upstreams:
  grpc: { url: "http://127.0.0.1:$gport", protocol: h2c }
  ws: http://127.0.0.1:$wport
routes:
  - name: grpc
    match: { path: "/echo.Echo/{m}", methods: [POST] }
    upstream: grpc
    allow: { role: orders }
    forward: { X-User-Id: "{{ \$.sub }}" }
  - name: ws
    match: { path: "/ws" }
    upstream: ws
    allow: { role: orders }
    forward: { X-User-Id: "{{ \$.sub }}" }
YAML
./target/release/claimgate run --config "$work/cg/claimgate.yaml" >/dev/null 2>"$work/cg/log" &
cgpid=$!
pids+=($cgpid)
for _ in $(seq 100); do curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1 && break; sleep 0.1; done

ticks() { awk '{print $14 + $15}' "/proc/$cgpid/stat"; }
hz=$(getconf CLK_TCK)
printf '%-28s %10s %12s %14s\n' target "rt/s" "latency µs" "cg µs CPU/rt" >&2
run() { # name kind target token
  local before after out n lat cpu="-"
  before=$(ticks)
  if [ -n "${PERF:-}" ] && [ "$1" = "$PERF" ]; then
    perf record -F 2000 -g -o "${PERF_OUT:-perf.data}" -p "$cgpid" -- sleep "$secs" 2>/dev/null &
  fi
  out=$("$py" benches/load/proto_client.py "$2" "$3" "$4" "$secs" "$threads")
  after=$(ticks)
  read -r n _ lat <<<"$out"
  [ "$5" = via ] && cpu=$(awk -v a="$after" -v b="$before" -v n="$n" -v hz="$hz" 'BEGIN {printf "%.1f", (a - b) * 1e6 / hz / n}')
  printf '%-28s %10.0f %12s %14s\n' "$1" "$(awk -v n="$n" -v s="$secs" 'BEGIN {print n / s}')" "$lat" "$cpu" >&2
}
echo "$threads client threads, ${secs}s each, $(nproc) cores, loopback" >&2
run "gRPC unary, direct" grpc "127.0.0.1:$gport" - direct
run "gRPC unary, via claimgate" grpc "127.0.0.1:$cg" "$token" via
run "WebSocket 1 KiB, direct" ws "ws://127.0.0.1:$wport/ws" - direct
run "WebSocket 1 KiB, via" ws "ws://127.0.0.1:$cg/ws" "$token" via
