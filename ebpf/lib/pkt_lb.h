/* Packet-level LB on the host end of a container's veth, for traffic to a VIP that no socket
 * hook translated (a process outside the LB cgroup, forwarded packets): DNAT to a backend
 * chosen by Maglev on the 5-tuple hash (the same on every node), conntrack in LRU maps, the
 * destination MAC set to the backend's (the bridge then forwards it, locally or over VXLAN);
 * replies get the VIP back on their way into the container. */
#ifndef NETD_PKT_LB_H
#define NETD_PKT_LB_H

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/ip.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "hash.h"
#include "maps.h"

#define LB_IP_OFF ETH_HLEN
#define LB_L4_OFF (ETH_HLEN + sizeof(struct iphdr))
#define LB_IP_CSUM_OFF (LB_IP_OFF + 10)
#define LB_IP_SADDR_OFF (LB_IP_OFF + 12)
#define LB_IP_DADDR_OFF (LB_IP_OFF + 16)

/* Parses an unfragmented IPv4 TCP/UDP packet without options: the tuple, or -1. */
static __always_inline int lb_parse(struct __sk_buff *skb, struct lb_ct_key *k)
{
	void *data = (void *)(long)skb->data;
	void *end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct iphdr *ip = (void *)(eth + 1);
	__be16 *ports = (void *)(ip + 1);

	if ((void *)(ports + 2) > end)
		return -1;
	if (eth->h_proto != bpf_htons(ETH_P_IP) || ip->ihl != 5 ||
	    (ip->frag_off & bpf_htons(0x3fff)))
		return -1;
	if (ip->protocol != IPPROTO_TCP && ip->protocol != IPPROTO_UDP)
		return -1;
	k->saddr = ip->saddr;
	k->daddr = ip->daddr;
	k->sport = ports[0];
	k->dport = ports[1];
	k->proto = ip->protocol;
	return 0;
}

static __always_inline __u32 lb_l4_csum_off(__u8 proto)
{
	return LB_L4_OFF + (proto == IPPROTO_TCP ? 16 : 6);
}

/* Rewrites one address (at addr_off) and one port (at port_off) with checksum updates. */
static __always_inline int lb_rewrite(struct __sk_buff *skb, __u8 proto, __u32 addr_off,
				      __be32 old_ip, __be32 new_ip, __u32 port_off,
				      __be16 old_port, __be16 new_port)
{
	__u32 csum_off = lb_l4_csum_off(proto);
	__u64 flags = proto == IPPROTO_UDP ? BPF_F_MARK_MANGLED_0 : 0;

	if (bpf_l4_csum_replace(skb, csum_off, old_ip, new_ip, flags | BPF_F_PSEUDO_HDR | 4))
		return -1;
	if (bpf_l3_csum_replace(skb, LB_IP_CSUM_OFF, old_ip, new_ip, 4))
		return -1;
	if (bpf_skb_store_bytes(skb, addr_off, &new_ip, 4, 0))
		return -1;
	if (old_port != new_port) {
		if (bpf_l4_csum_replace(skb, csum_off, old_port, new_port, flags | 2))
			return -1;
		if (bpf_skb_store_bytes(skb, port_off, &new_port, 2, 0))
			return -1;
	}
	return 0;
}

/* tc ingress of the host end (packets from the container). */
static __always_inline int lb_pkt_forward(struct __sk_buff *skb)
{
	struct lb_ct_key k = {};

	if (lb_parse(skb, &k))
		return TC_ACT_OK;
	struct lb_svc_key sk = { .vip = k.daddr, .port = k.dport, .proto = k.proto };
	struct lb_svc_val *svc = bpf_map_lookup_elem(&lb_services, &sk);
	if (!svc)
		return TC_ACT_OK;
	if (svc->count == 0)
		return TC_ACT_SHOT;

	struct lb_backend *be = NULL;
	struct lb_ct_val *ct = bpf_map_lookup_elem(&lb_ct, &k);
	__u32 id = 0;
	if (ct) {
		id = ct->id;
		be = bpf_map_lookup_elem(&lb_backends, &id);
		/* the backend went (or its id was reused): pick again */
		if (be && (be->ip != ct->ip || be->port != ct->port))
			be = NULL;
	}
	if (!be) {
		__u32 slot = svc->slot;
		struct lb_maglev_row *row = bpf_map_lookup_elem(&lb_maglev, &slot);
		if (!row)
			return TC_ACT_SHOT;
		__u32 i = lb_tuple_hash(k.saddr, k.sport, k.daddr, k.dport, k.proto) % LB_MAGLEV_M;
		asm volatile("" : "+r"(i));
		if (i >= LB_MAGLEV_M)
			return TC_ACT_SHOT;
		id = row->ids[i];
		be = bpf_map_lookup_elem(&lb_backends, &id);
	}
	if (!be || !be->ip)
		return TC_ACT_SHOT;
	__be32 bip = be->ip;
	__be16 bport = be->port;
	__u8 mac[ETH_ALEN];
	__builtin_memcpy(mac, be->mac, ETH_ALEN);
	if (!(mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5]))
		return TC_ACT_SHOT; /* MAC unknown */

	struct lb_ct_val fwd = { .ip = bip, .port = bport, .id = id };
	bpf_map_update_elem(&lb_ct, &k, &fwd, BPF_ANY);
	struct lb_ct_key rk = {
		.saddr = bip, .daddr = k.saddr, .sport = bport, .dport = k.sport, .proto = k.proto,
	};
	struct lb_ct_val rev = { .ip = k.daddr, .port = k.dport };
	bpf_map_update_elem(&lb_ct_rev, &rk, &rev, BPF_ANY);

	if (lb_rewrite(skb, k.proto, LB_IP_DADDR_OFF, k.daddr, bip, LB_L4_OFF + 2, k.dport, bport))
		return TC_ACT_SHOT;
	if (bpf_skb_store_bytes(skb, 0, mac, ETH_ALEN, 0))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

/* tc egress of the host end (packets to the container): replies of translated flows. */
static __always_inline int lb_pkt_reply(struct __sk_buff *skb)
{
	struct lb_ct_key k = {};

	if (lb_parse(skb, &k))
		return TC_ACT_OK;
	struct lb_ct_val *rev = bpf_map_lookup_elem(&lb_ct_rev, &k);
	if (!rev)
		return TC_ACT_OK;
	__be32 vip = rev->ip;
	__be16 vport = rev->port;
	if (lb_rewrite(skb, k.proto, LB_IP_SADDR_OFF, k.saddr, vip, LB_L4_OFF, k.sport, vport))
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}

#endif
