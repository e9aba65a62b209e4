#!/usr/bin/env bash
# DNS benchmark: netd's embedded resolver against dnsmasq and aardvark-dns serving the same
# names, all queried by dnsperf from the same container namespace; then the time from an
# endpoint's creation on one node to its name resolving on another.
#
# Topology (scripts/lib/rig.sh): two nodes running netd on an underlay bridge, network "bench".
# The client container ($RIG-cl) is on node 1. ENDPOINTS endpoints named ep1..epN: one in ten
# on node 1, the rest on node 2 (so most names reach node 1 by gossip). In the client's
# namespace, answering the same N names:
#   netd           127.0.0.11:53, through netd's nftables DNAT, as a container asks it
#   netd-direct    netd's socket on its real port (no DNAT, no conntrack), for reference
#   dnsmasq        127.0.0.12:53, names from an addn-hosts file (no upstream)
#   aardvark-dns   10.250.0.1:53, a "gateway" address on lo, names from its config dir; the
#                  client is listed there as a container and queries from its own address
# Servers are measured interleaved, RUNS times each:
#   1. throughput: dnsperf as fast as it can (CLIENTS sockets, OUTSTANDING queries in flight)
#      for DURATION s: QPS, dnsperf's average and stddev latency (at saturation mostly
#      queueing: OUTSTANDING / QPS), the server's CPU time per answered query (user +
#      system, all its threads) and dnsperf's own CPU use. With 2 cores, client and server
#      share the machine, so QPS is a property of the pair (and of whatever else runs);
#      CPU per query is the server's own cost;
#   2. latency: dnsperf at a fixed LAT_QPS (well under every server's capacity) for
#      LAT_DURATION s, with -v: p50/p90/p99/p99.9/max of the per-query latencies.
# Then propagation: PROP_ENDPOINTS endpoints created one by one on node 2; for each, the time
# from just before its PUT until 127.0.0.11 in the client on node 1 answers its name (polled
# every millisecond), p50/p99, with the PUT's own latency for reference.
#
# Needs root. Installs dnsperf, dnsmasq-base and aardvark-dns with apt-get if missing; needs
# iproute2, nftables, curl, jq, python3 (scripts/setup.sh). Uses target/release/netd (or
# $NETD_BIN, or $CARGO_TARGET_DIR/release/netd); builds it with cargo if missing.
# Environment: DURATION (10), RUNS (1), LAT_QPS (2000), LAT_DURATION (5), CLIENTS (4),
# OUTSTANDING (64), ENDPOINTS (100), PROP_ENDPOINTS (50), PERF_OUT=FILE (also profile netd
# with perf during one more throughput run: the report in FILE, perf's data in FILE.data),
# KEEP=1 (keep the run directory).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
export NETD_BIN=${NETD_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/netd}
DURATION=${DURATION:-10}
RUNS=${RUNS:-1}
LAT_QPS=${LAT_QPS:-2000}
LAT_DURATION=${LAT_DURATION:-5}
CLIENTS=${CLIENTS:-4}
OUTSTANDING=${OUTSTANDING:-64}
ENDPOINTS=${ENDPOINTS:-100}
PROP_ENDPOINTS=${PROP_ENDPOINTS:-50}
PERF_OUT=${PERF_OUT:-}
SUBNET=10.249.0.0/16
VNI=4901
DNSMASQ_ADDR=127.0.0.12
AARDVARK_ADDR=10.250.0.1
AARDVARK=/usr/lib/podman/aardvark-dns

log() { printf '%s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { log "dns.sh: needs root (network namespaces)"; exit 1; }

missing=()
command -v dnsperf >/dev/null || missing+=(dnsperf)
command -v dnsmasq >/dev/null || missing+=(dnsmasq-base)
[ -x "$AARDVARK" ] || missing+=(aardvark-dns)
if [ ${#missing[@]} -gt 0 ]; then
  log "dns.sh: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
for tool in ip nft nsenter curl jq python3 dnsperf dnsmasq; do
  command -v "$tool" >/dev/null || { log "dns.sh: missing $tool (scripts/setup.sh)"; exit 1; }
done
if [ ! -x "$NETD_BIN" ]; then
  log "dns.sh: $NETD_BIN missing, building it"
  (cd "$ROOT" && cargo build --release -p netd)
fi

# Unique prefix: namespaces of concurrent runs or of the test suite never collide.
RIG="d$(printf '%04x' $(( (RANDOM << 1 ^ $$) & 0xffff )))"
RIG_DIR=$(mktemp -d "/tmp/netd-dns-$RIG.XXXX")
. "$ROOT/scripts/lib/rig.sh"
CL="$RIG-cl"
PIDS=()

cleanup() {
  trap - EXIT INT TERM
  local pid
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  # aardvark-dns daemonizes: its pid is in its config dir.
  for pid in "$RIG_DIR/aardvark/aardvark.pid" "$RIG_DIR/dnsmasq.pid"; do
    [ -f "$pid" ] && kill "$(cat "$pid")" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do kill -0 "$pid" 2>/dev/null && { wait "$pid" 2>/dev/null || true; }; done
  rig_cleanup # KEEP=1: keeps $RIG_DIR
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- cluster -------------------------------------------------------------------------
log "2 netd nodes (prefix $RIG, run dir $RIG_DIR)"
# No upstream resolvers: names netd does not own get NXDOMAIN at once, and nothing is ever
# forwarded out of the namespaces.
: >"$RIG_DIR/resolv.conf"
rig_underlay
for i in 1 2; do
  rig_node "$i" 2
  printf 'dns_resolv_conf = "%s"\n' "$RIG_DIR/resolv.conf" >>"$RIG_DIR/n$i/netd.toml"
  rig_restart "$i"
done

# napi I METHOD PATH [BODY]: prints the body; fails unless the status is 2xx.
napi() {
  local out code
  out=$(curl -sS --unix-socket "$RIG_DIR/n$1/netd.sock" -X "$2" -H 'content-type: application/json' \
    ${4:+--data "$4"} -w '\n%{http_code}' "http://netd$3") || return 1
  code=${out##*$'\n'}
  printf '%s' "${out%$'\n'*}"
  [[ $code == 2* ]] || { log "API $2 $3 -> $code: ${out%$'\n'*}"; return 1; }
}
# attach NODE NS ID NAME: an endpoint on "bench" for namespace NS (created here).
attach() {
  ip netns add "$2"
  napi "$1" PUT "/v1/endpoints/$3" \
    "{\"network\":\"bench\",\"netns\":\"/run/netns/$2\",\"ifname\":\"eth0\",\"name\":\"$4\"}"
}

for i in 1 2; do
  napi "$i" PUT /v1/networks/bench "{\"subnet\":\"$SUBNET\",\"vni\":$VNI}" >/dev/null
done
CLIENT_IP=$(attach 1 "$CL" cl client | jq -r .ip)

log "creating $ENDPOINTS endpoints (ep1..ep$ENDPOINTS; 1 in 10 on node 1, the rest on node 2)"
: >"$RIG_DIR/hosts"
for i in $(seq "$ENDPOINTS"); do
  node=2; [ $((i % 10)) = 1 ] && node=1
  ip=$(attach "$node" "$RIG-e$i" "ep$i" "ep$i" | jq -r .ip)
  echo "$ip ep$i" >>"$RIG_DIR/hosts"
  echo "ep$i A" >>"$RIG_DIR/queries"
done

# --- the probe: checks answers, measures propagation ------------------------------------
cat >"$RIG_DIR/probe.py" <<'PY'
"""check SERVER PORT SRC HOSTS: names of HOSTS ("ip name" lines) answered with that A record.
prop SOCK NS_PREFIX NAME_PREFIX N OUT: creates N endpoints through netd's API on SOCK, one by
one; for each, the ms from just before its PUT until 127.0.0.11 answers its name, and the PUT's
own ms, written to OUT as "name prop_ms put_ms"."""
import http.client, json, socket, struct, sys, threading, time

def query(name, qid):
    q = struct.pack(">HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    for label in name.split("."):
        q += bytes([len(label)]) + label.encode()
    return q + b"\x00\x00\x01\x00\x01"

def ask(sock, name, qid, timeout):
    """The A records of `name` (empty: no answer, NXDOMAIN or no data)."""
    sock.send(query(name, qid))
    end = time.monotonic() + timeout
    while True:
        left = end - time.monotonic()
        if left <= 0:
            return []
        sock.settimeout(left)
        try:
            r = sock.recv(1500)
        except socket.timeout:
            return []
        if len(r) < 12 or struct.unpack(">H", r[:2])[0] != qid:
            continue  # late answer to an earlier try
        flags, qd, an = struct.unpack(">HHH", r[2:8])
        if flags & 0xF or an == 0:
            return []
        i = 12
        for _ in range(qd):  # skip the question
            while r[i] and r[i] < 0xC0:
                i += r[i] + 1
            i += 2 if r[i] >= 0xC0 else 1
            i += 4
        ips = []
        for _ in range(an):
            while r[i] and r[i] < 0xC0:
                i += r[i] + 1
            i += 2 if r[i] >= 0xC0 else 1
            rtype, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
            i += 10
            if rtype == 1 and rdlen == 4:
                ips.append(socket.inet_ntoa(r[i:i + 4]))
            i += rdlen
        return ips

class Unix(http.client.HTTPConnection):
    def __init__(self, path):
        super().__init__("netd", timeout=30)
        self.unix_path = path
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX)
        self.sock.connect(self.unix_path)

def check(server, port, src, hosts):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if src:
        s.bind((src, 0))
    s.connect((server, int(port)))
    ok = 0
    for n, line in enumerate(open(hosts)):
        ip, name = line.split()
        for t in range(3):
            if ip in ask(s, name, (n * 3 + t) & 0xFFFF, 1.0):
                ok += 1
                break
    print(ok)

def prop(sock_path, ns_prefix, name_prefix, n, out):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.connect(("127.0.0.11", 53))
    qid = 0
    with open(out, "w") as f:
        for i in range(1, int(n) + 1):
            name = f"{name_prefix}{i}"
            body = json.dumps({"network": "bench", "netns": f"/run/netns/{ns_prefix}{i}",
                               "ifname": "eth0", "name": name})
            put = {}
            def do_put():
                c = Unix(sock_path)
                c.request("PUT", f"/v1/endpoints/{name}", body,
                          {"content-type": "application/json"})
                r = c.getresponse()
                r.read()
                put["status"] = r.status
                put["t"] = time.perf_counter()
            t0 = time.perf_counter()
            th = threading.Thread(target=do_put)
            th.start()
            seen = None
            while time.perf_counter() - t0 < 10:
                qid = (qid + 1) & 0xFFFF
                if ask(s, name, qid, 0.05):
                    seen = time.perf_counter()
                    break
                time.sleep(0.001)
            th.join()
            if put.get("status", 0) // 100 != 2:
                sys.exit(f"PUT {name}: HTTP {put.get('status')}")
            if seen is None:
                sys.exit(f"{name} never resolved on the other node")
            f.write(f"{name} {(seen - t0) * 1e3:.3f} {(put['t'] - t0) * 1e3:.3f}\n")
            f.flush()

if __name__ == "__main__":
    {"check": check, "prop": prop}[sys.argv[1]](*sys.argv[2:])
PY
probe() { ip netns exec "$CL" python3 "$RIG_DIR/probe.py" "$@"; }

# --- the other servers, in the client's namespace --------------------------------------
ip netns exec "$CL" dnsmasq --keep-in-foreground --conf-file=/dev/null --no-resolv --no-hosts \
  --addn-hosts="$RIG_DIR/hosts" --listen-address="$DNSMASQ_ADDR" --bind-interfaces --port=53 \
  --user=root --pid-file="$RIG_DIR/dnsmasq.pid" --log-facility="$RIG_DIR/dnsmasq.log" &
PIDS+=($!)

# aardvark-dns (1.4) config dir: one file per network, named after it. First line: the
# addresses to listen on (comma-separated; the network's gateways), then optionally the
# network's upstream resolvers. Then one line per container: "ID IPV4S IPV6S NAMES" (lists
# comma-separated, an empty list is an empty field). Upstream 127.0.0.1: nothing listens
# there, so a name it does not own goes nowhere.
ip -n "$CL" addr add "$AARDVARK_ADDR/32" dev lo
mkdir -p "$RIG_DIR/aardvark"
{
  echo "$AARDVARK_ADDR 127.0.0.1"
  echo "cl $CLIENT_IP  client"
  awk '{printf "%s %s  %s\n", $2, $1, $2}' "$RIG_DIR/hosts"
} >"$RIG_DIR/aardvark/bench"
# It daemonizes once its servers are up (pid in aardvark.pid there); -p: the port to serve.
ip netns exec "$CL" "$AARDVARK" --config "$RIG_DIR/aardvark" -p 53 run >"$RIG_DIR/aardvark.log" 2>&1

NETD_PORT=$(ip netns exec "$CL" ss -Hlun 'src 127.0.0.11' | awk '{print $4}' | sed 's/.*://' | head -1)
[ -n "$NETD_PORT" ] || { log "netd's resolver socket not found in $CL"; exit 1; }

log "waiting for every name on every server"
SERVERS=(netd netd-direct dnsmasq aardvark)
declare -A ADDR=([netd]=127.0.0.11 [netd-direct]=127.0.0.11 [dnsmasq]=$DNSMASQ_ADDR [aardvark]=$AARDVARK_ADDR)
declare -A PORT=([netd]=53 [netd-direct]=$NETD_PORT [dnsmasq]=53 [aardvark]=53)
declare -A SRC=([netd]="" [netd-direct]="" [dnsmasq]="" [aardvark]=$CLIENT_IP)
for s in "${SERVERS[@]}"; do
  for t in $(seq 60); do
    n=$(probe check "${ADDR[$s]}" "${PORT[$s]}" "${SRC[$s]}" "$RIG_DIR/hosts")
    [ "$n" = "$ENDPOINTS" ] && break
    [ "$t" = 60 ] && { log "$s answers only $n/$ENDPOINTS names"; exit 1; }
    sleep 0.5
  done
done

# --- dnsperf ---------------------------------------------------------------------------
declare -A SPID=([netd]=$(cat "$RIG_DIR/n1/pid") [netd-direct]=$(cat "$RIG_DIR/n1/pid")
  [dnsmasq]=$(cat "$RIG_DIR/dnsmasq.pid") [aardvark]=$(cat "$RIG_DIR/aardvark/aardvark.pid"))
# dperf SERVER OUT ARGS...: one dnsperf run from the client's namespace.
# OUT.time: dnsperf's wall-clock, user and system seconds.
dperf() {
  local s=$1 out=$2 TIMEFORMAT='%R %U %S'
  shift 2
  { time ip netns exec "$CL" dnsperf -s "${ADDR[$s]}" -p "${PORT[$s]}" ${SRC[$s]:+-a "${SRC[$s]}"} \
    -d "$RIG_DIR/queries" -c "$CLIENTS" -q "$OUTSTANDING" "$@" >"$out" 2>&1; } 2>"$out.time" \
    || { log "dnsperf $s failed:"; tail "$out" >&2; return 1; }
}
# dstat FILE FIELD: from dnsperf's statistics.
dstat() {
  case $2 in
    qps) awk '/Queries per second:/ {print $4}' "$1" ;;
    avg) awk '/Average Latency/ {printf "%.3f\n", $4 * 1000}' "$1" ;;
    sd) awk '/Latency StdDev/ {printf "%.3f\n", $4 * 1000}' "$1" ;;
    lost) awk '/Queries lost:/ {print $3}' "$1" ;;
    sent) awk '/Queries sent:/ {print $3}' "$1" ;;
    done) awk '/Queries completed:/ {print $3}' "$1" ;;
    noerror) awk '/Response codes:/ {for (i = 3; i <= NF; i += 3) if ($i == "NOERROR") print $(i + 1)}' "$1" ;;
  esac
}
# ticks PID: CPU time (user + system, all threads) of a process, in clock ticks.
ticks() { awk '{sub(/.*\) /, ""); print $12 + $13}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
# lat: per-query latencies (ms) of answered queries in dnsperf -v output on stdin, sorted.
lat() { awk '$1 == ">" && $2 != "T" && $2 != "I" {printf "%.4f\n", $NF * 1000}' | sort -g; }
# pct P: nearest-rank percentile of sorted stdin.
pct() { awk -v p="$1" '{v[NR] = $1} END {i = int((p * NR + 99.999) / 100); if (i < 1) i = 1; if (i > NR) i = NR; printf "%.3f", v[i]}'; }
median() { sort -g | awk '{v[NR] = $1} END {print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'; }

# Throughput runs without -v: printing every answer costs dnsperf itself ~15% of its rate.
mkdir -p "$RIG_DIR/perf"
for r in $(seq "$RUNS"); do
  for s in "${SERVERS[@]}"; do
    log "run $r/$RUNS: $s throughput (${DURATION}s)"
    f=$RIG_DIR/perf/tput-$s-$r
    c0=$(ticks "${SPID[$s]}")
    dperf "$s" "$f.txt" -l "$DURATION"
    c1=$(ticks "${SPID[$s]}")
    awk -v t=$((c1 - c0)) -v hz="$HZ" -v n="$(dstat "$f.txt" done)" 'BEGIN {printf "%.2f\n", t / hz * 1e6 / n}' >"$f.cpu"
    awk '{printf "%.0f\n", ($2 + $3) / $1 * 100}' "$f.txt.time" >"$f.client"
    log "  $(dstat "$f.txt" qps) q/s, avg $(dstat "$f.txt" avg) ms, lost $(dstat "$f.txt" lost), server CPU $(cat "$f.cpu") us/query, dnsperf $(cat "$f.client")% of a core"
  done
  for s in "${SERVERS[@]}"; do
    log "run $r/$RUNS: $s latency at $LAT_QPS q/s (${LAT_DURATION}s)"
    dperf "$s" "$RIG_DIR/perf/lat-$s-$r.txt" -l "$LAT_DURATION" -Q "$LAT_QPS" -v
    lat <"$RIG_DIR/perf/lat-$s-$r.txt" >"$RIG_DIR/perf/lat-$s-$r.lat"
  done
done

if [ -n "$PERF_OUT" ]; then
  log "profiling netd during one more throughput run (${DURATION}s)"
  perf record -F 1999 -g -p "$(cat "$RIG_DIR/n1/pid")" -o "$RIG_DIR/perf.data" -- sleep "$DURATION" \
    >/dev/null 2>&1 &
  PERF_PID=$!
  sleep 0.2
  dperf netd "$RIG_DIR/perf/profiled.txt" -l "$DURATION"
  wait "$PERF_PID" || true
  {
    echo "# netd under dnsperf: $(dstat "$RIG_DIR/perf/profiled.txt" qps) q/s while profiled"
    echo "# by thread"
    perf report -i "$RIG_DIR/perf.data" --stdio --no-children --sort comm --percent-limit 0.5 -g none 2>/dev/null
    echo "# self time by function"
    perf report -i "$RIG_DIR/perf.data" --stdio --no-children --sort dso,symbol --percent-limit 0.5 -g none 2>/dev/null
    echo "# including callees"
    perf report -i "$RIG_DIR/perf.data" --stdio --children --sort symbol --percent-limit 3 -g none 2>/dev/null
  } | grep -v '^# \(To display\|Tip\|\.\.\.\)\|^#$\|^$' | sed 's/ *- *- *$//; s/ *$//' >"$PERF_OUT"
  cp "$RIG_DIR/perf.data" "$PERF_OUT.data" 2>/dev/null || true
  log "profile: $PERF_OUT"
fi

# --- propagation -----------------------------------------------------------------------
log "propagation: $PROP_ENDPOINTS endpoints created on node 2, looked up from node 1"
for i in $(seq "$PROP_ENDPOINTS"); do ip netns add "$RIG-p$i"; done
probe prop "$RIG_DIR/n2/netd.sock" "$RIG-p" pr "$PROP_ENDPOINTS" "$RIG_DIR/prop.txt"
PROP=$(awk '{print $2}' "$RIG_DIR/prop.txt" | sort -g)
PUT=$(awk '{print $3}' "$RIG_DIR/prop.txt" | sort -g)

# --- summary ---------------------------------------------------------------------------
declare -A QPS LINE CPU
for s in "${SERVERS[@]}"; do
  runs() { for r in $(seq "$RUNS"); do dstat "$RIG_DIR/perf/tput-$s-$r.txt" "$1"; done; }
  QPS[$s]=$(runs qps | median)
  range=$(runs qps | sort -g | awk 'NR == 1 {a = $1} {b = $1} END {printf "%.0f-%.0f", a, b}')
  CPU[$s]=$(for r in $(seq "$RUNS"); do cat "$RIG_DIR/perf/tput-$s-$r.cpu"; done | median)
  client=$(for r in $(seq "$RUNS"); do cat "$RIG_DIR/perf/tput-$s-$r.client"; done | median)
  for r in $(seq "$RUNS"); do cat "$RIG_DIR/perf/lat-$s-$r.lat"; done | sort -g >"$RIG_DIR/perf/lat-$s.all"
  answered=0; noerr=0; lost=0
  for r in $(seq "$RUNS"); do
    for f in "$RIG_DIR/perf/tput-$s-$r.txt" "$RIG_DIR/perf/lat-$s-$r.txt"; do
      answered=$((answered + $(dstat "$f" done))); noerr=$((noerr + $(dstat "$f" noerror)))
      lost=$((lost + $(dstat "$f" lost)))
    done
  done
  l=$RIG_DIR/perf/lat-$s.all
  LINE[$s]=$(printf '%-12s %8.0f %13s %6s %6s %6s %6s | %6s %6s %6s %6s %6s | %s/%s/%s' "$s" "${QPS[$s]}" "$range" \
    "$(runs avg | median)" "$(runs sd | median)" "${CPU[$s]}" "$client%" \
    "$(pct 50 <"$l")" "$(pct 90 <"$l")" "$(pct 99 <"$l")" "$(pct 99.9 <"$l")" "$(pct 100 <"$l")" \
    "$((answered - noerr))" "$lost" "$answered")
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", a / b}'; }
P99_LAT=$(pct 99 <"$RIG_DIR/perf/lat-netd.all")
PROP50=$(pct 50 <<<"$PROP"); PROP99=$(pct 99 <<<"$PROP"); PROPMAX=$(pct 100 <<<"$PROP")
R_DNSMASQ=$(ratio "${QPS[netd]}" "${QPS[dnsmasq]}")
verdict() { awk -v ok="$1" 'BEGIN {print ok ? "met" : "NOT met"}'; }

echo
echo "netd DNS benchmark: $(nproc) cores, kernel $(uname -r); $ENDPOINTS names ($((ENDPOINTS - ENDPOINTS / 10)) remote for netd)"
echo "dnsperf $(dnsperf -h 2>&1 | awk '/^Version/ {print $2}'): -c $CLIENTS -q $OUTSTANDING, ${DURATION}s x $RUNS per server (throughput), ${LAT_DURATION}s x $RUNS at $LAT_QPS q/s (latency)"
echo "us CPU: the server's CPU time (user + system, all threads) per answered query; dnsprf: dnsperf's"
echo "own CPU use (100% = one core: above ~90% the client, not the server, limits q/s)"
echo "servers: netd $("$NETD_BIN" --version 2>/dev/null | awk '{print $NF}'), $(dnsmasq --version | head -1 | awk '{print $1, $3}'), $("$AARDVARK" --version 2>/dev/null | tr -d '\n')"
echo
printf '%-12s %-51s | %-34s |\n' "" "saturated (median of runs)" "at $LAT_QPS q/s, all runs (ms)"
printf '%-12s %8s %13s %6s %6s %6s %6s | %6s %6s %6s %6s %6s | %s\n' server "q/s" "runs q/s" "avg ms" "sd ms" \
  "us CPU" dnsprf p50 p90 p99 p99.9 max "not NOERROR/lost/answered"
for s in "${SERVERS[@]}"; do echo "${LINE[$s]}"; done
echo
printf '%-44s %s\n' "q/s netd / dnsmasq" "$R_DNSMASQ x   (target >= 2: $(verdict "$(awk -v r="$R_DNSMASQ" 'BEGIN {print (r >= 2)}')"))"
printf '%-44s %s\n' "q/s netd / aardvark-dns" "$(ratio "${QPS[netd]}" "${QPS[aardvark]}") x"
printf '%-44s %s\n' "server CPU per query, netd / dnsmasq" "$(ratio "${CPU[netd]}" "${CPU[dnsmasq]}") x"
printf '%-44s %s\n' "q/s netd (DNAT) / netd-direct" "$(ratio "${QPS[netd]}" "${QPS[netd-direct]}") x"
printf '%-44s %s\n' "netd p99 at $LAT_QPS q/s" "$P99_LAT ms   (target < 1 ms: $(verdict "$(awk -v p="$P99_LAT" 'BEGIN {print (p < 1)}')"))"
printf '%-44s %s\n' "endpoint on node 2 -> name on node 1, p50" "$PROP50 ms"
printf '%-44s %s\n' "endpoint on node 2 -> name on node 1, p99" "$PROP99 ms   (target <= 200 ms: $(verdict "$(awk -v p="$PROP99" 'BEGIN {print (p <= 200)}')"))"
printf '%-44s %s\n' "endpoint on node 2 -> name on node 1, max" "$PROPMAX ms"
printf '%-44s %s\n' "  of which PUT answered, p50 / p99" "$(pct 50 <<<"$PUT") / $(pct 99 <<<"$PUT") ms"
printf '%-44s %s\n' "endpoints measured" "$(grep -c . <<<"$PROP")/$PROP_ENDPOINTS"
