#!/usr/bin/env bash
# Memory benchmark: claimgate's resident set (VmRSS) at rest, after POOL
# distinct valid tokens went through the verified-token cache, and with
# 1,000 idle keep-alive connections more; with the bytes per cached token
# and per idle connection those steps cost. Loopback only, an nginx
# upstream, the load bench's policy (benches/load/setup.sh).
#
#   bash benches/memory.sh [pool=100000] [connections=1000]
#
# CLAIMGATE_BIN=path measures another binary. MASSIF=dir runs claimgate
# under valgrind's massif instead (slow: use a small pool) and keeps the
# heap profile there, for `ms_print`.
set -euo pipefail
cd "$(dirname "$0")/.."
pool=${1:-100000}
nconns=${2:-1000}

bash scripts/install-deps.sh --bench
cargo build --release --quiet --bin claimgate --example loadkit
source benches/load/work.sh

./target/release/examples/loadkit "$work/kit" "$pool" >/dev/null
chmod -R a+rX "$work/kit"
base=$((20000 + RANDOM % 20000))
up=$base cg=$((base + 2)) adm=$((base + 3))
source benches/load/setup.sh
start_upstream
cg_config "limits: { token_cache_entries: $((pool * 2 > 100000 ? pool * 2 : 100000)) }"
bench_policy >"$work/cg/policies/bench.yaml"
bin=${CLAIMGATE_BIN:-./target/release/claimgate}
if [ -n "${MASSIF:-}" ]; then
  mkdir -p "$MASSIF"
  valgrind --tool=massif --massif-out-file="$MASSIF/massif.out" \
    "$bin" run --config "$work/cg/claimgate.yaml" >/dev/null 2>"$work/cg/stderr.log" &
else
  "$bin" run --config "$work/cg/claimgate.yaml" >/dev/null 2>"$work/cg/stderr.log" &
fi
cgpid=$!
pids+=($cgpid)
for _ in $(seq 300); do
  curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null || { echo "claimgate did not get ready" >&2; tail "$work/cg/stderr.log" >&2; exit 1; }

rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$cgpid/status"; }
cached() { curl -s "http://127.0.0.1:$adm/metrics" | awk '/^claimgate_token_cache_entries/ {print $2}'; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }

# A few requests on the two routes, so that the pools and buffers a
# request needs exist before the first figure.
token=$(cat "$work/kit/token")
for _ in $(seq 20); do
  curl -fs -o /dev/null "http://127.0.0.1:$cg/public/1"
  curl -fs -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$cg/api/orders/7"
done
rest=$(rss_kib)

cat >"$work/tokens.lua" <<'EOF'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i + 1
  if i > #tokens then i = 1 end
  return wrk.format("GET", "/api/orders/7", { ["Authorization"] = "Bearer " .. tokens[i] })
end
EOF
# wrk has no request count, and each run starts the pool from its first
# token: one run long enough for the whole pool at 5,000 requests/s (a
# verification each), repeated until all are cached.
for _ in $(seq 5); do
  TOKENS="$work/kit/pool.txt" wrk -t1 -c8 -d$((pool / 5000 + 2))s -s "$work/tokens.lua" "http://127.0.0.1:$cg" >/dev/null
  [ "$(cached)" -ge $((pool * 99 / 100)) ] && break
done
entries=$(cached)
after_pool=$(rss_kib)

python3 benches/load/idle.py "$cg" "$nconns" 600 >"$work/idle.out" &
idle=$!
pids+=($idle)
for _ in $(seq 600); do grep -q open "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
with_conns=$(rss_kib)

echo "claimgate RSS at rest (after 40 requests): $(mib "$rest")"
echo "after $pool distinct tokens ($entries cached): $(mib "$after_pool")," \
  "$(awk -v a="$after_pool" -v b="$rest" -v n="$entries" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}') bytes per token"
echo "with $nconns idle keep-alive connections more: $(mib "$with_conns")," \
  "$(awk -v a="$with_conns" -v b="$after_pool" -v n="$nconns" 'BEGIN {printf "%.0f", (a - b) * 1024 / n}') bytes per connection"
if [ -n "${MASSIF:-}" ]; then
  kill -INT "$cgpid"
  wait "$cgpid" 2>/dev/null || true
  echo "heap profile: $MASSIF/massif.out (ms_print it)"
fi
