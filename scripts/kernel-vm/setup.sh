#!/usr/bin/env bash
# Kernel-VM tier, one-time setup (root, Debian bookworm): qemu and the guest tools, plus two stock
# Debian kernels (the distribution's 6.1 and the newest 6.12 apt knows) extracted into a cache
# directory that survives between runs, so a CI re-run skips the download.
# usage: setup.sh          cache: $NETD_KVM_CACHE (default /var/cache/netd-kernel-vm)
# Prints the kernel versions that are ready, one per line, on stdout; progress goes to stderr.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${NETD_KVM_CACHE:-/var/cache/netd-kernel-vm}
mkdir -p "$CACHE/debs" "$CACHE/k"
log() { echo "kernel-vm setup: $*" >&2; }

PKGS=(qemu-system-x86 busybox-static kmod ipvsadm tcpdump iproute2 iperf3 curl xz-utils zstd python3 cpio)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
updated=
apt_update() { [ -n "$updated" ] || { apt-get -o DPkg::Lock::Timeout=900 update -qq >&2; updated=1; }; }
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=900 install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# A kernel is ready when its modules, its uncompressed vmlinux and its initramfs are in the cache.
ready() { [ -f "$CACHE/k/$1/lib/modules/$1/modules.dep" ] && [ -f "$CACHE/vmlinux-$1" ] && [ -f "$CACHE/initramfs-$1.cpio.gz" ]; }
cached_series() { ls -1 "$CACHE/k" 2>/dev/null | grep "^$1\." | sort -V | tail -n1 || true; }

want=()
for series in 6.1 6.12; do
  k=$(cached_series "$series")
  if [ -n "$k" ] && ready "$k"; then want+=("$k"); continue; fi
  apt_update
  case $series in
    6.1)  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-6\.1\./{print $2}' | head -n1) ;;
    6.12) pkg=$(apt-cache search --names-only '^linux-image-6\.12\.[0-9.+a-z-]*-amd64$' | awk '{print $1}' \
                | grep -v -e unsigned -e '-rt-' -e cloud -e dbg | sort -V | tail -n1) ;;
  esac
  [ -n "$pkg" ] || { log "no $series kernel package known to apt"; continue; }
  kver=${pkg#linux-image-}
  if ! ls "$CACHE/debs/${pkg}"_*.deb >/dev/null 2>&1; then
    log "downloading $pkg"
    (cd "$CACHE/debs" && apt-get download "$pkg" >&2)
  fi
  rm -rf "$CACHE/k/$kver"
  dpkg -x "$CACHE/debs/${pkg}"_*.deb "$CACHE/k/$kver"
  depmod -b "$CACHE/k/$kver" "$kver"                    # modules.dep is not shipped in the .deb
  # qemu boots an uncompressed vmlinux (PVH entry) directly: no emulated decompression under TCG.
  python3 - "$CACHE/k/$kver/boot/vmlinuz-$kver" "$CACHE/vmlinux-$kver" <<'PY'
import sys, lzma, subprocess
d = open(sys.argv[1], 'rb').read()
i = d.find(b'\xfd7zXZ\x00')
if i >= 0:
    out = lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(d[i:])
else:
    out = subprocess.run(['zstd', '-dc'], input=d[d.find(b'\x28\xb5\x2f\xfd'):], capture_output=True).stdout
assert out[:4] == b'\x7fELF', "no ELF image inside vmlinuz"
open(sys.argv[2], 'wb').write(out)
PY
  "$HERE/mkinitramfs.sh" "$kver" >&2
  want+=("$kver")
done
printf '%s\n' "${want[@]}"
