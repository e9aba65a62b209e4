#!/usr/bin/env bash
# netd demo: a 3-node cluster in network namespaces, an overlay network, containers on two
# nodes pinging each other across VXLAN. Tears everything down on exit or Ctrl-C.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
"$ROOT/scripts/setup.sh"
(cd "$ROOT" && cargo build --release -q -p netd)
RIG=demo
. "$ROOT/scripts/lib/rig.sh"
rig_cleanup 2>/dev/null || true
trap 'echo; echo "tearing down"; rm -rf /etc/netns/demo-c1; rig_cleanup' EXIT
trap 'exit 130' INT TERM
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "3 nodes on an underlay bridge, netd on each"
rig_underlay
for i in 1 2 3; do rig_node "$i" 3; done
sleep 1
api 1 GET /v1/node | jq -c '{node, peers: [.peers[] | {node, live}]}'

step "overlay network 'demo' (10.10.0.0/24, VNI 4242) on every node"
for i in 1 2 3; do
  api "$i" PUT /v1/networks/demo '{"subnet":"10.10.0.0/24","vni":4242}' | jq -c '{name, subnet, vni, effective_mtu}'
done

step "containers: c1 on node 1, c2 on node 2"
for i in 1 2; do
  ip netns add "demo-c$i"
  api "$i" PUT "/v1/endpoints/c$i" "{\"network\":\"demo\",\"netns\":\"/run/netns/demo-c$i\",\"ifname\":\"eth0\",\"name\":\"c$i\"}" \
    | jq -c '{id, address, mac, gateway, mtu}'
done
IP2=$(api 2 GET /v1/endpoints/c2 | jq -r .ip)

step "c1 -> c2 ($IP2) across nodes over VXLAN"
for t in $(seq 1 50); do ip netns exec demo-c1 ping -c1 -W1 "$IP2" >/dev/null 2>&1 && break; sleep 0.1; done
ip netns exec demo-c1 ping -c 3 -i 0.3 "$IP2"

step "names through the embedded DNS at 127.0.0.11 (c1 asks for c2)"
mkdir -p /etc/netns/demo-c1 && printf 'nameserver 127.0.0.11\noptions ndots:0\n' > /etc/netns/demo-c1/resolv.conf
ip netns exec demo-c1 dig +short @127.0.0.11 c2
ip netns exec demo-c1 ping -c 2 -i 0.3 c2

step "what node 1 sees (netd inspect network demo)"
nsenter --net=/run/netns/demo-n1 "$NETD" inspect --socket "$RIG_DIR/n1/netd.sock" network demo || true

if [ -t 0 ] && [ -z "${CI:-}" ]; then
  step "cluster is up; press Ctrl-C to tear down"
  while true; do sleep 3600; done
fi
