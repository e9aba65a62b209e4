#!/usr/bin/env bash
# Installs everything netd's build, demo and tests need on a fresh Debian bookworm machine (root).
# Idempotent: packages already present are skipped quickly.
set -euo pipefail
PKGS=(iproute2 nftables tcpdump iperf3 iputils-ping curl jq util-linux procps psmisc dnsutils dnsmasq-base
      ca-certificates build-essential pkg-config python3
      podman runc containernetworking-plugins busybox-static iptables
      clang libbpf-dev bpftool conntrack)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -f "$HOME/.cargo/env" ] && . "$HOME/.cargo/env"
fi
command -v cargo >/dev/null 2>&1 || { echo "setup: cargo not found; install Rust (rustup) first" >&2; exit 1; }
# named network namespaces live here; the test rig and netd both need it
mkdir -p /run/netns /run/netd
echo "setup: ok"
