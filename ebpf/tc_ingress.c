/* tc (TCX) ingress of the host end of every local container's veth (packets the container
 * sends): answers ARP and ICMP echo for service VIPs (see lib/vip_answer.h) and load-balances
 * TCP/UDP to VIPs that no socket hook translated (see lib/pkt_lb.h). */
#include "lib/vip_answer.h"
#include "lib/pkt_lb.h"

SEC("classifier")
int lb_tc_ingress(struct __sk_buff *skb)
{
	int r = lb_answer_vip(skb);
	if (r != TC_ACT_OK)
		return r;
	return lb_pkt_forward(skb);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
