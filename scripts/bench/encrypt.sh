#!/usr/bin/env bash
# Encryption benchmark: two netd nodes in network namespaces, an encrypted and a plain overlay
# network side by side, measured in the same run:
#
#  1. TCP throughput (iperf3) container -> container over the encrypted network vs. the plain
#     one, interleaved (RUNS runs each, median and ratio; target ratio >= 0.5).
#  2. Packets lost during a key rotation under load: a UDP stream (iperf3 -u, RATE) over the
#     encrypted network while the key rotates ([old,new] -> [new,old] -> [new] on both nodes),
#     against the same stream without rotation; plus a 100/s ping across the rotation.
#     Target: 0 lost to the rotation.
#
# The kernel must have ESP/GCM: when this one lacks it, the script re-runs itself inside the
# kernel-VM (scripts/kernel-vm/, stock Debian 6.1; numbers there are under emulation).
# Environment: RUNS (3), SECONDS_PER_RUN (5), RATE (UDP rate, 20M), KVER (VM kernel), KEEP=1.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
RATE=${RATE:-20M}
[ "$(id -u)" = 0 ] || { echo "encrypt.sh: needs root (network namespaces)" >&2; exit 1; }
[ -x "$NETD_BIN" ] || (cd "$ROOT" && cargo build --release -p netd)

if ! unshare --net ip xfrm state add src 192.0.2.1 dst 192.0.2.2 proto esp spi 0x100 mode transport \
     aead 'rfc4106(gcm(aes))' 0x1111111111111111111111111111111111111111 128 2>/dev/null; then
  [ -z "${NETD_BENCH_IN_VM:-}" ] || { echo "encrypt.sh: no ESP/GCM even in the VM" >&2; exit 1; }
  echo "encrypt.sh: this kernel ($(uname -r)) has no ESP/GCM; running in the kernel VM" >&2
  kernels=$("$ROOT/scripts/kernel-vm/setup.sh")
  KVER=${KVER:-$(echo "$kernels" | head -n1)}
  exec "$ROOT/scripts/kernel-vm/run-in-vm.sh" -k "$KVER" -t 1500 -M "esp4 xfrm_user vxlan veth bridge" -- \
    env NETD_BENCH_IN_VM=1 NETD_BIN="$NETD_BIN" RUNS="$RUNS" SECONDS_PER_RUN="$SECONDS_PER_RUN" RATE="$RATE" \
    "$ROOT/scripts/bench/encrypt.sh"
fi

P="e$(printf '%04x' $(( (RANDOM << 1 ^ $$) & 0xffff )))"
DIR=$(mktemp -d "/tmp/netd-bench-$P.XXXX")
RIG=$P RIG_NET=78 RIG_DIR=$DIR NETD_BIN=$NETD_BIN
. "$ROOT/scripts/lib/rig.sh"
trap 'rig_cleanup' EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }
K1=bench-esp-key-one-0123456789 K2=bench-esp-key-two-0123456789

keys() { local n; for n in 1 2; do api "$n" PUT /v1/cluster/encryption-keys "{\"keys\":[$1]}" >/dev/null; done; }

log "setting up 2 nodes (prefix $P), encrypted and plain networks"
rig_underlay
rig_node 1 2
rig_node 2 2
for n in 1 2; do
  api "$n" PUT /v1/networks/secure '{"subnet":"10.250.1.0/24","vni":4951,"encrypted":true}' >/dev/null
  api "$n" PUT /v1/networks/plain '{"subnet":"10.250.2.0/24","vni":4952}' >/dev/null
done
keys "\"$K1\""
ip netns add "$P-ca"; ip netns add "$P-cb"
attach() { api "$1" PUT "/v1/endpoints/$2-$3" "{\"network\":\"$3\",\"netns\":\"/run/netns/$2\",\"ifname\":\"$4\",\"name\":\"$2-$3\"}" | jq -r .ip; }
attach 1 "$P-ca" secure eth0 >/dev/null; SEC_B=$(attach 2 "$P-cb" secure eth0)
attach 1 "$P-ca" plain eth1 >/dev/null;  PLAIN_B=$(attach 2 "$P-cb" plain eth1)
for ip in "$SEC_B" "$PLAIN_B"; do
  for i in $(seq 600); do
    ip netns exec "$P-ca" ping -c1 -W1 -q "$ip" >/dev/null 2>&1 && break
    [ "$i" = 600 ] && { log "overlay to $ip never came up"; exit 1; }
    sleep 0.2
  done
done

# iperf_run SERVER_IP [iperf3 client args...]: one run in the containers, prints the JSON
iperf_run() {
  local ip=$1; shift
  ip netns exec "$P-cb" iperf3 -s -1 -B "$ip" -p 5201 >/dev/null 2>&1 &
  local srv=$! i
  for i in $(seq 200); do ip netns exec "$P-cb" ss -Hlntu | grep -q ":5201" && break; sleep 0.05; done
  ip netns exec "$P-ca" iperf3 -c "$ip" -p 5201 -J "$@"
  wait "$srv" || true
}
median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

ENC=(); PLAIN=()
for r in $(seq "$RUNS"); do
  log "throughput run $r/$RUNS (${SECONDS_PER_RUN}s each)"
  ENC+=("$(iperf_run "$SEC_B" -t "$SECONDS_PER_RUN" | jq '.end.sum_received.bits_per_second')")
  PLAIN+=("$(iperf_run "$PLAIN_B" -t "$SECONDS_PER_RUN" | jq '.end.sum_received.bits_per_second')")
done
ENC_MED=$(printf '%s\n' "${ENC[@]}" | median)
PLAIN_MED=$(printf '%s\n' "${PLAIN[@]}" | median)

# Rotation under load: UDP stream and pings across the three rotation steps.
UDP_T=$(( SECONDS_PER_RUN * 3 ))
log "UDP ${RATE}b/s for ${UDP_T}s without rotation (baseline)"
BASE=$(iperf_run "$SEC_B" -u -b "$RATE" -t "$UDP_T" | jq -c '[.end.sum.lost_packets, .end.sum.packets]')
log "UDP ${RATE}b/s in ${SECONDS_PER_RUN}s runs, back to back, while the key rotates"
ip netns exec "$P-ca" ping -n -i 0.01 -W 2 "$SEC_B" > "$DIR/rot-ping.txt" 2>&1 &
PING=$!
( sleep 2; t0=$(date +%s.%N)
  keys "\"$K1\",\"$K2\""; keys "\"$K2\",\"$K1\""; keys "\"$K2\""
  echo "$t0 $(date +%s.%N)" > "$DIR/rot-times" ) &
ROTATOR=$!
# Under emulation a rotation takes minutes: UDP runs follow each other until it is over (the
# gap between two runs is not measured by UDP; the ping covers it).
: > "$DIR/rot-udp.txt"
while :; do
  iperf_run "$SEC_B" -u -b "$RATE" -t "$SECONDS_PER_RUN" | jq -c '[.end.sum.lost_packets, .end.sum.packets]' >> "$DIR/rot-udp.txt"
  kill -0 "$ROTATOR" 2>/dev/null || break
done
wait "$ROTATOR"
read -r t0 t1 < "$DIR/rot-times"
sleep 1; kill -INT "$PING"; wait "$PING" || true
ROT=$(jq -s -c '[(map(.[0]) | add), (map(.[1]) | add)]' "$DIR/rot-udp.txt")
# echoes of the last half second may still be in flight when ping is stopped
PING_LOST=$(grep -o 'icmp_seq=[0-9]*' "$DIR/rot-ping.txt" | cut -d= -f2 | sort -n | awk '
  {seen[$1]=1; if ($1>max) max=$1} END {n=max-50; l=0; for (i=1;i<=n;i++) if (!(i in seen)) l++; printf "%d of %d", l, n}')
SPI=$(api 1 GET /v1/encryption | jq -r '.peers[0].out_key_tag')

gbps() { awk -v b="$1" 'BEGIN {printf "%.3f", b / 1e9}'; }
echo
echo "netd encryption benchmark ($(nproc) cores, kernel $(uname -r)${NETD_BENCH_IN_VM:+, qemu VM})"
printf '%-44s %10s   %s\n' "measurement" "median" "runs"
printf '%-44s %6s Gb/s   %s\n' "TCP container->container, encrypted (ESP)" "$(gbps "$ENC_MED")" "$(for x in "${ENC[@]}"; do printf '%s ' "$(gbps "$x")"; done)"
printf '%-44s %6s Gb/s   %s\n' "TCP container->container, plain VXLAN" "$(gbps "$PLAIN_MED")" "$(for x in "${PLAIN[@]}"; do printf '%s ' "$(gbps "$x")"; done)"
printf '%-44s %11s\n' "encrypted / plain (target >= 0.5)" "$(awk -v a="$ENC_MED" -v b="$PLAIN_MED" 'BEGIN {printf "%.2f", a / b}')"
printf '%-44s %11s\n' "UDP lost/sent, no rotation" "$(echo "$BASE" | jq -r '"\(.[0])/\(.[1])"')"
printf '%-44s %11s\n' "UDP lost/sent, during rotation (target 0)" "$(echo "$ROT" | jq -r '"\(.[0])/\(.[1])"') in $(wc -l < "$DIR/rot-udp.txt") runs"
printf '%-44s %11s\n' "pings lost across the rotation" "$PING_LOST"
printf '%-44s %9.2f s\n' "rotation (3 steps x 2 nodes) took" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {print b - a}')"
printf '%-44s %11s\n' "sending with key (tag)" "$SPI"
