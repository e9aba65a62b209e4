#!/usr/bin/env bash
# Service load-balancing benchmark: new TCP connections per second from a container to a
# service VIP, against the same container connecting directly to the service's task, for the
# eBPF (cgroup socket LB) and the nftables (per-container DNAT) backends, in one run.
#
# Topology (scripts/lib/rig.sh): two netd nodes; node 1 runs lb_backend = "ebpf" (its
# containers' processes in cgroup $CG), node 2 lb_backend = "nftables". On each node a network
# of its own with a client container and one task of a `vip` service (one task, so the VIP
# and the direct path end at the same server and differ only by the LB). The server accepts
# and resets at once (SO_LINGER 0: no TIME_WAIT, so 100k+ connections from one client do
# not run into 4-tuple reuse); the client connects, waits for EOF, closes,
# in a loop for DURATION s (a small C program, compiled here with cc). Direct and VIP runs
# are interleaved (order alternating), RUNS times each; medians, and the median of the
# per-run VIP/direct ratios are reported (target: >= 0.98).
#
# Then (SCALE=1, the default) the eBPF scale benchmark, `lb_scale_bench` in
# netd/src/lb/bench.rs, run in-process through the same LB code netd uses (no netd, no API:
# the API takes one endpoint, i.e. one container attachment, per task, so 100k tasks cannot be
# programmed through it quickly; remote tasks arrive through gossip as a cluster view):
#   - 10k services x 10 backends from a cluster view (in gossip order) until the maps hold them
#     (model + maps; target <= 0.5 s),
#   - one backend change until the maps show it, p99 (the incremental reconcile pass a gossip
#     change causes: model updated from the changed record + the changed frontend applied;
#     target <= 10 ms), the full pass (model from the whole view + apply, as drift repair does),
#     and what the gossip watcher does first: the view and the endpoint changes from the records
#     in 16 chitchat node states, read whole (as every change did before) and incrementally
#     (only the changed record), and the DNS names rebuilt from the new view,
#   - RSS at 10k x 10 and its parts (target <= 64 MB), then with chitchat's copy of the
#     records added (a chitchat instance holding them), which a netd also keeps,
#   - p99 connect latency through a VIP with 1, 10k and 30k services programmed (the process
#     moves itself into the LB cgroup; target 30k / 1 <= 1.10).
#   Environment: LB_BENCH_SERVICES (10000), LB_BENCH_CHANGES (200), LB_BENCH_CONNECTS (20000),
#   LB_BENCH_ROUNDS (3).
#
# Needs root, cc, iproute2, nftables, curl, jq (scripts/setup.sh). Uses target/release/netd
# (or $NETD_BIN); builds it if missing. Environment: DURATION (3), RUNS (5), SCALE (1).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
DURATION=${DURATION:-3}
RUNS=${RUNS:-5}
RIG="lb$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))"
RIG_NET=212
RIG_DIR=$(mktemp -d "/tmp/netd-bench-$RIG.XXXX")
CG=/sys/fs/cgroup/unified/netd-bench-$RIG
. "$ROOT/scripts/lib/rig.sh"

[ "$(id -u)" = 0 ] || { echo "lb.sh: needs root" >&2; exit 1; }
for t in ip nft curl jq cc nsenter; do
  command -v "$t" >/dev/null || { echo "lb.sh: missing $t (scripts/setup.sh)" >&2; exit 1; }
done
if [ ! -x "$NETD_BIN" ]; then
  echo "lb.sh: $NETD_BIN missing, building it" >&2
  (cd "$ROOT" && cargo build --release -p netd)
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -d "$CG" ] && { echo 1 > "$CG/cgroup.kill" 2>/dev/null || true; sleep 0.2; rmdir "$CG" 2>/dev/null || true; }
  rig_cleanup
  rm -rf "/sys/fs/bpf/netd-$RIG-n1" "/sys/fs/bpf/netd-bench-$RIG-scale"
  rmdir "/sys/fs/cgroup/unified/netd-bench-$RIG-scale" 2>/dev/null || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$RIG_DIR/connrate.c" <<'C'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
int main(int argc, char **argv) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
  inet_pton(AF_INET, argv[2], &a.sin_addr);
  if (!strcmp(argv[1], "server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4096)) { perror("server"); return 1; }
    struct linger lg = { 1, 0 }; /* RST on close: no TIME_WAIT, conntrack entries go quickly */
    for (;;) { int c = accept(l, 0, 0); if (c >= 0) { setsockopt(c, SOL_SOCKET, SO_LINGER, &lg, sizeof lg); close(c); } }
  }
  double secs = atof(argv[4]), t0 = now(), t; long n = 0, err = 0; char b[16];
  while ((t = now()) - t0 < secs) {
    int s = socket(AF_INET, SOCK_STREAM, 0);
    if (connect(s, (void *)&a, sizeof a) == 0) { while (read(s, b, sizeof b) > 0) ; n++; } else err++;
    close(s);
  }
  printf("%.0f %ld\n", n / (t - t0), err);
  return 0;
}
C
cc -O2 -o "$RIG_DIR/connrate" "$RIG_DIR/connrate.c"

rig_underlay
rig_node 1 2
rig_node 2 2
printf 'lb_backend = "ebpf"\nlb_cgroup = "%s"\n' "$CG" >> "$RIG_DIR/n1/netd.toml"
printf 'lb_backend = "nftables"\n' >> "$RIG_DIR/n2/netd.toml"
rig_restart 1
rig_restart 2

# setup_node I SUBNET VIP: network, task (server running) and client on node I.
setup_node() {
  local i=$1 net="lb$1" vni=$((4920 + $1))
  api "$i" PUT "/v1/networks/$net" "{\"subnet\":\"$2\",\"vni\":$vni}" >/dev/null
  ip netns add "$RIG-t$i"; ip netns add "$RIG-c$i"
  local svc="{\"name\":\"s$i\",\"id\":\"s$i\",\"vip\":\"$3\",\"ports\":[{\"target_port\":8080}]}"
  TASK_IP[$i]=$(api "$i" PUT "/v1/endpoints/$RIG-t$i" \
    "{\"network\":\"$net\",\"netns\":\"/run/netns/$RIG-t$i\",\"ifname\":\"eth0\",\"name\":\"t$i\",\"service\":$svc}" | jq -r .ip)
  api "$i" PUT "/v1/endpoints/$RIG-c$i" \
    "{\"network\":\"$net\",\"netns\":\"/run/netns/$RIG-c$i\",\"ifname\":\"eth0\",\"name\":\"c$i\"}" >/dev/null
  ip netns exec "$RIG-c$i" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
  nsenter --net="/run/netns/$RIG-t$i" "$RIG_DIR/connrate" server 0.0.0.0 8080 &
  PIDS+=($!)
}
declare -a TASK_IP
setup_node 1 10.250.1.0/24 10.250.1.250
setup_node 2 10.250.2.0/24 10.250.2.250

# client I TARGET: connections/s from node I's client (node 1's runs in the LB cgroup).
client() {
  if [ "$1" = 1 ]; then
    sh -c "echo \$\$ > $CG/cgroup.procs && exec nsenter --net=/run/netns/$RIG-c1 $RIG_DIR/connrate client $2 8080 $DURATION"
  else
    nsenter --net="/run/netns/$RIG-c2" "$RIG_DIR/connrate" client "$2" 8080 "$DURATION"
  fi
}

# Wait until the VIP answers through each backend.
for i in 1 2; do
  for t in $(seq 100); do
    r=$(DURATION=0.2 client "$i" "10.250.$i.250" 2>/dev/null | cut -d' ' -f1 || true)
    [ "${r:-0}" -gt 0 ] 2>/dev/null && break
    [ "$t" = 100 ] && { echo "VIP on node $i never answered; log:" >&2; tail -20 "$RIG_DIR/n$i/netd.log" >&2; exit 1; }
    sleep 0.1
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A R
for run in $(seq "$RUNS"); do
  for i in 1 2; do
    # Alternate which goes first; each run's pair gives one ratio (pairs cancel slow drift
    # in what else the machine is doing).
    if [ $((run % 2)) = 1 ]; then
      d=$(client "$i" "${TASK_IP[$i]}" | cut -d' ' -f1); v=$(client "$i" "10.250.$i.250" | cut -d' ' -f1)
    else
      v=$(client "$i" "10.250.$i.250" | cut -d' ' -f1); d=$(client "$i" "${TASK_IP[$i]}" | cut -d' ' -f1)
    fi
    R[$i-direct]+="$d "; R[$i-vip]+="$v "
    R[$i-ratio]+="$(awk -v v="$v" -v d="$d" 'BEGIN{printf "%.4f", v/d}') "
  done
  echo "run $run/$RUNS done" >&2
done

printf '\nnew TCP connections/s, %s runs of %ss each, medians (one task; client and task on one node)\n' "$RUNS" "$DURATION"
printf '%-10s %12s %12s %8s   %s\n' backend direct via-VIP ratio* "all runs (direct | VIP)"
for i in 1 2; do
  name=$([ "$i" = 1 ] && echo ebpf || echo nftables)
  d=$(tr ' ' '\n' <<<"${R[$i-direct]}" | grep . | median)
  v=$(tr ' ' '\n' <<<"${R[$i-vip]}" | grep . | median)
  ratio=$(tr ' ' '\n' <<<"${R[$i-ratio]}" | grep . | median)
  printf '%-10s %12.0f %12.0f %8.3f   %s| %s\n' "$name" "$d" "$v" "$ratio" "${R[$i-direct]}" "${R[$i-vip]}"
done
echo "* median of the per-run VIP/direct ratios (target >= 0.98)"

if [ "${SCALE:-1}" = 1 ]; then
  printf '\neBPF LB at scale (netd/src/lb/bench.rs)\n'
  (cd "$ROOT" && NETD_LB_BENCH_TAG="bench-$RIG-scale" cargo test -q --release -p netd --lib \
    lb::bench::lb_scale_bench -- --ignored --nocapture --test-threads=1 2>&1) |
    grep -E '^(program|RSS|one backend|drift repair|gossip watcher|DNS names|connect|test lb|[ 0-9]+ services)' | sed 's/^test lb::bench::lb_scale_bench \.\.\. //'
fi
