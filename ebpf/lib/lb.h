/* Map layouts of netd's service load balancer: declared once here and mirrored by the
 * #[repr(C)] types in netd/src/lb/maps.rs (a unit test there checks the sizes agree).
 * Addresses and ports are in network byte order, as in struct bpf_sock_addr. */
#ifndef NETD_LB_H
#define NETD_LB_H

#include <linux/types.h>

/* Maglev table size per service (prime), number of service slots (frontends), backends. */
#define LB_MAGLEV_M 1021
#define LB_MAX_SERVICES 32768
#define LB_MAX_BACKENDS 262144
#define LB_MAX_REV_NAT 65536

/* services: VIP:port/proto -> slot + number of enabled backends. */
struct lb_svc_key {
	__be32 vip;
	__be16 port;
	__u8 proto; /* IPPROTO_TCP / IPPROTO_UDP */
	__u8 pad;
};

struct lb_svc_val {
	__u32 slot;  /* row of the service's Maglev table in lb_maglev */
	__u32 count; /* enabled backends; 0: connect/sendmsg are refused */
};

/* backends: backend id -> address (ip 0: unused) and MAC (the packet path addresses frames
 * to the backend). */
struct lb_backend {
	__be32 ip;
	__be16 port;
	__u8 proto;
	__u8 pad;
	__u8 mac[6];
	__u16 pad2;
};

/* lb_maglev: array, slot -> the service's Maglev table (backend ids), written whole by one
 * update (one syscall per service, 4 KiB per slot). */
struct lb_maglev_row {
	__u32 ids[LB_MAGLEV_M];
};

/* reverse NAT for UDP replies and getpeername: socket cookie + backend -> VIP. */
struct lb_rev_key {
	__u64 cookie;
	__be32 ip;
	__be16 port;
	__u16 pad;
};

struct lb_rev_val {
	__be32 vip;
	__be16 port;
	__u16 pad;
};

/* Packet-level LB (tc, traffic no socket hook saw): conntrack of the original direction
 * (client -> VIP) and of the replies (backend -> client), LRU. */
#define LB_MAX_CT 262144

struct lb_ct_key {
	__be32 saddr;
	__be32 daddr;
	__be16 sport;
	__be16 dport;
	__u8 proto;
	__u8 pad[3];
};

struct lb_ct_val {
	__be32 ip;   /* the backend (forward) or the VIP (reply) */
	__be16 port;
	__u16 pad;
	__u32 id;    /* backend id (forward) */
};

#endif
