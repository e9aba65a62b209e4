#!/usr/bin/env bash
# End-to-end eBPF LB benchmark on a running netd at scale (issue #4's targets, measured on a
# daemon instead of in-process as netd/src/lb/bench.rs does):
#   (a) netd's RSS (VmRSS, VmHWM) once it holds SERVICES x TASKS remote endpoints and has
#       programmed them into its LB maps (target <= 64 MB), against the same netd before the
#       records arrived (ratio);
#   (b) one backend change until node 1's kernel LB maps show it, p50/p99:
#       (b1) a task on a remote node drained/enabled (its gossip record changes), with the
#            gossip delivery part taken from a packet capture on node 1's underlay, and
#       (b2) a local task drained/enabled through node 1's API (PATCH /v1/endpoints/<id>);
#   (c) time from the peer starting to publish all records until node 1's maps hold every
#       service with all its tasks (includes the gossip transfer), and netd's CPU time then.
#
# Topology (scripts/lib/rig.sh): node 1 runs a real netd (lb_backend = "ebpf", cgroup $CG) with
# network "bench" (10.0.0.0/8) and one local container, a task of service "local" (VIP
# 10.200.0.100:8080), so that netd programs the network's VIPs. Node 2's namespace runs no netd
# but `gossip_peer` (netd/examples/gossip_peer.rs): netd's own gossip code in-process (same
# config format, cluster key and protocol), which publishes the SERVICES x TASKS records of
# network "bench" (VIPs 10.128.0.1.., tasks 10.1.0.0..) and makes the changes; it reads node 1's
# pinned lb_services map (read-only, by path) in a loop (every ~0.1-0.2 ms) to see when a
# change is in the kernel. Changes are spaced GAP_MS apart; drain and enable alternate (the
# service's backend count goes 10 -> 9 -> 10). Timings are printed, never checked.
#
# Gossip delivery of a remote change (reported apart): the peer nudges node 1 (Syn), node 1
# answers (SynAck), the peer sends the record (Ack); the delivery instant is taken as the first
# datagram from the peer after node 1's first datagram following the change (tcpdump on node
# 1's eth0), so "netd part" = change in the maps - that datagram. Approximate (a round that
# happens to interleave can shift it by one round trip).
#
# Environment: SERVICES (10000), TASKS (10), CHANGES (200, remote), LOCAL_CHANGES (100),
# GAP_MS (50), GOSSIP_MS (50: gossip_interval_ms of node 1 and the peer), PUBLISH (api: one
# publish_endpoint per record, each nudging node 1 as an API attach does; initial: the peer
# starts gossip with all records as its initial state, as a restarted netd does),
# RECONCILE_MS (netd's reconcile_interval_ms, the drift-repair period; unset: netd's default,
# 5000), SYNC_TIMEOUT (1800 s), SETTLE (6 s: wait after the sync before reading RSS, so that a
# periodic full reconcile pass has run). Needs root, curl, jq, tcpdump, nsenter; builds
# target/release/netd (or uses $NETD_BIN) and the gossip_peer example.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
SERVICES=${SERVICES:-10000}
TASKS=${TASKS:-10}
CHANGES=${CHANGES:-200}
LOCAL_CHANGES=${LOCAL_CHANGES:-100}
GAP_MS=${GAP_MS:-50}
GOSSIP_MS=${GOSSIP_MS:-50}
PUBLISH=${PUBLISH:-api}
SYNC_TIMEOUT=${SYNC_TIMEOUT:-1800}
SETTLE=${SETTLE:-6}
RECONCILE_MS=${RECONCILE_MS:-}
RIG="le$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))"
RIG_NET=213
RIG_DIR=$(mktemp -d "/tmp/netd-bench-$RIG.XXXX")
CG=/sys/fs/cgroup/unified/netd-bench-$RIG
PIN=/sys/fs/bpf/netd-$RIG-n1
. "$ROOT/scripts/lib/rig.sh"

[ "$(id -u)" = 0 ] || { echo "lb-e2e.sh: needs root" >&2; exit 1; }
for t in ip curl jq tcpdump nsenter; do
  command -v "$t" >/dev/null || { echo "lb-e2e.sh: missing $t (scripts/setup.sh)" >&2; exit 1; }
done
if [ ! -x "$NETD_BIN" ]; then
  echo "lb-e2e.sh: $NETD_BIN missing, building it" >&2
  (cd "$ROOT" && cargo build --release -p netd)
fi
(cd "$ROOT" && cargo build -q --release -p netd --example gossip_peer)
PEER_BIN=$ROOT/target/release/examples/gossip_peer

TCPDUMP_PID=""
EVENTS_PID=""
cleanup() {
  trap - EXIT INT TERM
  [ -n "$EVENTS_PID" ] && kill "$EVENTS_PID" 2>/dev/null || true
  [ -n "${PEER_PID:-}" ] && kill "$PEER_PID" 2>/dev/null || true
  [ -n "$TCPDUMP_PID" ] && kill "$TCPDUMP_PID" 2>/dev/null || true
  [ -d "$CG" ] && { echo 1 > "$CG/cgroup.kill" 2>/dev/null || true; sleep 0.2; rmdir "$CG" 2>/dev/null || true; }
  rig_cleanup
  rm -rf "$PIN"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

status_kib() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat"; }
# CPU ticks by thread name ("name ticks" lines; a thread's name may hold spaces, in parentheses).
thread_ticks() {
  for f in /proc/"$1"/task/*/stat; do
    sed -E 's/^[0-9]+ \((.*)\) (.*)$/\1\t\2/; s/ /_/g' "$f" 2>/dev/null || true # a thread may end meanwhile
  done | awk -F'\t' '{ split($2, a, "_"); t[$1] += a[12] + a[13] } END { for (n in t) print n, t[n] }'
}
# CPU seconds by thread name between two thread_ticks outputs (files), busiest first.
thread_cpu() {
  awk -v hz="$(getconf CLK_TCK)" 'NR == FNR { a[$1] = $2; next } { d = ($2 - a[$1]) / hz; if (d >= 0.05) printf "%s %.1f s\n", $1, d }' "$1" "$2" |
    sort -k2 -rn | tr '\n' ';' | sed 's/;$//; s/;/, /g'
}
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k / 1024}'; }
pctl() { sort -g | awk -v p="$1" '{a[NR]=$1} END {if (!NR) {print "-"; exit} i=int(NR*p); if (i < NR*p) i++; if (i < 1) i = 1; print a[i]}'; }

rig_underlay
rig_node 1 2
# Node 2: the namespace only; the gossip peer runs there (no netd).
rig_host "$RIG-n2" "192.168.$RIG_NET.2"
max_services=$(( SERVICES + 64 > 32768 ? 32768 : (SERVICES + 64 < 8192 ? 8192 : SERVICES + 64) ))
printf 'lb_backend = "ebpf"\nlb_cgroup = "%s"\nlb_pin_dir = "%s"\nlb_max_services = %s\ngossip_interval_ms = %s\n' \
  "$CG" "$PIN" "$max_services" "$GOSSIP_MS" >> "$RIG_DIR/n1/netd.toml"
[ -n "$RECONCILE_MS" ] && echo "reconcile_interval_ms = $RECONCILE_MS" >> "$RIG_DIR/n1/netd.toml"
rig_restart 1
N1=$(cat "$RIG_DIR/n1/pid")
N1_START=$(date +%s)

api 1 PUT /v1/networks/bench '{"subnet":"10.0.0.0/8","vni":4990}' >/dev/null
ip netns add "$RIG-t1"
api 1 PUT "/v1/endpoints/$RIG-t1" "{\"network\":\"bench\",\"netns\":\"/run/netns/$RIG-t1\",\"ifname\":\"eth0\",\"name\":\"t1\",\"ip\":\"10.200.0.2\",\"service\":{\"name\":\"local\",\"id\":\"local\",\"vip\":\"10.200.0.100\",\"ports\":[{\"target_port\":8080}]}}" >/dev/null

mkdir -p "$RIG_DIR/n2"
cat > "$RIG_DIR/n2/peer.toml" <<TOML
node_name = "$RIG-n2"
advertise_addr = "192.168.$RIG_NET.2"
seeds = ["192.168.$RIG_NET.1:7946"]
gossip_keys = ["${RIG_KEY:-demo-cluster-key}"]
gossip_interval_ms = $GOSSIP_MS
state_dir = "$RIG_DIR/n2/state"
api_socket = "$RIG_DIR/n2/netd.sock"
TOML

mkfifo "$RIG_DIR/peer.in" "$RIG_DIR/peer.fifo"
nsenter --net="/run/netns/$RIG-n2" "$PEER_BIN" --config "$RIG_DIR/n2/peer.toml" --pin-dir "$PIN" \
  --services "$SERVICES" --tasks "$TASKS" --publish "$PUBLISH" \
  <"$RIG_DIR/peer.in" >"$RIG_DIR/peer.fifo" 2>"$RIG_DIR/peer.err" &
PEER_PID=$!
exec 3>"$RIG_DIR/peer.in" 4<"$RIG_DIR/peer.fifo"
peer() { echo "$*" >&3; }
# peer_read PREFIX TIMEOUT: the peer's next line starting with PREFIX (other lines go to a log).
peer_read() {
  local l
  while IFS= read -r -t "$2" l <&4; do
    echo "$l" >> "$RIG_DIR/peer.out"
    case "$l" in "$1"*) echo "$l"; return 0 ;; error*) echo "peer: $l" >&2; return 1 ;; esac
  done
  echo "lb-e2e.sh: no '$1' from the peer within $2 s; peer stderr:" >&2; tail -5 "$RIG_DIR/peer.err" >&2
  return 1
}

if [ "$PUBLISH" = api ]; then
  for t in $(seq 100); do
    [ "$(api 1 GET /v1/node | jq '[.peers[] | select(.live)] | length')" -ge 1 ] && break
    [ "$t" = 100 ] && { echo "the peer never became live on node 1" >&2; exit 1; }
    sleep 0.1
  done
fi

echo "load before: $(uptime)"
rss0=$(status_kib "$N1" VmRSS); hwm0=$(status_kib "$N1" VmHWM); cpu0=$(cpu_s "$N1")
thread_ticks "$N1" >"$RIG_DIR/threads0.txt"
echo "netd before the records: VmRSS $(mib "$rss0") MiB, VmHWM $(mib "$hwm0") MiB"
echo "publishing $SERVICES services x $TASKS tasks ($PUBLISH)..."
# Membership events during the sync (a peer declared dead takes its records with it).
curl -sN --unix-socket "$RIG_DIR/n1/netd.sock" http://netd/v1/events 2>/dev/null |
  grep --line-buffered -E '"peer_|events_lost' > "$RIG_DIR/events.txt" &
EVENTS_PID=$!
peer publish
pub=$(peer_read published 600 | cut -d' ' -f2)
echo "published by the peer in $pub s"
syn=$(peer_read synced "$SYNC_TIMEOUT" | cut -d' ' -f2)
cpu1=$(cpu_s "$N1")
thread_ticks "$N1" >"$RIG_DIR/threads1.txt"
echo "node 1's maps hold all $SERVICES services with $TASKS tasks $syn s after publishing began (netd CPU $(awk -v a="$cpu0" -v b="$cpu1" 'BEGIN{printf "%.1f", b - a}') s)"
echo "netd CPU during the sync by thread: $(thread_cpu "$RIG_DIR/threads0.txt" "$RIG_DIR/threads1.txt")"
echo "load after the sync: $(uptime)"
kill "$EVENTS_PID" 2>/dev/null || true; EVENTS_PID=""
echo "membership events on node 1 during the sync: $(grep -o '"kind":"[a-z_]*"' "$RIG_DIR/events.txt" | sort | uniq -c | tr -s ' \n' ' ')"
sleep "$SETTLE"
# In its startup grace (startup_sync_grace_ms, 5 s) netd defers removals (a drain too): start
# the changes after it.
while [ $(( $(date +%s) - N1_START )) -lt 7 ]; do sleep 0.5; done
rem=$(api 1 GET /v1/node | jq .remote_endpoints)
fdb=$(ip netns exec "nd-$RIG-n1-4990" bridge fdb show dev vx-4990 2>/dev/null | grep -c ' dst ' || true)
rss1=$(status_kib "$N1" VmRSS); hwm1=$(status_kib "$N1" VmHWM)
echo "after ${SETTLE} s: API remote endpoints $rem, FDB entries $fdb; netd VmRSS $(mib "$rss1") MiB, VmHWM $(mib "$hwm1") MiB (before: $(mib "$rss0") MiB; ratio $(awk -v a="$rss1" -v b="$rss0" 'BEGIN{printf "%.1f", a / b}'))"

ip netns exec "$RIG-n1" tcpdump -i eth0 -n -tt -l -s 64 udp port 7946 >"$RIG_DIR/tcpdump.txt" 2>/dev/null &
TCPDUMP_PID=$!
sleep 1
echo "remote changes: $CHANGES, ${GAP_MS} ms apart, gossip_interval_ms $GOSSIP_MS..."
peer remote "$CHANGES" "$GAP_MS"
rsum=$(peer_read "summary remote" $(( CHANGES * 12 + 30 )))
echo "local changes (API on node 1): $LOCAL_CHANGES..."
peer local "$LOCAL_CHANGES" "$GAP_MS" "$RIG_DIR/n1/netd.sock" "$RIG-t1" 10.200.0.100 8080
lsum=$(peer_read "summary local" $(( LOCAL_CHANGES * 12 + 30 )))
sleep 0.5
kill "$TCPDUMP_PID" 2>/dev/null || true; wait "$TCPDUMP_PID" 2>/dev/null || true; TCPDUMP_PID=""
rss2=$(status_kib "$N1" VmRSS); hwm2=$(status_kib "$N1" VmHWM)
echo "load after the changes: $(uptime)"
peer quit

# Gossip delivery per remote change, from the capture (see the header).
n1="192.168.$RIG_NET.1.7946"
grep '^change remote' "$RIG_DIR/peer.out" | awk '{print $4, $5}' > "$RIG_DIR/changes.txt"
awk -v n1="$n1" 'NR == FNR { t0[NR] = $1; lat[NR] = $2; n = NR; next }
  { split($1, p, "."); t = p[1] * 1000000 + p[2]; src[++m] = $3; ts[m] = t }
  END {
    for (i = 1; i <= n; i++) {
      a = 0; d = 0
      for (j = 1; j <= m; j++) {
        if (ts[j] <= t0[i]) continue
        if (!a) { if (src[j] == n1) a = ts[j]; continue }
        if (src[j] != n1) { d = ts[j]; break }
      }
      if (d) printf "%d %d\n", d - t0[i], lat[i] - (d - t0[i])
    }
  }' "$RIG_DIR/changes.txt" "$RIG_DIR/tcpdump.txt" > "$RIG_DIR/delivery.txt"

ms() { awk -v u="$1" 'BEGIN{ if (u == "-") print "-"; else printf "%.2f", u / 1000 }'; }
read -r _ _ r50 r99 rmax rn <<<"$rsum"
read -r _ _ l50 l99 lmax ln la50 la99 <<<"$lsum"
la50=$(ms "${la50#api_p50=}"); la99=$(ms "${la99#api_p99=}")
printf '\nlb-e2e: %s services x %s tasks, gossip_interval_ms %s, reconcile_interval_ms %s, changes %s ms apart\n' "$SERVICES" "$TASKS" "$GOSSIP_MS" "${RECONCILE_MS:-5000}" "$GAP_MS"
printf '(a) netd RSS with all records programmed: VmRSS %s MiB, VmHWM %s MiB (after the changes: %s / %s MiB; before the records: %s MiB)  target <= 64 MB\n' \
  "$(mib "$rss1")" "$(mib "$hwm1")" "$(mib "$rss2")" "$(mib "$hwm2")" "$(mib "$rss0")"
printf '(b1) remote change until in the maps: p50 %s ms, p99 %s ms, max %s ms (%s)  target p99 <= 10 ms\n' "$(ms "$r50")" "$(ms "$r99")" "$(ms "$rmax")" "$rn"
printf '     of which gossip delivery (capture): p50 %s ms, p99 %s ms; netd after delivery: p50 %s ms, p99 %s ms (n=%s)\n' \
  "$(ms "$(cut -d' ' -f1 "$RIG_DIR/delivery.txt" | pctl 0.5)")" "$(ms "$(cut -d' ' -f1 "$RIG_DIR/delivery.txt" | pctl 0.99)")" \
  "$(ms "$(cut -d' ' -f2 "$RIG_DIR/delivery.txt" | pctl 0.5)")" "$(ms "$(cut -d' ' -f2 "$RIG_DIR/delivery.txt" | pctl 0.99)")" \
  "$(wc -l < "$RIG_DIR/delivery.txt")"
printf '(b2) local change (API) until in the maps: p50 %s ms, p99 %s ms, max %s ms (%s; the API answered: p50 %s ms, p99 %s ms)\n' "$(ms "$l50")" "$(ms "$l99")" "$(ms "$lmax")" "$ln" "$la50" "$la99"
printf '(c) publish -> maps hold all %s services: %s s (the peer published in %s s, %s)\n' "$SERVICES" "$syn" "$pub" "$PUBLISH"
echo "per-change lines: KEEP=1 keeps $RIG_DIR (peer.out, delivery.txt, tcpdump.txt, n1/netd.log)"
