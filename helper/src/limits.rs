//! Resource limits: what a request may ask for (pure validation, shared by
//! both cgroup drivers), the checks against the container's current usage,
//! the v1 shares → v2 weight conversion, cpuset list parsing, and the
//! all-or-nothing writer both drivers apply limits with.

use crate::fs;
use grove_schema::helper::{CpuQuota, ErrorKind, HelperError, Limits};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use std::collections::BTreeSet;
use std::os::fd::{AsRawFd, BorrowedFd};

pub const MIB: u64 = 1 << 20;
pub const MIN_MEMORY: u64 = MIB;
pub const MIN_SHARES: u64 = 2;
pub const MAX_SHARES: u64 = 262_144;
pub const MIN_PERIOD_US: u64 = 1000;
pub const MAX_PERIOD_US: u64 = 1_000_000;
pub const MIN_QUOTA_US: u64 = 1000;
/// Well below the kernel's own bound (about 2^44 µs) and far above any
/// sensible quota.
pub const MAX_QUOTA_US: u64 = 1_000_000_000_000;
/// The kernel's PID_MAX_LIMIT: pids.max takes nothing larger.
pub const MAX_PIDS: u64 = 4_194_304;
/// Highest CPU number a cpuset may name (the kernel's largest NR_CPUS).
pub const MAX_CPU: u32 = 8191;
/// Longest cpuset list accepted.
pub const MAX_CPUSET_LEN: usize = 1024;
/// Smallest disk limit: below this a container could not even start.
pub const MIN_DISK: u64 = MIB;
/// Largest disk limit (all ones would mean "clear the limit" to btrfs).
pub const MAX_DISK: u64 = u64::MAX - 1;
/// Largest inode limit: ext4 numbers inodes in 32 bits.
pub const MAX_INODES: u64 = u32::MAX as u64;
/// v1 reports "no limit" as a page-rounded i64::MAX; anything this large is none.
pub const UNLIMITED_MEMORY: u64 = 1 << 62;

fn refused(msg: String) -> HelperError {
    HelperError::new(ErrorKind::InvalidValue, msg)
}

/// The host's RAM in bytes.
pub fn host_ram() -> u64 {
    // SAFETY: sysinfo fills the struct we pass, which lives on our stack.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the kernel only writes into `si`.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return u64::MAX; // unknown: only the other bounds apply
    }
    (si.totalram as u64).saturating_mul(u64::from(si.mem_unit).max(1))
}

/// Check every field's value on its own (no cgroup read): the errors name
/// the field and say what is allowed. Kind InvalidValue.
pub fn validate(l: &Limits, host_ram: u64) -> Result<(), HelperError> {
    if let Some(m) = l.memory_bytes {
        if m < MIN_MEMORY || m > host_ram {
            return Err(refused(format!(
                "memory_bytes {m} is out of range: allowed {MIN_MEMORY} (1 MiB) to {host_ram} (the host's RAM)"
            )));
        }
    }
    if let Some(s) = l.cpu_shares {
        if !(MIN_SHARES..=MAX_SHARES).contains(&s) {
            return Err(refused(format!(
                "cpu_shares {s} is out of range: allowed {MIN_SHARES}..={MAX_SHARES}"
            )));
        }
    }
    if let Some(CpuQuota {
        period_us,
        quota_us,
    }) = l.cpu_quota
    {
        if !(MIN_PERIOD_US..=MAX_PERIOD_US).contains(&period_us) {
            return Err(refused(format!(
                "cpu_quota.period_us {period_us} is out of range: allowed {MIN_PERIOD_US}..={MAX_PERIOD_US}"
            )));
        }
        if quota_us != u64::MAX && !(MIN_QUOTA_US..=MAX_QUOTA_US).contains(&quota_us) {
            return Err(refused(format!(
                "cpu_quota.quota_us {quota_us} is out of range: allowed {MIN_QUOTA_US}..={MAX_QUOTA_US}, \
                 or {} for no quota",
                u64::MAX
            )));
        }
    }
    if let Some(p) = l.pids_max {
        if !(1..=MAX_PIDS).contains(&p) {
            return Err(refused(format!(
                "pids_max {p} is out of range: allowed 1..={MAX_PIDS}"
            )));
        }
    }
    if let Some(c) = &l.cpuset {
        parse_cpus(c).map_err(|e| refused(format!("cpuset {c:?}: {e}")))?;
    }
    if let Some(d) = l.disk {
        use grove_schema::helper::MIN_WRITABLE_INODES as MIN_INODES;
        if d.bytes == 0 && d.inodes == 0 {
            return Err(refused(
                "disk: neither bytes nor inodes given (0 is no limit of that kind)".into(),
            ));
        }
        if d.bytes != 0 && !(MIN_DISK..=MAX_DISK).contains(&d.bytes) {
            return Err(refused(format!(
                "disk.bytes {} is out of range: allowed {MIN_DISK} (1 MiB) to {MAX_DISK}, or 0",
                d.bytes
            )));
        }
        if d.inodes != 0 && !(MIN_INODES..=MAX_INODES).contains(&d.inodes) {
            return Err(refused(format!(
                "disk.inodes {} is out of range: allowed {MIN_INODES} to {MAX_INODES}, or 0",
                d.inodes
            )));
        }
    }
    Ok(())
}

/// What the container uses now, read by the driver for the fields a
/// request sets (None: not read, because that field is not being set).
#[derive(Debug, Default)]
pub struct Current {
    pub memory_usage: Option<u64>,
    pub pids_current: Option<u64>,
    /// The parent cgroup's cpus (a cpuset list).
    pub parent_cpus: Option<String>,
}

/// The checks that depend on the container: a limit below current usage
/// (InvalidState) and CPUs outside the parent's cpuset (InvalidValue).
pub fn check_current(l: &Limits, cur: &Current) -> Result<(), HelperError> {
    let below = |field: &str, want: u64, now: u64| {
        HelperError::new(
            ErrorKind::InvalidState,
            format!("{field} {want} is below current usage {now}"),
        )
    };
    if let (Some(m), Some(now)) = (l.memory_bytes, cur.memory_usage) {
        if m < now {
            return Err(below("memory_bytes", m, now));
        }
    }
    if let (Some(p), Some(now)) = (l.pids_max, cur.pids_current) {
        if p < now {
            return Err(below("pids_max", p, now));
        }
    }
    if let (Some(c), Some(parent)) = (&l.cpuset, &cur.parent_cpus) {
        let want = parse_cpus(c).map_err(|e| refused(format!("cpuset {c:?}: {e}")))?;
        let have = parse_cpus(parent.trim()).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("the parent cgroup's cpuset {parent:?}: {e}"),
            )
        })?;
        if let Some(cpu) = want.iter().find(|c| !have.contains(c)) {
            return Err(refused(format!(
                "cpuset {c:?}: CPU {cpu} is not in the parent cgroup's cpuset {:?}",
                parent.trim()
            )));
        }
    }
    Ok(())
}

/// Parse a cpuset list such as "0-2,5": comma-separated CPU numbers and
/// ascending ranges, no spaces, non-empty, every CPU ≤ MAX_CPU.
pub fn parse_cpus(s: &str) -> Result<BTreeSet<u32>, String> {
    if s.is_empty() {
        return Err("is empty; give CPUs such as \"0\" or \"0-1,3\"".into());
    }
    if s.len() > MAX_CPUSET_LEN {
        return Err(format!("is longer than {MAX_CPUSET_LEN} bytes"));
    }
    let num = |t: &str| -> Result<u32, String> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{t:?} is not a CPU number"));
        }
        let n: u32 = t
            .parse()
            .map_err(|_| format!("{t:?} is not a CPU number"))?;
        if n > MAX_CPU {
            return Err(format!("CPU {n} is above {MAX_CPU}"));
        }
        Ok(n)
    };
    let mut cpus = BTreeSet::new();
    for part in s.split(',') {
        let (a, b) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if a > b {
            return Err(format!("range {part:?} is descending"));
        }
        cpus.extend(a..=b);
    }
    Ok(cpus)
}

/// v1 cpu.shares (2..=262144, default 1024) → v2 cpu.weight (1..=10000,
/// default 100): the conversion runc (opencontainers/cgroups, runc 1.3.2+),
/// crun (1.23+) and Kubernetes use now. With L = log2(shares),
/// weight = ⌈10^((L² + 125·L)/612 − 7/34)⌉, a quadratic in log space
/// through (2, 1), (1024, 100) and (262144, 10000): the v1 default maps to
/// the v2 default. (The older linear formula, 1 + (shares−2)·9999/262142,
/// gave shares 1024 weight 39: less CPU than a container with no limit.)
/// The same f64 operations in the same order as runc's, so the results
/// agree to the last bit.
pub fn shares_to_weight(shares: u64) -> u64 {
    if shares <= MIN_SHARES {
        return 1;
    }
    if shares >= MAX_SHARES {
        return 10_000;
    }
    let l = (shares as f64).log2();
    let exponent = (l * l + 125.0 * l) / 612.0 - 7.0 / 34.0;
    (10f64.powf(exponent).ceil() as u64).clamp(1, 10_000)
}

/// v2 cpu.weight → v1 shares, for a weight Grove did not set (or whose
/// request it has no record of): the largest shares value with that
/// weight. Weight is ⌈f(shares)⌉, so that is the value whose f is closest
/// to the weight from below: 100 → 1024 (a container with no CPU limit
/// reports the v1 default), 1 → 2, 10000 → 262144. Every weight has one
/// (f rises by less than 1 per share), and shares_to_weight of it gives
/// the weight back.
pub fn weight_to_shares(weight: u64) -> u64 {
    let w = weight.clamp(1, 10_000);
    // shares_to_weight never decreases: binary search for the last shares
    // value whose weight is at most w.
    let (mut lo, mut hi) = (MIN_SHARES, MAX_SHARES);
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if shares_to_weight(mid) <= w {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    lo
}

/// The shares to report for a cgroup whose cpu.weight reads `weight`:
/// what was requested, if Grove recorded it and it still gives that
/// weight (exact read-back: 1024 reads back 1024, not 1018 or 2597), else
/// the weight's own shares value.
pub fn reported_shares(weight: u64, recorded: Option<u64>) -> u64 {
    match recorded {
        Some(s) if (MIN_SHARES..=MAX_SHARES).contains(&s) && shares_to_weight(s) == weight => s,
        _ => weight_to_shares(weight),
    }
}

/// One cgroup control file to write.
pub struct Write<'a> {
    pub dir: BorrowedFd<'a>,
    /// For messages ("memory/c1").
    pub where_: String,
    pub file: &'static str,
    pub value: String,
}

/// Write a cgroup control file (no temp file: cgroupfs files are knobs;
/// O_TRUNC is a no-op there, and keeps plain files of a test tree exact).
/// Why safe: `dir` is a cgroup the helper opened beneath its own parent and
/// `file` a constant; O_NOFOLLOW, and no O_CREAT, so nothing new is made.
pub fn write_cg(dir: BorrowedFd, file: &str, value: &str) -> Result<(), Errno> {
    let fd = fs::openat(
        Some(dir),
        file,
        OFlag::O_WRONLY | OFlag::O_TRUNC | OFlag::O_NOFOLLOW,
        0,
    )?;
    fs::write_all(fd.as_raw_fd(), value.as_bytes())
}

/// All or nothing: read every file's current value first, then write in
/// order; if a write fails, write the earlier files' old values back (in
/// reverse) and return the error.
pub fn apply(writes: &[Write]) -> Result<(), HelperError> {
    let mut old = Vec::with_capacity(writes.len());
    for w in writes {
        let v = fs::read_file_at(w.dir, w.file).map_err(|e| {
            HelperError::new(
                ErrorKind::System,
                format!("reading {}/{}: {e}; nothing was changed", w.where_, w.file),
            )
        })?;
        old.push(v.trim().to_string());
    }
    for (i, w) in writes.iter().enumerate() {
        if let Err(e) = write_cg(w.dir, w.file, &w.value) {
            let mut restored = "the earlier writes were restored".to_string();
            for (done, before) in writes[..i].iter().zip(&old).rev() {
                if let Err(r) = write_cg(done.dir, done.file, before) {
                    log_error!(
                        "grove-helper: restoring {}/{} to {before:?}: {r}",
                        done.where_,
                        done.file
                    );
                    restored = format!(
                        "restoring {}/{} to {before:?} failed too: {r}",
                        done.where_, done.file
                    );
                }
            }
            return Err(HelperError::new(
                ErrorKind::System,
                format!(
                    "writing {:?} to {}/{}: {e}; {restored}",
                    w.value, w.where_, w.file
                ),
            ));
        }
    }
    Ok(())
}

/// Parse "name value" lines (memory.stat, cpu.stat, memory.events, ...);
/// lines that do not parse are skipped.
pub fn parse_flat_keyed(text: &str) -> Vec<(String, u64)> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_string(), v.trim().parse().ok()?))
        })
        .collect()
}

pub fn keyed(text: &str, key: &str) -> Option<u64> {
    parse_flat_keyed(text)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    fn refused_field(l: Limits, field: &str) {
        let e = validate(&l, 4 * GIB).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidValue, "{l:?}");
        assert!(e.message.starts_with(field), "{l:?}: {}", e.message);
    }

    #[test]
    fn disk_limits_need_bytes_or_inodes_in_range() {
        use grove_schema::helper::{DiskLimit, DiskScope};
        let disk = |bytes, inodes| Limits {
            disk: Some(DiskLimit {
                bytes,
                inodes,
                scope: DiskScope::Exclusive,
            }),
            ..Limits::default()
        };
        refused_field(disk(0, 0), "disk: neither");
        for b in [1, MIB - 1, u64::MAX] {
            refused_field(disk(b, 0), "disk.bytes");
            refused_field(disk(b, 100), "disk.bytes");
        }
        for i in [1, 15, MAX_INODES + 1, u64::MAX] {
            refused_field(disk(0, i), "disk.inodes");
            refused_field(disk(MIB, i), "disk.inodes");
        }
        for (b, i) in [(MIB, 0), (0, 16), (MIB, 16), (MAX_DISK, MAX_INODES)] {
            validate(&disk(b, i), 4 * GIB).unwrap();
        }
    }

    #[test]
    fn every_bad_field_is_refused_by_name() {
        let l = Limits::default;
        for m in [0, 1, MIB - 1, 4 * GIB + 1, u64::MAX] {
            refused_field(
                Limits {
                    memory_bytes: Some(m),
                    ..l()
                },
                "memory_bytes",
            );
        }
        for s in [0, 1, 262_145, u64::MAX] {
            refused_field(
                Limits {
                    cpu_shares: Some(s),
                    ..l()
                },
                "cpu_shares",
            );
        }
        for (p, q) in [(999, 1000), (1_000_001, 1000), (0, u64::MAX)] {
            refused_field(
                Limits {
                    cpu_quota: Some(CpuQuota {
                        period_us: p,
                        quota_us: q,
                    }),
                    ..l()
                },
                "cpu_quota.period_us",
            );
        }
        for q in [0, 999, MAX_QUOTA_US + 1, u64::MAX - 1] {
            refused_field(
                Limits {
                    cpu_quota: Some(CpuQuota {
                        period_us: 100_000,
                        quota_us: q,
                    }),
                    ..l()
                },
                "cpu_quota.quota_us",
            );
        }
        for p in [0, MAX_PIDS + 1] {
            refused_field(
                Limits {
                    pids_max: Some(p),
                    ..l()
                },
                "pids_max",
            );
        }
        for c in ["", "a", "0-", "-1", "3-1", "0,,1", " 0", "8192", "0-99999"] {
            refused_field(
                Limits {
                    cpuset: Some(c.into()),
                    ..l()
                },
                "cpuset",
            );
        }
        let good = Limits {
            memory_bytes: Some(MIB),
            cpu_shares: Some(2),
            cpu_quota: Some(CpuQuota {
                period_us: 1000,
                quota_us: u64::MAX,
            }),
            pids_max: Some(1),
            cpuset: Some("0-1,3".into()),
            disk: Some(grove_schema::helper::DiskLimit {
                bytes: MIB,
                inodes: 16,
                scope: grove_schema::helper::DiskScope::Total,
            }),
            bandwidth: None,
        };
        validate(&good, 4 * GIB).unwrap();
        validate(&Limits::default(), 4 * GIB).unwrap();
        let e = validate(
            &Limits {
                cpu_shares: Some(1),
                ..l()
            },
            4 * GIB,
        )
        .unwrap_err();
        assert_eq!(
            e.message,
            "cpu_shares 1 is out of range: allowed 2..=262144"
        );
    }

    #[test]
    fn limits_below_usage_and_foreign_cpus_are_refused() {
        let cur = Current {
            memory_usage: Some(10 * MIB),
            pids_current: Some(5),
            parent_cpus: Some("0-1\n".into()),
        };
        let e = check_current(
            &Limits {
                memory_bytes: Some(9 * MIB),
                ..Limits::default()
            },
            &cur,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidState);
        assert!(
            e.message.contains("below current usage 10485760"),
            "{}",
            e.message
        );
        let e = check_current(
            &Limits {
                pids_max: Some(4),
                ..Limits::default()
            },
            &cur,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidState);
        assert_eq!(e.message, "pids_max 4 is below current usage 5");
        let e = check_current(
            &Limits {
                cpuset: Some("1-2".into()),
                ..Limits::default()
            },
            &cur,
        )
        .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidValue);
        assert!(e.message.contains("CPU 2 is not in"), "{}", e.message);
        check_current(
            &Limits {
                memory_bytes: Some(10 * MIB),
                pids_max: Some(5),
                cpuset: Some("1,0".into()),
                ..Limits::default()
            },
            &cur,
        )
        .unwrap();
    }

    #[test]
    fn cpuset_lists_parse() {
        let p = |s: &str| parse_cpus(s).map(|c| c.into_iter().collect::<Vec<_>>());
        assert_eq!(p("0").unwrap(), vec![0]);
        assert_eq!(p("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(p("3,1-1,0-1").unwrap(), vec![0, 1, 3]);
        assert_eq!(p("8191").unwrap(), vec![8191]);
        assert!(p("2-1").unwrap_err().contains("descending"));
        assert!(p("0-8192").unwrap_err().contains("above"));
        assert!(p("x").is_err() && p("1,").is_err() && p("+1").is_err());
        assert!(p(&"0,".repeat(600)).unwrap_err().contains("longer"));
    }

    #[test]
    fn shares_convert_to_weight_as_runc_and_crun_do() {
        // The points the formula is built through, and runc's own test
        // table (opencontainers/cgroups utils_test.go).
        for (shares, weight) in [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 2),
            (1024, 100),
            (262_143, 10_000),
            (262_144, 10_000),
            (262_145, 10_000),
        ] {
            assert_eq!(shares_to_weight(shares), weight, "shares {shares}");
        }
        // The default no longer loses to "no limit" (weight 100).
        assert!(shares_to_weight(1024) >= 100 && shares_to_weight(1025) > 100);
        assert_eq!(shares_to_weight(512), 59);
        assert_eq!(shares_to_weight(2048), 174);
        let mut last = 0;
        for s in MIN_SHARES..=MAX_SHARES {
            let w = shares_to_weight(s);
            assert!(
                w >= last && w <= last.max(1) + 1,
                "shares {s}: {last} → {w}"
            );
            last = w;
        }
    }

    #[test]
    fn every_weight_reads_back_as_shares_that_give_it() {
        assert_eq!(weight_to_shares(100), 1024);
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        for w in 1..=10_000 {
            let s = weight_to_shares(w);
            assert!((MIN_SHARES..=MAX_SHARES).contains(&s), "{w} → {s}");
            assert_eq!(shares_to_weight(s), w, "weight {w} → shares {s}");
            if s < MAX_SHARES {
                assert!(shares_to_weight(s + 1) > w, "{s} is the largest for {w}");
            }
        }
    }

    #[test]
    fn recorded_shares_read_back_exactly_while_they_match_the_weight() {
        for s in [2, 3, 100, 500, 512, 1000, 1024, 1025, 4096, 262_143] {
            assert_eq!(reported_shares(shares_to_weight(s), Some(s)), s);
        }
        // No record, or one the weight no longer matches (someone wrote
        // cpu.weight): the weight's own value.
        assert_eq!(reported_shares(100, None), 1024);
        assert_eq!(reported_shares(100, Some(512)), 1024);
        assert_eq!(reported_shares(59, Some(1)), weight_to_shares(59));
    }

    #[test]
    fn flat_keyed_files_parse() {
        let t = "cache 4096\nrss 8192\nbogus\nx y\n";
        assert_eq!(
            parse_flat_keyed(t),
            vec![("cache".into(), 4096), ("rss".into(), 8192)]
        );
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n", "oom_kill"),
            Some(3)
        );
    }
}
