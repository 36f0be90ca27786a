#!/usr/bin/env bash
# Installs what the tests and benchmarks use, if missing:
#   prometheus  Debian package (prometheus + promtool: tests/prometheus.rs)
#   PyJWT       from PyPI, with `cryptography` (tests/interop.rs)
#   wrk         Debian package (benches/load.sh, only with --bench)
# Idempotent; refreshes the package lists only when an install fails.
set -euo pipefail

if ! python3 -c 'import jwt, cryptography' 2>/dev/null; then
  echo "installing PyJWT and cryptography (PyPI)" >&2
  python3 -m pip install -q --disable-pip-version-check 'pyjwt[crypto]>=2.8,<3' >/dev/null
fi
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
