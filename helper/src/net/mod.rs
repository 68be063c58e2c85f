//! Container networking: a bridge carrying the pool's gateway, a veth pair
//! per container (host end on the bridge, `eth0` in the container's netns),
//! addresses from the policy's pool, NetIn as DNAT, NetOut as an allowlist
//! with default deny, bandwidth shaping with tc.
//!
//! The helper allocates IPs and host ports itself: it must hold the full
//! table anyway to refuse a taken address from a compromised groved, and
//! one table cannot disagree with itself. Each container's share is a
//! record, `depot/<handle>/network.json`, written (temp, fsync, rename)
//! only after the kernel accepted the change; at start-up the nftables
//! ruleset is rebuilt from the records in one transaction.
//!
//! Why safe, in one place: every name given to the kernel (links, chains)
//! is derived here from an address inside the policy's pool; every
//! address and port comes from the policy's ranges and is checked against
//! the table before use; nothing is done in a network namespace other than
//! the host's and the container's own (entered only to make a socket).

pub mod netlink;
pub mod nft;
pub mod nftset;
pub mod tc;

use crate::fs;
use grove_schema::fault::crash_point;
use grove_schema::helper::{ErrorKind, HelperError};
use grove_schema::net::{
    Bandwidth, NetOutRule, NetStats, NetworkInfo, PortMapping, MAX_NET_IN_PER_CONTAINER, MAX_RULES,
    MAX_RULES_PER_CONTAINER,
};
use grove_schema::Handle;
use netlink::Netlink;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, BorrowedFd};

/// The policy's network settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConf {
    pub bridge: String,
    /// The pool's network address and prefix length.
    pub pool: (Ipv4Addr, u8),
    pub port_range: (u16, u16),
    pub nft_table: String,
    pub mtu: u32,
    pub uplinks: Uplinks,
    /// The most conntrack entries one container's flows may hold (0: no
    /// cap); see nft::rebuild.
    pub conntrack_max_per_container: u32,
}

/// Which interfaces carry replies to masqueraded traffic back in (and so
/// need forwarding on; see `enable_uplinks`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Uplinks {
    /// The interfaces of the host's default routes.
    Auto,
    /// None: the operator manages forwarding.
    None,
    List(Vec<String>),
}

pub fn parse_uplinks(v: &str) -> Result<Uplinks, String> {
    match v {
        "auto" => Ok(Uplinks::Auto),
        "none" => Ok(Uplinks::None),
        list => list
            .split(',')
            .map(|i| parse_ifname(i.trim()))
            .collect::<Result<_, _>>()
            .map(Uplinks::List)
            .map_err(|e| format!("{e} (or auto, or none)")),
    }
}

/// A container's default share of the host's conntrack table: ample for
/// a busy service (entries of closed TCP connections linger two minutes),
/// 3 % of a 262,144-entry table. SECURITY.md says how to size it.
pub const DEFAULT_CONNTRACK_MAX_PER_CONTAINER: u32 = 8192;

impl Default for NetConf {
    fn default() -> Self {
        NetConf {
            bridge: "grove0".into(),
            pool: (Ipv4Addr::new(10, 254, 0, 0), 22),
            port_range: (61000, 64999),
            nft_table: "grove".into(),
            mtu: 1500,
            uplinks: Uplinks::Auto,
            conntrack_max_per_container: DEFAULT_CONNTRACK_MAX_PER_CONTAINER,
        }
    }
}

/// Policy value parsers (errors say what is allowed).
pub fn parse_ifname(v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 15
        || !v
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(format!(
            "{v:?} must be 1 to 15 of A-Z a-z 0-9 _ - (a Linux interface name)"
        ));
    }
    Ok(v.to_string())
}

pub fn parse_table(v: &str) -> Result<String, String> {
    if v.is_empty()
        || v.len() > 64
        || !v.starts_with(|c: char| c.is_ascii_alphabetic())
        || !v.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(format!(
            "{v:?} must be 1 to 64 of A-Z a-z 0-9 _, starting with a letter"
        ));
    }
    Ok(v.to_string())
}

pub fn parse_cidr(v: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = v
        .split_once('/')
        .ok_or_else(|| format!("{v:?} is not a CIDR (a.b.c.d/n)"))?;
    let ip: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{v:?}: {a:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .ok()
        .filter(|n| (8..=30).contains(n))
        .ok_or_else(|| format!("{v:?}: the prefix length must be 8 to 30"))?;
    if u32::from(ip) & !mask(prefix) != 0 {
        return Err(format!(
            "{v:?}: host bits are set (the network is {}/{prefix})",
            Ipv4Addr::from(u32::from(ip) & mask(prefix))
        ));
    }
    Ok((ip, prefix))
}

pub fn parse_port_range(v: &str) -> Result<(u16, u16), String> {
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| format!("{v:?} is not a port range (A-B)"))?;
    let a: u16 = a
        .trim()
        .parse()
        .map_err(|_| format!("{v:?}: {a:?} is not a port"))?;
    let b: u16 = b
        .trim()
        .parse()
        .map_err(|_| format!("{v:?}: {b:?} is not a port"))?;
    if a == 0 || a > b {
        return Err(format!("{v:?} must satisfy 1 <= A <= B <= 65535"));
    }
    Ok((a, b))
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

/// What the helper keeps about one container's network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub ip: Ipv4Addr,
    pub net_in: Vec<PortMapping>,
    pub net_out: Vec<NetOutRule>,
    /// The shaping as it was asked for (the kernel rounds the burst).
    #[serde(default)]
    pub bandwidth: Option<Bandwidth>,
}

const RECORD: &str = "network.json";

fn invalid(msg: impl Into<String>) -> HelperError {
    HelperError::new(ErrorKind::InvalidValue, msg)
}

fn system(what: &str, e: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what}: {e}"))
}

pub struct Network {
    pub conf: NetConf,
    gateway: Ipv4Addr,
    bridge_index: i32,
    records: BTreeMap<Handle, Record>,
    /// Uplinks whose forwarding the helper switched on (so it keeps them
    /// from routing anything but container traffic).
    uplinks: Vec<String>,
    /// The nf_tables socket for containers' ports (create and destroy).
    sets: std::cell::RefCell<nftset::Sets>,
    /// Where the next search for a free address starts.
    next_ip: std::cell::Cell<u32>,
}

fn veth_of(ip: Ipv4Addr) -> String {
    format!("gv{}", nft::tag(ip))
}

/// The container's eth0 MAC, set by the helper so the bridge table can
/// bind the port to it: locally administered unicast, made from the
/// address like the bridge's own from the gateway.
pub(crate) fn mac_of(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x67, o[0], o[1], o[2], o[3]]
}

fn ifb_of(ip: Ipv4Addr) -> String {
    format!("gi{}", nft::tag(ip))
}

/// Outbound NAT needs the replies that arrive on the uplink (the
/// interfaces of the host's default routes) to be routed to the bridge,
/// which the kernel does only where the *arriving* interface has
/// forwarding on. Where it is off, the helper switches it on and leaves a
/// marker in its runtime dir (gone at reboot, like the setting), and the
/// ruleset then drops whatever else would be routed from that uplink: the
/// host does not become a router for anything but its containers. Where
/// the operator had it on already, nothing changes.
fn enable_uplinks(
    candidates: &[String],
    bridge: &str,
    runtime: BorrowedFd,
) -> Result<Vec<String>, String> {
    let mut ours = Vec::new();
    for iface in candidates {
        if iface == bridge || parse_ifname(iface).is_err() || ours.contains(iface) {
            continue;
        }
        let marker = format!(".forwarding-{iface}");
        let path = format!("/proc/sys/net/ipv4/conf/{iface}/forwarding");
        let on = std::fs::read_to_string(&path)
            .map_err(|e| format!("{path}: {e}"))?
            .trim()
            == "1";
        let marked = fs::read_file_at(runtime, &marker).is_ok();
        if !on {
            fs::write_file_at(runtime, &marker, b"on\n", 0o600)
                .map_err(|e| format!("{marker}: {e}"))?;
            write_sysctl(&path, "1")?;
            log_info!(
                "grove-helper: forwarding switched on for uplink {iface} (container traffic only)"
            );
        }
        if !on || marked {
            ours.push(iface.clone());
        }
    }
    Ok(ours)
}

fn write_sysctl(path: &str, value: &str) -> Result<(), String> {
    std::fs::write(path, value).map_err(|e| format!("{path}: {e}"))
}

/// IPv4 routes of the host as (interface, network, prefix), from
/// /proc/net/route (addresses in the kernel's byte order).
fn host_routes() -> Result<Vec<(String, u32, u8)>, String> {
    let text =
        std::fs::read_to_string("/proc/net/route").map_err(|e| format!("/proc/net/route: {e}"))?;
    let mut out = Vec::new();
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 8 {
            continue;
        }
        let word = |s: &str| {
            u32::from_str_radix(s, 16)
                // The file shows each address as a hex u32 in host (little-
                // endian) order: its bytes in memory are the octets.
                .map(|v| u32::from_be_bytes(v.to_le_bytes()))
                .map_err(|e| format!("/proc/net/route: {s:?}: {e}"))
        };
        let (net, mask) = (word(f[1])?, word(f[7])?);
        out.push((f[0].to_string(), net, mask.count_ones() as u8));
    }
    Ok(out)
}

impl Network {
    /// Set up the bridge and check the pool at start-up. Refuses a pool
    /// that overlaps a route of the host on any other interface.
    pub fn init(conf: NetConf, runtime: BorrowedFd) -> Result<Network, String> {
        let (net, prefix) = conf.pool;
        let pool_mask = mask(prefix);
        let routes = host_routes()?;
        // Addresses that are never a container's: this host, nobody,
        // link-local, multicast and reserved.
        for (rnet, rprefix, what) in [
            ([0, 0, 0, 0], 8, "\"this network\""),
            ([127, 0, 0, 0], 8, "loopback"),
            ([169, 254, 0, 0], 16, "link-local"),
            ([224, 0, 0, 0], 4, "multicast"),
            ([240, 0, 0, 0], 4, "reserved"),
        ] {
            let m = mask(rprefix.min(prefix));
            if u32::from(net) & m == u32::from(Ipv4Addr::from(rnet)) & m {
                return Err(format!(
                    "pool {net}/{prefix} overlaps the {what} range {}/{rprefix}",
                    Ipv4Addr::from(rnet)
                ));
            }
        }
        for (iface, rnet, rprefix) in routes.iter().cloned() {
            if rprefix == 0 || iface == conf.bridge {
                continue; // a default route overlaps everything
            }
            let m = mask(rprefix.min(prefix));
            if (u32::from(net) & m) == (rnet & m) {
                return Err(format!(
                    "pool {net}/{prefix} overlaps the host's network {}/{rprefix} on {iface}; \
                     choose a pool no host route covers",
                    Ipv4Addr::from(rnet)
                ));
            }
        }
        let gateway = Ipv4Addr::from((u32::from(net) & pool_mask) + 1);
        let mut nl = Netlink::open().map_err(|e| format!("netlink: {e}"))?;
        let bridge_index = match nl
            .index(&conf.bridge)
            .map_err(|e| format!("netlink: {e}"))?
        {
            Some(i) => i,
            None => {
                // A locally administered unicast MAC made from the gateway.
                let g = gateway.octets();
                nl.add_bridge(&conf.bridge, conf.mtu, [0x02, 0x67, g[0], g[1], g[2], g[3]])
                    .map_err(|e| format!("creating bridge {}: {e}", conf.bridge))?;
                nl.index(&conf.bridge)
                    .map_err(|e| format!("netlink: {e}"))?
                    .ok_or_else(|| format!("bridge {} vanished", conf.bridge))?
            }
        };
        match nl.add_address(bridge_index, gateway, prefix) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => {
                return Err(format!(
                    "address {gateway}/{prefix} on {}: {e}",
                    conf.bridge
                ))
            }
        }
        nl.set_up(bridge_index)
            .map_err(|e| format!("bringing {} up: {e}", conf.bridge))?;
        // Route the bridge (forwarding), answer ARP for the other containers
        // on it at once (the firewall keeps them apart at layer 2, so they
        // meet only through us), never redirect them to each other, take
        // no source-routed packet (a route via the gateway to 127.0.0.1
        // would pass the loopback chain; the kernel needs this and `all`
        // on, so off here holds whatever the host sets);
        // route_localnet only while NetIn needs it (`sync_localnet`).
        let dir = format!("/proc/sys/net/ipv4/conf/{}", conf.bridge);
        for (key, value) in [
            ("forwarding", "1"),
            ("proxy_arp_pvlan", "1"),
            ("send_redirects", "0"),
            ("accept_source_route", "0"),
            ("route_localnet", "0"),
        ] {
            write_sysctl(&format!("{dir}/{key}"), value)?;
        }
        write_sysctl(
            &format!("/proc/sys/net/ipv4/neigh/{}/proxy_delay", conf.bridge),
            "0",
        )?;
        let candidates: Vec<String> = match &conf.uplinks {
            Uplinks::None => Vec::new(),
            Uplinks::List(l) => l.clone(),
            Uplinks::Auto => routes
                .iter()
                .filter(|(_, _, prefix)| *prefix == 0)
                .map(|(iface, _, _)| iface.clone())
                .collect(),
        };
        let uplinks = enable_uplinks(&candidates, &conf.bridge, runtime)?;
        Ok(Network {
            conf,
            gateway,
            bridge_index,
            records: BTreeMap::new(),
            uplinks,
            sets: Default::default(),
            next_ip: Default::default(),
        })
    }

    fn skeleton(&self) -> nft::Skeleton<'_> {
        nft::Skeleton {
            table: &self.conf.nft_table,
            bridge: &self.conf.bridge,
            pool: self.conf.pool,
            uplinks: &self.uplinks,
            flows_max: self.conf.conntrack_max_per_container,
        }
    }

    /// Load a container's record from its depot dir (at start-up).
    pub fn recover(&mut self, handle: &Handle, dir: BorrowedFd) {
        match fs::read_file_at(dir, RECORD) {
            Ok(text) => match serde_json::from_str::<Record>(&text) {
                Ok(r) if self.in_pool(r.ip) => {
                    self.records.insert(handle.clone(), r);
                }
                Ok(r) => log_warn!(
                    "grove-helper: {handle}: recorded IP {} is outside the pool; network ignored",
                    r.ip
                ),
                Err(e) => log_warn!("grove-helper: {handle}: {RECORD}: {e}"),
            },
            Err(nix::errno::Errno::ENOENT) => {}
            Err(e) => log_warn!("grove-helper: {handle}: {RECORD}: {e}"),
        }
    }

    /// Rebuild the nftables ruleset from the records (start-up).
    pub fn rebuild_rules(&self) -> Result<(), String> {
        let entries: Vec<(String, &Handle, &Record)> = self
            .records
            .iter()
            .map(|(h, r)| (veth_of(r.ip), h, r))
            .collect();
        let entries: Vec<nft::Entry> = entries
            .iter()
            .map(|(veth, h, r)| nft::Entry {
                handle: h.as_str(),
                ip: r.ip,
                veth,
                net_in: &r.net_in,
                net_out: &r.net_out,
            })
            .collect();
        nft::apply(&nft::rebuild(&self.skeleton(), &entries))?;
        self.sync_localnet()
    }

    /// `route_localnet` on the bridge is what lets the host reach a NetIn
    /// port on 127.0.0.1: the DNAT'd packet leaves with source 127.0.0.1
    /// (masqueraded only after routing) and the reply's destination is
    /// 127.0.0.1 again after conntrack. It is on only while some container
    /// has a NetIn mapping; even then the `loopback` chain (nft.rs) drops
    /// every packet from the bridge addressed to or from 127/8 before
    /// conntrack, so containers never reach the host's loopback services.
    fn sync_localnet(&self) -> Result<(), String> {
        let on = self.records.values().any(|r| !r.net_in.is_empty());
        let path = format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            self.conf.bridge
        );
        write_sysctl(&path, if on { "1" } else { "0" })
    }

    fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let (net, prefix) = self.conf.pool;
        let m = mask(prefix);
        let x = u32::from(ip);
        x & m == u32::from(net) & m
            && x != u32::from(self.gateway)
            && (x & !m) != 0
            && (x | m) != u32::MAX
    }

    /// Choose the container's IP: the one asked for (inside the pool, not
    /// the gateway, free) or the lowest free one. Changes nothing.
    pub fn allocate(&self, wanted: Option<Ipv4Addr>) -> Result<Ipv4Addr, HelperError> {
        let (net, prefix) = self.conf.pool;
        let taken = |ip: Ipv4Addr| self.records.values().any(|r| r.ip == ip);
        if let Some(ip) = wanted {
            if !self.in_pool(ip) {
                return Err(invalid(format!(
                    "network: {ip} is not a container address of the pool {net}/{prefix} \
                     (the gateway {} and the network and broadcast addresses are not)",
                    self.gateway
                )));
            }
            if taken(ip) {
                return Err(invalid(format!(
                    "network: {ip} is taken by another container"
                )));
            }
            return Ok(ip);
        }
        // Round robin from after the last address handed out: an address
        // comes back only after the rest of the pool, by when the kernel
        // has long removed its previous holder's veth (see `teardown`).
        let first = u32::from(self.gateway) + 1;
        let last = (u32::from(net) | !mask(prefix)) - 1;
        let held: std::collections::HashSet<Ipv4Addr> =
            self.records.values().map(|r| r.ip).collect();
        let start = self.next_ip.get().clamp(first, last);
        (start..=last)
            .chain(first..start)
            .map(Ipv4Addr::from)
            .find(|ip| !held.contains(ip))
            .inspect(|ip| self.next_ip.set(u32::from(*ip).saturating_add(1)))
            .ok_or_else(|| {
                HelperError::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "the IP pool {net}/{prefix} is exhausted ({} containers hold its addresses)",
                        self.records.len()
                    ),
                )
            })
    }

    /// Check a bandwidth limit against what tbf can do.
    pub fn validate_bandwidth(&self, b: &Bandwidth) -> Result<(), HelperError> {
        let frame = self.conf.mtu as u64 + 14;
        if b.rate_bytes_per_sec < 1024 || b.rate_bytes_per_sec > (1 << 40) {
            return Err(invalid(format!(
                "bandwidth.rate {} is out of range: allowed 1024 (1 KiB/s) to 2^40 bytes/s",
                b.rate_bytes_per_sec
            )));
        }
        if b.burst_bytes < frame || b.burst_bytes > u32::MAX as u64 / 2 {
            return Err(invalid(format!(
                "bandwidth.burst {} is out of range: allowed {frame} (one full frame) to {} bytes",
                b.burst_bytes,
                u32::MAX / 2
            )));
        }
        Ok(())
    }

    /// Give the container (whose wshd, our child, is `pid`) its network:
    /// veth pair, addresses, route, rules, shaping; then the record. On
    /// failure everything made is removed again.
    pub fn attach(
        &mut self,
        handle: &Handle,
        dir: BorrowedFd,
        pid: i32,
        ip: Ipv4Addr,
        bandwidth: Option<Bandwidth>,
    ) -> Result<NetworkInfo, HelperError> {
        let record = Record {
            ip,
            net_in: Vec::new(),
            net_out: Vec::new(),
            bandwidth,
        };
        let veth = veth_of(ip);
        let mut rules_added = false;
        let result = (|| {
            let host_end = self.link_up(pid, ip, &veth)?;
            crash_point("helper.create.veth");
            self.sets
                .borrow_mut()
                .add_port(&self.conf.nft_table, &veth, ip)
                .map_err(|e| system("firewall", e))?;
            rules_added = true;
            crash_point("helper.create.firewall");
            // Only now the host end goes up: until the port is in the sets
            // the bridge would pass the container's first frames (its
            // kernel's IPv6 DAD and MLD on eth0 up) unchecked.
            Netlink::open()
                .and_then(|mut nl| nl.set_up(host_end))
                .map_err(|e| system(&format!("{veth} up"), e))?;
            if let Some(b) = bandwidth {
                self.shape(ip, b)?;
            }
            write_record(dir, &record)
        })();
        if let Err(e) = result {
            self.teardown(handle, &record, rules_added, false);
            return Err(e);
        }
        self.records.insert(handle.clone(), record);
        Ok(self.info(ip))
    }

    fn info(&self, ip: Ipv4Addr) -> NetworkInfo {
        NetworkInfo {
            ip,
            gateway: self.gateway,
            prefix_len: self.conf.pool.1,
            mtu: self.conf.mtu,
        }
    }

    /// The veth pair and the container side's configuration; the host end
    /// (its index returned) is left down for the caller to bring up once
    /// the firewall knows the port.
    fn link_up(&self, pid: i32, ip: Ipv4Addr, veth: &str) -> Result<i32, HelperError> {
        let sys = |what: &str, e: nix::errno::Errno| system(what, e);
        // wshd is our unreaped child, so its pid names it.
        let ns = fs::openat(
            None,
            &format!("/proc/{pid}/ns/net"),
            nix::fcntl::OFlag::O_RDONLY,
            0,
        )
        .map_err(|e| sys("the container's netns", e))?;
        let mut nl = Netlink::open().map_err(|e| sys("netlink", e))?;
        let peer = ("eth0", mac_of(ip));
        let mut made = nl.add_veth(veth, self.bridge_index, peer, ns.as_fd(), self.conf.mtu);
        if made == Err(nix::errno::Errno::EEXIST) {
            // A destroyed container's veth whose namespace the kernel is
            // still dismantling (or something holds open) is detached from
            // the bridge at destroy (see `teardown`): that one is deleted.
            // One still on the bridge belongs to a live container whose
            // record the helper lost: refused, never taken over.
            let master = nl.master_of(veth).map_err(|e| sys("netlink", e))?;
            if master == Some(self.bridge_index) {
                return Err(system(
                    &format!("creating veth {veth}"),
                    "a link of that name is on the bridge: the address is in use",
                ));
            }
            log_warn!("grove-helper: {veth} is left from a destroyed container; deleting it");
            nl.del_link(veth)
                .map_err(|e| sys(&format!("deleting the stale {veth}"), e))?;
            made = nl.add_veth(veth, self.bridge_index, peer, ns.as_fd(), self.conf.mtu);
        }
        made.map_err(|e| sys(&format!("creating veth {veth}"), e))?;
        let index = nl
            .index(veth)
            .map_err(|e| sys("netlink", e))?
            .ok_or_else(|| system("netlink", format!("{veth} vanished")))?;
        // Before it is up: the port learns nothing and forwards to the
        // container's MAC only; the host end has no IPv6 (it would send
        // router solicitations into the container). Why safe: a link the
        // helper just made, named from the container's address.
        nl.pin_port(index, mac_of(ip))
            .map_err(|e| sys(&format!("{veth} bridge port settings"), e))?;
        match write_sysctl(&format!("/proc/sys/net/ipv6/conf/{veth}/disable_ipv6"), "1") {
            Err(_) if !std::path::Path::new("/proc/sys/net/ipv6").exists() => {} // no IPv6
            r => r.map_err(|e| system(&format!("{veth} without IPv6"), e))?,
        }
        let mut inner =
            Netlink::open_in(ns.as_fd()).map_err(|e| sys("netlink in the container", e))?;
        let lo = inner
            .index("lo")
            .map_err(|e| sys("netlink", e))?
            .ok_or_else(|| system("container netns", "no lo"))?;
        inner.set_up(lo).map_err(|e| sys("lo up", e))?;
        let eth0 = inner
            .index("eth0")
            .map_err(|e| sys("netlink", e))?
            .ok_or_else(|| system("container netns", "no eth0"))?;
        inner
            .add_address(eth0, ip, self.conf.pool.1)
            .map_err(|e| sys("address on eth0", e))?;
        inner.set_up(eth0).map_err(|e| sys("eth0 up", e))?;
        inner
            .add_default_route(eth0, self.gateway)
            .map_err(|e| sys("default route", e))?;
        Ok(index)
    }

    /// Remove what `attach` made. Errors are logged: each step is tried.
    /// `namespace_gone`: the container's wshd is dead, so its network
    /// namespace is being dismantled and the kernel removes the veth pair
    /// with it; deleting the host end ourselves would wait for the same
    /// teardown (10–40 ms, mostly RCU grace periods and device
    /// references) inside the single-threaded helper. The host end is
    /// taken off the bridge at once instead, so that even a namespace
    /// something still holds open (a socket passed out of the container)
    /// reaches nothing. A later create of the same address meets the host
    /// end only if the kernel has not finished, and then deletes it itself
    /// (`link_up`).
    fn teardown(&self, handle: &Handle, record: &Record, rules: bool, namespace_gone: bool) {
        let veth = veth_of(record.ip);
        let mut nl = Netlink::open();
        if let Err(e) = &nl {
            log_warn!("grove-helper: {handle}: netlink: {e}");
        }
        // Off the bridge first: no moment on it outside the sets' checks.
        if let (true, Ok(nl)) = (namespace_gone, nl.as_mut()) {
            if let Err(e) = nl.detach(&veth) {
                log_warn!("grove-helper: {handle}: taking {veth} off the bridge: {e}");
            }
        }
        if rules {
            let entry = nft::Entry {
                handle: handle.as_str(),
                ip: record.ip,
                veth: &veth,
                net_in: &record.net_in,
                net_out: &record.net_out,
            };
            let script = nft::remove_mappings_and_rules(&self.conf.nft_table, &entry);
            if !script.is_empty() {
                if let Err(e) = nft::apply(&script) {
                    log_warn!("grove-helper: {handle}: removing its NetIn and NetOut rules: {e}");
                }
            }
            if let Err(e) =
                self.sets
                    .borrow_mut()
                    .remove_port(&self.conf.nft_table, &veth, record.ip)
            {
                log_warn!("grove-helper: {handle}: {e}");
            }
        }
        let links = if namespace_gone {
            vec![ifb_of(record.ip)]
        } else {
            vec![veth, ifb_of(record.ip)]
        };
        if let Ok(nl) = nl.as_mut() {
            for link in links {
                if let Err(e) = nl.del_link(&link) {
                    log_warn!("grove-helper: {handle}: deleting {link}: {e}");
                }
            }
        }
    }

    /// Destroy: remove the container's links, rules and allocation.
    pub fn detach(&mut self, handle: &Handle) {
        if let Some(record) = self.records.remove(handle) {
            self.teardown(handle, &record, true, true);
            if !record.net_in.is_empty() {
                if let Err(e) = self.sync_localnet() {
                    log_warn!("grove-helper: {handle}: {e}");
                }
            }
        }
    }

    fn record(&self, handle: &Handle) -> Result<&Record, HelperError> {
        self.records.get(handle).ok_or_else(|| {
            HelperError::new(ErrorKind::NotFound, format!("{handle} has no network"))
        })
    }

    pub fn network(&self, handle: &Handle) -> Result<(NetworkInfo, Vec<PortMapping>), HelperError> {
        let r = self.record(handle)?;
        Ok((self.info(r.ip), r.net_in.clone()))
    }

    /// Map a host port to the container (see Request::NetIn).
    pub fn net_in(
        &mut self,
        handle: &Handle,
        dir: BorrowedFd,
        host_port: u16,
        container_port: u16,
    ) -> Result<PortMapping, HelperError> {
        let (lo, hi) = self.conf.port_range;
        let taken = |p: u16| {
            self.records
                .values()
                .any(|r| r.net_in.iter().any(|m| m.host_port == p))
        };
        let host_port = if host_port == 0 {
            (lo..=hi).find(|p| !taken(*p)).ok_or_else(|| {
                HelperError::new(
                    ErrorKind::LimitExceeded,
                    format!("the NetIn port range {lo}-{hi} is exhausted"),
                )
            })?
        } else if !(lo..=hi).contains(&host_port) {
            return Err(invalid(format!(
                "hostPort {host_port} is outside the NetIn port range {lo}-{hi}"
            )));
        } else if taken(host_port) {
            return Err(invalid(format!("hostPort {host_port} is already mapped")));
        } else {
            host_port
        };
        let m = PortMapping {
            host_port,
            container_port: if container_port == 0 {
                host_port
            } else {
                container_port
            },
        };
        let r = self.record(handle)?;
        if r.net_in.len() >= MAX_NET_IN_PER_CONTAINER {
            return Err(HelperError::new(
                ErrorKind::LimitExceeded,
                format!("a container may hold at most {MAX_NET_IN_PER_CONTAINER} NetIn mappings"),
            ));
        }
        let mut next = r.clone();
        next.net_in.push(m);
        let table = self.conf.nft_table.clone();
        nft::apply(&nft::add_net_in(&table, r.ip, m)).map_err(|e| system("NetIn", e))?;
        if let Err(e) = write_record(dir, &next) {
            let undo = format!("delete element inet {table} netin {{ {} }}\n", m.host_port);
            if let Err(u) = nft::apply(&undo) {
                log_error!("grove-helper: {handle}: undoing NetIn {}: {u}", m.host_port);
            }
            return Err(e);
        }
        self.records.insert(handle.clone(), next);
        if let Err(e) = self.sync_localnet() {
            // The mapping works on every address but 127.0.0.1.
            log_warn!("grove-helper: {handle}: NetIn on 127.0.0.1: {e}");
        }
        Ok(m)
    }

    /// Add allow rules, all or none: one nft transaction, then the record
    /// (whose failure flushes and rewrites the chain as it was).
    pub fn net_out(
        &mut self,
        handle: &Handle,
        dir: BorrowedFd,
        rules: Vec<NetOutRule>,
    ) -> Result<(), HelperError> {
        if rules.len() > MAX_RULES {
            return Err(invalid(format!(
                "a NetOut request may hold at most {MAX_RULES} rules, not {}",
                rules.len()
            )));
        }
        let r = self.record(handle)?;
        if r.net_out.len() + rules.len() > MAX_RULES_PER_CONTAINER {
            return Err(HelperError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a container may hold at most {MAX_RULES_PER_CONTAINER} NetOut rules \
                     ({} now, {} more asked for)",
                    r.net_out.len(),
                    rules.len()
                ),
            ));
        }
        let table = &self.conf.nft_table;
        let mut script = nft::add_egress_chain(table, r.ip);
        for rule in &rules {
            script.push_str(&nft::add_rule(table, handle.as_str(), r.ip, rule));
        }
        nft::apply(&script).map_err(|e| system("NetOut", e))?;
        let mut next = r.clone();
        next.net_out.extend(rules.iter().cloned());
        if let Err(e) = write_record(dir, &next) {
            // Back to the rules the record holds; none means no chain.
            let mut undo = format!("flush chain inet {table} out-{}\n", nft::tag(r.ip));
            for rule in &r.net_out {
                undo.push_str(&nft::add_rule(table, handle.as_str(), r.ip, rule));
            }
            if r.net_out.is_empty() {
                let entry = nft::Entry {
                    handle: handle.as_str(),
                    ip: r.ip,
                    veth: "",
                    net_in: &[],
                    net_out: &rules,
                };
                undo = nft::remove_mappings_and_rules(table, &entry);
            }
            if let Err(u) = nft::apply(&undo) {
                log_error!("grove-helper: {handle}: undoing NetOut: {u}");
            }
            return Err(e);
        }
        self.records.insert(handle.clone(), next);
        Ok(())
    }

    /// Shape both directions of the container's veth.
    fn shape(&self, ip: Ipv4Addr, b: Bandwidth) -> Result<(), HelperError> {
        let (veth, ifb) = (veth_of(ip), ifb_of(ip));
        let mut nl = Netlink::open().map_err(|e| system("netlink", e))?;
        let index = match nl.index(&ifb).map_err(|e| system("netlink", e))? {
            Some(i) => i,
            None => {
                nl.add_ifb(&ifb)
                    .map_err(|e| system(&format!("creating {ifb}"), e))?;
                nl.index(&ifb)
                    .map_err(|e| system("netlink", e))?
                    .ok_or_else(|| system("netlink", format!("{ifb} vanished")))?
            }
        };
        nl.set_up(index)
            .map_err(|e| system(&format!("{ifb} up"), e))?;
        tc::set_tbf(&veth, b).map_err(|e| system("bandwidth", e))?;
        tc::set_tbf(&ifb, b).map_err(|e| system("bandwidth", e))?;
        tc::redirect_ingress(&veth, &ifb).map_err(|e| system("bandwidth", e))
    }

    /// The shaping in force, None when none. Read from the kernel; when
    /// it holds what was asked for (the same rate, the burst within the
    /// rounding of tbf's time base), the value asked for is reported.
    pub fn bandwidth(&self, handle: &Handle) -> Result<Option<Bandwidth>, HelperError> {
        let Some(r) = self.records.get(handle) else {
            return Ok(None);
        };
        let veth = veth_of(r.ip);
        let mut nl = Netlink::open().map_err(|e| system("netlink", e))?;
        if nl.index(&veth).map_err(|e| system("netlink", e))?.is_none() {
            return Ok(None); // a stopped container's veth died with its netns
        }
        let kernel = tc::get_tbf(&veth).map_err(|e| system("bandwidth", e))?;
        Ok(match (kernel, r.bandwidth) {
            (Some(k), Some(asked))
                if k.rate_bytes_per_sec == asked.rate_bytes_per_sec
                    && k.burst_bytes.abs_diff(asked.burst_bytes) <= asked.burst_bytes / 100 + 8 =>
            {
                Some(asked)
            }
            (k, _) => k,
        })
    }

    /// Change the shaping (recorded in `dir`); returns what it replaces
    /// (for `restore_bandwidth`).
    pub fn set_bandwidth(
        &mut self,
        handle: &Handle,
        dir: BorrowedFd,
        b: Bandwidth,
    ) -> Result<Option<Bandwidth>, HelperError> {
        self.validate_bandwidth(&b)?;
        let ip = self.record(handle)?.ip;
        let old = self.bandwidth(handle)?;
        let done = self
            .shape(ip, b)
            .and_then(|()| self.record_bandwidth(handle, dir, Some(b)));
        if let Err(e) = done {
            self.restore_bandwidth(handle, dir, old);
            return Err(e);
        }
        Ok(old)
    }

    fn record_bandwidth(
        &mut self,
        handle: &Handle,
        dir: BorrowedFd,
        b: Option<Bandwidth>,
    ) -> Result<(), HelperError> {
        let mut next = self.record(handle)?.clone();
        next.bandwidth = b;
        write_record(dir, &next)?;
        self.records.insert(handle.clone(), next);
        Ok(())
    }

    /// Put back what `set_bandwidth` replaced (errors are logged).
    pub fn restore_bandwidth(&mut self, handle: &Handle, dir: BorrowedFd, old: Option<Bandwidth>) {
        let Ok(r) = self.record(handle) else { return };
        let ip = r.ip;
        let result = match old {
            Some(b) => self.shape(ip, b).map_err(|e| e.message),
            None => tc::clear_root(&veth_of(ip)).and_then(|()| tc::clear_root(&ifb_of(ip))),
        }
        .and_then(|()| {
            self.record_bandwidth(handle, dir, old)
                .map_err(|e| e.message)
        });
        if let Err(e) = result {
            log_warn!("grove-helper: {handle}: restoring bandwidth: {e}");
        }
    }

    /// The container's traffic, from its side (zero once its veth is gone).
    pub fn stats(&self, handle: &Handle) -> Result<NetStats, HelperError> {
        let Some(r) = self.records.get(handle) else {
            return Ok(NetStats::default());
        };
        let mut nl = Netlink::open().map_err(|e| system("netlink", e))?;
        match nl.counters(&veth_of(r.ip)) {
            // The host end's transmit is the container's receive.
            Ok([rx_p, tx_p, rx_b, tx_b]) => Ok(NetStats {
                rx_bytes: tx_b,
                tx_bytes: rx_b,
                rx_packets: tx_p,
                tx_packets: rx_p,
            }),
            Err(nix::errno::Errno::ENODEV) => Ok(NetStats::default()),
            Err(e) => Err(system("link counters", e)),
        }
    }
}

fn write_record(dir: BorrowedFd, r: &Record) -> Result<(), HelperError> {
    let text = serde_json::to_vec(r).map_err(|e| system("network record", e))?;
    fs::write_file_at(dir, RECORD, &text, 0o600).map_err(|e| system("write network record", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_values_are_checked() {
        assert_eq!(
            parse_cidr("10.254.0.0/22").unwrap(),
            (Ipv4Addr::new(10, 254, 0, 0), 22)
        );
        assert!(parse_cidr("10.254.0.1/22")
            .unwrap_err()
            .contains("host bits"));
        assert!(parse_cidr("10.254.0.0").is_err());
        assert!(parse_cidr("10.254.0.0/31").is_err());
        assert!(parse_cidr("10.254.0.300/24").is_err());
        assert_eq!(parse_port_range("61000-61999").unwrap(), (61000, 61999));
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("9-8").is_err());
        assert!(parse_ifname("grove0").is_ok());
        assert!(parse_ifname("a-very-long-bridge").is_err());
        assert!(parse_ifname("a b").is_err());
        assert!(parse_table("grove_1").is_ok());
        assert!(parse_table("1x").is_err());
        assert!(parse_table("x;y").is_err());
    }

    #[test]
    fn host_routes_parse_this_hosts_table() {
        // The real /proc/net/route of this machine: at least the loopback-
        // less default or a connected route is there, prefixes <= 32.
        let routes = host_routes().unwrap();
        assert!(routes.iter().all(|(_, _, p)| *p <= 32));
    }
}
