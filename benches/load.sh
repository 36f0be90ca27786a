#!/usr/bin/env bash
# Load benchmark, side by side in one run on one machine (loopback only):
#
#   upstream direct      an nginx answering 200 "ok" (the upstream of all)
#   nginx proxy_pass     a real nginx as bare proxy (no auth), access log on
#   hyper floor          a bare hyper 1 proxy built like claimgate's door
#                        (benches/load/floor.rs): what the stack costs alone
#   cg public            claimgate, a public route (routing + hygiene + hop)
#   cg cached RS256      one valid token (verified once, then cached), a
#                        `role` rule, 4 claim headers, access log on
#   cg pool              a different valid RS256 token per request: one pass
#                        over a pool of POOL (each a full verification)
#   cg forged sig        a known kid, a bad signature: 401, nothing proxied
#   cg unknown kids      10,000 different unknown kids: 401
#   cg local limit       the cached case plus a rate limit by plan (this node)
#   cg redis limit       the same limit in Redis (a local redis-server)
#
# For each: µs of CPU per request of the proxy's own processes (from
# /proc/<pid>/stat, the least noisy figure on a shared machine), req/s,
# p50/p99, and the CPU ratio against nginx. Then claimgate's RSS after the
# pool and with 1,000 idle keep-alive connections, and the JWKS fetches the
# unknown kids caused.
#
#   bash benches/load.sh [seconds=10] [connections=64] [pool=100000]
#
# BASELINE=path/to/an/older/claimgate runs that binary too, on the public and
# cached targets, between two runs of this one: before/after in one run.
# ROUNDS=n repeats nginx, the floor and the public and cached routes n
# times (each round's ratios against its own nginx run).
# CLAIMGATE_BIN=path runs that binary as "cg" (e.g. one built with frame
# pointers for a profile with call stacks).
# PERF="cg cached RS256" records a perf profile (perf.data, or PERF_OUT) of
# that target's run, for `perf report`; PERF_CALLGRAPH="--call-graph dwarf"
# unwinds by DWARF (a binary built with debug line tables) instead of frame
# pointers. CG_EXTRA="workers: 1" adds a line to claimgate's config.
#
# wrk -t1 (one thread), keep-alive. Installs wrk and nginx-light from Debian
# if missing (scripts/install-deps.sh --bench). Stops everything it started.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
conns=${2:-64}
pool=${3:-100000}

bash scripts/install-deps.sh --bench
cargo build --release --quiet --bin claimgate --example loadkit --example hyperfloor
source benches/load/work.sh

./target/release/examples/loadkit "$work/kit" "$pool" >"$work/kit.out"
chmod -R a+rX "$work/kit"
bare=$(awk '/^bare_verify_us/ {print $2}' "$work/kit.out")

base=$((20000 + RANDOM % 20000))
up=$base ng=$((base + 1)) cg=$((base + 2)) adm=$((base + 3))
source benches/load/setup.sh
nginx_proxy auto "$ng"
start_upstream
/usr/sbin/nginx -c "$work/nginx/proxy.conf" -e "$work/nginx/proxy.err" &
ngpid=$!
pids+=($ngpid)

floor_port=$((base + 7))
./target/release/examples/hyperfloor "127.0.0.1:$floor_port" "127.0.0.1:$up" &
floorpid=$!
pids+=($floorpid)

redis_port=$((base + 6))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >/dev/null &
pids+=($!)
cg_config "redis: { url: \"redis://127.0.0.1:$redis_port/0\", timeout: 100ms }" "${CG_EXTRA:-}"
{ bench_policy; cat <<EOF
  # The api route with a rate limit by plan (never reached), on this node
  # and in Redis: the cost of a limit against the route without.
  - name: local-limit
    match: { path: "/lim/**", methods: [GET] }
    upstream: app
    allow: { role: orders }
    forward:
      X-User-Id: "{{ \$.sub }}"
      X-Tenant: "{{ \$.tenant }}"
      X-Plan: "{{ \$.plan }}"
      X-Email: "{{ \$.email }}"
    rate_limits:
      - { name: per-user, key: "{{ \$.sub }}", by: \$.plan, limits: { gold: 1000000000/s }, default: 10/s }
  - name: redis-limit
    match: { path: "/rl/**", methods: [GET] }
    upstream: app
    allow: { role: orders }
    forward:
      X-User-Id: "{{ \$.sub }}"
      X-Tenant: "{{ \$.tenant }}"
      X-Plan: "{{ \$.plan }}"
      X-Email: "{{ \$.email }}"
    rate_limits:
      - { name: per-user, key: "{{ \$.sub }}", by: \$.plan, limits: { gold: 1000000000/s }, default: 10/s, store: redis, on_store_error: deny }
EOF
} >"$work/cg/policies/bench.yaml"
start_cg() { # binary config-dir -> pid on stdout
  "$1" run --config "$2/claimgate.yaml" >/dev/null 2>"$2/access.log" &
  echo $!
}
cgpid=$(start_cg "${CLAIMGATE_BIN:-./target/release/claimgate}" "$work/cg")
pids+=($cgpid)
if [ -n "${BASELINE:-}" ]; then
  # The same config on two more ports, for an older binary in the same run.
  cp -r "$work/cg" "$work/base"
  # Without the rate-limit routes and Redis, which an older binary lacks.
  sed -i '/^redis:/d' "$work/base/claimgate.yaml"
  sed -i '/# The api route with a rate limit/,$d' "$work/base/policies/bench.yaml"
  sed -i "s/:$cg\$/:$((base + 4))/; s/:$adm\$/:$((base + 5))/" "$work/base/claimgate.yaml"
  basepid=$(start_cg "$BASELINE" "$work/base")
  pids+=($basepid)
fi
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null 2>&1 &&
    curl -fs "http://127.0.0.1:$ng/" >/dev/null 2>&1 &&
    curl -fs "http://127.0.0.1:$floor_port/" >/dev/null 2>&1 &&
    { [ -z "${BASELINE:-}" ] || curl -fs "http://127.0.0.1:$((base + 5))/readyz" >/dev/null 2>&1; } && break
  sleep 0.1
done
curl -fs "http://127.0.0.1:$adm/readyz" >/dev/null || { echo "claimgate did not get ready:" >&2; tail "$work/cg/access.log" >&2; exit 1; }
token=$(cat "$work/kit/token")
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $token" "http://127.0.0.1:$cg/api/orders/7")
[ "$code" = 200 ] || { echo "the bench token got $code, not 200" >&2; tail -3 "$work/cg/access.log" >&2; exit 1; }

# Warm every claimgate up (allocator, pools, caches) before timing.
wrk -t1 -c"$conns" -d2s -H "Authorization: Bearer $token" "http://127.0.0.1:$cg/api/orders/7" >/dev/null
[ -z "${BASELINE:-}" ] || wrk -t1 -c"$conns" -d2s -H "Authorization: Bearer $token" "http://127.0.0.1:$((base + 4))/api/orders/7" >/dev/null

cat >"$work/tokens.lua" <<'EOF'
local tokens = {}
for line in io.lines(os.getenv("TOKENS")) do tokens[#tokens + 1] = line end
local i = 0
request = function()
  i = i % #tokens + 1
  return wrk.format("GET", "/api/orders/7", { ["Authorization"] = "Bearer " .. tokens[i] })
end
-- ONCE=1: stop after one pass over the tokens, so that no token is sent
-- twice (no cache help; the last few in flight aside).
local answered = 0
if os.getenv("ONCE") == "1" then
  response = function()
    answered = answered + 1
    if answered >= #tokens then wrk.thread:stop() end
  end
end
EOF

# CPU ticks of a process and its children's live threads: "user system".
ticks() {
  local user=0 sys=0 p u s
  for p in "$@" $(pgrep -P "$1" 2>/dev/null || true); do
    [ -r "/proc/$p/stat" ] || continue
    read -r u s < <(awk '{print $14, $15}' "/proc/$p/stat")
    user=$((user + u)) sys=$((sys + s))
  done
  echo "$user $sys"
}
hz=$(getconf CLK_TCK)
nginx_cpu=""
echo "wrk -t1 -c$conns -d${secs}s, $(nproc) cores, loopback; bare RSA-2048 verify in this run: ${bare} µs" >&2
printf '%-22s %10s %6s %6s %10s %9s %9s %9s\n' target "µs CPU/req" user sys "req/s" p50 p99 "CPU/nginx" >&2
run() { # name pid url [wrk args...]
  local name=$1 pid=$2 url=$3
  shift 3
  local before after r rps reqs p50 p99 cpu user sys
  before=$(ticks "$pid")
  local perf_pid=""
  if [ -n "${STRACE:-}" ] && [ "$name" = "$STRACE" ]; then
    timeout 3 strace -c -f -p "$pid" -o "${STRACE_OUT:-strace.txt}" 2>/dev/null &
  fi
  if [ -n "${PERF:-}" ] && [ "$name" = "$PERF" ]; then
    perf record -F 2000 ${PERF_CALLGRAPH:--g} -o "${PERF_OUT:-perf.data}" -p "$pid" -- sleep "$secs" 2>"${PERF_OUT:-perf.data}.log" &
    perf_pid=$!
  fi
  r=$(wrk -t1 -c"$conns" -d"${secs}s" --latency "$@" "$url")
  after=$(ticks "$pid")
  [ -z "$perf_pid" ] || wait "$perf_pid"
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$r")
  reqs=$(awk '/requests in/ {print $1}' <<<"$r")
  p50=$(awk '$1=="50%" {print $2}' <<<"$r")
  p99=$(awk '$1=="99%" {print $2}' <<<"$r")
  read -r user sys < <(awk -v a="$after" -v b="$before" -v n="$reqs" -v hz="$hz" 'BEGIN {
    split(a, x, " "); split(b, y, " ")
    printf "%.1f %.1f\n", (x[1] - y[1]) * 1e6 / hz / n, (x[2] - y[2]) * 1e6 / hz / n }')
  cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN {printf "%.1f", u + s}')
  [ "$name" = "nginx proxy_pass" ] && nginx_cpu=$cpu
  local ratio="-"
  [ -n "$nginx_cpu" ] && [ "$pid" != "$ngpid" ] && ratio=$(awk -v c="$cpu" -v n="$nginx_cpu" 'BEGIN {printf "%.2f", c / n}')
  printf '%-22s %10s %6s %6s %10.0f %9s %9s %9s\n' "$name" "$cpu" "$user" "$sys" "$rps" "$p50" "$p99" "$ratio" >&2
  if grep -q "Non-2xx" <<<"$r"; then
    printf '%-22s   (%s)\n' "" "$(grep Non-2xx <<<"$r" | xargs)" >&2
  fi
}
run "upstream direct" "${pids[0]}" "http://127.0.0.1:$up/api/orders/7"
# ROUNDS=n: nginx, the floor and claimgate's public and cached routes n
# times over, each round's ratios against that round's nginx (the
# machine's noise shows in the spread).
for _ in $(seq "${ROUNDS:-1}"); do
  run "nginx proxy_pass" "$ngpid" "http://127.0.0.1:$ng/api/orders/7"
  run "hyper floor" "$floorpid" "http://127.0.0.1:$floor_port/api/orders/7"
  run "cg public" "$cgpid" "http://127.0.0.1:$cg/public/7"
  run "cg cached RS256" "$cgpid" "http://127.0.0.1:$cg/api/orders/7" -H "Authorization: Bearer $token"
done
run "cg local limit" "$cgpid" "http://127.0.0.1:$cg/lim/orders/7" -H "Authorization: Bearer $token"
run "cg redis limit" "$cgpid" "http://127.0.0.1:$cg/rl/orders/7" -H "Authorization: Bearer $token"
if [ -n "${BASELINE:-}" ]; then
  run "BASELINE public" "$basepid" "http://127.0.0.1:$((base + 4))/public/7"
  run "BASELINE cached" "$basepid" "http://127.0.0.1:$((base + 4))/api/orders/7" -H "Authorization: Bearer $token"
  run "cg public (again)" "$cgpid" "http://127.0.0.1:$cg/public/7"
  run "cg cached (again)" "$cgpid" "http://127.0.0.1:$cg/api/orders/7" -H "Authorization: Bearer $token"
fi
# Every request a different valid token: one pass over the pool, ended
# when the pool is (or the seconds are); the cache's hits during it are
# printed (a pool the run went round more than once got cache help).
lookups() { curl -s "http://127.0.0.1:$adm/metrics" | awk -v r="result=\"$1\"" 'index($0, "claimgate_token_cache_lookups_total{" r "}") == 1 {print $2 + 0}'; }
hits_before=$(lookups hit) misses_before=$(lookups miss)
ONCE=1 TOKENS="$work/kit/pool.txt" run "cg pool $pool" "$cgpid" "http://127.0.0.1:$cg" -s "$work/tokens.lua"
echo "token cache during the pool run: $(($(lookups hit) - ${hits_before:-0})) hits, $(($(lookups miss) - ${misses_before:-0})) misses" >&2
run "cg forged sig" "$cgpid" "http://127.0.0.1:$cg/api/orders/7" -H "Authorization: Bearer $(cat "$work/kit/forged")"
fetches_before=$(curl -s "http://127.0.0.1:$adm/metrics" | awk '/^claimgate_jwks_fetches_total/ {s += $2} END {print s + 0}')
TOKENS="$work/kit/unknown.txt" run "cg unknown kids" "$cgpid" "http://127.0.0.1:$cg" -s "$work/tokens.lua"
fetches_after=$(curl -s "http://127.0.0.1:$adm/metrics" | awk '/^claimgate_jwks_fetches_total/ {s += $2} END {print s + 0}')
echo "JWKS fetches during the unknown-kid run: $((fetches_after - fetches_before)) (cooldown 30s, ${secs}s run)" >&2
echo "goals: pool <= nginx + 1.3 x bare = $(awk -v n="$nginx_cpu" -v b="$bare" 'BEGIN {printf "%.1f", n + 1.3 * b}') µs;" \
  "forged <= nginx + 1.25 x bare = $(awk -v n="$nginx_cpu" -v b="$bare" 'BEGIN {printf "%.1f", n + 1.25 * b}') µs" >&2

rss() { awk '/^VmRSS/ {printf "%.1f MiB", $2 / 1024}' "/proc/$cgpid/status"; }
cached=$(curl -s "http://127.0.0.1:$adm/metrics" | awk '/^claimgate_token_cache_entries/ {print $2}')
echo "claimgate RSS after the pool: $(rss), ${cached:-?} tokens cached" >&2
python3 benches/load/idle.py "$cg" 1000 30 >"$work/idle.out" &
idle=$!
pids+=($idle)
for _ in $(seq 600); do grep -q open "$work/idle.out" 2>/dev/null && break; sleep 0.1; done
sleep 1
echo "claimgate RSS with 1,000 idle keep-alive connections more: $(rss)" >&2
kill "$idle" 2>/dev/null || true
