#!/usr/bin/env bash
# The kernel-VM test tier: the suites that need kernel features this machine's kernel lacks
# (ESP/GCM for encryption) plus a smoke run of the core, DNS and VIP suites, each inside a
# qemu VM booting stock Debian kernels (6.1, the oldest supported, and 6.12).
#
# usage: tier.sh [LOG]   appends cargo's "test result:" lines to LOG (scripts/test.sh counts
#                        them); a tier that cannot run prints why and counts as skipped.
# env:   NETD_KVM_SUITES_6_1 / NETD_KVM_SUITES_6_12  override the suite lists
#        NETD_KVM_KERNELS="6.1." or "6.12"           only the kernel whose version starts so
#        NETD_KVM_SKIP=1                             skip the tier (counted as skipped)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LOG=${1:-/dev/null}
cd "$ROOT"

skip() {
  echo "kernel-VM tier SKIPPED: $*"
  echo "test result: ok. 0 passed; 0 failed; 1 ignored; (kernel-VM tier skipped: $*)" >> "$LOG"
  exit 0
}
[ -z "${NETD_KVM_SKIP:-}" ] || skip "NETD_KVM_SKIP is set"
[ "$(id -u)" = 0 ] || skip "needs root"
kernels=$("$HERE/setup.sh") || skip "setup failed (qemu or kernel packages unavailable; see above)"
[ -n "$kernels" ] || skip "no kernel could be prepared"

# Test binaries as cargo built them on the host (name -> path).
declare -A BIN
while read -r name path; do BIN[$name]=$path; done < <(
  cargo test --release -p netd-tests --no-run --message-format=json 2>/dev/null |
  jq -r 'select(.executable != null and (.target.kind | index("test"))) | "\(.target.name) \(.executable)"')
[ -n "${BIN[encryption]:-}" ] || skip "test binaries not found (cargo test --no-run failed)"

# Budget: the whole tier stays within ~35 minutes on an idle machine (TCG is slow: every
# ip/nft command costs ~0.5 s in the guest). Suites run in the order given; one is started only
# while at least VM_MIN_LEFT (360 s, more than the slowest smoke suite took here) of the
# kernel's budget is left, the rest are reported as skipped (with the reason); one killed by
# the budget fails. 6.1, the oldest kernel supported, runs the whole encryption suite first,
# then the smoke tests of the VIP (nftables LB, the backend for kernels without TCX; with the
# check that netd refuses the eBPF backend there), core (dataplane) and DNS suites; 6.12 the
# encryption end-to-end test, the IPVS LB suite (the whole behaviour suite of the third LB
# backend: the development kernel has no IPVS; 646-871 s of guest time), then the VIP (eBPF
# LB), DNS and core smoke tests: core and DNS in the opposite order, so that on a slow machine
# each still runs on one kernel at least. The smoke tests are small (two nodes, a few
# containers); the whole VIP behaviour suites run on the host kernel.
# Budgets: a clean-clone CI run took 507 s on 6.1 (encryption, core, DNS) and 989 s on 6.12 (the
# IPVS suite 871 s); the VIP smoke suites took 121 s (6.1) and 158 s (6.12) here. The last suite
# of each kernel has to start with VM_MIN_LEFT to spare: ~600 + 360 + 35 (boot) on 6.1,
# ~1350 + 360 + 35 on 6.12.
DATAPLANE=dataplane:containers_on_different_nodes_ping_and_exchange_tcp
DNS=dns:names_services_and_tasks_resolve_across_nodes
VIP_NFT=lb:nftables_vip_smoke,ebpf_backend_needs_tcx
VIP_EBPF=lb:ebpf_vip_smoke,ebpf_backend_needs_tcx
IPVS=lb:ipvs_service_load_balancing
SUITES_6_1=${NETD_KVM_SUITES_6_1:-"encryption $VIP_NFT $DATAPLANE $DNS"}
SUITES_6_12=${NETD_KVM_SUITES_6_12:-"encryption:underlay_carries_only_esp_for_the_encrypted_network,encrypted_network_is_refused_when_the_kernel_cannot_encrypt $IPVS $VIP_EBPF $DNS $DATAPLANE"}
BUDGET_6_1=${NETD_KVM_BUDGET_6_1:-1000}
BUDGET_6_12=${NETD_KVM_BUDGET_6_12:-1750}

resolve() {  # "name[:tests]" -> "path[:tests]"
  local out=() s name
  for s in $1; do
    name=${s%%:*}
    [ -n "${BIN[$name]:-}" ] || { echo "tier: no test binary $name" >&2; continue; }
    out+=("${BIN[$name]}${s#"$name"}")
  done
  echo "${out[@]}"
}

failed=0
for k in $kernels; do
  if [ -n "${NETD_KVM_KERNELS:-}" ] && [[ $k != "$NETD_KVM_KERNELS"* ]]; then continue; fi
  case $k in 6.1.*) suites=$SUITES_6_1; budget=$BUDGET_6_1;; 6.12.*) suites=$SUITES_6_12; budget=$BUDGET_6_12;; *) continue;; esac
  echo "== kernel-VM tier: $k ($(date -u +%T))"
  start=$(date +%s)
  out=$(mktemp)
  # shellcheck disable=SC2046
  # the guest stops starting suites when its budget (uptime; boot and power-off need a margin) runs short
  VM_BUDGET=$(( budget - 35 )) VM_MIN_LEFT=${VM_MIN_LEFT:-360} NETD_BIN="$ROOT/target/release/netd" "$HERE/run-in-vm.sh" -k "$k" -t "$budget" -- \
    "$HERE/guest-suites.sh" $(resolve "$suites") 2>&1 | tee "$out"
  rc=${PIPESTATUS[0]}
  grep -a '^test result:' "$out" | sed "s/\$/ (kernel $k)/" >> "$LOG"
  if [ "$rc" = 125 ]; then
    echo "kernel-VM tier: $k VM died or exceeded its ${budget}s budget"
    echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; (kernel $k: VM died or timed out)" >> "$LOG"
  fi
  [ "$rc" = 0 ] || failed=1
  rm -f "$out"
  echo "== kernel-VM tier: $k done in $(( $(date +%s) - start ))s (rc $rc)"
done
exit $failed
