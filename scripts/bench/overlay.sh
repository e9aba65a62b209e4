#!/usr/bin/env bash
# Overlay benchmark: two netd nodes in network namespaces on this machine.
#
#  1. TCP throughput (iperf3): container -> container across the two nodes over VXLAN,
#     against node -> node over the bare underlay, interleaved in the same run
#     (RUNS runs each, median and ratio reported).
#  2. Endpoint propagation: ENDPOINTS endpoints created one by one on node A; for each,
#     the time from just before its PUT until its FDB entry appears in node B's sandbox
#     (timestamps from `bridge -timestamp monitor fdb`), p50/p99 reported, with the PUT's
#     own latency for reference.
#  3. (SCALE=1, the default) `remote_pass_bench` in netd/src/reconcile/remotes_bench.rs: at 100k
#     remote endpoints on one VXLAN device, a pass for one endpoint joining or leaving that reads
#     the FDB and neighbors back and plans against the whole view, against one that plans from
#     the change (what netd does between full passes), side by side.
#
# Needs root, iproute2, iperf3, curl, jq (scripts/setup.sh installs them). Uses
# target/release/netd (or $NETD_BIN); builds it with cargo if missing.
# Environment: RUNS (3), SECONDS_PER_RUN (5), ENDPOINTS (100), SCALE (1), KEEP=1 keeps the run dir.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
RUNS=${RUNS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
ENDPOINTS=${ENDPOINTS:-100}
VNI=4900
SUBNET=10.249.0.0/16 # room for ENDPOINTS + the two iperf containers

[ "$(id -u)" = 0 ] || { echo "overlay.sh: needs root (network namespaces)" >&2; exit 1; }
for tool in ip bridge nsenter iperf3 curl jq; do
  command -v "$tool" >/dev/null || { echo "overlay.sh: missing $tool (scripts/setup.sh)" >&2; exit 1; }
done
if [ ! -x "$NETD_BIN" ]; then
  echo "overlay.sh: $NETD_BIN missing, building it" >&2
  (cd "$ROOT" && cargo build --release -p netd)
fi

# Unique prefix: namespaces of concurrent runs or of the test suite never collide.
P="b$(printf '%04x' $(( (RANDOM << 1 ^ $$) & 0xffff )))"
DIR=$(mktemp -d "/tmp/netd-bench-$P.XXXX")

# Topology and teardown: scripts/lib/rig.sh (nodes $P-n1, $P-n2 on an underlay bridge).
RIG=$P RIG_NET=77 RIG_DIR=$DIR NETD_BIN=$NETD_BIN
. "$ROOT/scripts/lib/rig.sh"
PIDS=() # helper processes (monitors) of this script
trap 'for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rig_cleanup' EXIT
trap 'exit 130' INT TERM

log() { printf '%s\n' "$*" >&2; }

# api NODE METHOD PATH [BODY]: prints the body; fails unless the status is 2xx.
api() {
  local sock="$DIR/n$1/netd.sock" out code
  out=$(curl -sS --unix-socket "$sock" -X "$2" -H 'Content-Type: application/json' \
    ${4:+--data "$4"} -w '\n%{http_code}' "http://netd$3") || return 1
  code=${out##*$'\n'}
  printf '%s' "${out%$'\n'*}"
  [[ $code == 2* ]] || { log "API $2 $3 -> $code: ${out%$'\n'*}"; return 1; }
}

# attach NODE CONTAINER_NS ID [EXTRA_JSON_FIELDS]: prints the endpoint view.
attach() {
  api "$1" PUT "/v1/endpoints/$3" \
    "{\"network\":\"bench\",\"netns\":\"/run/netns/$2\",\"ifname\":\"eth0\",\"name\":\"$3\"${4:+,$4}}"
}

log "setting up 2 nodes (prefix $P, run dir $DIR)"
rig_underlay
rig_node 1 2
rig_node 2 2
for n in 1 2; do api "$n" PUT /v1/networks/bench "{\"subnet\":\"$SUBNET\",\"vni\":$VNI}" >/dev/null; done

ip netns add "$P-ca"; ip netns add "$P-cb"
IP_A=$(attach 1 "$P-ca" "$P-ca" | jq -r .ip)
IP_B=$(attach 2 "$P-cb" "$P-cb" | jq -r .ip)
SANDBOX_B="nd-$P-n2-$VNI"
for i in $(seq 300); do
  ip netns exec "$P-ca" ping -c1 -W1 -q "$IP_B" >/dev/null 2>&1 && break
  [ "$i" = 300 ] && { log "overlay never came up ($IP_A -> $IP_B)"; exit 1; }
  sleep 0.1
done

# --- throughput --------------------------------------------------------------------
# iperf_run CLIENT_NS SERVER_NS SERVER_IP: one run, prints bits/s received.
iperf_run() {
  ip netns exec "$2" iperf3 -s -1 -B "$3" -p 5201 >/dev/null 2>&1 &
  local srv=$! i
  for i in $(seq 100); do
    ip netns exec "$2" ss -Hltn 'sport = :5201' | grep -q 5201 && break
    sleep 0.05
  done
  ip netns exec "$1" iperf3 -c "$3" -p 5201 -t "$SECONDS_PER_RUN" -J | jq '.end.sum_received.bits_per_second'
  wait "$srv" || true
}

median() { sort -g | awk '{v[NR]=$1} END {print (NR%2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

OVERLAY=(); UNDERLAY=()
for r in $(seq "$RUNS"); do
  log "throughput run $r/$RUNS (${SECONDS_PER_RUN}s each)"
  OVERLAY+=("$(iperf_run "$P-ca" "$P-cb" "$IP_B")")
  UNDERLAY+=("$(iperf_run "$P-n1" "$P-n2" 192.168.77.2)")
done
OV_MED=$(printf '%s\n' "${OVERLAY[@]}" | median)
UL_MED=$(printf '%s\n' "${UNDERLAY[@]}" | median)

# --- propagation -------------------------------------------------------------------
log "creating $ENDPOINTS endpoints on node 1, watching node 2's FDB"
for i in $(seq "$ENDPOINTS"); do ip netns add "$P-e$i"; done
ip netns exec "$SANDBOX_B" bridge -timestamp monitor fdb >"$DIR/fdb-monitor.txt" 2>&1 &
PIDS+=($!)
sleep 0.5 # let the monitor subscribe

: >"$DIR/starts.txt"
for i in $(seq "$ENDPOINTS"); do
  mac=$(printf '02:be:00:00:%02x:%02x' $((i >> 8)) $((i & 255)))
  t0=$(date +%s.%N)
  attach 1 "$P-e$i" "$P-e$i" "\"mac\":\"$mac\"" >/dev/null
  echo "$mac $t0 $(date +%s.%N)" >>"$DIR/starts.txt"
  # One at a time: wait for this entry before creating the next.
  for t in $(seq 6000); do
    grep -q "^$mac .*dst 192.168.77.1" "$DIR/fdb-monitor.txt" && break
    [ "$t" = 6000 ] && { log "endpoint $i ($mac) never reached node 2"; exit 1; }
    sleep 0.005
  done
done

# Monitor output: "Timestamp: Mon Nov 23 04:15:57 2026 860934 usec" before each event.
LAT_MS=$(
  while read -r line; do
    case $line in
      Timestamp:*)
        set -- $line
        ts="$(date -d "$3 $4 $6 $5" +%s).$(printf '%06d' "$((10#$7))")" ;;
      Deleted*) ;;
      02:be:*) echo "${line%% *} $ts" ;;
    esac
  done <"$DIR/fdb-monitor.txt" | awk '!seen[$1]++' | sort >"$DIR/seen.txt"
  # columns: mac, before PUT, PUT answered, FDB entry seen on node 2
  sort "$DIR/starts.txt" | join - "$DIR/seen.txt" | awk '{printf "%.3f\n", ($4 - $2) * 1000}'
)
PUT_MS=$(awk '{printf "%.3f\n", ($3 - $2) * 1000}' "$DIR/starts.txt")
N_LAT=$(printf '%s\n' "$LAT_MS" | grep -c .)
# pct P VALUES: nearest-rank percentile.
pct() { printf '%s\n' "$2" | sort -g | awk -v p="$1" '{v[NR]=$1} END {i=int((p*NR+99)/100); if(i<1)i=1; print v[i]}'; }
P50=$(pct 50 "$LAT_MS"); P99=$(pct 99 "$LAT_MS")
PUT50=$(pct 50 "$PUT_MS"); PUT99=$(pct 99 "$PUT_MS")

# --- summary -----------------------------------------------------------------------
gbps() { awk -v b="$1" 'BEGIN {printf "%.2f", b / 1e9}'; }
runs() { local x out=""; for x in "$@"; do out+="$(gbps "$x") "; done; echo "${out% }"; }
echo
echo "netd overlay benchmark ($(nproc) cores, kernel $(uname -r), MTU 1500 underlay)"
printf '%-34s %12s   %s\n' "measurement" "median" "runs"
printf '%-34s %9s Gb/s   %s\n' "TCP container->container (VXLAN)" "$(gbps "$OV_MED")" "$(runs "${OVERLAY[@]}")"
printf '%-34s %9s Gb/s   %s\n' "TCP node->node (bare underlay)" "$(gbps "$UL_MED")" "$(runs "${UNDERLAY[@]}")"
printf '%-34s %12s\n' "overlay / underlay" "$(awk -v a="$OV_MED" -v b="$UL_MED" 'BEGIN {printf "%.1f%%", 100 * a / b}')"
printf '%-34s %9s ms\n' "endpoint -> remote FDB, p50" "$P50"
printf '%-34s %9s ms\n' "endpoint -> remote FDB, p99" "$P99"
printf '%-34s %9s ms\n' "  of which PUT answered, p50" "$PUT50"
printf '%-34s %9s ms\n' "  of which PUT answered, p99" "$PUT99"
printf '%-34s %12s\n' "endpoints measured" "$N_LAT/$ENDPOINTS"

if [ "${SCALE:-1}" = 1 ]; then
  printf '\nFDB/neighbor pass at scale (netd/src/reconcile/remotes_bench.rs)\n'
  (cd "$ROOT" && cargo test -q --release -p netd --lib reconcile::remotes::bench::remote_pass_bench \
    -- --ignored --nocapture --test-threads=1 2>&1) | grep -E '^(setup|one remote)'
fi
