#!/usr/bin/env bash
# Published-port (ingress) benchmark: requests/s and p99 latency from a client namespace on
# the underlay (not a node) through a published port of node 1, against the same requests
# sent straight to the task's address, in one run:
#   - local:  the service's only task runs on node 1 (the node the client talks to),
#   - remote: the service's only task runs on node 2 (node 1 forwards over the ingress
#             overlay, VXLAN).
# The direct baseline takes the same hops without the ingress translation: the client routes
# the ingress subnet via node 1 (which forwards into its ingress leg), and each task routes the
# client's subnet back via node 1's leg. So the ratio isolates what publishing costs (DNAT
# into the Maglev map, SNAT, conntrack), not the overlay.
#
# A request = new TCP connection, send a short request, read a 64-byte answer, close (RST,
# so no TIME_WAIT piles up); one client process, sequential requests for DURATION s (a small
# C program, compiled here with cc). Direct and published runs alternate order; RUNS pairs;
# medians of req/s and p99 and the median of the per-run ratios are reported.
#
# Needs root, cc, iproute2, nftables, curl, jq (scripts/setup.sh). Uses target/release/netd
# (or $NETD_BIN); builds it if missing. Environment: DURATION (3), RUNS (5).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NETD_BIN=${NETD_BIN:-$ROOT/target/release/netd}
DURATION=${DURATION:-3}
RUNS=${RUNS:-5}
RIG="ig$(printf '%04x' $(( (RANDOM ^ $$) & 0xffff )))"
RIG_NET=213
RIG_DIR=$(mktemp -d "/tmp/netd-bench-$RIG.XXXX")
. "$ROOT/scripts/lib/rig.sh"

[ "$(id -u)" = 0 ] || { echo "ingress.sh: needs root" >&2; exit 1; }
for t in ip nft curl jq cc nsenter; do
  command -v "$t" >/dev/null || { echo "ingress.sh: missing $t (scripts/setup.sh)" >&2; exit 1; }
done
if [ ! -x "$NETD_BIN" ]; then
  echo "ingress.sh: $NETD_BIN missing, building it" >&2
  (cd "$ROOT" && cargo build --release -p netd)
fi

PIDS=()
cleanup() {
  trap - EXIT INT TERM
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  rig_cleanup
}
trap cleanup EXIT
trap 'exit 130' INT TERM

cat > "$RIG_DIR/reqlat.c" <<'C'
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec / 1e9; }
static int cmp(const void *a, const void *b) { double x = *(double *)a, y = *(double *)b; return (x > y) - (x < y); }
int main(int argc, char **argv) {
  struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(atoi(argv[3])) };
  inet_pton(AF_INET, argv[2], &a.sin_addr);
  char buf[64]; memset(buf, 'x', sizeof buf);
  if (!strcmp(argv[1], "server")) {
    int l = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    setsockopt(l, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(l, (void *)&a, sizeof a) || listen(l, 4096)) { perror("server"); return 1; }
    for (;;) {
      int c = accept(l, 0, 0); if (c < 0) continue;
      char req[64]; if (read(c, req, sizeof req) > 0) (void)!write(c, buf, sizeof buf);
      while (read(c, req, sizeof req) > 0) ; /* the client closes (RST) */
      close(c);
    }
  }
  double secs = atof(argv[4]), t0 = now(), t; long n = 0, err = 0, cap = 1 << 22;
  double *lat = malloc(cap * sizeof *lat);
  struct linger lg = { 1, 0 };
  while ((t = now()) - t0 < secs && n < cap) {
    double s0 = now();
    int s = socket(AF_INET, SOCK_STREAM, 0), got = 0, r;
    setsockopt(s, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    if (connect(s, (void *)&a, sizeof a) == 0 && write(s, "GET /\n", 6) == 6) {
      while (got < 64 && (r = read(s, buf, sizeof buf - got)) > 0) got += r;
    }
    close(s);
    if (got == 64) lat[n++] = now() - s0; else err++;
  }
  qsort(lat, n, sizeof *lat, cmp);
  printf("%.0f %.1f %ld\n", n / (t - t0), n ? lat[(long)(n * 0.99)] * 1e6 : 0, err);
  return 0;
}
C
cc -O2 -o "$RIG_DIR/reqlat" "$RIG_DIR/reqlat.c"

rig_underlay
rig_node 1 2
rig_node 2 2
CL="$RIG-cl"
rig_host "$CL" "192.168.$RIG_NET.100"
ip netns exec "$CL" sysctl -qw net.ipv4.ip_local_port_range="1024 65000"
SUBNET=10.239.0.0/16
for i in 1 2; do
  api "$i" PUT /v1/networks/ingress "{\"subnet\":\"$SUBNET\",\"vni\":4950,\"ingress\":true}" >/dev/null
done
LEG1=$(api 1 GET /v1/endpoints/ingress-sbox | jq -r .ip)

# task I PORT: the only task of service s$I on node I, published on PORT; TASK[I] = address.
declare -a TASK
task() {
  local i=$1 port=$2 ns="$RIG-t$1"
  ip netns add "$ns"
  local svc="{\"name\":\"s$i\",\"id\":\"s$i\",\"vip\":\"10.239.255.$i\",\"ports\":[{\"target_port\":8080,\"published_port\":$port}]}"
  local ip
  ip=$(api "$i" PUT "/v1/endpoints/$ns" \
    "{\"network\":\"ingress\",\"netns\":\"/run/netns/$ns\",\"ifname\":\"eth0\",\"name\":\"t$i\",\"service\":$svc}" | jq -r .ip)
  # Direct baseline: replies to the client go back through node 1's leg (like ingress flows).
  ip -n "$ns" route add "192.168.$RIG_NET.0/24" via "$LEG1"
  nsenter --net="/run/netns/$ns" "$RIG_DIR/reqlat" server 0.0.0.0 8080 </dev/null >/dev/null 2>&1 &
  PIDS+=($!)
  TASK[$i]=$ip
}
task 1 30001
task 2 30002
T1=${TASK[1]}
T2=${TASK[2]}
ip -n "$CL" route add "$SUBNET" via "192.168.$RIG_NET.1"
N1="192.168.$RIG_NET.1"

run() { nsenter --net="/run/netns/$CL" "$RIG_DIR/reqlat" client "$1" "$2" "$DURATION"; }

for target in "$T1 8080" "$T2 8080" "$N1 30001" "$N1 30002"; do
  for t in $(seq 100); do
    r=$(DURATION=0.2 run $target 2>/dev/null | cut -d' ' -f1 || true)
    [ "${r:-0}" -gt 0 ] 2>/dev/null && break
    [ "$t" = 100 ] && { echo "$target never answered; logs:" >&2; tail -20 "$RIG_DIR"/n*/netd.log >&2; exit 1; }
    sleep 0.1
  done
done

median() { sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
declare -A R
for r in $(seq "$RUNS"); do
  for c in local remote; do
    if [ "$c" = local ]; then direct="$T1 8080"; pub="$N1 30001"; else direct="$T2 8080"; pub="$N1 30002"; fi
    if [ $((r % 2)) = 1 ]; then d=$(run $direct); p=$(run $pub); else p=$(run $pub); d=$(run $direct); fi
    read -r drps dp99 derr <<<"$d"; read -r prps pp99 perr <<<"$p"
    R[$c-drps]+="$drps "; R[$c-dp99]+="$dp99 "; R[$c-prps]+="$prps "; R[$c-pp99]+="$pp99 "
    R[$c-err]+="$((derr + perr)) "
    R[$c-rrps]+="$(awk -v a="$prps" -v b="$drps" 'BEGIN{printf "%.4f", a/b}') "
    R[$c-rp99]+="$(awk -v a="$pp99" -v b="$dp99" 'BEGIN{printf "%.4f", a/b}') "
  done
  echo "run $r/$RUNS done" >&2
done

m() { tr ' ' '\n' <<<"${R[$1]}" | grep . | median; }
printf '\nrequests (new TCP connection each) from an underlay client, %s runs of %ss, medians\n' "$RUNS" "$DURATION"
printf '%-8s %10s %10s %8s %10s %10s %8s %7s\n' task direct/s publ/s ratio* "p99 dir" "p99 publ" ratio* errors
for c in local remote; do
  printf '%-8s %10.0f %10.0f %8.3f %8.0fus %8.0fus %8.3f %7s\n' "$c" "$(m $c-drps)" "$(m $c-prps)" "$(m $c-rrps)" \
    "$(m $c-dp99)" "$(m $c-pp99)" "$(m $c-rp99)" "$(tr ' ' '\n' <<<"${R[$c-err]}" | awk '{s+=$1} END {print s+0}')"
done
echo "* median of the per-run published/direct ratios (req/s: higher is better; p99: lower is better)"
echo "local: task on the node the client sends to; remote: task on the other node (VXLAN)"
