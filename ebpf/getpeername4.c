/* cgroup/getpeername4: backend -> VIP:port (the peer the application connected to). */
#include "lib/sock_lb.h"

SEC("cgroup/getpeername4")
int lb_getpeername4(struct bpf_sock_addr *ctx)
{
	return lb_reverse(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
