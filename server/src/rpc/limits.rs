//! Translation between the API's limit and metrics structs and the helper's
//! `Limits` and `Stats`. Zero means "not given" in the API's structs.

use crate::error::{ApiError, ApiResult};
use grove_schema::api_capnp::{
    bandwidth_limits, cpu_limits, disk_limits, limits, memory_limits, metrics, pid_limits,
};
use grove_schema::helper::{CpuQuota, DiskLimit, DiskScope, Limits, Stats};
use grove_schema::net::Bandwidth;

/// CFS period used when a quota comes without one.
const DEFAULT_PERIOD_US: u64 = 100_000;

pub fn memory(m: memory_limits::Reader<'_>) -> Limits {
    Limits {
        memory_bytes: nonzero(m.get_limit_in_bytes()),
        ..Limits::default()
    }
}

pub fn pids(p: pid_limits::Reader<'_>) -> Limits {
    Limits {
        pids_max: nonzero(p.get_max()),
        ..Limits::default()
    }
}

pub fn cpu(field: &str, c: cpu_limits::Reader<'_>) -> ApiResult<Limits> {
    let cpuset = crate::rpc::text(&format!("{field}.cpuset"), c.get_cpuset())?;
    let period = c.get_quota_period_micros();
    let quota = c.get_quota_micros();
    if quota == 0 && period != 0 {
        return Err(ApiError::invalid(
            &format!("{field}.quotaMicros"),
            "a period needs a quota",
        ));
    }
    let limits = Limits {
        cpu_shares: nonzero(c.get_weight()),
        cpu_quota: (quota != 0).then_some(CpuQuota {
            period_us: if period == 0 {
                DEFAULT_PERIOD_US
            } else {
                period
            },
            quota_us: quota,
        }),
        cpuset: Some(cpuset).filter(|s| !s.is_empty()),
        ..Limits::default()
    };
    Ok(limits)
}

/// A disk limit on the container's writable layer, enforced by the kernel
/// (a btrfs qgroup, or an ext4/XFS project quota): bytes and inodes, 0 for
/// no limit of that kind. The kernel limits are hard ones; a soft limit is
/// accepted only as 0 or equal to its hard limit (a client that sends
/// soft = hard, as Garden clients often do, gets the hard limit; a soft
/// limit on its own is refused rather than silently made hard). Whether
/// the depot's filesystem can have it (btrfs counts no inodes) is the
/// helper's to say.
pub fn disk(field: &str, d: disk_limits::Reader<'_>) -> ApiResult<Limits> {
    for (kind, soft, hard) in [
        ("byte", d.get_byte_soft(), d.get_byte_hard()),
        ("inode", d.get_inode_soft(), d.get_inode_hard()),
    ] {
        if soft != 0 && soft != hard {
            return Err(ApiError::invalid(
                &format!("{field}.{kind}Soft"),
                format!(
                    "disk limits have no soft limit; give {kind}Hard, with {kind}Soft 0 or \
                     equal to it ({kind}Soft {soft}, {kind}Hard {hard})"
                ),
            ));
        }
    }
    let (bytes, inodes) = (d.get_byte_hard(), d.get_inode_hard());
    let scope = match d.get_scope() {
        Ok(disk_limits::Scope::Exclusive) => DiskScope::Exclusive,
        Ok(disk_limits::Scope::Total) => DiskScope::Total,
        Err(_) => {
            return Err(ApiError::invalid(
                &format!("{field}.scope"),
                "unknown scope (total or exclusive)",
            ))
        }
    };
    Ok(Limits {
        disk: (bytes != 0 || inodes != 0).then_some(DiskLimit {
            bytes,
            inodes,
            scope,
        }),
        ..Limits::default()
    })
}

/// Shaping of the container's traffic: both 0 = none (`None`); otherwise
/// both are needed (a rate without a burst would let nothing through).
pub fn bandwidth(field: &str, b: bandwidth_limits::Reader<'_>) -> ApiResult<Option<Bandwidth>> {
    let (rate, burst) = (
        b.get_rate_in_bytes_per_second(),
        b.get_burst_rate_in_bytes_per_second(),
    );
    match (rate, burst) {
        (0, 0) => Ok(None),
        (0, _) => Err(ApiError::invalid(
            &format!("{field}.rateInBytesPerSecond"),
            format!("0 with a burst of {burst}: give a rate (bytes per second) too"),
        )),
        (_, 0) => Err(ApiError::invalid(
            &format!("{field}.burstRateInBytesPerSecond"),
            format!("0 with a rate of {rate}: give a burst (bytes) too"),
        )),
        _ => Ok(Some(Bandwidth {
            rate_bytes_per_sec: rate,
            burst_bytes: burst,
        })),
    }
}

/// limitBandwidth: shaping must be given; removing it (rate 0) is not
/// something the helper does.
pub fn limit_bandwidth(field: &str, b: bandwidth_limits::Reader<'_>) -> ApiResult<Limits> {
    match bandwidth(field, b)? {
        Some(bandwidth) => Ok(Limits {
            bandwidth: Some(bandwidth),
            ..Limits::default()
        }),
        None => Err(ApiError::invalid(
            &format!("{field}.rateInBytesPerSecond"),
            "0: removing the shaping is not supported; give a rate and a burst",
        )),
    }
}

/// The limits of a ContainerSpec.
pub fn from_spec(l: limits::Reader<'_>) -> ApiResult<Limits> {
    let bandwidth = bandwidth("spec.limits.bandwidth", l.get_bandwidth()?)?;
    let disk = disk("spec.limits.disk", l.get_disk()?)?.disk;
    let cpu = cpu("spec.limits.cpu", l.get_cpu()?)?;
    Ok(Limits {
        memory_bytes: memory(l.get_memory()?).memory_bytes,
        pids_max: pids(l.get_pid()?).pids_max,
        disk,
        bandwidth,
        ..cpu
    })
}

/// A limit call must change something.
pub fn require_some(field: &str, limits: Limits) -> ApiResult<Limits> {
    if limits == Limits::default() {
        return Err(ApiError::invalid(
            field,
            "no limit given (all fields are 0 or empty)",
        ));
    }
    Ok(limits)
}

fn nonzero(v: u64) -> Option<u64> {
    (v != 0).then_some(v)
}

pub fn fill_memory(l: &Limits, mut m: memory_limits::Builder<'_>) {
    m.set_limit_in_bytes(l.memory_bytes.unwrap_or(0));
}

pub fn fill_pids(l: &Limits, mut p: pid_limits::Builder<'_>) {
    p.set_max(l.pids_max.unwrap_or(0));
}

pub fn fill_cpu(l: &Limits, mut c: cpu_limits::Builder<'_>) {
    c.set_weight(l.cpu_shares.unwrap_or(0));
    if let Some(q) = l.cpu_quota.filter(|q| q.quota_us != u64::MAX) {
        c.set_quota_micros(q.quota_us);
        c.set_quota_period_micros(q.period_us);
    }
    c.set_cpuset(l.cpuset.as_deref().unwrap_or(""));
}

/// The soft limits are reported equal to the hard ones (the one limit
/// there is of each kind).
pub fn fill_disk(l: &Limits, mut d: disk_limits::Builder<'_>) {
    if let Some(limit) = l.disk {
        d.set_byte_hard(limit.bytes);
        d.set_byte_soft(limit.bytes);
        d.set_inode_hard(limit.inodes);
        d.set_inode_soft(limit.inodes);
        d.set_scope(match limit.scope {
            DiskScope::Total => disk_limits::Scope::Total,
            DiskScope::Exclusive => disk_limits::Scope::Exclusive,
        });
    }
}

/// Zeros when the container's traffic is not shaped.
pub fn fill_bandwidth(l: &Limits, mut b: bandwidth_limits::Builder<'_>) {
    if let Some(bandwidth) = l.bandwidth {
        b.set_rate_in_bytes_per_second(bandwidth.rate_bytes_per_sec);
        b.set_burst_rate_in_bytes_per_second(bandwidth.burst_bytes);
    }
}

/// v1 memory.stat names of the v2 fields with the same meaning (kernel
/// cgroup-v2.rst). The rest of what Garden lists has the same name on both
/// (active_anon, inactive_file, pgfault, unevictable, …); swap and
/// hierarchical_memory_limit the helper reads from v2 files of their own.
/// pgpgin, pgpgout and hierarchical_memsw_limit have no v2 counterpart.
const V1_NAMES: [(&str, &str); 7] = [
    ("cache", "file"),
    ("rss", "anon"),
    ("rss_huge", "anon_thp"),
    ("mapped_file", "file_mapped"),
    ("dirty", "file_dirty"),
    ("writeback", "file_writeback"),
    ("shmem", "shmem"),
];

/// v1 fields whose total_* form (the cgroup and its descendants) Garden
/// reports.
const V1_TOTALS: [&str; 15] = [
    "cache",
    "rss",
    "rss_huge",
    "shmem",
    "mapped_file",
    "dirty",
    "writeback",
    "swap",
    "pgfault",
    "pgmajfault",
    "active_anon",
    "inactive_anon",
    "active_file",
    "inactive_file",
    "unevictable",
];

/// memory.stat as Grove's API and Garden report it: a v1 list as the
/// kernel gave it; a v2 list (it has "anon", no "rss") keeps its own names
/// and gains the v1 names of the same figures, and their total_* forms,
/// which on v2 are the figures themselves (v2's memory.stat already
/// counts the cgroups below). So clients written for v1 see no zeros where
/// v2 has the number.
pub fn memory_stat_with_v1_names(stat: &[(String, u64)]) -> Vec<(String, u64)> {
    let find =
        |list: &[(String, u64)], name: &str| list.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    if find(stat, "rss").is_some() || find(stat, "anon").is_none() {
        return stat.to_vec();
    }
    let mut out = stat.to_vec();
    let add = |out: &mut Vec<(String, u64)>, name: String, value: Option<u64>| {
        if let (Some(v), None) = (value, find(out, &name)) {
            out.push((name, v));
        }
    };
    for (v1, v2) in V1_NAMES {
        add(&mut out, v1.to_string(), find(stat, v2));
    }
    // The v1 names are all in `out` now: each total is its own figure.
    for name in V1_TOTALS {
        let value = find(&out, name);
        add(&mut out, format!("total_{name}"), value);
    }
    out
}

pub fn fill_metrics(stats: &Stats, age_seconds: f64, mut m: metrics::Builder<'_>) {
    let memory_stat = memory_stat_with_v1_names(&stats.memory_stat);
    let field = |name: &str| {
        memory_stat
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
            .unwrap_or(0)
    };
    {
        let mut memory = m.reborrow().init_memory();
        memory.set_usage(stats.memory_usage_bytes);
        memory.set_cache(field("cache").max(field("file")));
        memory.set_rss(field("rss").max(field("anon")));
        let inactive_file = field("total_inactive_file").max(field("inactive_file"));
        memory.set_total_usage_toward_limit(stats.memory_usage_bytes.saturating_sub(inactive_file));
        let mut list = memory.init_stat(memory_stat.len() as u32);
        for (i, (name, value)) in memory_stat.iter().enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_name(name);
            entry.set_value(*value);
        }
    }
    {
        let mut cpu = m.reborrow().init_cpu();
        cpu.set_usage_nanos(stats.cpu_usage_ns);
        cpu.set_user_nanos(stats.cpu_user_ns);
        cpu.set_system_nanos(stats.cpu_system_ns);
    }
    {
        let mut pid = m.reborrow().init_pid();
        pid.set_current(stats.pids_current);
        pid.set_max(stats.pids_max.unwrap_or(0));
    }
    {
        // From the writable layer's btrfs qgroup (total = referenced,
        // exclusive = exclusive; no inode counts: btrfs qgroups count none;
        // as of the last btrfs commit, after a sync or within the commit
        // interval) or ext4/XFS project quota (current); total adds the
        // image's size. All 0 when the depot cannot measure them.
        let usage = stats.disk.unwrap_or_default();
        let mut disk = m.reborrow().init_disk();
        disk.set_total_bytes_used(usage.referenced_bytes);
        disk.set_exclusive_bytes_used(usage.exclusive_bytes);
        disk.set_total_inodes_used(usage.referenced_inodes);
        disk.set_exclusive_inodes_used(usage.exclusive_inodes);
    }
    {
        // From the container's host-side veth, seen from the container
        // (rx = received by it).
        let mut network = m.reborrow().init_network();
        network.set_rx_bytes(stats.net.rx_bytes);
        network.set_tx_bytes(stats.net.tx_bytes);
        network.set_rx_packets(stats.net.rx_packets);
        network.set_tx_packets(stats.net.tx_packets);
    }
    m.set_age_seconds(age_seconds);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(pairs: &[(&str, u64)]) -> Vec<(String, u64)> {
        pairs.iter().map(|(n, v)| (n.to_string(), *v)).collect()
    }

    #[test]
    fn v2_memory_stats_gain_the_v1_names_garden_reports() {
        // A v2 memory.stat (kernel 6.1's names), as the helper passes it on.
        let v2 = stat(&[
            ("anon", 4096),
            ("file", 8192),
            ("kernel", 512),
            ("shmem", 1024),
            ("file_mapped", 2048),
            ("file_dirty", 16),
            ("file_writeback", 32),
            ("anon_thp", 0),
            ("active_anon", 100),
            ("inactive_anon", 200),
            ("active_file", 300),
            ("inactive_file", 400),
            ("unevictable", 5),
            ("pgfault", 77),
            ("pgmajfault", 7),
            ("swap", 64),
            ("hierarchical_memory_limit", 1 << 26),
        ]);
        let got = memory_stat_with_v1_names(&v2);
        let get = |n: &str| got.iter().find(|(k, _)| k == n).map(|(_, v)| *v);
        for (name, want) in [
            ("cache", 8192),
            ("rss", 4096),
            ("mapped_file", 2048),
            ("dirty", 16),
            ("writeback", 32),
            ("rss_huge", 0),
            ("total_cache", 8192),
            ("total_rss", 4096),
            ("total_mapped_file", 2048),
            ("total_shmem", 1024),
            ("total_swap", 64),
            ("total_pgfault", 77),
            ("total_pgmajfault", 7),
            ("total_active_anon", 100),
            ("total_inactive_anon", 200),
            ("total_active_file", 300),
            ("total_inactive_file", 400),
            ("total_unevictable", 5),
            // The v2 names stay, for clients that know them (Garden lists
            // anon and file too).
            ("anon", 4096),
            ("file", 8192),
            ("kernel", 512),
            ("hierarchical_memory_limit", 1 << 26),
        ] {
            assert_eq!(get(name), Some(want), "{name}");
        }
        // No v2 counterpart: left out, not reported as 0.
        for name in ["pgpgin", "total_pgpgin", "hierarchical_memsw_limit"] {
            assert_eq!(get(name), None, "{name}");
        }
        // Every name once.
        let mut names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before);
    }

    #[test]
    fn v1_memory_stats_pass_unchanged() {
        let v1 = stat(&[
            ("cache", 1),
            ("rss", 2),
            ("total_cache", 3),
            ("total_rss", 4),
        ]);
        assert_eq!(memory_stat_with_v1_names(&v1), v1);
        assert!(memory_stat_with_v1_names(&[]).is_empty());
    }

    fn bandwidth_of(rate: u64, burst: u64) -> ApiResult<Option<Bandwidth>> {
        let mut message = capnp::message::Builder::new_default();
        let mut b = message.init_root::<bandwidth_limits::Builder<'_>>();
        b.set_rate_in_bytes_per_second(rate);
        b.set_burst_rate_in_bytes_per_second(burst);
        let reader = message
            .get_root_as_reader::<bandwidth_limits::Reader<'_>>()
            .unwrap();
        bandwidth("spec.limits.bandwidth", reader)
    }

    #[test]
    fn bandwidth_needs_a_rate_and_a_burst() {
        assert_eq!(bandwidth_of(0, 0).unwrap(), None);
        assert_eq!(
            bandwidth_of(1000, 2000).unwrap(),
            Some(Bandwidth {
                rate_bytes_per_sec: 1000,
                burst_bytes: 2000
            })
        );
        let e = bandwidth_of(1000, 0).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("[invalidSpec] spec.limits.bandwidth.burstRateInBytesPerSecond:"));
        let e = bandwidth_of(0, 5).unwrap_err();
        assert!(e
            .message
            .starts_with("spec.limits.bandwidth.rateInBytesPerSecond:"));
    }

    #[test]
    fn shaped_and_unshaped_limits_read_back() {
        let mut message = capnp::message::Builder::new_default();
        let b = message.init_root::<bandwidth_limits::Builder<'_>>();
        fill_bandwidth(&Limits::default(), b);
        let r = message
            .get_root_as_reader::<bandwidth_limits::Reader<'_>>()
            .unwrap();
        assert_eq!(r.get_rate_in_bytes_per_second(), 0);
        let limits = Limits {
            bandwidth: Some(Bandwidth {
                rate_bytes_per_sec: 7,
                burst_bytes: 9,
            }),
            ..Limits::default()
        };
        let mut message = capnp::message::Builder::new_default();
        fill_bandwidth(&limits, message.init_root());
        let r = message
            .get_root_as_reader::<bandwidth_limits::Reader<'_>>()
            .unwrap();
        assert_eq!(
            (
                r.get_rate_in_bytes_per_second(),
                r.get_burst_rate_in_bytes_per_second()
            ),
            (7, 9)
        );
    }
}
