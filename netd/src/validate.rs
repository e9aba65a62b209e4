//! Semantic validation of API requests against the current desired state. Nothing here touches
//! the kernel or the disk: a request that fails here changes nothing.

use crate::api::error::ApiError;
use crate::api::types::{EndpointMode, EndpointSpec, NetworkSpec};
use crate::ipam;
use crate::state::DesiredState;

pub const VNI_MIN: u32 = 4096;
pub const VNI_MAX: u32 = 16_777_215;

/// Names usable in URLs, namespaces and DNS.
pub fn name(field: &str, value: &str) -> Result<(), ApiError> {
    let ok = !value.is_empty()
        && value.len() <= 64
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !value.starts_with(['-', '.']);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            field,
            format!("{field}: {value:?} must be 1-64 characters of [A-Za-z0-9_.-], not starting with '-' or '.'"),
        ))
    }
}

pub fn network(state: &DesiredState, name_: &str, spec: &NetworkSpec) -> Result<(), ApiError> {
    name("name", name_)?;
    let subnet = spec.subnet;
    if subnet.network() != subnet.addr() {
        return Err(ApiError::invalid(
            "subnet",
            format!(
                "subnet: {subnet} has host bits set (did you mean {}?)",
                subnet.trunc()
            ),
        ));
    }
    if subnet.prefix_len() > 29 || subnet.prefix_len() < 8 {
        return Err(ApiError::invalid(
            "subnet",
            format!("subnet: prefix /{} is outside /8../29", subnet.prefix_len()),
        ));
    }
    if !(VNI_MIN..=VNI_MAX).contains(&spec.vni) {
        return Err(ApiError::invalid(
            "vni",
            format!("vni: {} is outside {VNI_MIN}..={VNI_MAX}", spec.vni),
        ));
    }
    if let Some(gw) = spec.gateway {
        if !ipam::assignable(&subnet, subnet.network(), gw) || gw == subnet.network() {
            return Err(ApiError::invalid(
                "gateway",
                format!("gateway: {gw} is not a host address of subnet {subnet}"),
            ));
        }
    }
    if let Some(mtu) = spec.mtu {
        if !(576..=9000).contains(&mtu) {
            return Err(ApiError::invalid(
                "mtu",
                format!("mtu: {mtu} is outside 576..=9000"),
            ));
        }
    }
    if let Some(existing) = state.networks.get(name_) {
        if existing != spec {
            // Redefinition is allowed only when no local endpoint depends on what changes.
            let in_use = state.endpoints_on(name_).next().is_some();
            if in_use && existing.encrypted != spec.encrypted {
                // The MTU handed to its containers depends on it (ESP overhead).
                return Err(ApiError::conflict(
                    "encrypted",
                    format!("network {name_:?} has endpoints; encrypted cannot change"),
                ));
            }
            if in_use
                && (existing.subnet != spec.subnet
                    || existing.vni != spec.vni
                    || existing.gateway != spec.gateway)
            {
                return Err(ApiError::conflict(
                    "subnet",
                    format!(
                        "network {name_:?} has endpoints; subnet, gateway and vni cannot change"
                    ),
                ));
            }
        }
    }
    for (other, o) in &state.networks {
        if other == name_ {
            continue;
        }
        if spec.ingress && o.ingress {
            return Err(ApiError::conflict(
                "ingress",
                format!("ingress: network {other:?} is already the ingress network (at most one)"),
            ));
        }
        if o.vni == spec.vni {
            return Err(ApiError::conflict(
                "vni",
                format!("vni: {} is already used by network {other:?}", spec.vni),
            ));
        }
        if o.subnet.contains(&spec.subnet) || spec.subnet.contains(&o.subnet) {
            return Err(ApiError::conflict(
                "subnet",
                format!(
                    "subnet: {} overlaps {} of network {other:?}",
                    spec.subnet, o.subnet
                ),
            ));
        }
    }
    Ok(())
}

pub const IFNAME_RESERVED: &str = "netdgw0";

pub fn endpoint(state: &DesiredState, id: &str, spec: &EndpointSpec) -> Result<(), ApiError> {
    name("id", id)?;
    let Some(net) = state.networks.get(&spec.network) else {
        return Err(ApiError::not_found(
            Some("network"),
            format!("network: {:?} does not exist on this node", spec.network),
        ));
    };
    name("name", &spec.name)?;
    for (i, a) in spec.aliases.iter().enumerate() {
        name(&format!("aliases[{i}]"), a)?;
    }
    if spec.ifname.is_empty()
        || spec.ifname.len() > 15
        || spec.ifname.contains(['/', ' ', ':'])
        || spec.ifname == IFNAME_RESERVED
    {
        return Err(ApiError::invalid(
            "ifname",
            format!("ifname: {:?} is not a valid interface name (1-15 characters, no '/', ':' or space, not {IFNAME_RESERVED})", spec.ifname),
        ));
    }
    if !spec.netns.is_absolute() {
        return Err(ApiError::invalid(
            "netns",
            format!("netns: {} must be an absolute path", spec.netns.display()),
        ));
    }
    if !spec.netns.exists() {
        return Err(ApiError::invalid(
            "netns",
            format!("netns: {} does not exist", spec.netns.display()),
        ));
    }
    if !is_netns(&spec.netns) {
        return Err(ApiError::invalid(
            "netns",
            format!("netns: {} is not a network namespace", spec.netns.display()),
        ));
    }
    let gateway = spec_gateway(net);
    if let Some(ip) = spec.ip {
        if !ipam::assignable(&net.subnet, gateway, ip) {
            return Err(ApiError::invalid(
                "ip",
                format!("ip: {ip} is not an assignable address of {} (network, broadcast and gateway {gateway} are reserved)", net.subnet),
            ));
        }
    }
    if let Some(mac) = &spec.mac {
        if !valid_unicast_mac(mac) {
            return Err(ApiError::invalid(
                "mac",
                format!("mac: {mac:?} is not a unicast MAC address like 02:42:0a:00:00:02"),
            ));
        }
    }
    if let Some(svc) = &spec.service {
        name("service.name", &svc.name)?;
        name("service.id", &svc.id)?;
        if svc.endpoint_mode == EndpointMode::Dnsrr && svc.vip.is_some() {
            return Err(ApiError::invalid(
                "service.vip",
                "service.vip: endpoint_mode dnsrr has no VIP",
            ));
        }
        for (i, p) in svc.ports.iter().enumerate() {
            if p.target_port == 0 {
                return Err(ApiError::invalid(
                    format!("service.ports[{i}].target_port"),
                    "target_port: must be 1-65535",
                ));
            }
            crate::ingress::validate_port(i, p, svc.endpoint_mode)?;
        }
    }
    // Same container interface used by another endpoint?
    for (other, e) in &state.endpoints {
        if other != id && e.spec.netns == spec.netns && e.spec.ifname == spec.ifname {
            return Err(ApiError::conflict(
                "ifname",
                format!(
                    "ifname: {} in {} is already used by endpoint {other:?}",
                    spec.ifname,
                    spec.netns.display()
                ),
            ));
        }
    }
    Ok(())
}

/// Whether `path` is a namespace file (nsfs), as /run/netns/* and /proc/PID/ns/net are.
pub fn is_netns(path: &std::path::Path) -> bool {
    const NSFS_MAGIC: i64 = 0x6e73_6673;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes into the zeroed struct we own.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == NSFS_MAGIC }
}

pub fn spec_gateway(net: &NetworkSpec) -> std::net::Ipv4Addr {
    net.gateway
        .unwrap_or_else(|| ipam::default_gateway(&net.subnet))
}

pub fn valid_unicast_mac(mac: &str) -> bool {
    let parts: Vec<&str> = mac.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
        && u8::from_str_radix(parts[0], 16).is_ok_and(|b| b & 1 == 0)
        && mac != "00:00:00:00:00:00"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(subnet: &str, vni: u32) -> NetworkSpec {
        NetworkSpec {
            subnet: subnet.parse().unwrap(),
            gateway: None,
            vni,
            encrypted: false,
            internal: false,
            attachable: true,
            mtu: None,
            labels: Default::default(),
            ingress: false,
        }
    }

    #[test]
    fn network_rules() {
        let mut st = DesiredState::default();
        network(&st, "a", &spec("10.1.0.0/24", 4097)).unwrap();
        st.networks.insert("a".into(), spec("10.1.0.0/24", 4097));
        assert_eq!(
            network(&st, "b", &spec("10.1.0.0/16", 4098))
                .unwrap_err()
                .field
                .as_deref(),
            Some("subnet")
        );
        assert_eq!(
            network(&st, "b", &spec("10.2.0.0/24", 4097))
                .unwrap_err()
                .field
                .as_deref(),
            Some("vni")
        );
        assert_eq!(
            network(&st, "b", &spec("10.2.0.0/24", 100))
                .unwrap_err()
                .field
                .as_deref(),
            Some("vni")
        );
        let mut s = spec("10.2.0.0/24", 4098);
        s.gateway = Some("10.3.0.1".parse().unwrap());
        assert_eq!(
            network(&st, "b", &s).unwrap_err().field.as_deref(),
            Some("gateway")
        );
        assert_eq!(
            network(&st, "b", &spec("10.2.0.1/24", 4098))
                .unwrap_err()
                .field
                .as_deref(),
            Some("subnet")
        );
        // idempotent re-PUT
        network(&st, "a", &spec("10.1.0.0/24", 4097)).unwrap();
    }

    #[test]
    fn encryption_cannot_change_under_endpoints() {
        let mut st = DesiredState::default();
        st.networks.insert("a".into(), spec("10.1.0.0/24", 4097));
        let mut enc = spec("10.1.0.0/24", 4097);
        enc.encrypted = true;
        // no endpoints: allowed
        network(&st, "a", &enc).unwrap();
        st.endpoints.insert(
            "e1".into(),
            crate::state::LocalEndpoint {
                spec: serde_json::from_str(
                    r#"{"network":"a","netns":"/run/netns/c1","ifname":"eth0","name":"c1"}"#,
                )
                .unwrap(),
                ip: "10.1.0.2".parse().unwrap(),
                mac: "02:42:0a:01:00:02".into(),
                service_disabled: false,
            },
        );
        let e = network(&st, "a", &enc).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("encrypted"), "{}", e.message);
    }

    #[test]
    fn macs() {
        assert!(valid_unicast_mac("02:42:0a:00:00:02"));
        assert!(!valid_unicast_mac("01:00:5e:00:00:01"));
        assert!(!valid_unicast_mac("02:42:0a:00:00"));
        assert!(!valid_unicast_mac("zz:42:0a:00:00:01"));
    }
}
