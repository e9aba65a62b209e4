#!/usr/bin/env bash
# Runs one command inside a throw-away qemu VM booting a stock Debian kernel prepared by
# setup.sh. The host root is the guest's root (read-only 9p + tmpfs overlay: guest writes are
# discarded); the RWDIRs (default: the current directory) are shared read-write.
# usage: run-in-vm.sh [-k KVER] [-m MEM] [-c CPUS] [-t TIMEOUT] [-M "mod1 mod2"] [-w RWDIR]... -- cmd...
# Exits with the command's status; 125 when the VM died without reporting one (panic, timeout).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NETD_KVM_CACHE:-/var/cache/netd-kernel-vm}
KVER= MEM=2G CPUS=2 TIMEOUT=900 MODULES= RWDIRS=()
while getopts k:m:c:t:M:w: o; do case $o in
  k) KVER=$OPTARG;; m) MEM=$OPTARG;; c) CPUS=$OPTARG;; t) TIMEOUT=$OPTARG;; M) MODULES=$OPTARG;;
  w) RWDIRS+=("$(realpath "$OPTARG")");; *) exit 2;; esac; done
shift $((OPTIND-1)); [ "${1:-}" = -- ] && shift
[ $# -gt 0 ] || { echo "usage: $0 [opts] -- cmd..." >&2; exit 2; }
[ -n "$KVER" ] || KVER=$(ls -1 "$CACHE/k" 2>/dev/null | sort -V | head -n1)
[ -n "$KVER" ] && [ -f "$CACHE/vmlinux-$KVER" ] || { echo "run-in-vm: no kernel $KVER in $CACHE (run setup.sh)" >&2; exit 125; }
[ ${#RWDIRS[@]} -gt 0 ] || RWDIRS=("$PWD")
# /dev/kvm alone is not enough (a PVM-backed /dev/kvm cannot run stock kernels): KVM only with vmx/svm.
# Without KVM: single-threaded TCG (all vCPUs on one host thread). Multi-threaded TCG let a
# vCPU run a stale copy of kernel text while another patched it: the 6.12 guest died with
# "Oops: int3" in nf_ct_get_id (a once-key being patched under a conntrack dump), failing CI.
# Measured on this machine kind: the 6.1 tier took 463 s single-threaded vs 403-515 s multi.
if [ -w /dev/kvm ] && grep -qwE 'vmx|svm' /proc/cpuinfo; then ACC=(-accel kvm -cpu host); else ACC=(-accel "tcg,thread=${NETD_KVM_TCG_THREAD:-single}" -cpu max); fi

S=$(mktemp -d /tmp/netd-vm.XXXXXX); trap 'rm -rf "$S"' EXIT
printf '%q ' "$@" > "$S/cmd.sh"; echo >> "$S/cmd.sh"
{ export -p | grep -vE '^declare -x (_|SHLVL|PWD|OLDPWD|TERM)='
  printf 'export VM_CWD=%q VM_MODULES=%q TERM=dumb\n' "$PWD" "$MODULES"
} > "$S/env.sh"
printf 'KMODDIR=%q\nSTAGE2=%q\nRWDIRS=%q\n' "$CACHE/k/$KVER/lib/modules/$KVER" "$HERE/guest-init.sh" "${RWDIRS[*]}" > "$S/config"

FS=(-fsdev "local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap"
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=vmstate,path=$S,security_model=none"
    -device virtio-9p-pci,fsdev=vmstate,mount_tag=vmstate)
i=0; for d in "${RWDIRS[@]}"; do
  FS+=(-fsdev "local,id=rw$i,path=$d,security_model=none,multidevs=remap" -device "virtio-9p-pci,fsdev=rw$i,mount_tag=rw$i")
  i=$((i+1)); done

set +e
timeout --foreground -k 5 "$TIMEOUT" qemu-system-x86_64 -nodefaults -no-user-config -no-reboot \
  -machine pc "${ACC[@]}" -m "$MEM" -smp "$CPUS" -display none \
  -chardev stdio,id=con,signal=off -serial chardev:con \
  -kernel "$CACHE/vmlinux-$KVER" -initrd "$CACHE/initramfs-$KVER.cpio.gz" \
  -append "console=ttyS0 panic=-1 rdinit=/init quiet loglevel=1 ${VM_APPEND:-}" \
  "${FS[@]}"
qrc=$?
set -e
if [ -s "$S/rc" ]; then exit "$(cat "$S/rc")"; fi
echo "run-in-vm: VM ($KVER) exited (qemu rc=$qrc) without reporting a status" >&2
exit 125
