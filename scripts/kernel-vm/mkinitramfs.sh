#!/usr/bin/env bash
# Stage 1 of the guest boot: a tiny initramfs (busybox-static + the modules needed to mount the
# host root over virtio-9p under a tmpfs overlay) for a kernel extracted by setup.sh.
# usage: mkinitramfs.sh KVER      (reads and writes $NETD_KVM_CACHE, default /var/cache/netd-kernel-vm)
set -euo pipefail
KVER=$1
CACHE=${NETD_KVM_CACHE:-/var/cache/netd-kernel-vm}
KROOT=$CACHE/k/$KVER
OUT=$CACHE/initramfs-$KVER.cpio.gz
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,dev,proc,sys,mods,lower,rw,newroot,state}
cp /bin/busybox "$W/bin/busybox"
for a in sh mount mkdir insmod switch_root cat ln echo poweroff; do ln -s busybox "$W/bin/$a"; done
# dependency-ordered module list; built-ins have no insmod line and are skipped
: > "$W/modlist"
for m in virtio_pci 9pnet_virtio 9p overlay; do
  modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" | awk '$1=="insmod"{print $2}'
done | awk '!seen[$0]++' | while read -r f; do
  b=$(basename "$f"); b=${b%.xz}; b=${b%.zst}
  # busybox insmod cannot read compressed modules (6.12 ships .xz)
  case "$f" in *.xz) xz -dc "$f" >"$W/mods/$b";; *.zst) zstd -qdc "$f" >"$W/mods/$b";; *) cp "$f" "$W/mods/$b";; esac
  echo "$b" >> "$W/modlist"
done
cat > "$W/init" <<'INIT'
#!/bin/sh
export PATH=/bin
mount -t proc proc /proc; mount -t sysfs sysfs /sys; mount -t devtmpfs devtmpfs /dev
for m in $(cat /modlist); do insmod /mods/$m || echo "stage1: insmod $m failed"; done
fail() { echo "stage1: $*"; poweroff -f; }
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmstate /state || fail "no vmstate share"
. /state/config            # KMODDIR STAGE2 RWDIRS, written by run-in-vm.sh
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=262144 hostroot /lower || fail "no hostroot share"
mount -t tmpfs -o mode=755 tmpfs /rw && mkdir -p /rw/u /rw/w
mount -t overlay -o lowerdir=/lower,upperdir=/rw/u,workdir=/rw/w overlay /newroot || fail "overlay failed"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
mkdir -p /newroot/run/vmstate && mount --move /state /newroot/run/vmstate
i=0
for d in $RWDIRS; do
  mkdir -p "/newroot$d"
  mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 "rw$i" "/newroot$d" || fail "rw share $d"
  i=$((i+1))
done
mkdir -p /newroot/usr/lib/modules
ln -sfn "$KMODDIR" "/newroot/usr/lib/modules/$(cat /proc/sys/kernel/osrelease)"
for f in dev proc sys; do mount --move /$f /newroot/$f; done
exec switch_root /newroot /bin/bash "$STAGE2"
INIT
chmod +x "$W/init"
(cd "$W" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$OUT"
echo "$OUT: $(du -h "$OUT" | cut -f1), modules: $(tr '\n' ' ' < "$W/modlist")"
