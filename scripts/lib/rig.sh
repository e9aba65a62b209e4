# Shared bash helpers for the demo and the benchmarks: a cluster of netd "nodes" as network
# namespaces on an underlay bridge. Source it; set RIG (a short unique prefix) first.
# Node i: netns $RIG-n$i, underlay address 192.168.$RIG_NET.$i/24 on eth0.

RIG_NET=${RIG_NET:-211}
ROOT=${ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}
NETD=${NETD_BIN:-$ROOT/target/release/netd}
RIG_DIR=${RIG_DIR:-/tmp/$RIG}

rig_underlay() {
  ip netns add "$RIG-ul"
  ip -n "$RIG-ul" link add br0 type bridge
  ip -n "$RIG-ul" link set br0 up
  ip -n "$RIG-ul" link set lo up
}

# rig_host NAME ADDR: a namespace on the underlay (a node, or a plain client)
rig_host() {
  local ns=$1 addr=$2
  ip netns add "$ns"
  ip link add eth0 netns "$ns" type veth peer name "u-${ns: -6}" netns "$RIG-ul"
  ip -n "$RIG-ul" link set "u-${ns: -6}" master br0 up
  ip -n "$ns" addr add "$addr/24" dev eth0
  ip -n "$ns" link set eth0 up
  ip -n "$ns" link set lo up
}

# rig_node I N: node I of N, with netd running
rig_node() {
  local i=$1 n=$2 seeds="" j
  for j in $(seq 1 "$n"); do [ "$j" = "$i" ] || seeds+="\"192.168.$RIG_NET.$j:7946\","; done
  rig_host "$RIG-n$i" "192.168.$RIG_NET.$i"
  mkdir -p "$RIG_DIR/n$i"
  cat > "$RIG_DIR/n$i/netd.toml" <<TOML
node_name = "$RIG-n$i"
advertise_addr = "192.168.$RIG_NET.$i"
seeds = [${seeds%,}]
gossip_keys = ["${RIG_KEY:-demo-cluster-key}"]
state_dir = "$RIG_DIR/n$i/state"
api_socket = "$RIG_DIR/n$i/netd.sock"
TOML
  # nsenter, not "ip netns exec": netd must share the host mount namespace so the sandbox
  # namespaces it creates under /run/netns outlive it.
  nsenter --net="/run/netns/$RIG-n$i" "$NETD" run --config "$RIG_DIR/n$i/netd.toml" \
    >"$RIG_DIR/n$i/netd.log" 2>&1 &
  echo $! > "$RIG_DIR/n$i/pid"
  local t
  for t in $(seq 1 100); do
    curl -sf --unix-socket "$RIG_DIR/n$i/netd.sock" http://netd/v1/node >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $i did not start; log:" >&2; cat "$RIG_DIR/n$i/netd.log" >&2; return 1
}

# api I METHOD PATH [BODY]
api() {
  local i=$1 m=$2 p=$3 b=${4:-}
  if [ -n "$b" ]; then
    curl -sS --unix-socket "$RIG_DIR/n$i/netd.sock" -X "$m" -H 'content-type: application/json' -d "$b" "http://netd$p"
  else
    curl -sS --unix-socket "$RIG_DIR/n$i/netd.sock" -X "$m" "http://netd$p"
  fi
}

rig_cleanup() {
  local f ns
  for f in "$RIG_DIR"/n*/pid; do [ -f "$f" ] && kill "$(cat "$f")" 2>/dev/null || true; done
  sleep 0.3
  for f in "$RIG_DIR"/n*/pid; do [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null || true; done
  for ns in $(ip netns list | awk '{print $1}' | grep -E "^($RIG-|nd-$RIG-)"); do
    ip netns del "$ns" 2>/dev/null || true
  done
  if [ "${KEEP:-0}" = 1 ]; then echo "run dir kept: $RIG_DIR" >&2; else rm -rf "$RIG_DIR"; fi
}

# rig_restart I: restarts netd on node I with its current config, e.g. after appending lines
# such as `dns_upstreams = [...]` to "$RIG_DIR/n$I/netd.toml"; waits for its API.
rig_restart() {
  local i=$1 pid t
  pid=$(cat "$RIG_DIR/n$i/pid")
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true # reaps it when this shell started it (rig_node)
  for t in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null || true
  nsenter --net="/run/netns/$RIG-n$i" "$NETD" run --config "$RIG_DIR/n$i/netd.toml" \
    >>"$RIG_DIR/n$i/netd.log" 2>&1 &
  echo $! > "$RIG_DIR/n$i/pid"
  for t in $(seq 1 100); do
    curl -sf --unix-socket "$RIG_DIR/n$i/netd.sock" http://netd/v1/node >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "node $i did not restart; log:" >&2; tail -20 "$RIG_DIR/n$i/netd.log" >&2; return 1
}
