#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (Debian's prometheus package), then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cargo test --locked "$@"
