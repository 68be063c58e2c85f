//! Translation between the API's limit and metrics structs and the helper's
//! `Limits` and `Stats`. Zero means "not given" in the API's structs.

use crate::error::{ApiError, ApiResult};
use grove_schema::api_capnp::{cpu_limits, limits, memory_limits, metrics, pid_limits};
use grove_schema::helper::{CpuQuota, Limits, Stats};

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

/// The limits of a ContainerSpec; bandwidth and disk belong to later work.
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
    let disk = l.get_disk()?;
    if disk.get_byte_hard() != 0
        || disk.get_byte_soft() != 0
        || disk.get_inode_hard() != 0
        || disk.get_inode_soft() != 0
    {
        return Err(ApiError::not_implemented(
            "spec.limits.disk",
            "the images issue",
        ));
    }
    let cpu = cpu("spec.limits.cpu", l.get_cpu()?)?;
    Ok(Limits {
        memory_bytes: memory(l.get_memory()?).memory_bytes,
        pids_max: pids(l.get_pid()?).pids_max,
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
    m.set_age_seconds(age_seconds);
}
