//! The integration-test harness: a real grove-helper (as root) and a real
//! groved (as the `grove` user) per test, each with its own sockets, depot,
//! state dir and cgroup parent, so tests can run in parallel and never touch
//! an instance started by `./dev up`.
//!
//! Tests must run as root (the helper needs it); `./dev test` does that.
//! Dropping a `TestEnv` destroys whatever containers the test left, stops
//! both daemons (by pid) and removes every file and cgroup the test made,
//! even when the test failed.
//!
//! Every env also gets a network of its own, so parallel tests never meet:
//! a bridge and an nftables table named after the env, a /24 pool carved
//! from 10.254.128.0/17 and a range of 100 NetIn host ports. Dropping the
//! env deletes the links on that bridge, the bridge and the table, by those
//! unique names only.

use grove_client::{api, channel_sink, Chunk, Client, Command};
use std::collections::HashSet;
use std::fs;
use std::net::Ipv4Addr;
use std::os::unix::fs::{chown, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

pub use grove_client;

pub mod garden_client;
pub mod image_api;
pub mod leaks;
pub mod oci;
pub mod quota;
pub mod registry;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Network slots (see `TestEnv::slot`) held by live envs of this process.
static SLOTS: Mutex<Option<HashSet<usize>>> = Mutex::new(None);

/// How many network slots there are: slot k has the pool 10.254.(128+k).0/24
/// and the host ports 20000 + 100k ..= 20000 + 100k + 99.
pub const NET_SLOTS: usize = 120;

/// Whether /sys/fs/cgroup is the unified (v2) hierarchy, which the helper
/// then drives (hybrid and legacy hosts it drives as v1).
pub fn cgroup_v2() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// A cgroup file's name on this host: `v1`'s or `v2`'s.
pub fn cg_file(v1: &'static str, v2: &'static str) -> &'static str {
    if cgroup_v2() {
        v2
    } else {
        v1
    }
}

/// The helper's open-file limit (soft = hard) in tests: grove-helper.service's
/// LimitNOFILE=65536, or the test's own hard limit if that is lower (raising
/// it needs CAP_SYS_RESOURCE, which root lacks on some hosts).
pub fn helper_nofile() -> u64 {
    let (_, hard) = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .expect("getrlimit");
    hard.min(65536)
}

/// The cgroup v1 controllers the helper puts each container in.
pub const CONTROLLERS: &[&str] = &[
    "cpu", "cpuacct", "cpuset", "memory", "pids", "devices", "freezer", "blkio",
];

/// Where every test env's files (its depot included) live. `./dev setup`
/// makes it a btrfs with quotas (a loop-mounted image when the host is not
/// btrfs), so containers get disk limits; other tests do not depend on it.
pub const TEST_ROOT: &str = "/var/lib/grove-test";

/// How long a test env's daemons may take to start and answer. Generous: in
/// the guest lane, after the network tests, the emulated kernel can spend
/// tens of seconds dismantling their namespaces while holding the lock the
/// helper's first netlink calls need (a helper printed nothing for 20 s).
const START_DEADLINE: Duration = Duration::from_secs(90);

pub struct TestEnv {
    /// Unique per test: names the cgroup parent and the directories.
    pub name: String,
    pub root: PathBuf,
    pub run_dir: PathBuf,
    pub socket: PathBuf,
    pub helper_socket: PathBuf,
    pub depot: PathBuf,
    pub wshd_dir: PathBuf,
    pub rootfs: PathBuf,
    /// This env's network slot (0..NET_SLOTS).
    pub slot: usize,
    /// The helper's bridge (`bridge`), unique per env, <= 15 characters.
    pub bridge: String,
    /// The helper's nftables table (`nft_table`, family inet).
    pub nft_table: String,
    /// The pool's network address and prefix length (`pool`).
    pub pool_base: Ipv4Addr,
    pub pool_prefix: u8,
    /// The pool's first address, which sits on the bridge.
    pub gateway: Ipv4Addr,
    /// NetIn host ports (`port_range`), inclusive.
    pub ports: (u16, u16),
    pub mtu: u32,
    helper: Option<Child>,
    groved: Option<Child>,
    /// Extra environment of the helper and groved (EnvOptions).
    helper_env: Vec<(String, String)>,
    groved_env: Vec<(String, String)>,
}

/// `s` as a TOML basic string.
pub fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A test's config value as TOML: kept as it is if it is already a TOML
/// string or array (or a boolean), else written as a string (the config
/// parsers read numbers and on/off from strings too).
pub fn toml_value(v: &str) -> String {
    if v.starts_with('"')
        || v.starts_with('\'')
        || v.starts_with('[')
        || v == "true"
        || v == "false"
    {
        v.to_string()
    } else {
        toml_string(v)
    }
}

/// The `key = value` lines of `EnvOptions::groved_extra` or `helper_extra`,
/// values as TOML (`toml_value`); blank and `#` lines are skipped.
fn extra_lines(what: &str, text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| {
            let (key, value) = line
                .split_once('=')
                .unwrap_or_else(|| panic!("{what}: {line:?} is not key = value"));
            (key.trim().to_string(), toml_value(value.trim()))
        })
        .collect()
}

/// How to start a `TestEnv` beyond the defaults.
#[derive(Debug, Clone, Default)]
pub struct EnvOptions {
    /// `key = value` lines for groved's config file (TOML): a key the
    /// harness already writes is replaced, others are appended. A value
    /// that is not already a TOML string or array is written as a string,
    /// so `confine = off` becomes `confine = "off"` (see `toml_value`).
    pub groved_extra: String,
    /// `key = value` lines for the helper policy (TOML, values translated
    /// as for `groved_extra`); a key the harness already writes is replaced
    /// (TOML refuses repeated keys), others are appended.
    pub helper_extra: String,
    /// The pool's prefix length, carved from the env's /24 (default 24).
    pub pool_prefix: Option<u8>,
    /// How many NetIn host ports, from the env's range (default 100).
    pub port_count: Option<u16>,
    /// The policy's `mtu` (default 1500).
    pub mtu: Option<u32>,
    /// Extra environment variables for grove-helper (e.g. NOTIFY_SOCKET),
    /// kept for its restarts.
    pub helper_env: Vec<(String, String)>,
    /// Extra environment variables for groved, kept for its restarts.
    pub groved_env: Vec<(String, String)>,
    /// The directory the env's root (its depot, logs and groved state) is
    /// made in, instead of TEST_ROOT: e.g. an ext4 or XFS mount, for disk
    /// limits through project quotas.
    pub root_parent: Option<PathBuf>,
}

/// Why an env did not start: the helper's exit status (None: it still
/// ran but never listened) and the daemons' logs.
#[derive(Debug)]
pub struct StartFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
}

pub fn bin_dir() -> PathBuf {
    let dir = std::env::var_os("GROVE_BIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug"));
    dir.canonicalize().unwrap_or(dir)
}

pub fn default_rootfs() -> PathBuf {
    std::env::var_os("GROVE_ROOTFS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/grove/rootfs/busybox"))
}

/// uid and gid of the `grove` user, from /etc/passwd.
pub fn grove_user() -> (u32, u32) {
    let passwd = fs::read_to_string("/etc/passwd").expect("/etc/passwd");
    passwd
        .lines()
        .find_map(|line| {
            let f: Vec<&str> = line.split(':').collect();
            (f.len() > 3 && f[0] == "grove").then(|| (f[2].parse().unwrap(), f[3].parse().unwrap()))
        })
        .expect("the `grove` user exists (./dev setup creates it)")
}

impl TestEnv {
    pub fn start() -> TestEnv {
        TestEnv::start_with("")
    }

    /// Start with extra lines appended to groved's config file.
    pub fn start_with(groved_extra: &str) -> TestEnv {
        TestEnv::start_with_options(EnvOptions {
            groved_extra: groved_extra.into(),
            ..EnvOptions::default()
        })
    }

    /// Start with extra groved config lines and helper policy lines (a
    /// policy key given here replaces the harness's value).
    pub fn start_with_policy(groved_extra: &str, helper_extra: &str) -> TestEnv {
        TestEnv::start_with_options(EnvOptions {
            groved_extra: groved_extra.into(),
            helper_extra: helper_extra.into(),
            ..EnvOptions::default()
        })
    }

    pub fn start_with_options(options: EnvOptions) -> TestEnv {
        match TestEnv::try_start(options) {
            Ok(env) => env,
            Err(failure) => panic!(
                "the helper did not start ({:?})\n{}",
                failure.status, failure.log
            ),
        }
    }

    /// Start the helper and, once it listens, groved. When the helper exits
    /// (or never listens) this cleans up and returns its status and logs
    /// instead of panicking, for tests that expect a policy to be refused.
    pub fn try_start(options: EnvOptions) -> Result<TestEnv, StartFailure> {
        assert!(
            nix::unistd::geteuid().is_root(),
            "integration tests run as root (use ./dev test)"
        );
        let seq = NEXT.fetch_add(1, Ordering::SeqCst);
        let name = format!("gt{}x{}", std::process::id(), seq);
        let root = options
            .root_parent
            .clone()
            .unwrap_or_else(|| PathBuf::from(TEST_ROOT))
            .join(&name);
        let run_dir = PathBuf::from("/run/grove-test").join(&name);
        let (uid, gid) = grove_user();
        let bins = bin_dir();
        let rootfs = default_rootfs();
        assert!(
            rootfs.join("bin/busybox").exists(),
            "no default rootfs at {} (./dev setup builds it)",
            rootfs.display()
        );
        assert!(
            bins.join("wshd").exists(),
            "no wshd in {} (./dev setup builds it)",
            bins.display()
        );

        fs::create_dir_all(&root).unwrap();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(&run_dir).unwrap();
        chown(&run_dir, Some(0), Some(gid)).unwrap();
        fs::set_permissions(&run_dir, fs::Permissions::from_mode(0o1770)).unwrap();
        let state_dir = root.join("server");
        fs::create_dir_all(&state_dir).unwrap();
        chown(&state_dir, Some(uid), Some(gid)).unwrap();
        fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).unwrap();

        let slot = claim_slot(seq);
        let pool_prefix = options.pool_prefix.unwrap_or(24);
        assert!(
            (24..=30).contains(&pool_prefix),
            "a test pool is carved from the env's /24"
        );
        let pool_base = Ipv4Addr::new(10, 254, 128 + slot as u8, 0);
        let port_first = 20000 + 100 * slot as u16;
        let port_count = options.port_count.unwrap_or(100);
        assert!((1..=100).contains(&port_count));
        let mut env = TestEnv {
            socket: run_dir.join("grove.sock"),
            helper_socket: run_dir.join("helper.sock"),
            depot: root.join("depot"),
            wshd_dir: run_dir.join("wshd"),
            bridge: format!("gb{}", &name[2..]),
            nft_table: name.clone(),
            slot,
            pool_base,
            pool_prefix,
            gateway: Ipv4Addr::from(u32::from(pool_base) + 1),
            ports: (port_first, port_first + port_count - 1),
            mtu: options.mtu.unwrap_or(1500),
            name,
            root,
            run_dir,
            rootfs,
            helper: None,
            groved: None,
            helper_env: options.helper_env.clone(),
            groved_env: options.groved_env.clone(),
        };
        assert!(env.bridge.len() <= 15, "{} is too long", env.bridge);
        let lines: Vec<(String, String)> = [
            ("server_user", "grove".to_string()),
            ("socket", env.helper_socket.display().to_string()),
            ("depot", env.depot.display().to_string()),
            ("runtime_dir", env.wshd_dir.display().to_string()),
            ("default_rootfs", env.rootfs.display().to_string()),
            (
                "rootfs_allow",
                env.rootfs.parent().unwrap().display().to_string(),
            ),
            (
                "image_allow",
                format!(
                    "{}, {}",
                    env.images_dir().display(),
                    env.downloads_dir().display()
                ),
            ),
            ("wshd", bins.join("wshd").display().to_string()),
            ("cgroup_parent", env.name.clone()),
            ("max_containers", "100".to_string()),
            ("bridge", env.bridge.clone()),
            ("pool", env.pool()),
            ("port_range", format!("{}-{}", env.ports.0, env.ports.1)),
            ("nft_table", env.nft_table.clone()),
            ("mtu", env.mtu.to_string()),
            // The host's real uplink is never touched by tests: a test that
            // checks uplink forwarding names a dummy link of its own.
            ("uplinks", "none".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let mut lines: Vec<(String, String)> = lines
            .into_iter()
            .map(|(k, v)| (k, toml_string(&v)))
            .collect();
        for (key, value) in extra_lines("helper_extra", &options.helper_extra) {
            match lines.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => lines.push((key, value)),
            }
        }
        let policy = env.root.join("helper-policy.conf");
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        fs::write(&policy, text).unwrap();
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o644)).unwrap();
        let config = env.root.join("groved.conf");
        let mut lines: Vec<(String, String)> = [
            ("listen", toml_string(&env.socket.display().to_string())),
            (
                "helper_socket",
                toml_string(&env.helper_socket.display().to_string()),
            ),
            (
                "wshd_socket_dir",
                toml_string(&env.wshd_dir.display().to_string()),
            ),
            ("state_dir", toml_string(&state_dir.display().to_string())),
            ("max_containers", "100".to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        for (key, value) in extra_lines("groved_extra", &options.groved_extra) {
            match lines.iter_mut().find(|(k, _)| *k == key) {
                Some(entry) => entry.1 = value,
                None => lines.push((key, value)),
            }
        }
        let text: String = lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect();
        fs::write(&config, text).unwrap();

        env.start_helper();
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // Ready, not merely listening: the socket exists before the
            // helper has recovered its state and said what it can do.
            let log = fs::read_to_string(env.root.join("helper.log")).unwrap_or_default();
            if env.helper_socket.exists() && log.contains("grove-helper: ready on") {
                break;
            }
            let exited = env.helper.as_mut().unwrap().try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                // An exited helper is reaped (try_wait): never signal its
                // pid again; one still running is stopped.
                match exited {
                    Some(_) => drop(env.helper.take()),
                    None => env.stop_helper(),
                }
                return Err(StartFailure {
                    status: exited,
                    log: env.logs(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        env.start_groved();
        Ok(env)
    }

    /// The pool in CIDR notation, as the policy has it.
    pub fn pool(&self) -> String {
        format!("{}/{}", self.pool_base, self.pool_prefix)
    }

    /// The n-th address of the pool (0 = the network address, 1 = the
    /// gateway).
    pub fn pool_ip(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pool_base) + n)
    }

    /// Is `ip` inside the pool?
    pub fn in_pool(&self, ip: Ipv4Addr) -> bool {
        let mask = u32::MAX << (32 - self.pool_prefix as u32);
        u32::from(ip) & mask == u32::from(self.pool_base)
    }

    fn start_helper(&mut self) {
        let root = self.root.clone();
        let log = move |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(root.join(name))
                .unwrap()
        };
        let mut command = std::process::Command::new(bin_dir().join("grove-helper"));
        let nofile = helper_nofile();
        // The open-file limit grove-helper.service gives it
        // (LimitNOFILE=65536), so tests see what containers would inherit.
        // SAFETY: setrlimit is async-signal-safe; nothing else runs in the
        // forked child before exec.
        unsafe {
            command.pre_exec(move || {
                let l = libc::rlimit {
                    rlim_cur: nofile,
                    rlim_max: nofile,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &l) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        self.helper = Some(
            command
                .arg("--policy")
                .arg(self.root.join("helper-policy.conf"))
                .env("GROVE_HELPER_LOG", "debug")
                .envs(self.helper_env.iter().map(|(k, v)| (k, v)))
                .stdin(Stdio::null())
                .stdout(log("helper.log"))
                .stderr(log("helper.log"))
                .spawn()
                .expect("starting grove-helper"),
        );
    }

    /// Stop the helper (SIGTERM, by pid; SIGKILL after 5 s).
    pub fn stop_helper(&mut self) {
        if let Some(child) = self.helper.take() {
            stop_child(child);
        }
    }

    /// Make `child` this env's helper (one the test started itself, e.g.
    /// under systemd-socket-activate), stopped like any other at the end.
    /// Stop the env's own helper first (`stop_helper`).
    pub fn adopt_helper(&mut self, child: Child) {
        assert!(self.helper.is_none(), "the env's helper still runs");
        self.helper = Some(child);
    }

    /// Stop groved (SIGTERM, by pid; SIGKILL after 5 s).
    pub fn stop_groved(&mut self) {
        self.stop_groved_status();
    }

    /// Stop groved with SIGTERM (SIGKILL after 30 s) and return how it
    /// ended; None when none ran.
    pub fn stop_groved_status(&mut self) -> Option<std::process::ExitStatus> {
        self.groved.take().map(stop_child)
    }

    /// Make `child` this env's groved (one the test started itself),
    /// stopped like any other at the end. Stop the env's own first.
    pub fn adopt_groved(&mut self, child: Child) {
        assert!(self.groved.is_none(), "the env's groved still runs");
        self.groved = Some(child);
    }

    /// Stop the helper (unless stopped) and start it again with the same
    /// policy; waits until it says it is ready (its socket exists before
    /// it has recovered its containers). groved reconnects on its next
    /// call.
    pub fn restart_helper(&mut self) {
        self.stop_helper();
        let _ = fs::remove_file(&self.helper_socket);
        let log = self.root.join("helper.log");
        let readies = move || {
            fs::read_to_string(&log)
                .unwrap_or_default()
                .matches("grove-helper: ready on")
                .count()
        };
        let before = readies();
        self.start_helper();
        self.wait_for(|| readies() > before, "the restarted helper's ready line");
    }

    /// Replace the extra environment (EnvOptions::helper_env) the helper
    /// gets at its next start.
    pub fn set_helper_env(&mut self, env: Vec<(String, String)>) {
        self.helper_env = env;
    }

    /// Replace the extra environment (EnvOptions::groved_env) groved gets
    /// at its next start.
    pub fn set_groved_env(&mut self, env: Vec<(String, String)>) {
        self.groved_env = env;
    }

    /// How the helper ended, if it has: then it is reaped and forgotten
    /// (never signalled by pid again), ready for `restart_helper`. `None`
    /// while it runs or when the harness stopped it.
    pub fn helper_exit(&mut self) -> Option<ExitStatus> {
        reap_if_exited(&mut self.helper)
    }

    /// How groved ended, if it has (see `helper_exit`); then
    /// `start_groved` starts a new one.
    pub fn groved_exit(&mut self) -> Option<ExitStatus> {
        reap_if_exited(&mut self.groved)
    }

    /// Where this env's helper policy allows images (`image_allow`).
    pub fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Where groved writes registry downloads (`<state_dir>/downloads`);
    /// the helper policy allows images from there too.
    pub fn downloads_dir(&self) -> PathBuf {
        self.root.join("server/downloads")
    }

    /// Start groved as `grove` and wait until it listens.
    pub fn start_groved(&mut self) {
        let (uid, gid) = grove_user();
        let log = || {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.root.join("groved.log"))
                .unwrap()
        };
        let mut groved = std::process::Command::new(bin_dir().join("groved"));
        groved
            .arg("--config")
            .arg(self.root.join("groved.conf"))
            .env("GROVED_LOG", "debug")
            .envs(self.groved_env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log())
            .stderr(log());
        as_user(&mut groved, uid, gid);
        self.groved = Some(groved.spawn().expect("starting groved"));
        let socket = self.socket.clone();
        // Listening, not merely bound: a connection gets through.
        self.wait_for(
            || std::os::unix::net::UnixStream::connect(&socket).is_ok(),
            "groved's socket",
        );
    }

    /// Kill groved with SIGKILL (no chance to clean up) and start it again.
    pub fn kill_and_restart_groved(&mut self) {
        if let Some(mut child) = self.groved.take() {
            child.kill().expect("SIGKILL groved");
            child.wait().expect("reaping groved");
        }
        self.start_groved();
    }

    fn wait_for(&mut self, ready: impl Fn() -> bool, what: &str) {
        let deadline = Instant::now() + START_DEADLINE;
        while !ready() {
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}\n{}", self.logs());
            }
            let exited = [&mut self.helper, &mut self.groved]
                .into_iter()
                .flatten()
                .find_map(|child| child.try_wait().ok().flatten());
            if let Some(status) = exited {
                panic!(
                    "a daemon exited ({status}) before {what} appeared\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> String {
        let read = |name: &str| fs::read_to_string(self.root.join(name)).unwrap_or_default();
        format!(
            "--- helper.log\n{}--- groved.log\n{}",
            read("helper.log"),
            read("groved.log")
        )
    }

    /// Fail with the remedy unless this env's depot can have disk limits.
    pub fn assert_depot_on_btrfs(&self) {
        let st = nix::sys::statfs::statfs(&self.root).unwrap();
        assert!(
            st.filesystem_type() == nix::sys::statfs::BTRFS_SUPER_MAGIC,
            "{TEST_ROOT} is not on btrfs; run ./dev setup (it loop-mounts a btrfs there)"
        );
        assert!(
            self.logs().contains("with quotas"),
            "the helper reports no btrfs quotas:\n{}",
            self.logs()
        );
    }

    pub fn helper_pid(&self) -> u32 {
        self.helper.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn groved_pid(&self) -> u32 {
        self.groved.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Run an async test body with a connected client; what it returns.
    pub fn run<F, Fut, T>(&self, body: F) -> T
    where
        F: FnOnce(Client) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        block_on(async {
            let client = self.connect().await;
            body(client).await
        })
    }

    pub async fn connect(&self) -> Client {
        let deadline = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(client) = Client::connect(&self.socket).await {
                if client.ping().await.is_ok() {
                    return client;
                }
            }
            if Instant::now() > deadline {
                panic!("groved did not answer ping\n{}", self.logs());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The directory of this test's cgroup parent in one controller (v1),
    /// or the one directory of it (v2, where `controller` does not
    /// matter). On v2 the test's helper uses /sys/fs/cgroup/<parent>: it
    /// shares its cgroup with the test process, so it never takes that
    /// cgroup for a delegated one (helper/src/cgroup_v2.rs `choose`).
    pub fn cgroup_dir(&self, controller: &str) -> PathBuf {
        let root = Path::new("/sys/fs/cgroup");
        if cgroup_v2() {
            root.join(&self.name)
        } else {
            root.join(controller).join(&self.name)
        }
    }

    /// Every directory the helper makes as this test's cgroup parent: one
    /// per v1 controller, or the one v2 directory.
    pub fn cgroup_parents(&self) -> Vec<PathBuf> {
        if cgroup_v2() {
            vec![self.cgroup_dir("")]
        } else {
            CONTROLLERS.iter().map(|c| self.cgroup_dir(c)).collect()
        }
    }

    /// Host pids in a container's cgroup (pids controller).
    pub fn container_pids(&self, handle: &str) -> Vec<i32> {
        fs::read_to_string(self.cgroup_dir("pids").join(handle).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    fn stop_daemons(&mut self) {
        for child in [self.groved.take(), self.helper.take()]
            .into_iter()
            .flatten()
        {
            stop_child(child);
        }
    }

    /// Remove what a failed test may have left: processes in our cgroups
    /// (killed by pid), cgroup dirs, files, and the env's network: the
    /// links on its bridge, the bridge and its nft table, by name.
    fn remove_leftovers(&self) {
        self.remove_network();
        for parent in self.cgroup_parents() {
            remove_cgroup_tree(&parent);
        }
        let _ = fs::remove_dir_all(&self.run_dir);
        let _ = fs::remove_dir_all(&self.root);
    }
}

impl TestEnv {
    /// Names of the links whose master is this env's bridge.
    pub fn bridge_ports(&self) -> Vec<String> {
        bridge_ports(&self.bridge)
    }

    /// The helper's nft tables of this env, `inet <nft_table>` and, when
    /// the helper has one, `bridge <nft_table>`, as `nft -s` lists them
    /// (no counters); None when the inet table does not exist.
    pub fn nft_table_text(&self) -> Option<String> {
        let list = |family: &str| {
            let out = std::process::Command::new("nft")
                .args(["-s", "list", "table", family, &self.nft_table])
                .stderr(Stdio::null())
                .output()
                .expect("running nft");
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let both = || Some(list("inet")? + &list("bridge").unwrap_or_default());
        // nft 1.0.6 (Debian 12) can list a chain twice when another
        // table's transaction (a parallel test's) interrupts its dump: take
        // a listing that the next one repeats.
        let mut last = both();
        for _ in 0..20 {
            let next = both();
            if next == last {
                return next;
            }
            last = next;
        }
        panic!(
            "nft never listed table {} the same way twice",
            self.nft_table
        )
    }

    fn remove_network(&self) {
        for port in self.bridge_ports() {
            let _ = quiet("ip", &["link", "del", "dev", &port]);
        }
        if link_exists(&self.bridge) {
            let _ = quiet("ip", &["link", "del", "dev", &self.bridge]);
        }
        // The helper's tables, by this env's unique name only (it keeps
        // a bridge-family table of the same name next to the inet one).
        for family in ["inet", "bridge"] {
            if quiet("nft", &["list", "table", family, &self.nft_table]) {
                let _ = quiet("nft", &["delete", "table", family, &self.nft_table]);
            }
        }
        if let Some(slots) = SLOTS.lock().unwrap().as_mut() {
            slots.remove(&self.slot);
        }
    }
}

/// Run a command, its output discarded; true when it succeeded.
fn quiet(program: &str, args: &[&str]) -> bool {
    std::process::Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Names of the links whose master is `bridge` (none when it is missing).
pub fn bridge_ports(bridge: &str) -> Vec<String> {
    let Ok(entries) = fs::read_dir(Path::new("/sys/class/net").join(bridge).join("brif")) else {
        return Vec::new();
    };
    let mut ports: Vec<String> = entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ports.sort();
    ports
}

/// The host's IPv4 addresses with prefix lengths, per interface:
/// (interface, address, prefix).
pub fn host_addresses() -> Vec<(String, Ipv4Addr, u8)> {
    let out = std::process::Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("running ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let i = f.iter().position(|w| *w == "inet")?;
            let (addr, prefix) = f.get(i + 1)?.split_once('/')?;
            Some((f[1].to_string(), addr.parse().ok()?, prefix.parse().ok()?))
        })
        .collect()
}

/// Pick a network slot no live env of this process holds and whose pool no
/// host interface uses (a crashed earlier run may have left a bridge).
fn claim_slot(seq: usize) -> usize {
    let used: Vec<Ipv4Addr> = host_addresses().into_iter().map(|(_, a, _)| a).collect();
    let mut guard = SLOTS.lock().unwrap();
    let slots = guard.get_or_insert_with(HashSet::new);
    let base = (std::process::id() as usize).wrapping_mul(7919) + seq;
    for i in 0..NET_SLOTS {
        let k = (base + i) % NET_SLOTS;
        let taken = used
            .iter()
            .any(|a| a.octets()[..3] == [10, 254, 128 + k as u8]);
        if !slots.contains(&k) && !taken {
            slots.insert(k);
            return k;
        }
    }
    panic!("all {NET_SLOTS} test network slots are in use");
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if self.groved.is_some() {
            let socket = self.socket.clone();
            // Destroy what the test left, through the API, as a user would.
            let _ = std::panic::catch_unwind(|| {
                block_on(async {
                    let Ok(client) = Client::connect(&socket).await else {
                        return;
                    };
                    if let Ok(handles) = client.list(&[]).await {
                        for handle in handles {
                            let _ = client.destroy(&handle).await;
                        }
                    }
                })
            });
        }
        self.stop_daemons();
        self.remove_leftovers();
    }
}

fn reap_if_exited(slot: &mut Option<Child>) -> Option<ExitStatus> {
    let status = slot.as_mut()?.try_wait().ok().flatten()?;
    *slot = None;
    Some(status)
}

/// SIGTERM `child`, SIGKILL after 30 s; how it ended.
pub fn stop_child(mut child: Child) -> std::process::ExitStatus {
    let pid = nix::unistd::Pid::from_raw(child.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    // A guard against a hang, not a timing check: under the guest lane's
    // emulated CPU on a loaded host, 5 s was once too short for groved's
    // clean exit (which removes its socket).
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("harness: pid {pid} did not exit within 30 s of SIGTERM; killing it");
    let _ = child.kill();
    child.wait().expect("reaping a killed daemon")
}

/// Kill what is in the cgroup `dir` and every cgroup below it, then
/// remove them, deepest first (a cgroup with children cannot be removed;
/// on v2 cgroup.procs lists only a cgroup's own processes).
fn remove_cgroup_tree(dir: &Path) {
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            remove_cgroup_tree(&entry.path());
        }
    }
    kill_cgroup(dir);
    for _ in 0..50 {
        match fs::remove_dir(dir) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            _ => return,
        }
    }
}

fn kill_cgroup(dir: &Path) {
    for _ in 0..100 {
        let pids: Vec<i32> = fs::read_to_string(dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect();
        if pids.is_empty() {
            return;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run a future on a current-thread runtime inside a LocalSet (capnp-rpc
/// objects are not Send).
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tokio::task::LocalSet::new().block_on(&runtime, future)
}

/// Create a container with the given handle ("" = generated) and rootfs
/// ("" = default); returns the capability and its handle.
pub async fn create(
    client: &Client,
    handle: &str,
    rootfs: &str,
) -> Result<(api::container::Client, String), grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    spec.set_rootfs(rootfs);
    let response = request.send().promise.await?;
    let container = response.get()?.get_container()?;
    let handle = container
        .handle_request()
        .send()
        .promise
        .await?
        .get()?
        .get_handle()?
        .to_string()
        .unwrap();
    Ok((container, handle))
}

/// A started process and the channels its output arrives on.
pub struct Started {
    pub process: api::process::Client,
    pub stdout: UnboundedReceiver<Chunk>,
    pub stderr: UnboundedReceiver<Chunk>,
}

pub async fn start(
    container: &api::container::Client,
    command: &Command,
) -> Result<Started, grove_client::Error> {
    start_with(container, command, false).await
}

pub async fn start_with(
    container: &api::container::Client,
    command: &Command,
    open_stdin: bool,
) -> Result<Started, grove_client::Error> {
    let (stdout_sink, stdout) = channel_sink();
    let (stderr_sink, stderr) = channel_sink();
    let mut request = container.run_request();
    command.fill(request.get().init_spec()).unwrap();
    let mut io = request.get().init_io();
    io.set_stdout(stdout_sink);
    io.set_stderr(stderr_sink);
    io.set_open_stdin(open_stdin);
    let response = request.send().promise.await?;
    Ok(Started {
        process: response.get()?.get_process()?,
        stdout,
        stderr,
    })
}

pub async fn wait(process: &api::process::Client) -> Result<i32, grove_client::Error> {
    Ok(process
        .wait_request()
        .send()
        .promise
        .await?
        .get()?
        .get_exit_status())
}

/// Everything received so far on a channel, without waiting.
pub fn drain(receiver: &mut UnboundedReceiver<Chunk>) -> (Vec<u8>, bool) {
    let mut data = Vec::new();
    let mut done = false;
    while let Ok(chunk) = receiver.try_recv() {
        match chunk {
            Chunk::Data(d) => data.extend(d),
            Chunk::Done => done = true,
        }
    }
    (data, done)
}

/// Run a command to completion: (exit status, stdout, stderr).
pub async fn exec(
    container: &api::container::Client,
    path: &str,
    args: &[&str],
) -> (i32, String, String) {
    exec_command(container, &Command::new(path, args)).await
}

pub async fn exec_command(
    container: &api::container::Client,
    command: &Command,
) -> (i32, String, String) {
    let mut started = start(container, command).await.expect("run");
    let status = wait(&started.process).await.expect("wait");
    let (out, out_done) = drain(&mut started.stdout);
    let (err, err_done) = drain(&mut started.stderr);
    assert!(
        out_done && err_done,
        "both streams are done when wait answers"
    );
    (
        status,
        String::from_utf8_lossy(&out).into_owned(),
        String::from_utf8_lossy(&err).into_owned(),
    )
}

/// The namespaces of a host process: (kind, inode) pairs.
pub fn namespaces_of(pid: i32) -> Vec<(String, String)> {
    ["mnt", "pid", "uts", "ipc", "net", "cgroup"]
        .iter()
        .filter_map(|kind| {
            fs::read_link(format!("/proc/{pid}/ns/{kind}"))
                .ok()
                .map(|link| (kind.to_string(), link.to_string_lossy().into_owned()))
        })
        .collect()
}

/// The host's mount table, as mount points (our own mount namespace).
pub fn host_mount_points() -> Vec<String> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .collect()
}

/// Run the `grove` CLI against this environment's groved, feeding `stdin`.
/// Run the CLI, which must succeed (the test fails with its stderr
/// otherwise), and return its stdout.
pub fn run_cli_ok(env: &TestEnv, args: &[&str]) -> String {
    let out = run_cli(env, args, None);
    assert!(
        out.status.success(),
        "grove {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn run_cli(env: &TestEnv, args: &[&str], stdin: Option<&[u8]>) -> std::process::Output {
    use std::io::Write;
    let mut child = std::process::Command::new(bin_dir().join("grove"))
        .arg("--socket")
        .arg(&env.socket)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("running grove");
    if let Some(input) = stdin {
        // A writer thread, so a large input cannot deadlock against output.
        let mut pipe = child.stdin.take().unwrap();
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    child.wait_with_output().unwrap()
}

/// The ids `info` lists as running.
pub async fn running_process_ids(container: &api::container::Client) -> Vec<String> {
    let response = container.info_request().send().promise.await.unwrap();
    let info = response.get().unwrap().get_info().unwrap();
    info.get_process_ids()
        .unwrap()
        .iter()
        .map(|s| s.unwrap().to_string().unwrap())
        .collect()
}

/// A process's stdin stream.
pub async fn stdin_of(process: &api::process::Client) -> api::byte_stream::Client {
    let response = process.stdin_request().send().promise.await.unwrap();
    response.get().unwrap().get_stream().unwrap()
}

/// Send a signal to a process (it must still be running).
pub async fn signal(process: &api::process::Client, signal: api::Signal) {
    let mut request = process.signal_request();
    request.get().set_signal(signal);
    request.send().promise.await.unwrap();
}

// ------------------------------------------------------------ security tests

/// The static `grove-escape` binary (tests/escape) that the escape tests run
/// inside containers: `$GROVE_ESCAPE_BIN`, else
/// `target/x86_64-unknown-linux-gnu/debug/grove-escape` (`./dev setup`
/// builds it, static like wshd: busybox rootfs have no glibc).
pub fn escape_binary() -> PathBuf {
    let path = std::env::var_os("GROVE_ESCAPE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| bin_dir().join("../x86_64-unknown-linux-gnu/debug/grove-escape"));
    let data = fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "no grove-escape at {} ({e}); build it with \
             RUSTFLAGS=\"-C target-feature=+crt-static\" cargo build -p grove-escape \
             --target x86_64-unknown-linux-gnu (./dev setup does)",
            path.display()
        )
    });
    assert!(
        is_static_elf(&data),
        "{} is not a static ELF (build it with -C target-feature=+crt-static)",
        path.display()
    );
    path
}

/// Stream grove-escape into `dir` of a container: one root-owned 0755
/// file `grove-escape` (the seccomp and budget tests run it there).
pub async fn stream_in_escape(
    container: &api::container::Client,
    dir: &str,
) -> Result<(), grove_client::Error> {
    let binary = fs::read(escape_binary()).unwrap();
    let mut tar = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o755);
    h.set_size(binary.len() as u64);
    h.set_mtime(1_600_000_000);
    h.set_uid(0);
    h.set_gid(0);
    tar.append_data(&mut h, "grove-escape", &binary[..])
        .unwrap();
    stream_in_tar(container, dir, "", &tar.into_inner().unwrap()).await
}

/// A 64-bit ELF with no PT_INTERP program header needs no dynamic loader.
pub fn is_static_elf(data: &[u8]) -> bool {
    if data.len() < 64 || &data[..4] != b"\x7fELF" || data[4] != 2 {
        return false;
    }
    let u16_at = |o: usize| u16::from_le_bytes([data[o], data[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(data[32..40].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(54), u16_at(56));
    (0..phnum).all(|i| {
        let o = phoff + i * phentsize;
        data.get(o..o + 4)
            .is_some_and(|t| u32::from_le_bytes(t.try_into().unwrap()) != 3)
    })
}

/// `NAME=value` entries that tell grove-escape what the host looks like, so
/// it can recognise the host when it reaches it: the sha256 of the host's
/// /etc/shadow, the dev:ino of the host's `/`, and the host's namespaces
/// (this test process's: it runs in the host's namespaces, as the helper
/// does; the host's PID 1 may not let even root read its /proc/1/ns).
pub fn host_identity_env() -> Vec<String> {
    use sha2::Digest;
    let shadow = fs::read("/etc/shadow").expect("reading the host's /etc/shadow");
    let hash: String = sha2::Sha256::digest(&shadow)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let root = fs::metadata("/").unwrap();
    let ns: Vec<String> = ["mnt", "pid", "net", "uts", "ipc", "cgroup", "user"]
        .iter()
        .filter_map(|k| fs::read_link(format!("/proc/self/ns/{k}")).ok())
        .map(|l| l.to_string_lossy().into_owned())
        .collect();
    vec![
        format!("GROVE_HOST_SHADOW_SHA256={hash}"),
        format!(
            "GROVE_HOST_ROOT={}:{}",
            std::os::unix::fs::MetadataExt::dev(&root),
            std::os::unix::fs::MetadataExt::ino(&root)
        ),
        format!("GROVE_HOST_NS={}", ns.join(" ")),
    ]
}

/// Start a streamIn of `path` as `user`: the sink to write a tar to.
pub async fn open_stream_in(
    container: &api::container::Client,
    path: &str,
    user: &str,
) -> Result<api::byte_stream::Client, grove_client::Error> {
    let mut request = container.stream_in_request();
    request.get().set_path(path);
    request.get().set_user(user);
    Ok(request.send().promise.await?.get()?.get_sink()?)
}

/// Stream a tar into `path` of a container as `user` ("" = root), in 64 KiB
/// writes, then `done`.
pub async fn stream_in_tar(
    container: &api::container::Client,
    path: &str,
    user: &str,
    tar: &[u8],
) -> Result<(), grove_client::Error> {
    let sink = open_stream_in(container, path, user).await?;
    for chunk in tar.chunks(64 * 1024) {
        let mut write = sink.write_request();
        write.get().set_data(chunk);
        write.send().await?;
    }
    sink.done_request().send().promise.await?;
    Ok(())
}

/// A SOCK_SEQPACKET connection to the helper at `path` made with the
/// credentials `uid`:`gid` (SO_PEERCRED records them at connect), as a
/// compromised groved would have. Only a short-lived thread of this process
/// changes its credentials, with the raw syscalls (glibc's wrappers would
/// change every thread's); the descriptor then serves any thread.
pub fn helper_connect_as(path: &Path, uid: u32, gid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    std::thread::spawn(move || -> std::io::Result<OwnedFd> {
        // SAFETY: socket(2); the fd is owned at once.
        let fd =
            unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd was just returned by socket(2).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: setresgid/setresuid of this thread only (raw syscalls);
        // the saved ids stay 0, and the thread ends right after.
        unsafe {
            if libc::syscall(libc::SYS_setresgid, -1i32, gid, -1i32) != 0
                || libc::syscall(libc::SYS_setresuid, -1i32, uid, -1i32) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        // SAFETY: sockaddr_un is plain old data.
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        let bytes = path.as_bytes_with_nul();
        assert!(bytes.len() <= addr.sun_path.len(), "socket path too long");
        for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        // SAFETY: addr is a valid sockaddr_un of the given size.
        let rc = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&addr as *const libc::sockaddr_un).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(fd)
    })
    .join()
    .expect("the connecting thread panicked")
}

/// What the host looks like in the places a misbehaving helper could have
/// changed: its mount table, its links, its nftables ruleset, the names in
/// `/` and `/etc` and the contents of a few sensitive files. Other test envs
/// (maybe of other processes) run at the same time, so their own objects
/// are left out: links whose name starts with 'g' (the helpers' bridges,
/// veths and ifbs and the network tests' links; "grove0" of `./dev up` is
/// kept), nft tables named `gt*`, mounts beneath the test roots. Compare an
/// env's own bridge ports and table separately.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSnapshot {
    pub mounts: Vec<String>,
    pub links: Vec<String>,
    pub nft: String,
    pub root_names: Vec<String>,
    pub etc_names: Vec<String>,
    pub files: Vec<(String, String)>,
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        use sha2::Digest;
        let mut mounts: Vec<String> = fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(' ').collect();
                let dash = f.iter().position(|w| *w == "-")?;
                Some(format!(
                    "{} {} {} {}",
                    f.get(4)?,
                    f.get(dash + 1)?,
                    f.get(dash + 2)?,
                    f.get(5)?
                ))
            })
            .filter(|m| !m.contains(TEST_ROOT) && !m.contains("/run/grove-test"))
            .collect();
        mounts.sort();
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show"])
            .output()
            .expect("running ip");
        let mut links: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split(": ").nth(1))
            .map(|n| n.split('@').next().unwrap_or(n).to_string())
            .filter(|n| !n.starts_with('g') || n == "grove0")
            .collect();
        links.sort();
        let out = std::process::Command::new("nft")
            .args(["-s", "list", "ruleset"])
            .output()
            .expect("running nft");
        let mut nft = String::new();
        let mut skipping = false;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            if let Some(rest) = line.strip_prefix("table ") {
                let name = rest.split_whitespace().nth(1).unwrap_or("");
                skipping = name.starts_with("gt");
            }
            if !skipping {
                nft.push_str(line);
                nft.push('\n');
            }
        }
        let names = |dir: &str| {
            let mut v: Vec<String> = fs::read_dir(dir)
                .unwrap()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v
        };
        let files = ["/etc/shadow", "/etc/passwd", "/etc/group", "/etc/sudoers"]
            .iter()
            .map(|p| {
                let hash = match fs::read(p) {
                    Ok(data) => sha2::Sha256::digest(&data)
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                    Err(e) => format!("unreadable: {e}"),
                };
                let meta = fs::symlink_metadata(p)
                    .map(|m| {
                        use std::os::unix::fs::MetadataExt;
                        format!(
                            " mode {:o} {}:{} links {}",
                            m.mode(),
                            m.uid(),
                            m.gid(),
                            m.nlink()
                        )
                    })
                    .unwrap_or_default();
                (p.to_string(), hash + &meta)
            })
            .collect();
        HostSnapshot {
            mounts,
            links,
            nft,
            root_names: names("/"),
            etc_names: names("/etc"),
            files,
        }
    }

    /// Differences from `earlier`, one line each (empty: unchanged).
    pub fn changes_since(&self, earlier: &HostSnapshot) -> Vec<String> {
        fn list(what: &str, before: &[String], after: &[String], out: &mut Vec<String>) {
            for x in after.iter().filter(|x| !before.contains(x)) {
                out.push(format!("{what}: new {x}"));
            }
            for x in before.iter().filter(|x| !after.contains(x)) {
                out.push(format!("{what}: gone {x}"));
            }
        }
        let mut out = Vec::new();
        list("mount", &earlier.mounts, &self.mounts, &mut out);
        list("link", &earlier.links, &self.links, &mut out);
        list("/", &earlier.root_names, &self.root_names, &mut out);
        list("/etc", &earlier.etc_names, &self.etc_names, &mut out);
        if self.nft != earlier.nft {
            out.push(format!(
                "nft ruleset (outside gt* tables) changed:\n--- before\n{}--- after\n{}",
                earlier.nft, self.nft
            ));
        }
        for ((p, a), (_, b)) in earlier.files.iter().zip(&self.files) {
            if a != b {
                out.push(format!("{p}: {a} -> {b}"));
            }
        }
        out
    }
}

/// Names beneath `dir`, two levels deep ("a", "a/b"), sorted; empty when
/// `dir` is missing.
pub fn tree_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            for f in fs::read_dir(e.path()).into_iter().flatten().flatten() {
                out.push(format!("{name}/{}", f.file_name().to_string_lossy()));
            }
        }
        out.push(name);
    }
    out.sort();
    out
}

/// Wait up to 10 s for `ok` to hold (checked every 20 ms); fail naming
/// `what`. For what the kernel finishes on its own after a call returns,
/// such as removing a destroyed container's veth with its namespace.
pub fn eventually(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !ok() {
        assert!(Instant::now() < deadline, "after 10 s still not: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A tar archive of one file, `name`, holding `data` (mode 0644, root's).
pub fn tar_of(name: &str, data: &[u8]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_gnu();
    header.set_size(data.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(1_600_000_000);
    header.set_cksum();
    builder.append_data(&mut header, name, data).unwrap();
    builder.into_inner().unwrap()
}

/// Make `command` run as `uid`:`gid` with only that group (set while still
/// root: groups, gid, uid, in that order).
pub fn as_user(command: &mut std::process::Command, uid: u32, gid: u32) {
    // SAFETY: only async-signal-safe syscalls between fork and exec;
    // nothing allocates.
    unsafe {
        command.pre_exec(move || {
            use nix::unistd::{setgid, setgroups, setuid, Gid, Uid};
            setgroups(&[Gid::from_raw(gid)])?;
            setgid(Gid::from_raw(gid))?;
            setuid(Uid::from_raw(uid))?;
            Ok(())
        });
    }
}
