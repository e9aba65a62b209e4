#!/usr/bin/env bash
# `netd inspect network` speed: a two-node cluster (the test harness: namespaces, real netd
# processes), one network with ENDPOINTS local endpoints on node 1 and as many on node 2
# (remote: FDB and neighbor entries on node 1), then `netd inspect network` on node 1, human
# and --json, against the by-hand baseline (bridge fdb + ip neigh of the VXLAN device, the
# local and remote endpoint tables from the API), RUNS times each; medians and the ratio.
# Target: < 1 s with 1000 endpoints.
#
# Needs root and what scripts/setup.sh installs. Uses target/release/netd (or $NETD_BIN);
# builds it if missing. Environment: ENDPOINTS (1000), RUNS (7).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
export NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
[ -x "$NETD_BIN" ] || cargo build --release -p netd
INSPECT_BENCH_ENDPOINTS=${ENDPOINTS:-1000} INSPECT_BENCH_RUNS=${RUNS:-7} \
  cargo test --release -p netd-tests --test inspect -- --ignored --nocapture \
  --exact inspect_network_bench 2>&1 | grep -E '^(inspect network|attached)|panicked|FAILED'
