//! A minimal synchronous rtnetlink client: the handful of link, address
//! and route messages container networking needs, built by hand from the
//! layouts in linux/rtnetlink.h and linux/if_link.h (no async runtime, no
//! general-purpose netlink library in the root process).
//!
//! Every message is a request the helper composes from values it derived
//! or validated itself (interface names it generated, addresses inside its
//! pool); the kernel's answer is only read for its error code, a link
//! index, or counters.

use nix::errno::Errno;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

const NETLINK_ROUTE: i32 = 0;
const NETLINK_NETFILTER: i32 = 12;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_SETLINK: u16 = 19;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const RTM_NEWNEIGH: u16 = 28;
const NLMSG_ERROR: u16 = 2;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
const NLA_F_NESTED: u16 = 0x8000;

const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_PROTINFO: u16 = 12;
const IFLA_BRPORT_LEARNING: u16 = 8;
const IFLA_BRPORT_UNICAST_FLOOD: u16 = 9;
const IFLA_BRPORT_GROUP_FWD_MASK: u16 = 31;
const NDA_LLADDR: u16 = 2;
const NUD_NOARP: u16 = 0x40;
const NTF_MASTER: u8 = 0x04;
const IFLA_LINKINFO: u16 = 18;
const IFLA_STATS64: u16 = 23;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const RTA_OIF: u16 = 4;
const IFF_UP: u32 = 1;

/// A netlink request under construction: header, fixed part, attributes.
pub(super) struct Msg {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Msg {
    /// A request the kernel acknowledges.
    pub(super) fn new(kind: u16, flags: u16) -> Msg {
        Msg::unacked(kind, flags | NLM_F_ACK)
    }

    /// A request without NLM_F_ACK (nfnetlink's batch begin and end).
    pub(super) fn unacked(kind: u16, flags: u16) -> Msg {
        let mut buf = vec![0u8; 16];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Msg {
            buf,
            nests: Vec::new(),
        }
    }

    /// A fixed header of the message's family (nfgenmsg, ...).
    pub(super) fn fixed(mut self, bytes: &[u8]) -> Msg {
        self.buf.extend_from_slice(bytes);
        self.pad();
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    /// struct ifinfomsg.
    fn ifinfo(mut self, family: u8, index: i32, flags: u32, change: u32) -> Msg {
        self.buf.extend_from_slice(&[family, 0]);
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    pub(super) fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Msg {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    pub(super) fn str_attr(&mut self, kind: u16, s: &str) -> &mut Msg {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    pub(super) fn begin(&mut self, kind: u16) -> &mut Msg {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    pub(super) fn end(&mut self) -> &mut Msg {
        if let Some(at) = self.nests.pop() {
            let len = (self.buf.len() - at) as u16;
            self.buf[at..at + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    pub(super) fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

/// A NETLINK_ROUTE socket, bound to the network namespace it was made in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

fn ifname_ok(name: &str) -> Result<(), Errno> {
    if name.is_empty() || name.len() > 15 || name.contains(['/', '\0', ' ']) {
        return Err(Errno::EINVAL);
    }
    Ok(())
}

impl Netlink {
    pub fn open() -> Result<Netlink, Errno> {
        Netlink::open_protocol(NETLINK_ROUTE)
    }

    /// A NETLINK_NETFILTER socket (nf_tables).
    pub fn open_netfilter() -> Result<Netlink, Errno> {
        Netlink::open_protocol(NETLINK_NETFILTER)
    }

    fn open_protocol(protocol: i32) -> Result<Netlink, Errno> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                protocol,
            )
        };
        let fd = Errno::result(fd)?;
        // SAFETY: socket just returned this fd; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // A receive timeout: an answer that never comes must not hang the
        // single-threaded helper.
        let tv = libc::timeval {
            tv_sec: 5,
            tv_usec: 0,
        };
        // SAFETY: setsockopt reads a live timeval of the size given.
        Errno::result(unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        })?;
        Ok(Netlink { fd, seq: 1 })
    }

    /// Open a socket inside the network namespace `netns`: setns there,
    /// make the socket, setns back. The helper is single-threaded, so no
    /// other work runs in the foreign namespace meanwhile.
    pub fn open_in(netns: BorrowedFd) -> Result<Netlink, Errno> {
        let home = crate::fs::openat(None, "/proc/self/ns/net", nix::fcntl::OFlag::O_RDONLY, 0)?;
        nix::sched::setns(netns, nix::sched::CloneFlags::CLONE_NEWNET)?;
        let made = Netlink::open();
        // Going home must not fail silently: everything after would run in
        // the container's namespace.
        if let Err(e) = nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNET) {
            log_error!("grove-helper: cannot return to the host network namespace: {e}");
            std::process::abort();
        }
        made
    }

    /// Send one request and wait for its acknowledgement; returns the
    /// payload of a non-error answer (for GETLINK).
    fn call(&mut self, msg: Msg) -> Result<Vec<u8>, Errno> {
        let seq = self.next_seq();
        self.call_raw(&msg.finish(seq), seq, seq)
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Send `bytes` (one message, or an nfnetlink batch of several
    /// numbered from `first`) and wait for the acknowledgement of the
    /// message numbered `seq`; an error for any message of the batch ends
    /// the wait.
    pub(super) fn call_raw(
        &mut self,
        bytes: &[u8],
        first: u32,
        seq: u32,
    ) -> Result<Vec<u8>, Errno> {
        // SAFETY: send reads `bytes`, a live buffer of that length; the
        // kernel is the default destination of a netlink socket.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                bytes.as_ptr() as *const libc::c_void,
                bytes.len(),
                0,
            )
        };
        Errno::result(n)?;
        let mut buf = vec![0u8; 32 * 1024];
        let mut answer = Vec::new();
        loop {
            // SAFETY: recv writes at most buf.len() bytes into buf.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    0,
                )
            };
            let n = Errno::result(n)? as usize;
            let mut at = 0;
            while at + 16 <= n {
                let len = u32::from_ne_bytes(buf[at..at + 4].try_into().map_err(|_| Errno::EIO)?)
                    as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                let mseq =
                    u32::from_ne_bytes(buf[at + 8..at + 12].try_into().map_err(|_| Errno::EIO)?);
                if len < 16 || at + len > n {
                    return Err(Errno::EIO);
                }
                // A failure of the batch as a whole comes as an error for
                // an earlier message of it (its begin).
                if kind == NLMSG_ERROR && mseq != seq && (first..seq).contains(&mseq) && len >= 20 {
                    let code = i32::from_ne_bytes(
                        buf[at + 16..at + 20].try_into().map_err(|_| Errno::EIO)?,
                    );
                    if code != 0 {
                        return Err(Errno::from_raw(-code));
                    }
                }
                if mseq == seq {
                    if kind == NLMSG_ERROR {
                        if len < 20 {
                            return Err(Errno::EIO);
                        }
                        let code = i32::from_ne_bytes(
                            buf[at + 16..at + 20].try_into().map_err(|_| Errno::EIO)?,
                        );
                        return if code == 0 {
                            Ok(answer)
                        } else {
                            Err(Errno::from_raw(-code))
                        };
                    }
                    answer = buf[at + 16..at + len].to_vec();
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// The index of the link `name`, or None.
    pub fn index(&mut self, name: &str) -> Result<Option<i32>, Errno> {
        Ok(self.get_link(name)?.map(|(index, _, _)| index))
    }

    /// The index of the bridge (or other master) link `name` is attached
    /// to: Some(0) for none, None when there is no such link.
    pub fn master_of(&mut self, name: &str) -> Result<Option<i32>, Errno> {
        Ok(self.get_link(name)?.map(|(_, master, _)| master))
    }

    /// Take the link `name` off its bridge (gone already is fine).
    pub fn detach(&mut self, name: &str) -> Result<(), Errno> {
        let Some(index) = self.index(name)? else {
            return Ok(());
        };
        let mut m = Msg::new(RTM_SETLINK, 0).ifinfo(0, index, 0, 0);
        m.attr(IFLA_MASTER, &0i32.to_ne_bytes());
        match self.call(m) {
            Ok(_) | Err(Errno::ENODEV) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// (index, IFLA_MASTER or 0, IFLA_STATS64 counters) of the link `name`.
    fn get_link(&mut self, name: &str) -> Result<Option<(i32, i32, Vec<u8>)>, Errno> {
        ifname_ok(name)?;
        let mut m = Msg::new(RTM_GETLINK, 0).ifinfo(0, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name);
        let answer = match self.call(m) {
            Ok(a) => a,
            Err(Errno::ENODEV) => return Ok(None),
            Err(e) => return Err(e),
        };
        if answer.len() < 16 {
            return Err(Errno::EIO);
        }
        let index = i32::from_ne_bytes(answer[4..8].try_into().map_err(|_| Errno::EIO)?);
        let mut stats = Vec::new();
        let mut master = 0;
        let mut at = 16;
        while at + 4 <= answer.len() {
            let len = u16::from_ne_bytes([answer[at], answer[at + 1]]) as usize;
            let kind = u16::from_ne_bytes([answer[at + 2], answer[at + 3]]) & !NLA_F_NESTED;
            if len < 4 || at + len > answer.len() {
                break;
            }
            if kind == IFLA_STATS64 {
                stats = answer[at + 4..at + len].to_vec();
            }
            if kind == IFLA_MASTER && len >= 8 {
                master =
                    i32::from_ne_bytes(answer[at + 4..at + 8].try_into().map_err(|_| Errno::EIO)?);
            }
            at += (len + 3) & !3;
        }
        Ok(Some((index, master, stats)))
    }

    /// (rx_packets, tx_packets, rx_bytes, tx_bytes) of link `name`.
    pub fn counters(&mut self, name: &str) -> Result<[u64; 4], Errno> {
        let (_, _, stats) = self.get_link(name)?.ok_or(Errno::ENODEV)?;
        if stats.len() < 32 {
            return Err(Errno::EIO);
        }
        let mut out = [0u64; 4];
        for (i, v) in out.iter_mut().enumerate() {
            *v = u64::from_ne_bytes(stats[i * 8..i * 8 + 8].try_into().map_err(|_| Errno::EIO)?);
        }
        Ok(out)
    }

    /// Create a bridge (EEXIST when it exists) with a fixed MAC address:
    /// left to itself a bridge takes the lowest MAC of its ports, which
    /// changes as containers come and go and would stale every
    /// container's ARP entry for the gateway.
    pub fn add_bridge(&mut self, name: &str, mtu: u32, mac: [u8; 6]) -> Result<(), Errno> {
        ifname_ok(name)?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(0, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name)
            .attr(IFLA_ADDRESS, &mac)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .begin(IFLA_LINKINFO)
            .str_attr(IFLA_INFO_KIND, "bridge")
            .end();
        self.call(m).map(drop)
    }

    /// Create an ifb device (for shaping a veth's ingress).
    pub fn add_ifb(&mut self, name: &str) -> Result<(), Errno> {
        ifname_ok(name)?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(0, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO)
            .str_attr(IFLA_INFO_KIND, "ifb")
            .end();
        self.call(m).map(drop)
    }

    /// Create a veth pair: `host` here, enslaved to `master`; `peer` made
    /// directly inside the namespace `peer_ns` with the MAC `peer_mac`, so
    /// its name cannot clash with a host link and its MAC is known.
    pub fn add_veth(
        &mut self,
        host: &str,
        master: i32,
        (peer, peer_mac): (&str, [u8; 6]),
        peer_ns: BorrowedFd,
        mtu: u32,
    ) -> Result<(), Errno> {
        ifname_ok(host)?;
        ifname_ok(peer)?;
        let mut m = Msg::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL).ifinfo(0, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, host)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_MASTER, &master.to_ne_bytes())
            .begin(IFLA_LINKINFO)
            .str_attr(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER);
        // The peer's attributes follow a struct ifinfomsg of their own.
        m.buf.extend_from_slice(&[0u8; 16]);
        m.str_attr(IFLA_IFNAME, peer)
            .attr(IFLA_ADDRESS, &peer_mac)
            .attr(IFLA_MTU, &mtu.to_ne_bytes())
            .attr(IFLA_NET_NS_FD, &peer_ns.as_raw_fd().to_ne_bytes())
            .end()
            .end()
            .end();
        self.call(m).map(drop)
    }

    /// Bind the bridge port `index` to the one MAC behind it: it learns
    /// no address (a flood of forged sources cannot fill the forwarding
    /// table) and gets no unknown-unicast flood (the host's frames for a
    /// MAC the table lacks go nowhere rather than to every container);
    /// `mac` becomes a static entry of the port, which the kernel removes
    /// with the port.
    pub fn pin_port(&mut self, index: i32, mac: [u8; 6]) -> Result<(), Errno> {
        let mut m = Msg::new(RTM_SETLINK, 0).ifinfo(libc::AF_BRIDGE as u8, index, 0, 0);
        m.begin(IFLA_PROTINFO)
            .attr(IFLA_BRPORT_LEARNING, &[0])
            .attr(IFLA_BRPORT_UNICAST_FLOOD, &[0])
            // Every 802.1D reserved group the kernel allows (not 0x01,
            // pause) takes the bridge's hooked path, not the port's own
            // receive path past the bridge table (nft.rs).
            .attr(IFLA_BRPORT_GROUP_FWD_MASK, &0xfffdu16.to_ne_bytes())
            .end();
        self.call(m)?;
        let mut m = Msg::new(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_EXCL);
        // struct ndmsg: family, pad, pad, ifindex, state (static), flags
        // (the bridge's table, not the device's), type.
        m.buf.extend_from_slice(&[libc::AF_BRIDGE as u8, 0, 0, 0]);
        m.buf.extend_from_slice(&index.to_ne_bytes());
        m.buf.extend_from_slice(&NUD_NOARP.to_ne_bytes());
        m.buf.extend_from_slice(&[NTF_MASTER, 0]);
        m.attr(NDA_LLADDR, &mac);
        self.call(m).map(drop)
    }

    /// Delete the link `name` (a veth takes its peer with it). Ok when it
    /// is already gone.
    pub fn del_link(&mut self, name: &str) -> Result<(), Errno> {
        ifname_ok(name)?;
        let mut m = Msg::new(RTM_DELLINK, 0).ifinfo(0, 0, 0, 0);
        m.str_attr(IFLA_IFNAME, name);
        match self.call(m) {
            Ok(_) | Err(Errno::ENODEV) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Bring the link `index` up.
    pub fn set_up(&mut self, index: i32) -> Result<(), Errno> {
        let m = Msg::new(RTM_SETLINK, 0).ifinfo(0, index, IFF_UP, IFF_UP);
        self.call(m).map(drop)
    }

    /// Add `ip/prefix` to the link `index` (with its broadcast address).
    pub fn add_address(&mut self, index: i32, ip: Ipv4Addr, prefix: u8) -> Result<(), Errno> {
        let mut m = Msg::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        // struct ifaddrmsg: family, prefixlen, flags, scope, index.
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, 0]);
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix as u32)
        };
        let bcast = Ipv4Addr::from(u32::from(ip) | !mask);
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets())
            .attr(IFA_BROADCAST, &bcast.octets());
        self.call(m).map(drop)
    }

    /// Add the default route via `gateway` out of link `index`.
    pub fn add_default_route(&mut self, index: i32, gateway: Ipv4Addr) -> Result<(), Errno> {
        let mut m = Msg::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg: family, dst_len, src_len, tos, table (main),
        // protocol (boot), scope (universe), type (unicast), flags.
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets())
            .attr(RTA_OIF, &(index as u32).to_ne_bytes());
        self.call(m).map(drop)
    }
}
