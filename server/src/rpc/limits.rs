//! Translation between the API's limit and metrics structs and the helper's
//! `Limits` and `Stats`. Zero means "not given" in the API's structs.

use crate::error::{ApiError, ApiResult};
use grove_schema::api_capnp::{
    cpu_limits, disk_limits, limits, memory_limits, metrics, pid_limits,
};
use grove_schema::helper::{CpuQuota, DiskLimit, DiskScope, Limits, Stats};

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

/// A disk limit: a byte limit on the container's writable layer, enforced
/// by a btrfs qgroup. btrfs has no inode limits and no soft limits, so
/// inodeSoft/inodeHard are refused, and byteSoft is accepted only as 0 or
/// equal to byteHard (a client that sends soft = hard, as Garden clients
/// often do, gets the hard limit; a soft limit on its own is refused rather
/// than silently made hard). Both scopes count the same bytes today (see
/// DiskScope): the container's own writes, never the shared image.
pub fn disk(field: &str, d: disk_limits::Reader<'_>) -> ApiResult<Limits> {
    for (name, v) in [
        ("inodeSoft", d.get_inode_soft()),
        ("inodeHard", d.get_inode_hard()),
    ] {
        if v != 0 {
            return Err(ApiError::invalid(
                &format!("{field}.{name}"),
                "btrfs has no inode limits (the depot is btrfs; only byte limits are enforced); give 0",
            ));
        }
    }
    let (soft, hard) = (d.get_byte_soft(), d.get_byte_hard());
    if soft != 0 && soft != hard {
        return Err(ApiError::invalid(
            &format!("{field}.byteSoft"),
            format!(
                "btrfs qgroups have no soft limit; give byteHard, with byteSoft 0 or equal to it                  (byteSoft {soft}, byteHard {hard})"
            ),
        ));
    }
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
        disk: (hard != 0).then_some(DiskLimit { bytes: hard, scope }),
        ..Limits::default()
    })
}

/// The limits of a ContainerSpec; bandwidth belongs to later work.
pub fn from_spec(l: limits::Reader<'_>) -> ApiResult<Limits> {
    let bandwidth = l.get_bandwidth()?;
    if bandwidth.get_rate_in_bytes_per_second() != 0
        || bandwidth.get_burst_rate_in_bytes_per_second() != 0
    {
        return Err(ApiError::not_implemented(
            "spec.limits.bandwidth",
            "the networking issue",
        ));
    }
    let disk = disk("spec.limits.disk", l.get_disk()?)?.disk;
    let cpu = cpu("spec.limits.cpu", l.get_cpu()?)?;
    Ok(Limits {
        memory_bytes: memory(l.get_memory()?).memory_bytes,
        pids_max: pids(l.get_pid()?).pids_max,
        disk,
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

/// byteSoft is reported equal to byteHard (the one limit there is).
pub fn fill_disk(l: &Limits, mut d: disk_limits::Builder<'_>) {
    if let Some(limit) = l.disk {
        d.set_byte_hard(limit.bytes);
        d.set_byte_soft(limit.bytes);
        d.set_scope(match limit.scope {
            DiskScope::Total => disk_limits::Scope::Total,
            DiskScope::Exclusive => disk_limits::Scope::Exclusive,
        });
    }
}

pub fn fill_metrics(stats: &Stats, age_seconds: f64, mut m: metrics::Builder<'_>) {
    let field = |name: &str| {
        stats
            .memory_stat
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
        let mut list = memory.init_stat(stats.memory_stat.len() as u32);
        for (i, (name, value)) in stats.memory_stat.iter().enumerate() {
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
        // From the writable layer's btrfs qgroup: total = referenced,
        // exclusive = exclusive (equal while nothing shares the layer's
        // extents). Inode counts stay 0: btrfs qgroups count no inodes.
        // Figures are as of the last btrfs commit (after a sync, or within
        // the commit interval); all 0 when the depot cannot measure them.
        let usage = stats.disk.unwrap_or_default();
        let mut disk = m.reborrow().init_disk();
        disk.set_total_bytes_used(usage.referenced_bytes);
        disk.set_exclusive_bytes_used(usage.exclusive_bytes);
    }
    m.set_age_seconds(age_seconds);
}
