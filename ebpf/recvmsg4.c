/* cgroup/recvmsg4: backend -> VIP:port (the peer the application connected to). */
#include "lib/sock_lb.h"

SEC("cgroup/recvmsg4")
int lb_recvmsg4(struct bpf_sock_addr *ctx)
{
	return lb_reverse(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
