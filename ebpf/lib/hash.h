/* The flow hash shared with netd/src/lb/hash.rs (same constants, same steps): a 64-bit
 * finalizer (murmur3 fmix64) over the socket cookie and the service, folded to 32 bits. */
#ifndef NETD_LB_HASH_H
#define NETD_LB_HASH_H

#include <linux/types.h>

static __always_inline __u64 lb_fmix64(__u64 k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdULL;
	k ^= k >> 33;
	k *= 0xc4ceb9fe1a85ec53ULL;
	k ^= k >> 33;
	return k;
}

/* vip and port as stored in the maps (network order), taken as plain integers. */
static __always_inline __u32 lb_flow_hash(__u64 cookie, __u32 vip, __u16 port, __u8 proto)
{
	__u64 svc = ((__u64)vip << 32) | ((__u64)port << 8) | proto;
	__u64 h = lb_fmix64(cookie ^ lb_fmix64(svc ^ 0x6e657464ULL));
	return (__u32)(h ^ (h >> 32));
}

/* The packet path's flow hash: the 5-tuple (as stored in packets), so every node picks the
 * same backend for a flow. */
static __always_inline __u32 lb_tuple_hash(__u32 saddr, __u16 sport, __u32 vip, __u16 port,
					   __u8 proto)
{
	__u64 svc = ((__u64)vip << 32) | ((__u64)port << 8) | proto;
	__u64 cli = ((__u64)saddr << 32) | sport;
	__u64 h = lb_fmix64(cli ^ lb_fmix64(svc ^ 0x6e657464ULL));
	return (__u32)(h ^ (h >> 32));
}

#endif
