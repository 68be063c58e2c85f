//! Leak checks: what an env that holds no containers must not have.
//!
//! `env_leaks` lists every leftover of destroyed containers it can see,
//! one readable line each: cgroups, links, nftables elements and chains,
//! tc qdiscs, depot entries and btrfs subvolumes, wshd sockets, groved
//! records, mounts and processes. Some of it the kernel removes on its
//! own shortly after destroy returns (a veth goes with its netns once the
//! last process in it is reaped), so `assert_no_leaks` polls for a while
//! before it fails. `Baseline` adds a before/after comparison of the host
//! (`HostSnapshot`) and of the env's own nft tables.

use crate::{HostSnapshot, TestEnv};
use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How long `assert_no_leaks` waits for leftovers to go away.
pub const SETTLE: Duration = Duration::from_secs(10);

/// The depot entry the helper keeps for image layers shared by all
/// containers (helper/src/image.rs `LAYERS_DIR`); it outlives them.
const LAYERS_DIR: &str = ".layers";

/// The depot entry removed trees wait in while a child of the helper
/// removes them (helper/src/trash.rs `TRASH_DIR`); it outlives them, but
/// anything in it is a leftover until that child is done.
pub const TRASH_DIR: &str = ".trash";

/// The notes of the boot the depot and groved's records belong to
/// (helper/src/boot.rs, server/src/store.rs); they outlive containers.
const DEPOT_BOOT_NOTE: &str = ".boot_id";
const RECORDS_BOOT_NOTE: &str = "boot_id";

/// The chains of the helper's inet table when it holds no container
/// (helper/src/net/nft.rs `rebuild`); per-container egress chains are
/// named `out-<tag>`.
const BASE_CHAINS: &[&str] = &[
    "loopback",
    "prerouting",
    "dnatted",
    "output",
    "postrouting",
    "egress",
    "forward",
];

/// Everything a container-less `env` must not have, one line per leftover
/// (empty: clean).
pub fn env_leaks(env: &TestEnv) -> Vec<String> {
    let mut out = Vec::new();
    cgroups(env, &mut out);
    links(env, &mut out);
    nft(env, &mut out);
    tc(env, &mut out);
    files(env, &mut out);
    subvolumes(env, &mut out);
    mounts(env, &mut out);
    processes(env, &mut out);
    out
}

/// Poll `env_leaks` until it is empty or `timeout` has passed; the last
/// leftovers seen (empty: clean).
pub fn wait_for_no_leaks(env: &TestEnv, timeout: Duration) -> Vec<String> {
    wait_until_clean(timeout, || env_leaks(env))
}

/// Fail, listing the leftovers and the env's logs, unless `env` is clean
/// within `SETTLE`.
pub fn assert_no_leaks(env: &TestEnv) {
    let leaks = wait_for_no_leaks(env, SETTLE);
    assert!(
        leaks.is_empty(),
        "{} leftover(s) after {} s:\n  {}\n{}",
        leaks.len(),
        SETTLE.as_secs(),
        leaks.join("\n  "),
        env.logs()
    );
}

fn wait_until_clean(timeout: Duration, mut check: impl FnMut() -> Vec<String>) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    loop {
        let leaks = check();
        if leaks.is_empty() || Instant::now() >= deadline {
            return leaks;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The host and the env as they were before a test's containers existed;
/// take it while the env holds none.
#[derive(Debug, Clone)]
pub struct Baseline {
    pub host: HostSnapshot,
    /// `env.nft_table_text()` of the empty env: the base chains' rules
    /// must come back exactly.
    pub nft: Option<String>,
    /// What `env_leaks` reported already (normally nothing).
    pub env: Vec<String>,
}

impl Baseline {
    pub fn take(env: &TestEnv) -> Baseline {
        Baseline {
            host: HostSnapshot::take(),
            nft: env.nft_table_text(),
            env: env_leaks(env),
        }
    }

    /// What is new since the baseline: the env's leftovers, changes to
    /// its nft tables and to the host (one line each; empty: clean).
    pub fn leaks(&self, env: &TestEnv) -> Vec<String> {
        let mut out: Vec<String> = env_leaks(env)
            .into_iter()
            .filter(|l| !self.env.contains(l))
            .collect();
        let nft = env.nft_table_text();
        if nft != self.nft {
            out.push(format!(
                "nft tables of the env changed:\n--- before\n{}--- after\n{}",
                self.nft.as_deref().unwrap_or("(none)\n"),
                nft.as_deref().unwrap_or("(none)\n")
            ));
        }
        out.extend(host_leaks(&self.host, &HostSnapshot::take()));
        out
    }

    /// Fail unless nothing is new since the baseline within `SETTLE`.
    pub fn assert_no_leaks(&self, env: &TestEnv) {
        let leaks = wait_until_clean(SETTLE, || self.leaks(env));
        assert!(
            leaks.is_empty(),
            "{} leftover(s) after {} s:\n  {}\n{}",
            leaks.len(),
            SETTLE.as_secs(),
            leaks.join("\n  "),
            env.logs()
        );
    }
}

/// What is new on the host in `now` compared with `before`, leaving out
/// what the other users of a shared test machine change meanwhile: mounts
/// of the helper's unit tests in other processes (/tmp/grove-helper-test-*),
/// the links and tables of its integration tests (`ht<pid>x<n>`) and the
/// nft tables of `./dev up` instances (named `grove*`). Something
/// gone is no leak and may be another process's doing, so only additions
/// and changed files count.
pub fn host_leaks(before: &HostSnapshot, now: &HostSnapshot) -> Vec<String> {
    fn without_dev_tables(nft: &str) -> String {
        let mut out = String::new();
        let mut skipping = false;
        for line in nft.lines() {
            if let Some(rest) = line.strip_prefix("table ") {
                let name = rest.split_whitespace().nth(1).unwrap_or("");
                skipping = name.starts_with("grove") || helper_test_name(name);
            }
            if !skipping {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
    let mut before = before.clone();
    let mut now = now.clone();
    before.nft = without_dev_tables(&before.nft);
    now.nft = without_dev_tables(&now.nft);
    now.changes_since(&before)
        .into_iter()
        .filter(|c| !c.contains(": gone ") && !c.contains("/tmp/grove-helper-test-"))
        .filter(|c| !c.strip_prefix("link: new ").is_some_and(helper_test_name))
        .collect()
}

/// The bridges and nft tables of grove-helper's own tests in another
/// process (`ht<pid>x<n>`, helper/tests/helper.rs), which clean up after
/// themselves.
fn helper_test_name(name: &str) -> bool {
    name.strip_prefix("ht")
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()) && rest.contains('x'))
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn cgroups(env: &TestEnv, out: &mut Vec<String>) {
    for dir in env.cgroup_parents() {
        for entry in fs::read_dir(&dir).into_iter().flatten().flatten() {
            if entry.path().is_dir() {
                out.push(format!("cgroup {}", entry.path().display()));
            }
        }
    }
}

/// The pool address a helper link name (`gv<tag>` veth, `gi<tag>` ifb;
/// helper/src/net/mod.rs `veth_of`, `ifb_of`) stands for.
fn link_address(name: &str) -> Option<Ipv4Addr> {
    let tag = name
        .strip_prefix("gv")
        .or_else(|| name.strip_prefix("gi"))?;
    if tag.len() != 8 {
        return None;
    }
    u32::from_str_radix(tag, 16).ok().map(Ipv4Addr::from)
}

fn links(env: &TestEnv, out: &mut Vec<String>) {
    for port in env.bridge_ports() {
        out.push(format!("link {port} on bridge {}", env.bridge));
    }
    // The static entries of containers' MACs (helper/src/net/netlink.rs
    // `pin_port`) go with their ports; the bridge keeps only its own.
    let fdb = Command::new("bridge")
        .args(["fdb", "show", "br", &env.bridge])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running bridge");
    for line in String::from_utf8_lossy(&fdb.stdout).lines() {
        if !line.contains(&format!(" dev {} ", env.bridge)) {
            out.push(format!("bridge {} fdb entry {line}", env.bridge));
        }
    }
    for name in names_in(Path::new("/sys/class/net")) {
        if link_address(&name).is_some_and(|ip| env.in_pool(ip)) {
            out.push(format!("link {name} (a container's, by its name)"));
        }
    }
}

/// `nft -j list table FAMILY NAME` as JSON objects; None when the table is
/// missing.
fn nft_objects(family: &str, table: &str) -> Option<Vec<serde_json::Value>> {
    let output = Command::new("nft")
        .args(["-j", "list", "table", family, table])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running nft");
    if !output.status.success() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("nft -j list table {family} {table}: {e}"));
    Some(v["nftables"].as_array().cloned().unwrap_or_default())
}

fn nft(env: &TestEnv, out: &mut Vec<String>) {
    let t = &env.nft_table;
    for family in ["inet", "bridge"] {
        let Some(objects) = nft_objects(family, t) else {
            continue;
        };
        for o in &objects {
            // Elements of the helper's maps and sets (netin, netout;
            // containers, addresses) belong to containers.
            for kind in ["map", "set"] {
                if let Some(m) = o.get(kind) {
                    let name = m["name"].as_str().unwrap_or("?");
                    for e in m["elem"].as_array().into_iter().flatten() {
                        out.push(format!("nft {family} {t} {kind} {name}: element {e}"));
                    }
                }
            }
            if let Some(c) = o.get("chain") {
                let name = c["name"].as_str().unwrap_or("?");
                if family == "inet" && !BASE_CHAINS.contains(&name) {
                    out.push(format!("nft {family} {t}: chain {name}"));
                }
            }
            if let Some(r) = o.get("rule") {
                let chain = r["chain"].as_str().unwrap_or("?");
                if family == "inet" && !BASE_CHAINS.contains(&chain) {
                    out.push(format!(
                        "nft {family} {t} chain {chain}: rule {}",
                        r["expr"]
                    ));
                }
            }
        }
    }
}

/// `tc -j KIND show dev DEV` as JSON objects (empty when tc fails, e.g.
/// the link is gone).
fn tc_objects(kind: &str, dev: &str, extra: &[&str]) -> Vec<serde_json::Value> {
    let output = Command::new("tc")
        .args(["-j", kind, "show", "dev", dev])
        .args(extra)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running tc");
    if !output.status.success() {
        return Vec::new();
    }
    serde_json::from_slice::<serde_json::Value>(&output.stdout)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// Bandwidth limits live on a container's veth and ifb (gone with them,
/// see `links`); the bridge itself keeps its default qdisc and no filter.
fn tc(env: &TestEnv, out: &mut Vec<String>) {
    for q in tc_objects("qdisc", &env.bridge, &[]) {
        if q["kind"].as_str() != Some("noqueue") {
            out.push(format!("tc qdisc on bridge {}: {q}", env.bridge));
        }
    }
    for parent in [&[][..], &["ingress"][..]] {
        for f in tc_objects("filter", &env.bridge, parent) {
            out.push(format!("tc filter on bridge {}: {f}", env.bridge));
        }
    }
}

fn files(env: &TestEnv, out: &mut Vec<String>) {
    for name in names_in(&env.depot) {
        if name == TRASH_DIR {
            for name in names_in(&env.depot.join(TRASH_DIR)) {
                let path = env.depot.join(TRASH_DIR).join(name);
                out.push(format!("depot trash entry {}", path.display()));
            }
        } else if name != LAYERS_DIR && name != DEPOT_BOOT_NOTE {
            out.push(format!("depot entry {}", env.depot.join(name).display()));
        }
    }
    for name in names_in(&env.wshd_dir) {
        // The helper's uplink-forwarding markers are the host's, not a
        // container's (helper/src/net/mod.rs).
        if !name.starts_with(".forwarding-") {
            out.push(format!("wshd socket {}", env.wshd_dir.join(name).display()));
        }
    }
    let records = env.root.join("server/containers");
    for name in names_in(&records)
        .into_iter()
        .filter(|n| n != RECORDS_BOOT_NOTE)
    {
        out.push(format!("groved record {}", records.join(name).display()));
    }
}

/// The host's mounts: (mount point, root within its filesystem, fs type,
/// source), unescaped enough for paths without spaces.
fn mountinfo() -> Vec<(PathBuf, String, String, String)> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(' ').collect();
            let dash = f.iter().position(|w| *w == "-")?;
            Some((
                PathBuf::from(f.get(4)?.replace("\\040", " ")),
                f.get(3)?.to_string(),
                f.get(dash + 1)?.to_string(),
                f.get(dash + 2)?.to_string(),
            ))
        })
        .collect()
}

/// Subvolumes beneath the depot other than the layer store's: a
/// container's writable layer is one (`depot/<handle>/layer`).
fn subvolumes(env: &TestEnv, out: &mut Vec<String>) {
    // The btrfs mount that holds the depot, and which subvolume it shows.
    let Some((mount_point, mount_root)) = mountinfo()
        .into_iter()
        .filter(|(p, _, fs, _)| fs == "btrfs" && env.depot.starts_with(p))
        .max_by_key(|(p, ..)| p.as_os_str().len())
        .map(|(p, root, ..)| (p, root))
    else {
        return;
    };
    if !env.depot.exists() {
        return;
    }
    let output = Command::new("btrfs")
        .args(["subvolume", "list"])
        .arg(&env.depot)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("running btrfs");
    let root = mount_root.trim_start_matches('/');
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        // "ID 257 gen 9 top level 5 path a/b"; paths are from the top.
        let Some((_, path)) = line.split_once(" path ") else {
            continue;
        };
        let path = path.trim_start_matches("<FS_TREE>/");
        let Some(rel) = (if root.is_empty() {
            Some(path)
        } else {
            path.strip_prefix(root)
                .and_then(|p| p.strip_prefix('/').or(Some(p)))
        }) else {
            continue;
        };
        let full = mount_point.join(rel);
        if full.starts_with(&env.depot) && !full.starts_with(env.depot.join(LAYERS_DIR)) {
            out.push(format!("btrfs subvolume {}", full.display()));
        }
    }
}

fn mounts(env: &TestEnv, out: &mut Vec<String>) {
    // The env's root is itself no mount; anything mounted beneath it, its
    // run dir or the shared rootfs is a container's.
    for (point, _, fs, source) in mountinfo() {
        if [&env.root, &env.run_dir, &env.rootfs]
            .iter()
            .any(|dir| point.starts_with(dir))
        {
            out.push(format!("mount {} ({fs} from {source})", point.display()));
        }
    }
}

/// Whether a live process belongs to `env`'s containers: it sits in one
/// of the env's cgroups, or it is a wshd the env's helper started.
pub fn belongs_to(env: &TestEnv, pid: i32) -> bool {
    let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let inside = format!("/{}/", env.name);
    let parent = format!("/{}", env.name);
    if cgroups
        .lines()
        .any(|l| l.contains(&inside) || l.ends_with(&parent))
    {
        return true;
    }
    let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    cmdline.starts_with(b"wshd\0") && parent_pid(pid) == Some(env.helper_pid() as i32)
}

fn parent_pid(pid: i32) -> Option<i32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: fields follow the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn processes(env: &TestEnv, out: &mut Vec<String>) {
    let own = [
        std::process::id() as i32,
        env.helper_pid() as i32,
        env.groved_pid() as i32,
    ];
    for name in names_in(Path::new("/proc")) {
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        if own.contains(&pid) || !belongs_to(env, pid) {
            continue;
        }
        let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        out.push(format!("process {pid}: {}", cmdline.trim()));
    }
}
