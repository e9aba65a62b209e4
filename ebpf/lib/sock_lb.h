/* Socket-level translation shared by connect4 and sendmsg4 (VIP -> backend) and by
 * recvmsg4 and getpeername4 (backend -> VIP). */
#ifndef NETD_SOCK_LB_H
#define NETD_SOCK_LB_H

#include <linux/bpf.h>
#include <linux/in.h>
#include <bpf/bpf_helpers.h>
#include "hash.h"
#include "maps.h"

#define LB_ECONNREFUSED 111
#define LB_SOCK_STREAM 1
#define LB_SOCK_DGRAM 2

/* Returns 1 (let the syscall go on, possibly with a rewritten address) or 0 with the
 * syscall's error set to ECONNREFUSED (a service without enabled backends). */
static __always_inline int lb_translate(struct bpf_sock_addr *ctx)
{
	struct lb_svc_key key = {};
	__u8 proto;

	if (ctx->type == LB_SOCK_STREAM)
		proto = IPPROTO_TCP;
	else if (ctx->type == LB_SOCK_DGRAM)
		proto = IPPROTO_UDP;
	else
		return 1;
	key.vip = ctx->user_ip4;
	key.port = (__be16)ctx->user_port;
	key.proto = proto;

	struct lb_svc_val *svc = bpf_map_lookup_elem(&lb_services, &key);
	if (!svc)
		return 1;
	if (svc->count == 0 || svc->slot >= LB_MAX_SERVICES)
		goto refuse;

	__u64 cookie = bpf_get_socket_cookie(ctx);
	__u32 slot = svc->slot;
	struct lb_maglev_row *row = bpf_map_lookup_elem(&lb_maglev, &slot);
	if (!row)
		goto refuse;
	__u32 i = lb_flow_hash(cookie, key.vip, key.port, proto) % LB_MAGLEV_M;
	asm volatile("" : "+r"(i)); /* keep the bounds check for the verifier */
	if (i >= LB_MAGLEV_M)
		goto refuse;
	__u32 id = row->ids[i];
	struct lb_backend *be = bpf_map_lookup_elem(&lb_backends, &id);
	if (!be || !be->ip)
		goto refuse;

	struct lb_rev_key rk = { .cookie = cookie, .ip = be->ip, .port = be->port };
	struct lb_rev_val rv = { .vip = key.vip, .port = key.port };
	bpf_map_update_elem(&lb_rev_nat, &rk, &rv, BPF_ANY);

	ctx->user_ip4 = be->ip;
	ctx->user_port = be->port;
	return 1;
refuse:
	bpf_set_retval(-LB_ECONNREFUSED);
	return 0;
}

static __always_inline int lb_reverse(struct bpf_sock_addr *ctx)
{
	struct lb_rev_key rk = {
		.cookie = bpf_get_socket_cookie(ctx),
		.ip = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
	};
	struct lb_rev_val *rv = bpf_map_lookup_elem(&lb_rev_nat, &rk);
	if (rv) {
		ctx->user_ip4 = rv->vip;
		ctx->user_port = rv->port;
	}
	return 1;
}

#endif
