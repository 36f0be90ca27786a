#!/usr/bin/env bash
# Installs the Debian packages the tests and benchmarks use, if missing:
#   prometheus  (prometheus + promtool: tests/prometheus.rs)
#   wrk         (benches/load.sh, only with --bench)
# Idempotent; refreshes the package lists only when an install fails.
set -euo pipefail
pkgs=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || pkgs+=(prometheus)
if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null || pkgs+=(wrk)
fi
[ ${#pkgs[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
install() {
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
}
echo "installing ${pkgs[*]} (Debian packages)" >&2
install 2>/dev/null || { $sudo apt-get update -qq >/dev/null && install; }
