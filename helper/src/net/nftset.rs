//! Adding and deleting elements of the sets in the helper's own tables
//! over nf_tables netlink, without running `nft`: creating and destroying
//! a container touch only set elements (bridge `containers`, `addresses`,
//! `macs`; inet `selves`), and an `nft` process per change cost
//! milliseconds that grew with the ruleset (nft reads the whole table
//! before every change).
//!
//! One change is one nfnetlink batch (begin, NEWSETELEM or DELSETELEM
//! messages, end): the kernel applies it whole or not at all. Layouts from
//! linux/netfilter/nf_tables.h and nfnetlink.h. The table and set names
//! are the policy's and this module's constants; element keys are
//! interface names the helper generated and addresses from its pool.

use super::netlink::{Msg, Netlink};
use nix::errno::Errno;
use std::net::Ipv4Addr;

const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;
const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_DELSETELEM: u16 = 14;
const NFPROTO_UNSPEC: u8 = 0;
pub const NFPROTO_INET: u8 = 1;
pub const NFPROTO_BRIDGE: u8 = 7;
const NFNETLINK_V0: u8 = 0;
const NLM_F_CREATE: u16 = 0x400;

const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_DATA_VALUE: u16 = 1;

/// The bridge table's set of container ports (`type ifname`).
pub const CONTAINERS: &str = "containers";
/// The bridge table's set of each port's address (`type ifname . ipv4_addr`).
pub const ADDRESSES: &str = "addresses";
/// The bridge table's set of each port's MAC (`type ifname . ether_addr`).
pub const MACS: &str = "macs";
/// The inet table's set of `a . a` for each container address `a`
/// (`type ipv4_addr . ipv4_addr`): an equality test nft can make.
pub const SELVES: &str = "selves";

/// An `ifname` key: the name, NUL-padded to IFNAMSIZ.
pub fn ifname_key(name: &str) -> [u8; 16] {
    let mut key = [0u8; 16];
    let bytes = name.as_bytes();
    let n = bytes.len().min(15);
    key[..n].copy_from_slice(&bytes[..n]);
    key
}

/// An `ifname . ipv4_addr` key: each part in its own 4-byte-aligned
/// register, the address in network order.
pub fn port_address_key(name: &str, ip: Ipv4Addr) -> [u8; 20] {
    let mut key = [0u8; 20];
    key[..16].copy_from_slice(&ifname_key(name));
    key[16..].copy_from_slice(&ip.octets());
    key
}

/// An `ifname . ether_addr` key (the MAC in an 8-byte register).
pub fn port_mac_key(name: &str, mac: [u8; 6]) -> [u8; 24] {
    let mut key = [0u8; 24];
    key[..16].copy_from_slice(&ifname_key(name));
    key[16..22].copy_from_slice(&mac);
    key
}

/// An `ipv4_addr . ipv4_addr` key of `ip` paired with itself.
pub fn self_key(ip: Ipv4Addr) -> [u8; 8] {
    let mut key = [0u8; 8];
    key[..4].copy_from_slice(&ip.octets());
    key[4..].copy_from_slice(&ip.octets());
    key
}

/// One element: (table family, set, key).
pub type Elem<'a> = (u8, &'a str, &'a [u8]);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Change {
    Add,
    Delete,
}

/// struct nfgenmsg: family, version, resource id (big-endian).
fn nfgen(family: u8, res_id: u16) -> [u8; 4] {
    let id = res_id.to_be_bytes();
    [family, NFNETLINK_V0, id[0], id[1]]
}

/// The batch that adds or deletes `elems` in the tables named `table`;
/// `seq` numbers its first message (the set changes are `seq + 1` on).
pub fn batch(change: Change, table: &str, elems: &[Elem], seq: u32) -> Vec<u8> {
    let mut out = Msg::unacked(NFNL_MSG_BATCH_BEGIN, 0)
        .fixed(&nfgen(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
        .finish(seq);
    let (kind, flags) = match change {
        Change::Add => (NFT_MSG_NEWSETELEM, NLM_F_CREATE),
        Change::Delete => (NFT_MSG_DELSETELEM, 0),
    };
    let mut n = seq;
    for (family, set, key) in elems {
        let mut m = Msg::new((NFNL_SUBSYS_NFTABLES << 8) | kind, flags).fixed(&nfgen(*family, 0));
        m.str_attr(NFTA_SET_ELEM_LIST_TABLE, table);
        m.str_attr(NFTA_SET_ELEM_LIST_SET, set);
        m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        m.begin(NFTA_LIST_ELEM);
        m.begin(NFTA_SET_ELEM_KEY);
        m.attr(NFTA_DATA_VALUE, key);
        m.end();
        m.end();
        m.end();
        n = n.wrapping_add(1);
        out.extend(m.finish(n));
    }
    out.extend(
        Msg::unacked(NFNL_MSG_BATCH_END, 0)
            .fixed(&nfgen(NFPROTO_UNSPEC, NFNL_SUBSYS_NFTABLES))
            .finish(n.wrapping_add(1)),
    );
    out
}

/// The helper's nf_tables socket, opened on first use and kept: closing
/// one costs an RCU grace period (10–15 ms here), twice per create and
/// destroy.
#[derive(Default)]
pub struct Sets {
    sock: Option<Netlink>,
}

impl Sets {
    /// Apply one change to elements of the tables named `table`, all or
    /// none.
    pub fn apply(&mut self, change: Change, table: &str, elems: &[Elem]) -> Result<(), Errno> {
        let result = self.apply_once(change, table, elems);
        if matches!(result, Err(e) if e != Errno::ENOENT && e != Errno::EEXIST) {
            // A socket in a bad state (a lost answer, a timeout) is not
            // reused: the next change opens a fresh one.
            self.sock = None;
        }
        result
    }

    fn apply_once(&mut self, change: Change, table: &str, elems: &[Elem]) -> Result<(), Errno> {
        if self.sock.is_none() {
            self.sock = Some(Netlink::open_netfilter()?);
        }
        let nl = self.sock.as_mut().ok_or(Errno::EIO)?;
        let seq = nl.next_seq();
        for _ in 0..=elems.len() {
            nl.next_seq();
        }
        let bytes = batch(change, table, elems, seq);
        // Each change is acked in order; an error for any ends the wait.
        nl.call_raw(&bytes, seq, seq.wrapping_add(elems.len() as u32))
            .map(drop)
    }

    /// A container's port joins the tables (its frames are checked against
    /// its address and MAC and kept from other containers' ports; related
    /// packets it sends must belong to its own flows), in one transaction.
    pub fn add_port(&mut self, table: &str, veth: &str, ip: Ipv4Addr) -> Result<(), String> {
        let elems = elems(veth, ip);
        let refs: Vec<Elem> = elems.iter().map(|(f, s, k)| (*f, *s, &k[..])).collect();
        self.apply(Change::Add, table, &refs)
            .map_err(|e| format!("adding {veth} ({ip}) to the {table} tables: {e}"))
    }

    /// Undo `add_port`; elements already gone are fine.
    pub fn remove_port(&mut self, table: &str, veth: &str, ip: Ipv4Addr) -> Result<(), String> {
        let mut errors = Vec::new();
        for (family, set, key) in elems(veth, ip) {
            match self.apply(Change::Delete, table, &[(family, set, &key)]) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => errors.push(format!("{set}: {e}")),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "removing {veth} from {table}: {}",
                errors.join(", ")
            ))
        }
    }
}

/// A port's elements (its MAC is the one the helper gave eth0, from its
/// address); `containers` last, as its checks key on the others.
fn elems(veth: &str, ip: Ipv4Addr) -> [(u8, &'static str, Vec<u8>); 4] {
    let mac = super::mac_of(ip);
    [
        (
            NFPROTO_BRIDGE,
            ADDRESSES,
            port_address_key(veth, ip).to_vec(),
        ),
        (NFPROTO_BRIDGE, MACS, port_mac_key(veth, mac).to_vec()),
        (NFPROTO_INET, SELVES, self_key(ip).to_vec()),
        (NFPROTO_BRIDGE, CONTAINERS, ifname_key(veth).to_vec()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_padded_names_and_network_order_addresses() {
        let k = port_address_key("gv0afc0003", Ipv4Addr::new(10, 252, 0, 3));
        assert_eq!(&k[..10], b"gv0afc0003");
        assert!(k[10..16].iter().all(|b| *b == 0));
        assert_eq!(&k[16..], &[10, 252, 0, 3]);
        assert_eq!(ifname_key("a"), *b"a\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        let m = port_mac_key("gv1", [2, 0x67, 10, 252, 0, 3]);
        assert_eq!(&m[16..], &[2, 0x67, 10, 252, 0, 3, 0, 0]);
        assert_eq!(
            self_key(Ipv4Addr::new(10, 0, 0, 2)),
            [10, 0, 0, 2, 10, 0, 0, 2]
        );
    }

    /// (type, flags, seq) of each message in a batch, and its total length.
    fn headers(bytes: &[u8]) -> Vec<(u16, u16, u32)> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len = u32::from_ne_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
            assert!(len >= 20 && len.is_multiple_of(4) && at + len <= bytes.len());
            out.push((
                u16::from_ne_bytes([bytes[at + 4], bytes[at + 5]]),
                u16::from_ne_bytes([bytes[at + 6], bytes[at + 7]]),
                u32::from_ne_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
            ));
            at += len;
        }
        out
    }

    #[test]
    fn a_batch_is_begin_change_end_and_only_the_change_is_acked() {
        let key = ifname_key("gv1");
        let b = batch(
            Change::Add,
            "grove",
            &[(NFPROTO_BRIDGE, CONTAINERS, &key)],
            7,
        );
        let h = headers(&b);
        assert_eq!(
            h,
            [
                (NFNL_MSG_BATCH_BEGIN, 1, 7),
                (0x0a00 | NFT_MSG_NEWSETELEM, 1 | 4 | NLM_F_CREATE, 8),
                (NFNL_MSG_BATCH_END, 1, 9),
            ]
        );
        // The batch begin names nf_tables as its subsystem (big-endian).
        assert_eq!(&b[16..20], &[0, 0, 0, 10]);
        // Several changes: numbered in order, then the end.
        let two = batch(
            Change::Add,
            "grove",
            &[
                (NFPROTO_BRIDGE, CONTAINERS, &key),
                (NFPROTO_INET, SELVES, &[0; 8]),
            ],
            7,
        );
        let seqs: Vec<u32> = headers(&two).iter().map(|h| h.2).collect();
        assert_eq!(seqs, [7, 8, 9, 10]);
        // The first change's nfgenmsg (after the 20-byte begin) names its family.
        assert_eq!(two[20 + 16], NFPROTO_BRIDGE);
        let d = batch(
            Change::Delete,
            "grove",
            &[(NFPROTO_BRIDGE, CONTAINERS, &key)],
            1,
        );
        assert_eq!(headers(&d)[1].0, 0x0a00 | NFT_MSG_DELSETELEM);
        // The set change carries the table, the set and the key.
        let body = &b[20..];
        for needle in [&b"grove\0"[..], b"containers\0", &key] {
            assert!(
                body.windows(needle.len()).any(|w| w == needle),
                "{needle:?}"
            );
        }
    }
}
