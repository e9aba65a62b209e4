#!/bin/bash
# Stage 2 of the guest boot: PID 1 on the overlay of the host root. Runs the command that
# run-in-vm.sh left in /run/vmstate/cmd.sh, stores its exit status in /run/vmstate/rc, powers off.
S=/run/vmstate
mkdir -p /dev/pts /dev/shm /tmp /run/netns /run/netd
mount -t devpts -o mode=620,ptmxmode=666 devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
# cgroup2 where the host has it (/sys/fs/cgroup/unified: the eBPF LB tests' cgroups go there)
mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup && mkdir -p /sys/fs/cgroup/unified
mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
echo vm > /proc/sys/kernel/hostname
ip link set lo up
. "$S/env.sh"            # the host's environment (PATH, NETD_BIN, ...)
for m in $VM_MODULES; do modprobe "$m" || echo "guest-init: modprobe $m failed" >&2; done
cd "$VM_CWD" 2>/dev/null || cd /
bash "$S/cmd.sh" </dev/console >/dev/console 2>&1
echo "$?" > "$S/rc"
sync
echo o > /proc/sysrq-trigger   # immediate power off; -no-reboot covers a panic
sleep 10
