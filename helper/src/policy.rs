//! The helper's policy: a root-owned file that groved cannot change. It names
//! the one uid allowed to talk to the helper and every host path the helper
//! may touch. Requests never add paths of their own, except a rootfs that
//! must lie beneath an allowlisted directory.

use grove_schema::conf;
use grove_schema::helper::{BindMount, BindOrigin, ErrorKind, HelperError, HostPath, MAX_BINDS};
use grove_schema::Handle;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

pub const DEFAULT_POLICY_PATH: &str = "/etc/grove/helper-policy.conf";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserSpec {
    Name(String),
    Uid(u32),
}

/// The policy as written, before anything is looked up on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyConf {
    pub server_user: UserSpec,
    pub socket: HostPath,
    pub depot: HostPath,
    pub runtime_dir: HostPath,
    pub default_rootfs: HostPath,
    pub rootfs_allow: Vec<HostPath>,
    /// Directories beneath which image sources (OCI layouts, docker-archive
    /// tarballs) may lie.
    pub image_allow: Vec<HostPath>,
    /// Remove what failed creates leave (layers no container ever used,
    /// temp dirs) after failed creates, destroys and at start-up, and the
    /// layers groved's image GC asks for (`RemoveLayer`, never one in use).
    /// Off: the helper removes no layer.
    pub layer_gc: bool,
    /// None: the file `wshd` next to the running grove-helper.
    pub wshd: Option<HostPath>,
    pub cgroup_parent: String,
    pub max_containers: usize,
    /// bridge, pool, port_range, nft_table, mtu.
    pub net: crate::net::NetConf,
    /// Host id of every container's uid and gid 0; ids 0..65535 map to
    /// userns_base..userns_base+65535. The max_containers uids above them
    /// own containers' user namespaces, one each (userns::owner_uid).
    pub userns_base: u32,
    /// May a container run without a user namespace?
    pub allow_privileged: bool,
    /// Directories beneath which host bind-mount sources may lie (none by
    /// default: no host directory is bind-mounted).
    pub bind_allow: Vec<HostPath>,
    /// Mount containers' writable layers with overlayfs's `volatile`: no
    /// sync of the layer ever (fsync inside the container's root
    /// filesystem returns at once, and unmounting at destroy commits no
    /// btrfs transaction). A writable layer dies with its container, and
    /// no container survives a crash of the host, so durability buys
    /// nothing there; data meant to last belongs on a bind mount.
    pub volatile_layers: bool,
    /// pids.max of a container created without a pids limit.
    pub default_pids_limit: u64,
    /// pids.max of the parent cgroup, i.e. of all containers together
    /// (None: half of what the kernel allows, see `total_pids_limit`).
    pub total_pids_limit: Option<u64>,
    /// image_max_bytes, image_max_entries, image_unpack_timeout.
    pub image: crate::image::Bounds,
}

fn path(s: &str) -> HostPath {
    HostPath::new(s).unwrap_or_else(|e| panic!("built-in default path {s:?}: {e}"))
}

impl Default for PolicyConf {
    fn default() -> Self {
        PolicyConf {
            server_user: UserSpec::Name("grove".into()),
            socket: path("/run/grove/helper.sock"),
            depot: path("/var/lib/grove/depot"),
            runtime_dir: path("/run/grove/wshd"),
            default_rootfs: path("/var/lib/grove/rootfs/busybox"),
            rootfs_allow: vec![path("/var/lib/grove/rootfs")],
            image_allow: vec![
                path("/var/lib/grove/images"),
                path("/var/lib/grove/server/downloads"),
            ],
            layer_gc: true,
            wshd: None,
            cgroup_parent: "grove".into(),
            max_containers: 1024,
            net: crate::net::NetConf::default(),
            userns_base: 1_000_000_000,
            allow_privileged: false,
            bind_allow: Vec::new(),
            volatile_layers: true,
            default_pids_limit: 4096,
            total_pids_limit: None,
            image: crate::image::Bounds::default(),
        }
    }
}

/// Parse policy text (TOML, see grove_schema::conf): defaults for absent
/// keys, an error naming the line and key for unknown keys and bad values.
pub fn parse(text: &str) -> Result<PolicyConf, String> {
    let mut p = PolicyConf::default();
    for e in conf::parse(text).map_err(|e| e.to_string())? {
        let bad = |why: String| format!("line {}: {}: {why}", e.line, e.key);
        let abs = |v: &str| HostPath::new(v).map_err(bad);
        match e.key.as_str() {
            "server_user" => {
                p.server_user =
                    if !e.value.is_empty() && e.value.bytes().all(|b| b.is_ascii_digit()) {
                        UserSpec::Uid(e.value.parse().map_err(|err| bad(format!("{err}")))?)
                    } else if !e.value.is_empty()
                        && e.value
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
                    {
                        UserSpec::Name(e.value.clone())
                    } else {
                        return Err(bad(format!(
                            "{:?} is neither a user name nor a numeric uid",
                            e.value
                        )));
                    }
            }
            "socket" => p.socket = abs(&e.value)?,
            "depot" => p.depot = abs(&e.value)?,
            "runtime_dir" => p.runtime_dir = abs(&e.value)?,
            "default_rootfs" => p.default_rootfs = abs(&e.value)?,
            "rootfs_allow" => {
                p.rootfs_allow = e
                    .value
                    .split(',')
                    .map(|s| abs(s.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "image_allow" => {
                p.image_allow = e
                    .value
                    .split(',')
                    .map(|s| abs(s.trim()))
                    .collect::<Result<_, _>>()?;
            }
            "layer_gc" => {
                p.layer_gc = e
                    .flag()
                    .ok_or_else(|| bad(format!("{:?} is neither true nor false", e.value)))?
            }
            "wshd" => p.wshd = Some(abs(&e.value)?),
            "cgroup_parent" => {
                // Handle syntax is exactly "one harmless path component".
                Handle::new(e.value.clone())
                    .map_err(|err| bad(format!("not a single path component: {err}")))?;
                p.cgroup_parent = e.value.clone();
            }
            "max_containers" => {
                let n: usize = e
                    .value
                    .parse()
                    .map_err(|err| bad(format!("{:?}: {err}", e.value)))?;
                if n == 0 || n > 65536 {
                    return Err(bad(format!("{n} is outside 1..=65536")));
                }
                p.max_containers = n;
            }
            "bridge" => p.net.bridge = crate::net::parse_ifname(&e.value).map_err(bad)?,
            "pool" => p.net.pool = crate::net::parse_cidr(&e.value).map_err(bad)?,
            "port_range" => {
                p.net.port_range = crate::net::parse_port_range(&e.value).map_err(bad)?
            }
            "nft_table" => p.net.nft_table = crate::net::parse_table(&e.value).map_err(bad)?,
            "bind_allow" => {
                p.bind_allow = e
                    .value
                    .split(',')
                    .map(|s| s.trim())
                    .filter(|s| !s.is_empty())
                    .map(abs)
                    .collect::<Result<_, _>>()?;
            }
            "volatile_layers" => {
                p.volatile_layers = e
                    .flag()
                    .ok_or_else(|| bad(format!("{:?} is neither true nor false", e.value)))?
            }
            "allow_privileged" => {
                p.allow_privileged = e
                    .flag()
                    .ok_or_else(|| bad(format!("{:?} is neither true nor false", e.value)))?
            }
            "userns_base" => {
                p.userns_base = e
                    .value
                    .parse()
                    .ok()
                    .filter(|b: &u32| *b >= 65536 && b.checked_add(crate::userns::ID_COUNT).is_some())
                    .ok_or_else(|| {
                        bad(format!(
                            "{:?} must be a host uid of at least 65536 with 65536 ids above it",
                            e.value
                        ))
                    })?
            }
            "default_pids_limit" | "total_pids_limit" => {
                let n = e
                    .value
                    .parse()
                    .ok()
                    .filter(|n| (1..=crate::limits::MAX_PIDS).contains(n))
                    .ok_or_else(|| {
                        bad(format!(
                            "{:?} is not a number of processes from 1 to {}",
                            e.value,
                            crate::limits::MAX_PIDS
                        ))
                    })?;
                if e.key == "default_pids_limit" {
                    p.default_pids_limit = n;
                } else {
                    p.total_pids_limit = Some(n);
                }
            }
            "uplinks" => p.net.uplinks = crate::net::parse_uplinks(&e.value).map_err(bad)?,
            "conntrack_max_per_container" => {
                p.net.conntrack_max_per_container =
                    count(&e.value, 0, u32::MAX as u64).map_err(bad)? as u32
            }
            "mtu" => {
                p.net.mtu = e
                    .value
                    .parse()
                    .ok()
                    .filter(|m| (576..=9000).contains(m))
                    .ok_or_else(|| bad(format!("{:?} is not an MTU of 576 to 9000", e.value)))?
            }
            "image_max_bytes" => p.image.max_bytes = count(&e.value, 1 << 20, u64::MAX).map_err(bad)?,
            "image_max_entries" => p.image.max_entries = count(&e.value, 1, u64::MAX).map_err(bad)?,
            "image_unpack_timeout" => {
                let s = count(&e.value, 1, 86_400).map_err(bad)?;
                p.image.timeout = std::time::Duration::from_secs(s);
            }
            other => {
                return Err(format!(
                "line {}: unknown key {other:?} (known: server_user, socket, depot, runtime_dir, \
                     default_rootfs, rootfs_allow, image_allow, layer_gc, wshd, cgroup_parent, \
                     max_containers, bridge, pool, port_range, nft_table, mtu, uplinks, conntrack_max_per_container, userns_base, allow_privileged, bind_allow, \
                     volatile_layers, default_pids_limit, total_pids_limit, \
                     image_max_bytes, image_max_entries, image_unpack_timeout)",
                e.line
            ))
            }
        }
    }
    for (name, p) in [
        ("socket", &p.socket),
        ("depot", &p.depot),
        ("runtime_dir", &p.runtime_dir),
    ] {
        if p.components().next().is_none() {
            return Err(format!("{name} must not be /"));
        }
    }
    // Above the containers' ids sit the uids owning their user namespaces,
    // one per container (userns::owner_uid).
    if !crate::userns::owner_range_fits(p.userns_base, p.max_containers) {
        return Err(format!(
            "userns_base {} leaves no room for its {} container ids and the {} uids above \
             them that own containers' user namespaces (max_containers)",
            p.userns_base,
            crate::userns::ID_COUNT,
            p.max_containers
        ));
    }
    Ok(p)
}

impl PolicyConf {
    /// The parent cgroup's pids.max: the policy's, or half of the smaller
    /// of kernel.pid_max and kernel.threads-max, so containers together
    /// can never take the host's last pids.
    pub fn total_pids_limit(&self) -> u64 {
        let read = |f: &str| {
            std::fs::read_to_string(f)
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
        };
        self.total_pids_limit.unwrap_or_else(|| {
            let kernel = [
                read("/proc/sys/kernel/pid_max"),
                read("/proc/sys/kernel/threads-max"),
            ];
            (kernel.into_iter().flatten().min().unwrap_or(32768) / 2).max(1)
        })
    }
}

/// A whole number from `min` to `max`.
fn count(value: &str, min: u64, max: u64) -> Result<u64, String> {
    value
        .parse()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| format!("{value:?} is not a whole number from {min} to {max}"))
}

/// `path` lies strictly beneath `dir`, compared by whole components (so
/// /srv/rootfs-evil is not beneath /srv/rootfs).
pub fn is_beneath(path: &HostPath, dir: &HostPath) -> bool {
    let mut p = path.components();
    for d in dir.components() {
        if p.next() != Some(d) {
            return false;
        }
    }
    p.next().is_some()
}

/// The policy with users and the wshd path resolved on this host.
#[derive(Debug, Clone)]
pub struct Policy {
    pub conf: PolicyConf,
    pub server_uid: u32,
    pub server_gid: u32,
    pub wshd: PathBuf,
}

impl Policy {
    /// May a container use this host directory as its rootfs? Syntax only;
    /// the caller still opens it without following symlinks, so the
    /// component check here is what the kernel will walk.
    pub fn check_rootfs(&self, p: &HostPath) -> Result<(), HelperError> {
        if *p == self.conf.default_rootfs || self.conf.rootfs_allow.iter().any(|d| is_beneath(p, d))
        {
            return Ok(());
        }
        let allow: Vec<&str> = self.conf.rootfs_allow.iter().map(|d| d.as_str()).collect();
        Err(HelperError::new(
            ErrorKind::PolicyRefused,
            format!(
                "rootfs {} is not beneath an allowed directory (rootfs_allow = {}; default_rootfs = {})",
                p.as_str(),
                allow.join(","),
                self.conf.default_rootfs.as_str()
            ),
        ))
    }
}

impl Policy {
    /// May a container's image come from this host path (an OCI layout
    /// directory or a docker-archive tarball)? Syntax only, as for a rootfs:
    /// the caller opens it without following any symlink.
    pub fn check_image(&self, p: &HostPath) -> Result<(), HelperError> {
        if self.conf.image_allow.iter().any(|d| is_beneath(p, d)) {
            return Ok(());
        }
        let allow: Vec<&str> = self.conf.image_allow.iter().map(|d| d.as_str()).collect();
        Err(HelperError::new(
            ErrorKind::PolicyRefused,
            format!(
                "image {} is not beneath an allowed directory (image_allow = {})",
                p.as_str(),
                allow.join(",")
            ),
        ))
    }
}

impl Policy {
    /// May these bind mounts be made? Host sources must lie beneath a
    /// `bind_allow` entry (by components); no destination may be the
    /// container's root or lie in /proc, /sys or /dev (where they could
    /// cover the masks and device nodes the helper put there).
    pub fn check_binds(&self, binds: &[BindMount]) -> Result<(), HelperError> {
        if binds.len() > MAX_BINDS {
            return Err(HelperError::new(
                ErrorKind::InvalidValue,
                format!("binds: at most {MAX_BINDS}, not {}", binds.len()),
            ));
        }
        for (i, b) in binds.iter().enumerate() {
            let first = b.dst.components().next();
            if first.is_none() || matches!(first, Some("proc" | "sys" | "dev")) {
                return Err(HelperError::new(
                    ErrorKind::InvalidValue,
                    format!(
                        "binds[{i}]: destination {} may not be / or lie in /proc, /sys or /dev",
                        b.dst.as_str()
                    ),
                ));
            }
            if b.origin == BindOrigin::Host
                && !self.conf.bind_allow.iter().any(|d| is_beneath(&b.src, d))
            {
                let allow: Vec<&str> = self.conf.bind_allow.iter().map(|d| d.as_str()).collect();
                return Err(HelperError::new(
                    ErrorKind::PolicyRefused,
                    format!(
                        "binds[{i}]: source {} is not beneath an allowed directory (bind_allow = {})",
                        b.src.as_str(),
                        if allow.is_empty() {
                            "none".to_string()
                        } else {
                            allow.join(",")
                        }
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Read the policy: `explicit` must exist; the default path may be absent
/// (then the embedded defaults apply). A file not owned by root, or writable
/// by group or others, is refused: whoever can write it controls the helper.
pub fn load(explicit: Option<&Path>) -> Result<Policy, String> {
    let path = explicit.unwrap_or(Path::new(DEFAULT_POLICY_PATH));
    let conf = match std::fs::File::open(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => {
            log_info!(
                "grove-helper: no {}: the embedded default policy",
                path.display()
            );
            PolicyConf::default()
        }
        Err(e) => return Err(format!("policy {}: {e}", path.display())),
        Ok(mut f) => {
            // fstat the file we opened, not the path, so the checked file is the read file.
            let md = f
                .metadata()
                .map_err(|e| format!("policy {}: {e}", path.display()))?;
            if md.uid() != 0 || md.mode() & 0o022 != 0 || !md.is_file() {
                return Err(format!(
                    "policy {} must be a regular file owned by root and not writable by group or others \
                     (it is uid {} mode {:o})",
                    path.display(),
                    md.uid(),
                    md.mode() & 0o7777
                ));
            }
            let mut text = String::new();
            f.read_to_string(&mut text)
                .map_err(|e| format!("policy {}: {e}", path.display()))?;
            let conf = parse(&text).map_err(|e| format!("policy {}: {e}", path.display()))?;
            log_info!("grove-helper: policy from {}", path.display());
            conf
        }
    };
    resolve(conf)
}

fn resolve(conf: PolicyConf) -> Result<Policy, String> {
    let user = match &conf.server_user {
        UserSpec::Name(n) => nix::unistd::User::from_name(n),
        UserSpec::Uid(u) => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(*u)),
    }
    .map_err(|e| format!("server_user {:?}: {e}", conf.server_user))?
    .ok_or_else(|| {
        format!(
            "server_user {:?}: no such user on this host",
            conf.server_user
        )
    })?;
    let wshd = match &conf.wshd {
        Some(p) => PathBuf::from(p.as_str()),
        None => {
            let exe =
                std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
            exe.parent().unwrap_or(Path::new("/")).join("wshd")
        }
    };
    Ok(Policy {
        conf,
        server_uid: user.uid.as_raw(),
        server_gid: user.gid.as_raw(),
        wshd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hp(s: &str) -> HostPath {
        HostPath::new(s).unwrap()
    }

    #[test]
    fn empty_text_gives_the_defaults() {
        assert_eq!(parse("# nothing\n").unwrap(), PolicyConf::default());
        assert_eq!(PolicyConf::default().max_containers, 1024);
    }

    #[test]
    fn parses_every_key() {
        let p = parse(
            "server_user = 998\nsocket = \"/s/h.sock\"\ndepot = \"/d\"\nruntime_dir = \"/r\"\n\
             default_rootfs = \"/x/y\"\nrootfs_allow = [\"/a\", \"/b/c\"]\nwshd = \"/bin/wshd\"\n\
             cgroup_parent = \"g-1\"\nmax_containers = 3\nimage_allow = \"/i, /j\"\nlayer_gc = false\n",
        )
        .unwrap();
        assert_eq!(p.server_user, UserSpec::Uid(998));
        assert_eq!(p.rootfs_allow, vec![hp("/a"), hp("/b/c")]);
        assert_eq!(p.wshd, Some(hp("/bin/wshd")));
        assert_eq!(p.image_allow, vec![hp("/i"), hp("/j")]);
        assert!(!p.layer_gc);
        assert_eq!((p.cgroup_parent.as_str(), p.max_containers), ("g-1", 3));
        assert_eq!(
            parse("server_user = \"grove\"\n").unwrap().server_user,
            UserSpec::Name("grove".into())
        );
        assert_eq!(
            parse("server_user = \"998\"\n").unwrap().server_user,
            UserSpec::Uid(998)
        );
        let p = parse("layer_gc = \"on\"\nallow_privileged = true\nbind_allow = []\n").unwrap();
        assert!(p.layer_gc && p.allow_privileged && p.bind_allow.is_empty());
        assert!(p.volatile_layers, "volatile by default");
        assert!(!parse("volatile_layers = false\n").unwrap().volatile_layers);
        let p = parse("default_pids_limit = 64\ntotal_pids_limit = 1000\n").unwrap();
        assert_eq!((p.default_pids_limit, p.total_pids_limit()), (64, 1000));
        // Derived from the kernel's bounds when not given.
        let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let derived = PolicyConf::default().total_pids_limit();
        assert!(derived >= 1 && derived <= pid_max / 2, "{derived}");
        let p = parse(
            "image_max_bytes = 1048576\nimage_max_entries = \"10\"\nimage_unpack_timeout = 2\n",
        )
        .unwrap();
        assert_eq!(
            (
                p.image.max_bytes,
                p.image.max_entries,
                p.image.timeout.as_secs()
            ),
            (1 << 20, 10, 2)
        );
    }

    #[test]
    fn the_conntrack_cap_is_a_count_and_zero_turns_it_off() {
        assert_eq!(
            PolicyConf::default().net.conntrack_max_per_container,
            crate::net::DEFAULT_CONNTRACK_MAX_PER_CONTAINER
        );
        let p = parse("conntrack_max_per_container = 0\n").unwrap();
        assert_eq!(p.net.conntrack_max_per_container, 0);
        let e = parse("conntrack_max_per_container = -1\n").unwrap_err();
        assert!(e.contains("conntrack_max_per_container"), "{e}");
    }

    #[test]
    fn the_namespace_owners_must_fit_above_the_container_ids() {
        let top = u32::MAX - crate::userns::ID_COUNT - 100;
        let e = parse(&format!("userns_base = {top}\nmax_containers = 1024\n")).unwrap_err();
        assert!(e.contains("own containers' user namespaces"), "{e}");
        assert!(parse(&format!("userns_base = {top}\nmax_containers = 10\n")).is_ok());
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let e = parse("depot = \"/d\"\n\nsockett = \"/x\"\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("sockett"), "{e}");
    }

    #[test]
    fn bad_values_are_refused() {
        for (text, key) in [
            ("depot = \"relative/dir\"", "depot"),
            ("depot = \"/a/../b\"", "depot"),
            ("depot = \"/\"", "depot"),
            ("depot = /d", "depot"),
            ("rootfs_allow = \"/a,,/b\"", "rootfs_allow"),
            ("rootfs_allow = [\"/a\", \"\", \"/b\"]", "rootfs_allow"),
            ("rootfs_allow = [1]", "rootfs_allow"),
            ("cgroup_parent = \"a/b\"", "cgroup_parent"),
            ("cgroup_parent = \"..\"", "cgroup_parent"),
            ("max_containers = 0", "max_containers"),
            ("max_containers = \"lots\"", "max_containers"),
            ("max_containers = 1.5", "max_containers"),
            ("layer_gc = \"maybe\"", "layer_gc"),
            ("layer_gc = 1", "layer_gc"),
            ("image_allow = \"rel\"", "image_allow"),
            ("server_user = \"a b\"", "server_user"),
            ("server_user = \"\"", "server_user"),
            ("socket = \"/x\"\nsocket = \"/y\"", "socket"),
            ("[net]\nmtu = 1500", "net"),
            ("default_pids_limit = 0", "default_pids_limit"),
            ("total_pids_limit = 4194305", "total_pids_limit"),
            ("total_pids_limit = \"lots\"", "total_pids_limit"),
            ("image_max_bytes = 1000", "image_max_bytes"),
            ("image_max_bytes = \"16G\"", "image_max_bytes"),
            ("image_max_entries = 0", "image_max_entries"),
            ("image_unpack_timeout = 0", "image_unpack_timeout"),
            ("image_unpack_timeout = 86401", "image_unpack_timeout"),
        ] {
            let e = parse(text).expect_err(text);
            assert!(e.contains(key), "{text:?}: {e}");
        }
    }

    #[test]
    fn beneath_compares_whole_components() {
        assert!(is_beneath(&hp("/srv/rootfs/a"), &hp("/srv/rootfs")));
        assert!(is_beneath(&hp("/srv/rootfs/a/b/"), &hp("/srv/rootfs/")));
        assert!(!is_beneath(&hp("/srv/rootfs"), &hp("/srv/rootfs")));
        assert!(!is_beneath(&hp("/srv/rootfs-evil/a"), &hp("/srv/rootfs")));
        assert!(!is_beneath(&hp("/srv"), &hp("/srv/rootfs")));
        assert!(!is_beneath(&hp("/etc/passwd"), &hp("/srv/rootfs")));
        assert!(is_beneath(&hp("/etc"), &hp("/")));
    }

    #[test]
    fn rootfs_check_uses_allowlist_and_default() {
        let policy = Policy {
            conf: parse("default_rootfs = \"/d/busybox\"\nrootfs_allow = [\"/srv/rootfs\"]\n")
                .unwrap(),
            server_uid: 0,
            server_gid: 0,
            wshd: PathBuf::from("/w"),
        };
        assert!(policy.check_rootfs(&hp("/d/busybox")).is_ok());
        assert!(policy.check_rootfs(&hp("/srv/rootfs/alpine")).is_ok());
        let e = policy.check_rootfs(&hp("/etc")).unwrap_err();
        assert_eq!(e.kind, ErrorKind::PolicyRefused);
        assert!(
            e.message.contains("/etc") && e.message.contains("/srv/rootfs"),
            "{}",
            e.message
        );
    }
}
