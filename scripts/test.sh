#!/usr/bin/env bash
# Installs what is missing, builds, and runs every test: formatting and lint, unit tests, and
# the multi-node integration tests (real netd processes in network namespaces; needs root).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
scripts/setup.sh
echo "== format and lint"
cargo fmt --all -- --check
cargo clippy --release --workspace --all-targets -q -- -D warnings
echo "== build"
cargo build --release --workspace
echo "== tests"
export NETD_BIN="$ROOT/target/release/netd"
cargo test --release --workspace -- --test-threads="${NETD_TEST_THREADS:-2}"
