#!/usr/bin/env bash
# CNI benchmark: ADD+DEL latency of netd-cni against Debian's reference `bridge` plugin
# with `host-local` IPAM, on the same machine, in the same run.
#
# One netd node in a network namespace; both plugins are run from that namespace (the
# runtime's "host") the way a runtime runs them: CNI_* in the environment, the network
# configuration on stdin, a fresh container namespace per attachment, DEL with the ADD
# result as prevResult (as libcni does). The two plugins alternate, iteration by
# iteration, so that machine noise hits both alike. Each sample is one ADD plus its DEL,
# process start-up included (that is what a runtime pays); namespace creation is not timed.
#
# Prints p50/p99 of ADD+DEL (and of ADD and DEL alone) for both, and the ratio
# netd-cni / bridge+host-local (target <= 1.0). For reference it also times netd's API
# alone (curl PUT + DELETE of the same endpoint) and the plugin's process start-up, which
# tell how much of netd-cni's time is the plugin and how much is netd's attach/detach.
#
# Needs root, iproute2, jq, containernetworking-plugins (scripts/setup.sh installs them).
# Uses target/release/netd and target/release/netd-cni ($NETD_BIN, $NETD_CNI_BIN), built
# with cargo if missing. Environment: ITER (200 samples per plugin), WARMUP (10), KEEP=1
# keeps the run dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
NETD_CNI_BIN=${NETD_CNI_BIN:-$ROOT/target/release/netd-cni}
REF=/usr/lib/cni
ITER=${ITER:-200}
WARMUP=${WARMUP:-10}
VNI=4950
SUBNET=10.250.0.0/16   # netd network
BR_SUBNET=10.251.0.0/16 # bridge + host-local

[ "$(id -u)" = 0 ] || { echo "cni.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip nsenter jq curl; do
  command -v "$tool" >/dev/null || { echo "cni.sh: missing $tool (scripts/setup.sh)" >&2; exit 1; }
done
for p in bridge host-local; do
  [ -x "$REF/$p" ] || { echo "cni.sh: missing $REF/$p (containernetworking-plugins)" >&2; exit 1; }
done
if [ ! -x "$NETD_BIN" ] || [ ! -x "$NETD_CNI_BIN" ]; then
  echo "cni.sh: building netd and netd-cni" >&2
  (cd "$ROOT" && cargo build --release -p netd -p netd-cni)
fi

# Unique prefix: namespaces of concurrent runs or of the test suite never collide.
P="c$(printf '%04x' $(( (RANDOM << 1 ^ $$) & 0xffff )))"
DIR=$(mktemp -d "/tmp/netd-bench-$P.XXXX")
NODE="$P-n1"

# Topology and teardown: scripts/lib/rig.sh (one node, $P-n1, on an underlay bridge).
RIG=$P RIG_NET=78 RIG_DIR=$DIR NETD_BIN=$NETD_BIN
. "$ROOT/scripts/lib/rig.sh"
trap rig_cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# --- one netd node --------------------------------------------------------------------
mkdir -p "$DIR/ipam"
rig_underlay
rig_node 1 1
SOCK="$DIR/n1/netd.sock"
curl -sf --unix-socket "$SOCK" -X PUT http://netd/v1/networks/bench \
  -d "{\"subnet\":\"$SUBNET\",\"vni\":$VNI}" >/dev/null

# One long-lived container keeps the network's sandbox on the node for the whole run (a
# node with other containers on the network: the common case). Without it every ADD
# would also build the sandbox and every DEL tear it down; and an ADD right after the
# last DEL would measure sandbox creation, not attachment.
ip netns add "$P-anchor"
curl -sf --unix-socket "$SOCK" -X PUT http://netd/v1/endpoints/anchor-eth0 \
  -d "{\"network\":\"bench\",\"netns\":\"/run/netns/$P-anchor\",\"ifname\":\"eth0\",\"name\":\"anchor\"}" >/dev/null

cat >"$DIR/netd.conf" <<EOF
{"cniVersion":"1.0.0","name":"bench-netd","type":"netd","network":"bench","socket":"$SOCK"}
EOF
cat >"$DIR/bridge.conf" <<EOF
{"cniVersion":"1.0.0","name":"bench-bridge","type":"bridge","bridge":"cnibench0","isGateway":true,
 "ipMasq":false,"ipam":{"type":"host-local","subnet":"$BR_SUBNET","dataDir":"$DIR/ipam"}}
EOF

# --- the measuring loop, run inside the node's namespace --------------------------------
# Times come from $EPOCHREALTIME (no fork); each op's exit status is checked.
cat >"$DIR/loop.sh" <<'EOF'
set -euo pipefail
DIR=$1 P=$2 NETD_CNI_BIN=$3 REF=$4 ITER=$5 WARMUP=$6
now_us() { local t=${EPOCHREALTIME/./}; echo "$t"; }
# one KIND N RECORD: ADD then DEL of container N with plugin KIND; appends "add_us del_us".
one() {
  local kind=$1 n=$2 record=$3 bin conf ns cid t0 t1 t2
  case $kind in
    netd) bin=$NETD_CNI_BIN; conf=$DIR/netd.conf ;;
    bridge) bin=$REF/bridge; conf=$DIR/bridge.conf ;;
  esac
  ns="$P-$kind-$n"; cid="bench-$kind-$n"
  ip netns add "$ns"
  ip -n "$ns" link set lo up
  if [ "$kind" = api ]; then
    # netd's API alone (curl), for reference: what the plugin adds is the difference.
    local body="{\"network\":\"bench\",\"netns\":\"/run/netns/$ns\",\"ifname\":\"eth0\",\"name\":\"$cid\"}"
    t0=$(now_us)
    curl -sf -o /dev/null --unix-socket "$DIR/n1/netd.sock" -X PUT "http://netd/v1/endpoints/$cid-eth0" -d "$body" \
      || { echo "api PUT failed" >&2; exit 1; }
    t1=$(now_us); t1b=$t1
    curl -sf -o /dev/null --unix-socket "$DIR/n1/netd.sock" -X DELETE "http://netd/v1/endpoints/$cid-eth0" \
      || { echo "api DELETE failed" >&2; exit 1; }
    t2=$(now_us)
    ip netns del "$ns"
    [ "$record" = 1 ] && echo "$((t1 - t0)) $((t2 - t1b))" >>"$DIR/$kind.samples"
    return 0
  fi
  export CNI_CONTAINERID=$cid CNI_NETNS=/run/netns/$ns CNI_IFNAME=eth0 CNI_PATH=$REF
  t0=$(now_us)
  if ! CNI_COMMAND=ADD "$bin" <"$conf" >"$DIR/out.json" 2>"$DIR/err"; then
    echo "$kind ADD failed: $(cat "$DIR/out.json" "$DIR/err")" >&2; exit 1
  fi
  t1=$(now_us)
  jq -c --slurpfile r "$DIR/out.json" '. + {prevResult: $r[0]}' "$conf" >"$DIR/del.json"
  t1b=$(now_us)
  if ! CNI_COMMAND=DEL "$bin" <"$DIR/del.json" >"$DIR/out.json" 2>"$DIR/err"; then
    echo "$kind DEL failed: $(cat "$DIR/out.json" "$DIR/err")" >&2; exit 1
  fi
  t2=$(now_us)
  ip netns del "$ns"
  [ "$record" = 1 ] && echo "$((t1 - t0)) $((t2 - t1b))" >>"$DIR/$kind.samples"
  return 0
}
for i in $(seq 1 "$WARMUP"); do one netd "w$i" 0; one bridge "w$i" 0; one api "w$i" 0; done
for i in $(seq 1 "$ITER"); do
  # alternate which plugin goes first
  if [ $((i % 2)) = 0 ]; then one netd "$i" 1; one bridge "$i" 1
  else one bridge "$i" 1; one netd "$i" 1; fi
  one api "$i" 1
done
EOF
log "cni.sh: $ITER ADD+DEL samples per plugin (+$WARMUP warm-up), alternating"
nsenter --net="/run/netns/$NODE" bash "$DIR/loop.sh" "$DIR" "$P" "$NETD_CNI_BIN" "$REF" "$ITER" "$WARMUP"

# Leftovers would mean DEL did not clean up.
left=$(curl -sf --unix-socket "$DIR/n1/netd.sock" http://netd/v1/endpoints | jq '[.[] | select(.id != "anchor-eth0")] | length')
[ "$left" = 0 ] || { log "netd still has $left endpoints after the run"; exit 1; }

# --- statistics -------------------------------------------------------------------------
# pct FILE COLUMN(1 add, 2 del, 0 sum) Q: the Q-quantile (nearest rank) in ms.
pct() {
  awk -v c="$2" '{ v = (c == 0) ? $1 + $2 : $c; print v }' "$1" | sort -n |
    awk -v q="$3" '{ a[NR] = $1 } END { r = int(q * NR); if (r < q * NR) r++; if (r < 1) r = 1;
                                        printf "%.2f", a[r] / 1000 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

printf '\nADD+DEL latency, ms (%d samples each; process start included)\n' "$ITER"
printf '%-24s %8s %8s   %8s %8s   %8s %8s\n' plugin "p50" "p99" "ADD p50" "ADD p99" "DEL p50" "DEL p99"
for kind in netd bridge api; do
  case $kind in
    netd) label="netd-cni" ;;
    bridge) label="bridge + host-local" ;;
    api) label="(netd API alone, curl)" ;;
  esac
  printf '%-24s %8s %8s   %8s %8s   %8s %8s\n' "$label" \
    "$(pct "$DIR/$kind.samples" 0 0.5)" "$(pct "$DIR/$kind.samples" 0 0.99)" \
    "$(pct "$DIR/$kind.samples" 1 0.5)" "$(pct "$DIR/$kind.samples" 1 0.99)" \
    "$(pct "$DIR/$kind.samples" 2 0.5)" "$(pct "$DIR/$kind.samples" 2 0.99)"
done
r50=$(ratio "$(pct "$DIR/netd.samples" 0 0.5)" "$(pct "$DIR/bridge.samples" 0 0.5)")
r99=$(ratio "$(pct "$DIR/netd.samples" 0 0.99)" "$(pct "$DIR/bridge.samples" 0 0.99)")
printf '\nratio netd-cni / bridge+host-local: p50 %s, p99 %s (target <= 1.0)\n' "$r50" "$r99"
start=()
for _ in 1 2 3 4 5 6 7 8 9 10 11; do
  t0=${EPOCHREALTIME/./}
  CNI_COMMAND=VERSION "$NETD_CNI_BIN" </dev/null >/dev/null
  t1=${EPOCHREALTIME/./}
  start+=($((t1 - t0)))
done
printf 'netd-cni process start-up (VERSION), median of 11: %s ms; load average: %s\n' \
  "$(printf '%s\n' "${start[@]}" | sort -n | sed -n 6p | awk '{ printf "%.2f", $1 / 1000 }')" \
  "$(cut -d' ' -f1-3 /proc/loadavg)"
