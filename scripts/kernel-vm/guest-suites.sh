#!/usr/bin/env bash
# Runs inside the VM (see tier.sh): test binaries built on the host, each with optional exact
# test names. usage: guest-suites.sh BINARY[:TEST[,TEST...]]...
# Prints cargo's own "test result:" line per binary; exits non-zero if any failed.
set -uo pipefail
echo "== kernel $(uname -r): $(nproc) vCPU, $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) MiB"
# Modules the suites need; the rest (nft, gcm, seqiv...) the kernel loads on demand.
modprobe -a esp4 xfrm_user vxlan veth bridge 2>&1 | sed 's/^/modprobe: /'
export NETD_TESTS_TIME_SCALE=${NETD_TESTS_TIME_SCALE:-8}
rc=0
for spec in "$@"; do
  bin=${spec%%:*}
  args=(--test-threads=1)
  if [[ $spec == *:* ]]; then
    IFS=, read -ra tests <<< "${spec#*:}"
    args+=(--exact "${tests[@]}")
  fi
  echo "== $(basename "$bin") ${args[*]:1} ($(cut -d' ' -f1 /proc/uptime)s)"
  "$bin" "${args[@]}" || rc=1
done
echo "== guest done ($(cut -d' ' -f1 /proc/uptime)s)"
exit $rc
