#!/usr/bin/env bash
# Installs what the tests and benchmarks use, if missing, and says what it
# installs:
#   .venv/        a virtualenv (PEP 668: never the system Python) with, from
#                 PyPI: PyJWT and cryptography (tests/interop.rs); grpcio and
#                 xds-protos, Envoy's own generated stubs (tests/ext_authz.rs);
#                 kubernetes-validate, its schemas included (tests/deploy.rs);
#                 websockets, a real WebSocket server and client (tests/websocket.rs);
#                 jsonschema and PyYAML, to check `claimgate schema` (tests/schema.rs)
#   tests/idp/    npm's oidc-provider, an OpenID Certified provider, pinned by
#                 tests/idp/package-lock.json (tests/rotation.rs)
#   prometheus    Debian package (prometheus + promtool: tests/prometheus.rs)
#   nodejs, npm   Debian packages, when node is missing
#   nginx-light   Debian package: nginx with auth_request (tests/nginx.rs, and
#                 the bare-proxy baseline of benches/load.sh)
#   kubectl       Debian package, with kustomize built in (tests/deploy.rs)
#   redis-server  Debian package (tests/quota.rs: the fleet's shared limits)
#   wrk           Debian package (benches/load.sh, only with --bench)
# Idempotent; refreshes the package lists only when an install fails.
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
pkgs=()
command -v prometheus >/dev/null && command -v promtool >/dev/null || pkgs+=(prometheus)
command -v node >/dev/null && command -v npm >/dev/null || pkgs+=(nodejs npm)
python3 -m venv --help >/dev/null 2>&1 || pkgs+=(python3-venv)
[ -x /usr/sbin/nginx ] || pkgs+=(nginx-light)
command -v kubectl >/dev/null || pkgs+=(kubectl)
command -v redis-server >/dev/null || pkgs+=(redis-server)
if [ "${1:-}" = "--bench" ]; then
  command -v wrk >/dev/null || pkgs+=(wrk)
fi
if [ ${#pkgs[@]} -gt 0 ]; then
  install() {
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
  }
  echo "install-deps: Debian packages: ${pkgs[*]}" >&2
  install 2>/dev/null || { $sudo apt-get update -qq >/dev/null && install; }
fi

if ! .venv/bin/python -c 'import jwt, cryptography, grpc, envoy.service.auth.v3.external_auth_pb2_grpc, kubernetes_validate, websockets, jsonschema, yaml' 2>/dev/null; then
  echo "install-deps: virtualenv .venv with PyJWT, cryptography, grpcio, xds-protos, kubernetes-validate, websockets, jsonschema, PyYAML (PyPI)" >&2
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check \
    'pyjwt[crypto]>=2.8,<3' 'grpcio>=1.60,<2' 'xds-protos>=1.60,<2' \
    'kubernetes-validate>=1.30,<2' 'websockets>=13,<16' 'jsonschema>=4.18,<5' 'pyyaml>=6,<7' >/dev/null
fi

if [ ! -d tests/idp/node_modules/oidc-provider ]; then
  echo "install-deps: oidc-provider (npm, tests/idp)" >&2
  (cd tests/idp && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
fi
