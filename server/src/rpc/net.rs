//! Translation between the API's network structs (ContainerSpec.network,
//! PortMapping, NetOutRule) and the helper's `net` values. Every malformed
//! field is an `invalidSpec` error naming it; what depends on the helper's
//! policy (the pool, the port range, per-container maxima) is the helper's
//! to check.

use crate::error::{ApiError, ApiResult};
use grove_schema::api_capnp::{net_out_rule, port_mapping};
use grove_schema::net::{self, IcmpMatch, IpRange, NetOutRule, PortMapping, PortRange, Protocol};
use std::net::Ipv4Addr;

/// ContainerSpec.network: "a.b.c.d" or "a.b.c.d/n" (n 0..=32); empty: the
/// helper picks an address from its pool. The address is the container's;
/// the prefix is checked for syntax only (the pool's subnet applies).
pub fn network_spec(field: &str, spec: &str) -> ApiResult<Option<Ipv4Addr>> {
    if spec.is_empty() {
        return Ok(None);
    }
    let bad = || {
        ApiError::invalid(
            field,
            format!("{spec:?} is not an IPv4 address a.b.c.d or a.b.c.d/n (n 0..=32)"),
        )
    };
    let (address, prefix) = match spec.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (spec, None),
    };
    if let Some(prefix) = prefix {
        let ok = !prefix.is_empty()
            && prefix.len() <= 2
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && prefix.parse::<u8>().is_ok_and(|n| n <= 32);
        if !ok {
            return Err(bad());
        }
    }
    address.parse::<Ipv4Addr>().map(Some).map_err(|_| bad())
}

/// A port given as UInt32: 0..=65535.
pub fn port(field: &str, value: u32) -> ApiResult<u16> {
    u16::try_from(value)
        .map_err(|_| ApiError::invalid(field, format!("{value} is not a port (0..=65535)")))
}

/// ContainerSpec.netIn: each mapping as the helper takes it (0 = "pick
/// one" / "same as the host port", as for Container.netIn).
pub fn port_mappings(
    field: &str,
    list: capnp::struct_list::Reader<'_, port_mapping::Owned>,
) -> ApiResult<Vec<PortMapping>> {
    if list.len() as usize > net::MAX_NET_IN_PER_CONTAINER {
        return Err(ApiError::invalid(
            field,
            format!(
                "{} mappings; a container may hold at most {}",
                list.len(),
                net::MAX_NET_IN_PER_CONTAINER
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, m)| {
            Ok(PortMapping {
                host_port: port(&format!("{field}[{i}].hostPort"), m.get_host_port())?,
                container_port: port(
                    &format!("{field}[{i}].containerPort"),
                    m.get_container_port(),
                )?,
            })
        })
        .collect()
}

pub fn fill_port_mappings(
    mut list: capnp::struct_list::Builder<'_, port_mapping::Owned>,
    mappings: &[PortMapping],
) {
    for (i, m) in mappings.iter().enumerate() {
        let mut entry = list.reborrow().get(i as u32);
        entry.set_host_port(m.host_port.into());
        entry.set_container_port(m.container_port.into());
    }
}

/// A list of NetOut rules for one helper request (all or nothing), at most
/// `net::MAX_RULES` of them.
pub fn net_out_rules(
    field: &str,
    list: capnp::struct_list::Reader<'_, net_out_rule::Owned>,
) -> ApiResult<Vec<NetOutRule>> {
    if list.len() as usize > net::MAX_RULES {
        return Err(ApiError::invalid(
            field,
            format!(
                "{} rules; at most {} may be added at once",
                list.len(),
                net::MAX_RULES
            ),
        ));
    }
    list.iter()
        .enumerate()
        .map(|(i, r)| net_out_rule(&format!("{field}[{i}]"), r))
        .collect()
}

/// One API NetOutRule. An empty IpRange.end means the single address
/// `start`, a PortRange.end of 0 the single port `start`.
pub fn net_out_rule(field: &str, r: net_out_rule::Reader<'_>) -> ApiResult<NetOutRule> {
    let protocol = match r.get_protocol() {
        Ok(net_out_rule::Protocol::All) => Protocol::All,
        Ok(net_out_rule::Protocol::Tcp) => Protocol::Tcp,
        Ok(net_out_rule::Protocol::Udp) => Protocol::Udp,
        Ok(net_out_rule::Protocol::Icmp) => Protocol::Icmp,
        Ok(net_out_rule::Protocol::Icmpv6) => {
            return Err(ApiError::invalid(
                &format!("{field}.protocol"),
                "icmpv6 rules are not supported: containers have no IPv6",
            ))
        }
        Err(_) => {
            return Err(ApiError::invalid(
                &format!("{field}.protocol"),
                "unknown protocol (all, tcp, udp or icmp)",
            ))
        }
    };
    let networks_field = format!("{field}.networks");
    let list = r
        .get_networks()
        .map_err(|e| ApiError::invalid(&networks_field, e.extra))?;
    let mut networks = Vec::with_capacity(list.len() as usize);
    for (i, range) in list.iter().enumerate() {
        let at = format!("{networks_field}[{i}]");
        let start = crate::rpc::text(&format!("{at}.start"), range.get_start())?;
        let end = crate::rpc::text(&format!("{at}.end"), range.get_end())?;
        let address = |name: &str, text: &str| {
            text.parse::<Ipv4Addr>().map_err(|_| {
                ApiError::invalid(
                    &format!("{at}.{name}"),
                    format!("{text:?} is not an IPv4 address"),
                )
            })
        };
        let start_ip = address("start", &start)?;
        let end_ip = if end.is_empty() {
            start_ip
        } else {
            address("end", &end)?
        };
        networks.push(IpRange::new(start_ip, end_ip).map_err(|e| ApiError::invalid(&at, e))?);
    }
    let ports_field = format!("{field}.ports");
    let list = r
        .get_ports()
        .map_err(|e| ApiError::invalid(&ports_field, e.extra))?;
    let mut ports = Vec::with_capacity(list.len() as usize);
    for (i, range) in list.iter().enumerate() {
        let (start, end) = (range.get_start(), range.get_end());
        let end = if end == 0 { start } else { end };
        ports.push(
            PortRange::new(start, end)
                .map_err(|e| ApiError::invalid(&format!("{ports_field}[{i}]"), e))?,
        );
    }
    let icmp = if r.get_has_icmps() {
        let icmps = r.get_icmps()?;
        Some(IcmpMatch {
            icmp_type: icmps.get_type(),
            code: icmps.get_has_code().then_some(icmps.get_code()),
        })
    } else {
        None
    };
    NetOutRule::new(protocol, networks, ports, icmp, r.get_log())
        .map_err(|e| ApiError::invalid(field, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_schema::api_capnp::net_out_rule::Protocol as P;

    #[test]
    fn network_specs() {
        let ip = |s| network_spec("spec.network", s);
        assert_eq!(ip("").unwrap(), None);
        assert_eq!(ip("10.0.0.5").unwrap(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert_eq!(ip("10.0.0.5/24").unwrap(), Some(Ipv4Addr::new(10, 0, 0, 5)));
        assert!(ip("10.0.0.5/0").is_ok());
        assert!(ip("10.0.0.5/32").is_ok());
        for bad in [
            "10.0.0",
            "10.0.0.5/33",
            "10.0.0.5/",
            "10.0.0.5/+1",
            "x",
            "::1",
            "1.2.3.4/024",
        ] {
            let e = ip(bad).unwrap_err();
            assert!(
                e.to_string().starts_with("[invalidSpec] spec.network:"),
                "{e}"
            );
            assert!(e.message.contains(bad), "{e}");
        }
    }

    #[test]
    fn ports_beyond_u16_are_refused() {
        assert_eq!(port("hostPort", 65535).unwrap(), 65535);
        assert_eq!(port("hostPort", 0).unwrap(), 0);
        assert!(port("hostPort", 65536)
            .unwrap_err()
            .message
            .starts_with("hostPort: 65536"));
    }

    /// A rule built in a message, converted.
    fn convert(build: impl FnOnce(net_out_rule::Builder<'_>)) -> ApiResult<NetOutRule> {
        let mut message = capnp::message::Builder::new_default();
        build(message.init_root::<net_out_rule::Builder<'_>>());
        let reader = message
            .get_root_as_reader::<net_out_rule::Reader<'_>>()
            .unwrap();
        net_out_rule("rule", reader)
    }

    #[test]
    fn rules_convert() {
        let rule = convert(|mut r| {
            r.set_protocol(P::Tcp);
            let mut n = r.reborrow().init_networks(2);
            n.reborrow().get(0).set_start("10.0.0.1");
            n.reborrow().get(0).set_end("10.0.0.9");
            n.reborrow().get(1).set_start("192.0.2.7");
            let mut p = r.reborrow().init_ports(2);
            p.reborrow().get(0).set_start(80);
            p.reborrow().get(1).set_start(8000);
            p.reborrow().get(1).set_end(8080);
            r.set_log(true);
        })
        .unwrap();
        assert_eq!(rule.protocol(), Protocol::Tcp);
        assert_eq!(rule.networks()[1].start(), rule.networks()[1].end());
        assert_eq!((rule.ports()[0].start(), rule.ports()[0].end()), (80, 80));
        assert_eq!(
            (rule.ports()[1].start(), rule.ports()[1].end()),
            (8000, 8080)
        );
        assert!(rule.log());

        let icmp = convert(|mut r| {
            r.set_protocol(P::Icmp);
            r.set_has_icmps(true);
            r.reborrow().init_icmps().set_type(8);
        })
        .unwrap();
        assert_eq!(
            icmp.icmp(),
            Some(IcmpMatch {
                icmp_type: 8,
                code: None
            })
        );
    }

    #[test]
    fn bad_rules_name_the_field() {
        let e = convert(|mut r| r.set_protocol(P::Icmpv6)).unwrap_err();
        assert_eq!(e.code, crate::error::Code::InvalidSpec);
        assert!(
            e.message.contains("rule.protocol") && e.message.contains("IPv6"),
            "{e}"
        );
        let e = convert(|mut r| {
            r.set_protocol(P::All);
            r.reborrow().init_networks(1).get(0).set_start("10.0.0.256");
        })
        .unwrap_err();
        assert!(
            e.message.starts_with("rule.networks[0].start:") && e.message.contains("10.0.0.256"),
            "{e}"
        );
        let e = convert(|mut r| {
            r.set_protocol(P::All);
            let mut n = r.reborrow().init_networks(1).get(0);
            n.set_start("10.0.0.9");
            n.set_end("10.0.0.1");
        })
        .unwrap_err();
        assert!(e.message.starts_with("rule.networks[0]:"), "{e}");
        let e = convert(|mut r| {
            r.set_protocol(P::Icmp);
            r.reborrow().init_ports(1).get(0).set_start(53);
        })
        .unwrap_err();
        assert!(e.message.starts_with("rule: ports are only allowed"), "{e}");
        let e = convert(|mut r| {
            r.set_protocol(P::Udp);
            r.set_log(true);
        })
        .unwrap_err();
        assert!(e.message.contains("log"), "{e}");
        let e = convert(|mut r| {
            r.set_protocol(P::Tcp);
            r.reborrow().init_ports(1).get(0).set_end(5);
        })
        .unwrap_err();
        assert!(e.message.starts_with("rule.ports[0]:"), "{e}");
    }
}
