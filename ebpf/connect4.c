/* cgroup/connect4: VIP:port -> a backend. */
#include "lib/sock_lb.h"

SEC("cgroup/connect4")
int lb_connect4(struct bpf_sock_addr *ctx)
{
	return lb_translate(ctx);
}

char LICENSE[] SEC("license") = "Dual BSD/GPL";
