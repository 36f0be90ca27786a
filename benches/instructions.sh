#!/usr/bin/env bash
# Instructions per request, counted by valgrind's callgrind: a figure that
# does not move with the machine's load, for before/after comparisons of
# user-space work (the kernel's part is not counted; see benches/load.sh
# for CPU time).
#
#   bash benches/instructions.sh [requests=2000] BINARY...
#
# A BINARY named `nginx` or `floor` counts, for reference, nginx as bare
# proxy (one worker, no master, access log on) or the bare hyper proxy of
# benches/load/floor.rs, on the public route only.
#
# Each binary serves the same config (one worker thread, JSON access log
# on) under callgrind, with an nginx upstream. After 300 warm-up requests
# the counters are zeroed; then REQUESTS requests on one keep-alive
# connection go to the public route and REQUESTS to the cached-token route
# (RS256, `role` rule, 4 claim headers), each dumped on its own. Prints
# instructions per request for each binary and target.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-2000}
shift || true
[ $# -gt 0 ] || { echo "usage: benches/instructions.sh [requests] BINARY..." >&2; exit 2; }
command -v valgrind >/dev/null || { echo "valgrind is missing" >&2; exit 1; }
bash scripts/install-deps.sh --bench
cargo build --release --quiet --example loadkit --example hyperfloor
source benches/load/work.sh

./target/release/examples/loadkit "$work/kit" 1 >/dev/null
chmod -R a+rX "$work/kit"
base=$((20000 + RANDOM % 20000))
up=$base cg=$((base + 2)) adm=$((base + 3))
source benches/load/setup.sh
start_upstream
cg_config "workers: 1"
bench_policy >"$work/cg/policies/bench.yaml"
token=$(cat "$work/kit/token")

# Sends COUNT requests to PATH on one keep-alive connection; all must be 200.
send() { # count path [token]
  python3 - "$cg" "$@" <<'EOF'
import http.client, sys
port, count, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
headers = {"Authorization": "Bearer " + sys.argv[4]} if len(sys.argv) > 4 else {}
c = http.client.HTTPConnection("127.0.0.1", port)
for _ in range(count):
    c.request("GET", path, headers=headers)
    r = c.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"{path}: {r.status}")
EOF
}

# The Ir total of the newest callgrind dump in DIR.
total() {
  local f
  f=$(ls -t "$1"/callgrind.out.* | head -1)
  awk '/^(summary|totals):/ {print $2; exit}' "$f"
}

printf '%-40s %14s %14s\n' "binary ($n requests each)" "public Ir/req" "cached Ir/req"
for bin in "$@"; do
  out="$work/cg-out"
  rm -rf "$out" && mkdir -p "$out"
  ready="http://127.0.0.1:$adm/readyz" reference=""
  case "$bin" in
    nginx)
      reference=1 ready="http://127.0.0.1:$cg/public/0"
      nginx_proxy 1 "$cg"
      sed -i 's/^daemon off;/daemon off;\nmaster_process off;/' "$work/nginx/proxy.conf"
      cmd=(/usr/sbin/nginx -c "$work/nginx/proxy.conf" -e "$work/nginx/proxy.err") ;;
    floor)
      reference=1 ready="http://127.0.0.1:$cg/public/0"
      cmd=(./target/release/examples/hyperfloor "127.0.0.1:$cg" "127.0.0.1:$up" 1) ;;
    *) cmd=("$bin" run --config "$work/cg/claimgate.yaml") ;;
  esac
  valgrind --tool=callgrind --compress-strings=no --callgrind-out-file="$out/callgrind.out.%p" \
    "${cmd[@]}" >/dev/null 2>"$work/cg/stderr.log" &
  vpid=$!
  for _ in $(seq 1 300); do
    curl -fs "$ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -fs "$ready" >/dev/null || { cat "$work/cg/stderr.log" >&2; exit 1; }
  send 300 /public/1
  [ -n "$reference" ] || send 300 /api/orders/7 "$token"
  callgrind_control -z "$vpid" >/dev/null 2>&1
  send "$n" /public/1
  callgrind_control -d "$vpid" >/dev/null 2>&1
  sleep 1
  public=$(total "$out")
  # KEEP=dir keeps the dumps (NAME.public.callgrind, NAME.cached.callgrind),
  # for callgrind_annotate.
  [ -z "${KEEP:-}" ] || { mkdir -p "$KEEP"; cp "$(ls -t "$out"/callgrind.out.* | head -1)" "$KEEP/$(basename "$bin").public.callgrind"; }
  if [ -z "$reference" ]; then
    callgrind_control -z "$vpid" >/dev/null 2>&1
    send "$n" /api/orders/7 "$token"
    callgrind_control -d "$vpid" >/dev/null 2>&1
    sleep 1
    cached=$(($(total "$out") / n))
    [ -z "${KEEP:-}" ] || cp "$(ls -t "$out"/callgrind.out.* | head -1)" "$KEEP/$(basename "$bin").cached.callgrind"
  else
    cached="-"
  fi
  kill "$vpid" 2>/dev/null || true
  wait "$vpid" 2>/dev/null || true
  printf '%-40s %14d %14s\n' "$bin" $((public / n)) "$cached"
done
