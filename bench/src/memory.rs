//! Where a container's host memory goes: the whole host (MemAvailable),
//! the daemons' RSS, each wshd's RSS and PSS, and what the containers'
//! memory cgroups charge to the kernel.

use std::path::Path;

/// A `Key:   123 kB` field of a /proc file, in bytes.
fn kb_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.trim().trim_end_matches("kB").trim().parse().ok()?;
        Some(kb * 1024)
    })
}

/// MemTotal − MemAvailable: memory the host cannot hand out right now.
pub fn host_used() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let total = kb_field(&text, "MemTotal").unwrap_or(0);
    let available = kb_field(&text, "MemAvailable").unwrap_or(0);
    total.saturating_sub(available)
}

/// A process's resident set, in bytes (0 when it is gone).
pub fn rss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    kb_field(&text, "VmRSS").unwrap_or(0)
}

/// A process's proportional set (shared pages divided among their
/// users), in bytes.
pub fn pss(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    kb_field(&text, "Pss").unwrap_or(0)
}

/// The pids in a container's cgroup (idle: only its wshd).
pub fn cgroup_pids(cgroup_parent: &str, handle: &str) -> Vec<u32> {
    let path = format!("/sys/fs/cgroup/pids/{cgroup_parent}/{handle}/cgroup.procs");
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// A number in one of a container's memory cgroup files (v1), in bytes.
pub fn memory_cgroup(cgroup_parent: &str, handle: &str, file: &str) -> u64 {
    let path = Path::new("/sys/fs/cgroup/memory")
        .join(cgroup_parent)
        .join(handle)
        .join(file);
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(0)
}

/// (busy, idle) jiffies of all CPUs since boot, from /proc/stat.
pub fn cpu_times() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = text.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal …
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let busy = v.iter().take(8).sum::<u64>().saturating_sub(idle);
    (busy, idle)
}

/// How many host ends of container veths exist (Grove names them gv…).
pub fn veth_count() -> usize {
    std::fs::read_dir("/sys/class/net")
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().starts_with("gv"))
                .count()
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kb_fields_are_parsed_and_missing_ones_are_none() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   1000 kB\nPss:    12 kB\n";
        assert_eq!(kb_field(text, "MemTotal"), Some(24_000_000 * 1024));
        assert_eq!(kb_field(text, "MemAvailable"), Some(1000 * 1024));
        assert_eq!(kb_field(text, "Pss"), Some(12 * 1024));
        assert_eq!(kb_field(text, "Mem"), None);
        assert_eq!(kb_field(text, "VmRSS"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        let me = std::process::id();
        assert!(rss(me) > 0);
        assert!(pss(me) > 0);
        assert!(host_used() > 0);
        assert_eq!(rss(u32::MAX), 0);
    }
}
