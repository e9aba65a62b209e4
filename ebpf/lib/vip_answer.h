/* Answers ARP and ICMP echo for service VIPs on the container-facing side of an attachment
 * (tc ingress of the host end of a container's veth: packets the container sends). A VIP has
 * no owner on the wire, so the reply is built in place from the request and sent back out of
 * the same device: ARP (any programmed VIP) with a MAC derived from the VIP, ICMP echo only
 * while the VIP's service has an enabled backend (Docker 1.13 semantics); an echo to a VIP
 * without backends is dropped (unanswered). */
#ifndef NETD_VIP_ANSWER_H
#define NETD_VIP_ANSWER_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "maps.h"

/* linux/if_arp.h and linux/icmp.h pull in libc headers: the few definitions needed, here. */
#define LB_ICMP_ECHOREPLY 0
#define LB_ICMP_ECHO 8

struct lb_icmphdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;
	__be16 seq;
};

#define LB_ARPHRD_ETHER 1
#define LB_ARPOP_REQUEST 1
#define LB_ARPOP_REPLY 2

struct lb_arphdr {
	__be16 ar_hrd;
	__be16 ar_pro;
	unsigned char ar_hln;
	unsigned char ar_pln;
	__be16 ar_op;
};

struct lb_arp_ipv4 {
	unsigned char sha[ETH_ALEN];
	__be32 sip;
	unsigned char tha[ETH_ALEN];
	__be32 tip;
} __attribute__((packed));

/* 0e:6e:<VIP>: locally administered, unicast, one per VIP. */
static __always_inline void lb_vip_mac(unsigned char *mac, __be32 vip)
{
	mac[0] = 0x0e;
	mac[1] = 0x6e;
	__builtin_memcpy(mac + 2, &vip, 4);
}

static __always_inline __u16 lb_csum_fold(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

static __always_inline int lb_answer_arp(struct __sk_buff *skb, void *data, void *end)
{
	struct ethhdr *eth = data;
	struct lb_arphdr *arp = (void *)(eth + 1);
	struct lb_arp_ipv4 *a = (void *)(arp + 1);

	if ((void *)(a + 1) > end)
		return TC_ACT_OK;
	if (arp->ar_hrd != bpf_htons(LB_ARPHRD_ETHER) || arp->ar_pro != bpf_htons(ETH_P_IP) ||
	    arp->ar_hln != ETH_ALEN || arp->ar_pln != 4 || arp->ar_op != bpf_htons(LB_ARPOP_REQUEST))
		return TC_ACT_OK;
	__be32 tip = a->tip;
	if (!bpf_map_lookup_elem(&lb_vips, &tip))
		return TC_ACT_OK;
	unsigned char mac[ETH_ALEN];
	lb_vip_mac(mac, tip);
	arp->ar_op = bpf_htons(LB_ARPOP_REPLY);
	__builtin_memcpy(a->tha, a->sha, ETH_ALEN);
	a->tip = a->sip;
	__builtin_memcpy(a->sha, mac, ETH_ALEN);
	a->sip = tip;
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int lb_answer_echo(struct __sk_buff *skb, void *data, void *end)
{
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);

	if ((void *)(ip + 1) > end)
		return TC_ACT_OK;
	if (ip->protocol != IPPROTO_ICMP || ip->ihl != 5)
		return TC_ACT_OK;
	__be32 vip = ip->daddr;
	__u32 *backends = bpf_map_lookup_elem(&lb_vips, &vip);
	if (!backends)
		return TC_ACT_OK;
	struct lb_icmphdr *icmp = (void *)(ip + 1);
	if ((void *)(icmp + 1) > end)
		return TC_ACT_OK;
	if (icmp->type != LB_ICMP_ECHO || icmp->code != 0 || (ip->frag_off & bpf_htons(0x3fff)))
		return TC_ACT_OK;
	if (*backends == 0)
		return TC_ACT_SHOT; /* nobody behind the VIP: no answer */

	/* Echo -> echo reply: swap addresses (the IP checksum does not change), type 8 -> 0
	 * (RFC 1624 incremental update of the ICMP checksum). */
	__u16 old = *(__u16 *)icmp;
	icmp->type = LB_ICMP_ECHOREPLY;
	__u16 new = *(__u16 *)icmp;
	icmp->checksum = ~lb_csum_fold((__u32)(__u16)~icmp->checksum + (__u16)~old + new);
	ip->daddr = ip->saddr;
	ip->saddr = vip;
	unsigned char mac[ETH_ALEN];
	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
	return bpf_redirect(skb->ifindex, 0);
}

static __always_inline int lb_answer_vip(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > end)
		return TC_ACT_OK;
	if (eth->h_proto == bpf_htons(ETH_P_ARP))
		return lb_answer_arp(skb, data, end);
	if (eth->h_proto == bpf_htons(ETH_P_IP))
		return lb_answer_echo(skb, data, end);
	return TC_ACT_OK;
}

#endif
