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
LOG=$(mktemp /tmp/netd-test.XXXXXX)
trap 'rm -f "$LOG"' EXIT
cargo test --release --workspace -- --test-threads="${NETD_TEST_THREADS:-2}" 2>&1 | tee "$LOG"
echo "== demo (the README's first command, non-interactive)"
CI=1 scripts/demo.sh
echo "== kernel-VM tier (stock Debian 6.1 and 6.12 kernels under qemu: encryption, smoke of core/DNS/VIP)"
vm_rc=0
scripts/kernel-vm/tier.sh "$LOG" || vm_rc=$?
# One closing line for the whole run (cargo prints one per test binary, doc tests last).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i; if ($(i+1) ~ /^ignored/) g += $i } }
     END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, g }' "$LOG"
exit "$vm_rc"
