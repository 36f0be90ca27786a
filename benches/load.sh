#!/usr/bin/env bash
# Load benchmark, side by side in one run on one machine:
#   1. the echo upstream directly          (no proxy)
#   2. claimgate, public route             (pass-through: routing + hygiene)
#   3. claimgate, authenticated route      (verify ES256 + decide + 5 headers)
#   4. claimgate's forward-auth door, the same request as a gateway asks it
#      (the decision alone: no upstream call)
# Prints requests/s and latency for each, and the ratios.
#
#   bash benches/load.sh [seconds=10] [connections=32]
#
# Installs wrk from Debian if missing. Loopback only; stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-32}

bash scripts/install-deps.sh --bench
cargo build --release --quiet
port=$((20000 + RANDOM % 20000))
out=$(mktemp)
./target/release/claimgate demo --listen 127.0.0.1:$port --admin-listen 127.0.0.1:$((port + 1)) >"$out" 2>/dev/null &
pid=$!
trap 'kill $pid 2>/dev/null; rm -f "$out"' EXIT
for _ in $(seq 100); do grep -q '^  GOLD=' "$out" && break; sleep 0.1; done
gold=$(grep '^  GOLD=' "$out" | cut -d= -f2)
upstream=$(grep '^  upstream' "$out" | awk '{print $2}')
fauth=$(grep '^  forward_auth' "$out" | awk '{print $2}')
[ -n "$gold" ] && [ -n "$upstream" ] || { echo "demo did not start" >&2; exit 1; }

run() { # name url [header]
  local name=$1 url=$2; shift 2
  local r
  r=$(wrk -t2 -c"$conns" -d"${secs}s" --latency "$@" "$url")
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$r")
  p50=$(awk '$1=="50%" {print $2}' <<<"$r")
  p99=$(awk '$1=="99%" {print $2}' <<<"$r")
  printf '%-28s %10s req/s   p50 %-9s p99 %s\n' "$name" "$rps" "$p50" "$p99" >&2
  echo "$rps"
}
echo "wrk -t2 -c$conns -d${secs}s, $(nproc) cores, loopback" >&2
direct=$(run "upstream direct" "$upstream/orders/7")
public=$(run "claimgate public route" "http://127.0.0.1:$port/healthz")
authed=$(run "claimgate ES256 + policy" "http://127.0.0.1:$port/orders/7" -H "Authorization: Bearer $gold")
checked=$(run "forward-auth, same request" "$fauth" -H "Authorization: Bearer $gold" \
  -H "X-Original-URI: /orders/7" -H "X-Original-Method: GET" -H "X-Forwarded-Host: 127.0.0.1")
awk -v d="$direct" -v p="$public" -v a="$authed" -v f="$checked" 'BEGIN {
  printf "ratios: public/direct %.2f   auth/public %.2f   auth/direct %.2f   forward-auth/auth %.2f\n", p/d, a/p, a/d, f/a }' >&2
