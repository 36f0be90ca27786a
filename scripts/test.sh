#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need
# (scripts/install-deps.sh), then runs every test with the project's
# virtualenv first on PATH, so the tests' `python3` is the one with PyJWT.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
export PATH="$PWD/.venv/bin:$PATH"
cargo test --locked "$@"
