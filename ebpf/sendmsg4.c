/* cgroup/sendmsg4: VIP:port -> a backend. */
#include "lib/sock_lb.h"

SEC("cgroup/sendmsg4")
int lb_sendmsg4(struct bpf_sock_addr *ctx)
{
	return lb_translate(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
