#!/usr/bin/env bash
# Runs inside the VM (see tier.sh): test binaries built on the host, each with optional exact
# test names. usage: guest-suites.sh BINARY[:TEST[,TEST...]]...
# Prints cargo's own "test result:" line per binary; exits non-zero if any failed.
# VM_BUDGET (seconds of guest uptime, optional): a suite is not started with less than
# VM_MIN_LEFT (120) seconds left; it is reported as skipped, with the reason. A suite that
# runs out of time is killed and counts as failed.
set -uo pipefail
up() { cut -d' ' -f1 /proc/uptime | cut -d. -f1; }
echo "== kernel $(uname -r): $(nproc) vCPU, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"
# Modules the suites need; the rest (nft, gcm, seqiv...) the kernel loads on demand.
modprobe -a esp4 xfrm_user vxlan veth bridge 2>&1 | sed 's/^/modprobe: /'
export NETD_TESTS_TIME_SCALE=${NETD_TESTS_TIME_SCALE:-8}
BUDGET=${VM_BUDGET:-100000} MIN_LEFT=${VM_MIN_LEFT:-120}
rc=0
for spec in "$@"; do
  bin=${spec%%:*}
  # --include-ignored: the tests that need this kernel's ESP/GCM are #[ignore]d on the host.
  args=(--test-threads=1 --nocapture --include-ignored)
  if [[ $spec == *:* ]]; then
    IFS=, read -ra tests <<< "${spec#*:}"
    args+=(--exact "${tests[@]}")
  fi
  name=$(basename "$bin"); name=${name%-*}
  left=$(( BUDGET - $(up) ))
  if [ "$left" -lt "$MIN_LEFT" ]; then
    n=$("$bin" "${args[@]:2}" --list 2>/dev/null | grep -c ': test$')
    echo "== $name: SKIPPED, VM time budget spent (${left}s left)"
    echo "test result: ok. 0 passed; 0 failed; $n ignored; (suite $name skipped: VM time budget)"
    continue
  fi
  echo "== $name ${args[*]:2} ($(up)s uptime, ${left}s left)"
  timeout -k 5 "$left" "$bin" "${args[@]}"
  s=$?
  if [ "$s" -ne 0 ]; then
    rc=1
    if [ "$s" -eq 124 ]; then
      echo "== $name: killed, out of VM time (counts as failed)"
      echo "test result: FAILED. 0 passed; 1 failed; 0 ignored; (suite $name killed: VM time budget)"
    fi
  fi
done
echo "== guest done ($(up)s)"
exit $rc
