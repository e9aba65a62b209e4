//! Kernel-facing modules, one per subsystem. All of them drive the kernel's netlink interfaces
//! through iproute2 (`ip`, `bridge`) and nftables (`nft`) via the one runner in `cmd`: every
//! kernel change netd makes is a command that can be replayed by hand (`netd inspect` shows the
//! same objects with the same tools). The exception is IPVS (`ipvs`, over the small
//! generic-netlink client `genl`), driven in-process: a request per change, no process;
//! `ipvsadm -Ln` in the namespace shows the same objects. Reads too large for a
//! process and its JSON go in-process as well: the FDB and neighbors of a VXLAN device (`neigh`,
//! over the route-netlink client `rtnl`); `bridge fdb show` / `ip neigh show` list the same.
//! Both clients share the framing and socket of `netlink`.

pub mod cmd;
pub mod conntrack;
pub mod dns;
pub mod egress;
pub mod espfw;
pub mod genl;
pub mod ingress;
pub mod ipvs;
pub mod link;
pub mod neigh;
pub mod netlink;
pub mod netns;
pub mod rtnl;
#[cfg(test)]
pub mod test_ns;
pub mod xfrm;
