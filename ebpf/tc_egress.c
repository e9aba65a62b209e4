/* tc (TCX) egress of the host end of every local container's veth (packets to the container):
 * the reverse NAT of flows the packet-level LB translated (see lib/pkt_lb.h). */
#include "lib/pkt_lb.h"

SEC("classifier")
int lb_tc_egress(struct __sk_buff *skb)
{
	return lb_pkt_reply(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
