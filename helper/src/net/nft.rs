//! Egress (NetOut) is decided in prerouting, before routing, for traffic
//! to other hosts, to other containers and to the host itself alike: a
//! packet refused there is never routed, so the host sends no ICMP
//! redirect for it (a redirect would use up the per-host ICMP rate limit
//! and swallow the reject), and the reject reaches the container at once.
//! It is decided before DNAT too (`egress` runs at dstnat - 10): a
//! container's connection to another container's NetIn port on a host
//! address is egress like any other, allowed only by a NetOut rule naming
//! that address and port as the container dialled them (issue 23: it used
//! to pass every container, NetOut or not).
//!
//! The helper's nftables ruleset: two tables of its own (`inet <table>` for
//! NAT and the firewall, `bridge <table>` against address spoofing and for
//! keeping containers apart at layer 2), never any other.
//!
//! Before conntrack, nothing from the bridge with a loopback address gets
//! in (`loopback`): the bridge has `route_localnet` while NetIn mappings
//! exist (host connections to 127.0.0.1:<port> leave DNAT'd with source
//! 127.0.0.1 and their replies come back to it), and without this chain a
//! container could send to the host's 127.0.0.1 services. The replies of
//! those connections arrive addressed to the gateway (masqueraded) and
//! become 127.0.0.1 only in conntrack, after this chain.
//!
//! A container's port passes only IPv4 and ARP (a VLAN-tagged frame shows
//! its tag's type and is dropped: the host would strip a VID-0 tag and take
//! the inner packet past the untagged-only checks), only from the port's
//! own MAC and address; the port learns nothing (netlink.rs `pin_port`).
//! Nor does a frame to an 802.1D reserved group (01:80:c2:00:00:0X) get
//! anywhere: the bridge would hand it up on the port itself, where the
//! host's IPv4 and ARP code take it past every check here (a datagram
//! NetOut does not allow, from any address; ARP entries from forged
//! addresses). The port forwards those groups (`pin_port`), so they meet
//! this table's prerouting chain, which drops them.
//! The host's ARP requests go only to the port that owns the address asked
//! for, and nothing but IPv4 and ARP from the host reaches a container.
//! A related packet (an ICMP error) from a container must concern a flow
//! of its own: its source must be the flow's endpoint in the packet's
//! direction (`selves` holds `a . a` for each container address, which is
//! how nft tests two values for equality), else a container could forge
//! errors for the host's flows with its neighbours.
//!
//! Containers never talk to each other at layer 2: the bridge forward chain
//! drops frames from one container port to another, so they meet only
//! through the host's routing (the bridge answers ARP for them,
//! proxy_arp_pvlan) and its firewall. The one exception is traffic the
//! host DNAT'd: where br_netfilter is loaded, a NetIn connection from one
//! container to another's mapped port is bridged, not routed, after DNAT.
//! The bridge family cannot see conntrack without nf_conntrack_bridge, so
//! the inet table marks every packet of a DNAT'd connection (`MARK`) and
//! the bridge table lets marked frames pass. (Kernel bridge-port isolation
//! would block exactly those frames, so it is not used.) Changes are nft
//! scripts applied with `nft -f -` — one transaction each, so a change is
//! applied whole or not at all — except a container's port and address,
//! which create and destroy change over netlink (nftset.rs).
//!
//! Why safe: the script is written from typed values only — addresses
//! (`Ipv4Addr`), ports and ICMP numbers (integers), the bridge and table
//! names the policy validated, link and chain names the helper derives
//! from a container's IP, and a handle (validated `[A-Za-z0-9._-]`) in a
//! log prefix. No string from a request reaches it unchecked; nft is run
//! by absolute path with a fixed argv and an empty environment.

use grove_schema::net::{NetOutRule, PortMapping, Protocol};
use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};

pub const NFT: &str = "/usr/sbin/nft";

/// The packet-mark bit Grove sets on packets of DNAT'd (NetIn)
/// connections, so the bridge table can tell a bridged NetIn connection
/// between two containers from a direct one. Other software that uses
/// packet marks must leave this bit alone.
pub const MARK: u32 = 0x0020_0000;

/// Names a container's objects get, from its IP (unique in the pool).
pub fn tag(ip: Ipv4Addr) -> String {
    format!("{:08x}", u32::from(ip))
}

/// The policy's network, as the ruleset needs it.
pub struct Skeleton<'a> {
    pub table: &'a str,
    pub bridge: &'a str,
    pub pool: (Ipv4Addr, u8),
    /// Uplinks whose forwarding the helper switched on.
    pub uplinks: &'a [String],
    /// The most conntrack entries a container's new flows may hold (the
    /// policy's conntrack_max_per_container; 0: no cap).
    pub flows_max: u32,
}

/// What one container contributes to the ruleset.
pub struct Entry<'a> {
    pub handle: &'a str,
    pub ip: Ipv4Addr,
    pub veth: &'a str,
    pub net_in: &'a [PortMapping],
    pub net_out: &'a [NetOutRule],
}

/// Run `nft -f -` with `script` on stdin.
pub fn apply(script: &str) -> Result<(), String> {
    let mut child = Command::new(NFT)
        .args(["-f", "-"])
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{NFT}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| format!("writing to nft: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for nft: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft refused the change: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// The whole ruleset, replacing whatever the two tables held: used at
/// start-up, so the kernel's state is exactly the helper's records.
pub fn rebuild(s: &Skeleton, entries: &[Entry]) -> String {
    let (t, br) = (s.table, s.bridge);
    let pool = format!("{}/{}", s.pool.0, s.pool.1);
    let uplinks: String = s
        .uplinks
        .iter()
        .map(|u| format!("\t\tiifname \"{u}\" drop\n"))
        .collect();
    // A container's new flows beyond its share of the host's conntrack
    // table are refused: each counts while its entry lives (ct count keeps
    // a list per source address in the dynamic set `flows`), so one
    // container cannot fill nf_conntrack_max and make the host drop
    // everyone's new flows.
    let flows_cap = match s.flows_max {
        0 => String::new(),
        n => format!(
            "\t\tct state new add @flows {{ ip saddr ct count over {n} }} \
             reject with icmpx admin-prohibited\n"
        ),
    };
    let mut out = format!(
        "table inet {t} {{}}\ndelete table inet {t}\n\
         table bridge {t} {{}}\ndelete table bridge {t}\n\
         table inet {t} {{\n\
         \tmap netout {{ type ipv4_addr : verdict; }}\n\
         \tset selves {{ type ipv4_addr . ipv4_addr; }}\n\
         \tset flows {{ type ipv4_addr; size 65535; flags dynamic; }}\n\
         \tchain loopback {{ type filter hook prerouting priority raw; policy accept;\n\
         \t\tiifname \"{br}\" ip daddr 127.0.0.0/8 drop\n\
         \t\tiifname \"{br}\" ip saddr 127.0.0.0/8 drop\n\t}}\n\
         \tmap netin {{ type inet_service : ipv4_addr . inet_service; }}\n\
         \tchain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n\
         \t\tfib daddr type local dnat ip to tcp dport map @netin\n\t}}\n\
         \tchain dnatted {{ type filter hook prerouting priority dstnat + 10; policy accept;\n\
         \t\tct status dnat meta mark set meta mark | {MARK:#x}\n\t}}\n\
         \tchain output {{ type nat hook output priority -100; policy accept;\n\
         \t\tfib daddr type local dnat ip to tcp dport map @netin\n\t}}\n\
         \tchain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {pool} ip daddr != {pool} oifname != \"{br}\" masquerade\n\
         \t\toifname \"{br}\" ip saddr {pool} ct status dnat masquerade\n\
         \t\toifname \"{br}\" ip saddr 127.0.0.0/8 masquerade\n\t}}\n\
         \tchain egress {{ type filter hook prerouting priority dstnat - 10; policy accept;\n\
         \t\tiifname != \"{br}\" accept\n\
         \t\tct state related ct direction original ip saddr . ct original ip saddr != @selves drop\n\
         \t\tct state related ct direction reply ip saddr . ct reply ip saddr != @selves drop\n\
         \t\tct state established,related accept\n\
         {flows_cap}\
         \t\tip saddr vmap @netout\n\
         \t\treject with icmpx admin-prohibited\n\t}}\n\
         \tchain forward {{ type filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         \t\tct status dnat accept\n\
         \t\tiifname \"{br}\" accept\n\
         \t\toifname \"{br}\" drop\n\
         {uplinks}\t}}\n\
         }}\n\
         table bridge {t} {{\n\
         \tset containers {{ type ifname; }}\n\
         \tset addresses {{ type ifname . ipv4_addr; }}\n\
         \tset macs {{ type ifname . ether_addr; }}\n\
         \tchain prerouting {{ type filter hook prerouting priority -300; policy accept;\n\
         \t\tiifname @containers ether type != {{ ip, arp }} drop\n\
         \t\tiifname @containers ether daddr 01:80:c2:00:00:00-01:80:c2:00:00:0f drop\n\
         \t\tiifname @containers iifname . ether saddr != @macs drop\n\
         \t\tether type ip iifname @containers iifname . ip saddr != @addresses drop\n\
         \t\tether type arp iifname @containers iifname . arp saddr ip != @addresses drop\n\
         \t\tether type arp iifname @containers iifname . arp saddr ether != @macs drop\n\t}}\n\
         \tchain forward {{ type filter hook forward priority 0; policy accept;\n\
         \t\tiifname @containers oifname @containers meta mark & {MARK:#x} == {MARK:#x} accept\n\
         \t\tiifname @containers oifname @containers drop\n\t}}\n\
         \tchain output {{ type filter hook output priority 0; policy accept;\n\
         \t\toifname @containers ether type != {{ ip, arp }} drop\n\
         \t\toifname @containers arp operation request oifname . arp daddr ip != @addresses drop\n\t}}\n\
         }}\n"
    );
    for e in entries {
        out.push_str(&add_container(s.table, e));
    }
    out
}

/// A container as the start-up rebuild writes it: its port, address and
/// MAC in the sets (created and destroyed containers change only these,
/// over netlink: see nftset.rs), its mappings, and its egress chain if it
/// has NetOut rules.
pub fn add_container(table: &str, e: &Entry) -> String {
    let mac: Vec<String> = super::mac_of(e.ip)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let mut out = format!(
        "add element bridge {table} containers {{ \"{veth}\" }}\n\
         add element bridge {table} addresses {{ \"{veth}\" . {ip} }}\n\
         add element bridge {table} macs {{ \"{veth}\" . {mac} }}\n\
         add element inet {table} selves {{ {ip} . {ip} }}\n",
        ip = e.ip,
        veth = e.veth,
        mac = mac.join(":"),
    );
    for m in e.net_in {
        out.push_str(&add_net_in(table, e.ip, *m));
    }
    if !e.net_out.is_empty() {
        out.push_str(&add_egress_chain(table, e.ip));
    }
    for r in e.net_out {
        out.push_str(&add_rule(table, e.handle, e.ip, r));
    }
    out
}

/// The egress chain of a container's NetOut rules and its entry in the
/// `netout` verdict map. A container without one falls through to the
/// base chain's reject. (nft's `add` of what exists is no error.)
pub fn add_egress_chain(table: &str, ip: Ipv4Addr) -> String {
    let id = tag(ip);
    format!(
        "add chain inet {table} out-{id}\n\
         add element inet {table} netout {{ {ip} : jump out-{id} }}\n"
    )
}

/// What NetIn and NetOut added for a container (empty when nothing).
pub fn remove_mappings_and_rules(table: &str, e: &Entry) -> String {
    let mut out = String::new();
    for m in e.net_in {
        out.push_str(&format!(
            "delete element inet {table} netin {{ {} }}\n",
            m.host_port
        ));
    }
    if !e.net_out.is_empty() {
        let id = tag(e.ip);
        out.push_str(&format!(
            "delete element inet {table} netout {{ {ip} }}\n\
             delete chain inet {table} out-{id}\n",
            ip = e.ip
        ));
    }
    out
}

pub fn add_net_in(table: &str, ip: Ipv4Addr, m: PortMapping) -> String {
    format!(
        "add element inet {table} netin {{ {} : {ip} . {} }}\n",
        m.host_port, m.container_port
    )
}

fn ranges<T: std::fmt::Display + PartialEq>(items: impl Iterator<Item = (T, T)>) -> String {
    let v: Vec<String> = items
        .map(|(a, b)| {
            if a == b {
                format!("{a}")
            } else {
                format!("{a}-{b}")
            }
        })
        .collect();
    format!("{{ {} }}", v.join(", "))
}

/// One NetOut rule as one nft rule in the container's egress chain.
pub fn add_rule(table: &str, handle: &str, ip: Ipv4Addr, r: &NetOutRule) -> String {
    let id = tag(ip);
    let mut m = String::new();
    if !r.networks().is_empty() {
        m.push_str(&format!(
            " ip daddr {}",
            ranges(r.networks().iter().map(|n| (n.start(), n.end())))
        ));
    }
    match r.protocol() {
        Protocol::All => {}
        Protocol::Tcp | Protocol::Udp => {
            m.push_str(&format!(" meta l4proto {}", r.protocol().name()));
            if !r.ports().is_empty() {
                m.push_str(&format!(
                    " th dport {}",
                    ranges(r.ports().iter().map(|p| (p.start(), p.end())))
                ));
            }
        }
        Protocol::Icmp => {
            m.push_str(" meta l4proto icmp");
            if let Some(icmp) = r.icmp() {
                m.push_str(&format!(" icmp type {}", icmp.icmp_type));
                if let Some(code) = icmp.code {
                    m.push_str(&format!(" icmp code {code}"));
                }
            }
        }
    }
    if r.log() {
        // nft limits a prefix to 127 bytes; handles are at most 128.
        let prefix: String = format!("grove {handle} ").chars().take(100).collect();
        m.push_str(&format!(" log prefix \"{prefix}\""));
    }
    format!("add rule inet {table} out-{id}{m} accept\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use grove_schema::net::{IcmpMatch, IpRange, PortRange};

    #[test]
    fn rules_are_written_from_typed_values() {
        let ip = Ipv4Addr::new(10, 254, 0, 2);
        let r = NetOutRule::new(
            Protocol::Tcp,
            vec![
                IpRange::new(Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 9)).unwrap(),
                IpRange::new(Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 8, 8)).unwrap(),
            ],
            vec![
                PortRange::new(80, 80).unwrap(),
                PortRange::new(8000, 8080).unwrap(),
            ],
            None,
            true,
        )
        .unwrap();
        assert_eq!(
            add_rule("grove", "web", ip, &r),
            "add rule inet grove out-0afe0002 ip daddr { 10.0.0.1-10.0.0.9, 8.8.8.8 } \
             meta l4proto tcp th dport { 80, 8000-8080 } log prefix \"grove web \" accept\n"
        );
        let icmp = NetOutRule::new(
            Protocol::Icmp,
            vec![],
            vec![],
            Some(IcmpMatch {
                icmp_type: 8,
                code: Some(0),
            }),
            false,
        )
        .unwrap();
        assert_eq!(
            add_rule("grove", "web", ip, &icmp),
            "add rule inet grove out-0afe0002 meta l4proto icmp icmp type 8 icmp code 0 accept\n"
        );
    }
}
