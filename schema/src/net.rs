//! Network values of the helper protocol: firewall rules, port mappings,
//! bandwidth, what a container's network looks like. Every type checks its
//! own invariants while it is decoded (`try_from`), so a value the helper
//! holds is always well-formed; what depends on the helper's policy (the
//! pool, the port range) is checked by the helper.

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

/// Most rules one NetOut request carries, and most networks or port
/// ranges one rule holds (a datagram is 4 KiB anyway).
pub const MAX_RULES: usize = 64;
pub const MAX_RANGES: usize = 32;
/// Most NetOut rules and NetIn mappings one container may hold.
pub const MAX_RULES_PER_CONTAINER: usize = 512;
pub const MAX_NET_IN_PER_CONTAINER: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    All,
    Tcp,
    Udp,
    Icmp,
}

/// An inclusive range of IPv4 addresses, start <= end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(Ipv4Addr, Ipv4Addr)", into = "(Ipv4Addr, Ipv4Addr)")]
pub struct IpRange {
    start: Ipv4Addr,
    end: Ipv4Addr,
}

impl IpRange {
    pub fn new(start: Ipv4Addr, end: Ipv4Addr) -> Result<IpRange, String> {
        if start > end {
            return Err(format!("IP range {start}-{end} ends before it starts"));
        }
        Ok(IpRange { start, end })
    }
    pub fn start(&self) -> Ipv4Addr {
        self.start
    }
    pub fn end(&self) -> Ipv4Addr {
        self.end
    }
}

impl TryFrom<(Ipv4Addr, Ipv4Addr)> for IpRange {
    type Error = String;
    fn try_from((s, e): (Ipv4Addr, Ipv4Addr)) -> Result<Self, String> {
        IpRange::new(s, e).map_err(crate::envelope::refused)
    }
}

impl From<IpRange> for (Ipv4Addr, Ipv4Addr) {
    fn from(r: IpRange) -> Self {
        (r.start, r.end)
    }
}

/// An inclusive range of ports, 1 <= start <= end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "(u16, u16)", into = "(u16, u16)")]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    pub fn new(start: u16, end: u16) -> Result<PortRange, String> {
        if start == 0 || start > end {
            return Err(format!(
                "port range {start}-{end} must satisfy 1 <= start <= end <= 65535"
            ));
        }
        Ok(PortRange { start, end })
    }
    pub fn start(&self) -> u16 {
        self.start
    }
    pub fn end(&self) -> u16 {
        self.end
    }
}

impl TryFrom<(u16, u16)> for PortRange {
    type Error = String;
    fn try_from((s, e): (u16, u16)) -> Result<Self, String> {
        PortRange::new(s, e).map_err(crate::envelope::refused)
    }
}

impl From<PortRange> for (u16, u16) {
    fn from(r: PortRange) -> Self {
        (r.start, r.end)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IcmpMatch {
    pub icmp_type: u8,
    /// None: every code of the type.
    pub code: Option<u8>,
}

/// One NetOut allow rule. Invariants (checked by `new` and on decode): no
/// ports unless tcp or udp; an ICMP match only for icmp; log only for tcp
/// and all; at most MAX_RANGES networks and port ranges.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawRule", into = "RawRule")]
pub struct NetOutRule {
    protocol: Protocol,
    networks: Vec<IpRange>,
    ports: Vec<PortRange>,
    icmp: Option<IcmpMatch>,
    log: bool,
}

#[derive(Serialize, Deserialize)]
struct RawRule {
    protocol: Protocol,
    networks: Vec<IpRange>,
    ports: Vec<PortRange>,
    icmp: Option<IcmpMatch>,
    log: bool,
}

impl NetOutRule {
    /// Empty `networks`: every address; empty `ports`: every port.
    pub fn new(
        protocol: Protocol,
        networks: Vec<IpRange>,
        ports: Vec<PortRange>,
        icmp: Option<IcmpMatch>,
        log: bool,
    ) -> Result<NetOutRule, String> {
        if networks.len() > MAX_RANGES || ports.len() > MAX_RANGES {
            return Err(format!(
                "a rule may hold at most {MAX_RANGES} networks and {MAX_RANGES} port ranges"
            ));
        }
        if !ports.is_empty() && !matches!(protocol, Protocol::Tcp | Protocol::Udp) {
            return Err(format!(
                "ports are only allowed for tcp and udp rules, not {}",
                protocol.name()
            ));
        }
        if icmp.is_some() && protocol != Protocol::Icmp {
            return Err(format!(
                "an ICMP type is only allowed for icmp rules, not {}",
                protocol.name()
            ));
        }
        if log && !matches!(protocol, Protocol::Tcp | Protocol::All) {
            return Err(format!(
                "log is only allowed for tcp and all rules, not {}",
                protocol.name()
            ));
        }
        Ok(NetOutRule {
            protocol,
            networks,
            ports,
            icmp,
            log,
        })
    }
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
    pub fn networks(&self) -> &[IpRange] {
        &self.networks
    }
    pub fn ports(&self) -> &[PortRange] {
        &self.ports
    }
    pub fn icmp(&self) -> Option<IcmpMatch> {
        self.icmp
    }
    pub fn log(&self) -> bool {
        self.log
    }
}

impl Protocol {
    pub fn name(&self) -> &'static str {
        match self {
            Protocol::All => "all",
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Icmp => "icmp",
        }
    }
}

impl TryFrom<RawRule> for NetOutRule {
    type Error = String;
    fn try_from(r: RawRule) -> Result<Self, String> {
        NetOutRule::new(r.protocol, r.networks, r.ports, r.icmp, r.log)
            .map_err(crate::envelope::refused)
    }
}

impl From<NetOutRule> for RawRule {
    fn from(r: NetOutRule) -> Self {
        RawRule {
            protocol: r.protocol,
            networks: r.networks,
            ports: r.ports,
            icmp: r.icmp,
            log: r.log,
        }
    }
}

/// A NetIn mapping as the helper holds it: TCP to the host's own addresses
/// on `host_port` goes to the container's `container_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
}

/// Traffic shaping on the container's host-side veth: `rate` bytes per
/// second in each direction, with bursts of up to `burst` bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bandwidth {
    pub rate_bytes_per_sec: u64,
    pub burst_bytes: u64,
}

/// A container's network as the helper made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    pub ip: Ipv4Addr,
    pub gateway: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
}

/// Traffic counters of a container, from its side (rx = received by the
/// container).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetStats {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    pub rx_packets: u64,
    pub tx_packets: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_refuse_what_does_not_fit_their_protocol() {
        let p = || vec![PortRange::new(80, 80).unwrap()];
        assert!(NetOutRule::new(Protocol::Tcp, vec![], p(), None, true).is_ok());
        assert!(NetOutRule::new(Protocol::Icmp, vec![], p(), None, false)
            .unwrap_err()
            .contains("ports"));
        assert!(NetOutRule::new(Protocol::All, vec![], p(), None, false).is_err());
        let icmp = Some(IcmpMatch {
            icmp_type: 8,
            code: None,
        });
        assert!(NetOutRule::new(Protocol::Icmp, vec![], vec![], icmp, false).is_ok());
        assert!(NetOutRule::new(Protocol::Tcp, vec![], vec![], icmp, false).is_err());
        assert!(NetOutRule::new(Protocol::Udp, vec![], vec![], None, true)
            .unwrap_err()
            .contains("log"));
        assert!(PortRange::new(0, 1).is_err());
        assert!(PortRange::new(9, 8).is_err());
        assert!(IpRange::new(Ipv4Addr::new(10, 0, 0, 2), Ipv4Addr::new(10, 0, 0, 1)).is_err());
    }

    #[test]
    fn invalid_rules_are_refused_while_decoding() {
        let raw = RawRule {
            protocol: Protocol::Icmp,
            networks: vec![],
            ports: vec![PortRange::new(1, 2).unwrap()],
            icmp: None,
            log: false,
        };
        let bytes = postcard::to_allocvec(&raw).unwrap();
        assert!(postcard::from_bytes::<NetOutRule>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&(5u16, 4u16)).unwrap();
        assert!(postcard::from_bytes::<PortRange>(&bytes).is_err());
    }
}
