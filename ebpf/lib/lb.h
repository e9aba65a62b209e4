/* Map layouts of netd's service load balancer: declared once here and mirrored by the
 * #[repr(C)] types in netd/src/lb/maps.rs (a unit test there checks the sizes agree).
 * Addresses and ports are in network byte order, as in struct bpf_sock_addr. */
#ifndef NETD_LB_H
#define NETD_LB_H

#include <linux/types.h>

/* Maglev table size per service (prime), number of service slots, backends. */
#define LB_MAGLEV_M 1021
#define LB_MAX_SERVICES 1024
#define LB_MAX_BACKENDS 16384
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

/* backends: backend id -> address. */
struct lb_backend {
	__be32 ip;
	__be16 port;
	__u8 proto;
	__u8 pad;
};

/* lb_maglev: array, index slot * LB_MAGLEV_M + i -> backend id. */

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

#endif
