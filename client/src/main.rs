//! `grove`: the command-line client for groved.

use clap::{CommandFactory, Parser, Subcommand};
use grove_client::{api, Error, ErrorCode};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

mod cli_args;
mod cli_json;
mod cli_stream;
mod completion;
mod connection;
mod human;
mod image_cmd;
mod layer_progress;
mod listing;
mod manpages;
mod progress;
mod remove;
mod run;
mod stats;
mod stdin;
mod terminal;
mod top;
use std::process::ExitCode;

/// The exit status of Grove's own failures (groved's errors, a lost
/// connection, bad usage), as podman's 125.
pub const GROVE_ERROR: i32 = 125;
/// `run`: the executable cannot be found or run (executableNotFound), as
/// podman's 127.
pub const NOT_FOUND: i32 = 127;

/// The exit statuses, for `--help` (README's "The CLI" has the same table).
macro_rules! exit_status {
    () => {
        "Exit status (podman's):
  0    success
  N    run, exec, attach: the process's exit code; 128+N when signal N
       killed it
  1    rm: a container did not exist (and nothing worse happened)
  2    rm: a container has running processes (remove it with -f)
  125  Grove's error, on one line of stderr: groved's (the line ends with
       its code, e.g. \"(containerNotFound)\"), groved unreachable
       (serviceUnavailable), the connection lost (disconnected), a local
       file that cannot be read or written; or bad usage (an unknown
       subcommand or flag, a missing or malformed value)
  127  run, exec: the executable cannot be found or run (executableNotFound)"
    };
}

#[derive(Parser)]
#[command(
    name = "grove",
    version,
    about = "Command-line client for the Grove container server",
    after_help = exit_status!(),
    after_long_help = concat!(
        "Examples:
  grove create --handle web --limit-memory 256M --net-in 0:8080 --property team=web
  grove run -it web /bin/sh
  grove ps --long
  grove --json info web | jq -r .container_ip
  tar -cf - site | grove stream-in web --path /srv/www
  grove completions bash > /etc/bash_completion.d/grove

",
        exit_status!()
    )
)]
pub struct Cli {
    #[command(flatten)]
    connection: connection::ConnectionArgs,
    /// Print one JSON document on stdout instead of text, for scripts
    /// (run, attach, logs and stream-out still print the process's output
    /// or the tar; stats prints one per refresh). Example: grove --json info web | jq -r .state
    #[arg(long, global = true, help_heading = "Output")]
    json: bool,
    /// Sizes as byte counts instead of KiB, MiB, GiB (in capacity, limits,
    /// metrics, stats, top; --json always gives bytes).
    #[arg(long, global = true, help_heading = "Output")]
    bytes: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
// Parsed once per run: the size of `create`'s flags does not matter.
#[allow(clippy::large_enum_variant)]
enum Cmd {
    /// Check that groved (and grove-helper behind it) answer; prints "ok".
    Ping,
    /// Registry images in groved's cache: pull, ls, inspect, rm, prune.
    ///
    /// Example: grove image pull busybox; grove image ls
    Image {
        #[command(subcommand)]
        cmd: image_cmd::ImageCmd,
    },
    /// Show the host's capacity for containers: memory, disk, most containers.
    Capacity,
    /// Create a container and print its handle.
    ///
    /// Example: grove create --handle web --image docker://registry.local:5000/app:1.2
    /// --limit-memory 256M --limit-pids 100 --net-in 0:8080 --net-out tcp,port=443
    /// --property team=web --grace-time 3600
    Create {
        /// The handle, A-Z a-z 0-9 . _ - (default: generated).
        /// Example: --handle web-1
        #[arg(long)]
        handle: Option<String>,
        /// A host directory to use as the root filesystem (default: the
        /// server's rootfs); an image URI works here too, as with --image.
        /// Example: --rootfs /var/lib/grove/rootfs/busybox
        #[arg(long, value_name = "DIR", conflicts_with = "image")]
        rootfs: Option<String>,
        /// An image to use as the root filesystem: oci:PATH[:TAG] (an OCI
        /// layout), docker-archive:PATH (a `docker save` tar) or
        /// docker://HOST/REPO[:TAG] (pulled from a registry, with a progress
        /// bar on stderr). Example: --image oci:/var/lib/grove/images/app:v1
        #[arg(long, value_name = "URI")]
        image: Option<String>,
        /// The registry user for a docker:// pull [default:
        /// $GROVE_IMAGE_USERNAME]. Example: --image-username ci
        #[arg(long, value_name = "USER")]
        image_username: Option<String>,
        /// The registry password for a docker:// pull [default:
        /// $GROVE_IMAGE_PASSWORD, which keeps it out of `ps`].
        #[arg(long, value_name = "PASSWORD")]
        image_password: Option<String>,
        /// NAME=VALUE in every process's environment (repeatable).
        /// Example: -e LANG=C.UTF-8
        #[arg(short, long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// A property NAME=VALUE, for `grove list --property` (repeatable).
        /// Example: --property team=web
        #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
        /// The container's IPv4 address, which must lie in the server's
        /// pool (default: a free one). Example: --network 10.254.0.9
        #[arg(long, value_name = "IP[/N]")]
        network: Option<String>,
        /// Map a host port to a container port (TCP; host 0 = one from the
        /// server's range, container 0 = the same as the host's;
        /// repeatable). Example: --net-in 8080:80
        #[arg(long = "net-in", value_name = "HOST:CONTAINER", value_parser = parse_port_pair)]
        net_in: Vec<(u16, u16)>,
        /// Allow traffic out (egress is denied until a rule allows it):
        /// `grove net-out`'s flags as comma-separated NAME=VALUE items, the
        /// protocol bare first (repeatable).
        /// Example: --net-out tcp,network=10.0.0.0-10.0.0.255,port=443,log
        #[arg(long = "net-out", value_name = "RULE", value_parser = cli_args::parse_net_out_rule)]
        net_out: Vec<cli_args::NetOutArgs>,
        /// Bind-mount a host path (beneath the helper's bind_allow) at a path
        /// in the container, read-only unless `:rw` (repeatable).
        /// Example: --bind /srv/data:/data:rw
        #[arg(long = "bind", value_name = "SRC:DST[:ro|:rw]", value_parser = parse_bind)]
        binds: Vec<Bind>,
        /// Bind-mount a path of the container's own rootfs at another path
        /// (repeatable). Example: --bind-inside /etc:/mnt/etc
        #[arg(long = "bind-inside", value_name = "SRC:DST[:ro|:rw]", value_parser = parse_bind)]
        binds_inside: Vec<Bind>,
        /// No user namespace: root inside is host root (the helper's policy
        /// must allow it).
        #[arg(long)]
        privileged: bool,
        /// Destroy the container after this many seconds without a request
        /// about it; 0 = never (default: the server's default_grace_time).
        /// Example: --grace-time 3600
        #[arg(long, value_name = "SECONDS")]
        grace_time: Option<u64>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Set a container's grace time and restart its countdown: it is
    /// destroyed after SECONDS without a request about it (0 = never).
    ///
    /// Example: grove set-grace-time web 600
    SetGraceTime {
        #[arg(add = completion::handles())]
        handle: String,
        seconds: u64,
    },
    /// Change a container's memory, CPU, pid, disk or bandwidth limits
    /// (each kind is all or none).
    ///
    /// Example: grove limit web --limit-memory 512M --limit-cpu 512
    Limit {
        #[arg(add = completion::handles())]
        handle: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show the limits in force ("none": no limit).
    Limits {
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// Show a container's resource usage: memory, CPU, pids, disk, network, age.
    Metrics {
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// Map a port of the host to a port of the container (TCP); prints
    /// HOST_PORT CONTAINER_PORT.
    ///
    /// Example: grove net-in web --host-port 8080 --container-port 80
    NetIn {
        #[arg(add = completion::handles())]
        handle: String,
        /// The host port (default: one from the server's range).
        /// Example: --host-port 8080
        #[arg(long)]
        host_port: Option<u16>,
        /// The container port (default: the same as the host port).
        /// Example: --container-port 80
        #[arg(long)]
        container_port: Option<u16>,
    },
    /// Allow traffic out of a container (everything else stays denied).
    ///
    /// Example: grove net-out web --protocol tcp --network 10.0.0.1 --port 443
    NetOut {
        #[arg(add = completion::handles())]
        handle: String,
        #[command(flatten)]
        rule: cli_args::NetOutArgs,
    },
    /// List container handles, optionally only those with all given
    /// properties; --long: a table of state, IP, ports, processes and age.
    ///
    /// Example: grove ps --long --property team=web
    #[command(visible_aliases = ["ps", "ls"])]
    List(listing::ListArgs),
    /// Describe containers as one JSON array: each one's info and the
    /// limits in force.
    ///
    /// Example: grove inspect web db | jq '.[].limits.memory'
    Inspect {
        #[arg(required = true, value_name = "HANDLE", add = completion::handles())]
        handles: Vec<String>,
    },
    /// Show a container's state, addresses, processes, ports and properties.
    Info {
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// Run a command in a container, streaming its output; exits with its
    /// status (128 + N when signal N killed it). The signals this command
    /// gets go on to the process (--sig-proxy).
    ///
    /// Example: grove run -it -e LANG web /bin/sh
    #[command(visible_alias = "exec")]
    Run(run::RunArgs),
    /// Re-attach to a running or finished process: its unread output, then
    /// everything that follows; exits with its status.
    ///
    /// Example: grove attach web 1f3a9c
    Attach {
        #[arg(add = completion::handles())]
        handle: String,
        /// The process's id (`grove info` and `grove top` show them).
        process_id: String,
        #[command(flatten)]
        signals: run::SigProxy,
    },
    /// Print the output a process wrote that nobody has read yet (Grove
    /// keeps no log beyond that: what is printed is gone from it); -f: then
    /// follow it until the process ends.
    ///
    /// Example: grove logs -f web 1f3a9c
    Logs {
        /// Go on printing the output until the process ends.
        #[arg(short, long)]
        follow: bool,
        #[arg(add = completion::handles())]
        handle: String,
        /// The process's id (`grove info` and `grove top` show them).
        process_id: String,
    },
    /// The processes in a container: pid, user, state, CPU time, age,
    /// memory, the API process each belongs to, and the command.
    ///
    /// Example: grove top web
    Top {
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// A live table of containers' CPU, memory, network, disk and pids,
    /// refreshed every --interval seconds until interrupted.
    ///
    /// Example: grove stats --no-stream web
    Stats(stats::StatsArgs),
    /// Send a signal to a running process of a container.
    ///
    /// Example: grove signal web 1f3a9c TERM
    Signal {
        #[arg(add = completion::handles())]
        handle: String,
        /// The process's id (`grove info` lists the running ones).
        process_id: String,
        /// TERM, KILL, INT, HUP, QUIT, USR1, USR2 or WINCH (a SIG prefix,
        /// lower case and the numbers 15, 9, 2, 1, 3, 10, 12, 28 work too).
        #[arg(value_parser = cli_args::parse_signal)]
        signal: api::Signal,
    },
    /// Stop every process in a container: SIGTERM, then SIGKILL after 10 s.
    /// The container stays ("stopped"); files can still be streamed in and
    /// out.
    ///
    /// Example: grove stop --kill web
    Stop {
        /// SIGKILL at once.
        #[arg(long)]
        kill: bool,
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// Destroy a container and everything it owns.
    Destroy {
        #[arg(add = completion::handles())]
        handle: String,
    },
    /// Destroy containers as podman rm removes them: several at once,
    /// those running processes only with -f, or all of them with -a;
    /// prints each handle removed.
    ///
    /// Example: grove rm -f web db
    Rm(remove::RmArgs),
    /// A container's properties: all of them (NAME=VALUE lines), or get,
    /// set or remove one.
    ///
    /// Examples: grove properties web; grove properties web set team blue
    Properties {
        #[arg(add = completion::handles())]
        handle: String,
        #[command(subcommand)]
        action: Option<PropertyCmd>,
    },
    /// Extract a tar read from stdin (or --file) into a directory of the
    /// container (created when missing), as a user. A meter shows on a
    /// terminal's stderr while a large stream runs.
    ///
    /// Example: tar -C site -cf - . | grove stream-in web --path /srv/www
    StreamIn {
        #[arg(add = completion::handles())]
        handle: String,
        /// The directory to extract into (absolute). Example: --path /srv/www
        #[arg(long)]
        path: String,
        /// User name or uid[:gid] inside the container (default: root).
        /// Example: --user 1000:1000
        #[arg(long)]
        user: Option<String>,
        /// Read the tar from this file instead of stdin ("-": stdin).
        /// Example: -f site.tar
        #[arg(short, long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Write a tar of a file or directory of the container to stdout (or
    /// --file), read as a user; entries are named from the path's parent
    /// directory. A meter shows on a terminal's stderr while a large stream
    /// runs.
    ///
    /// Example: grove stream-out web --path /var/log -f logs.tar
    StreamOut {
        #[arg(add = completion::handles())]
        handle: String,
        /// The file or directory to archive (absolute; a trailing / gives
        /// the directory's contents). Example: --path /var/log
        #[arg(long)]
        path: String,
        /// User name or uid[:gid] inside the container (default: root).
        /// Example: --user nobody
        #[arg(long)]
        user: Option<String>,
        /// Write the tar to this file instead of stdout ("-": stdout); it is
        /// removed again if the stream fails. Example: -f logs.tar
        #[arg(short, long, value_name = "PATH")]
        file: Option<PathBuf>,
    },
    /// Print a completion script for a shell.
    ///
    /// Example: grove completions bash > /etc/bash_completion.d/grove
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages (grove.1, grove-create.1, ...) into DIR: what
    /// `./dev package` ships.
    #[command(hide = true)]
    Manpages { dir: PathBuf },
}

#[derive(Subcommand)]
enum PropertyCmd {
    /// Print one property's value.
    Get { name: String },
    /// Set a property (added, or its value replaced).
    Set { name: String, value: String },
    /// Remove a property.
    Remove { name: String },
}

#[derive(clap::Args, Default)]
struct LimitArgs {
    /// Memory limit in bytes (suffixes K, M, G); a process that goes over
    /// is OOM-killed. Example: --limit-memory 512M
    #[arg(long = "limit-memory", visible_alias = "memory", value_name = "BYTES", value_parser = parse_size)]
    memory: Option<u64>,
    /// Relative CPU weight (cgroup v1 shares, 2..262144; 1024 is the
    /// usual default). Example: --limit-cpu 512
    #[arg(
        long = "limit-cpu",
        visible_alias = "cpu-shares",
        value_name = "WEIGHT"
    )]
    cpu_shares: Option<u64>,
    /// Hard CPU quota, QUOTA or QUOTA/PERIOD in microseconds (the period
    /// defaults to 100000). Example: --cpu-quota 50000/100000 (half a CPU)
    #[arg(long, value_name = "QUOTA[/PERIOD]", value_parser = parse_quota)]
    cpu_quota: Option<(u64, u64)>,
    /// The CPUs it may use. Example: --cpuset 0-1,3
    #[arg(long, value_name = "CPUS")]
    cpuset: Option<String>,
    /// Most processes and threads at once. Example: --limit-pids 100
    #[arg(long = "limit-pids", visible_alias = "pids", value_name = "N")]
    pids: Option<u64>,
    /// Disk limit in bytes (suffixes K, M, G), counted as --disk-scope
    /// says. Example: --limit-disk 1G
    #[arg(long = "limit-disk", visible_alias = "disk", value_name = "BYTES", value_parser = parse_size)]
    disk: Option<u64>,
    /// Most files, directories and links (inodes), counted as --disk-scope
    /// says; needs a depot on ext4 or XFS with project quotas (btrfs
    /// counts no inodes). Example: --limit-disk-inodes 10000
    #[arg(
        long = "limit-disk-inodes",
        visible_alias = "disk-inodes",
        value_name = "N"
    )]
    disk_inodes: Option<u64>,
    /// What the disk limits count: total (the image and the container's
    /// writes) or exclusive (its own writes only; default total). A disk
    /// limit replaces the one in force, bytes and inodes both.
    /// Example: --disk-scope exclusive
    #[arg(long, value_parser = ["total", "exclusive"])]
    disk_scope: Option<String>,
    /// Traffic shaping, bytes per second and burst bytes (suffixes K, M, G;
    /// the burst defaults to the rate). Example: --limit-bandwidth 1M:256K
    #[arg(long = "limit-bandwidth", visible_alias = "bandwidth", value_name = "RATE[:BURST]", value_parser = parse_bandwidth)]
    bandwidth: Option<(u64, u64)>,
}

impl LimitArgs {
    fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.disk.is_none()
            && self.disk_inodes.is_none()
            && self.cpu_shares.is_none()
            && self.cpu_quota.is_none()
            && self.cpuset.is_none()
            && self.pids.is_none()
            && self.bandwidth.is_none()
    }

    fn fill_memory(&self, mut m: api::memory_limits::Builder<'_>) {
        m.set_limit_in_bytes(self.memory.unwrap_or(0));
    }

    fn fill_cpu(&self, mut c: api::cpu_limits::Builder<'_>) {
        c.set_weight(self.cpu_shares.unwrap_or(0));
        if let Some((quota, period)) = self.cpu_quota {
            c.set_quota_micros(quota);
            c.set_quota_period_micros(period);
        }
        c.set_cpuset(self.cpuset.as_deref().unwrap_or(""));
    }

    fn fill_pids(&self, mut p: api::pid_limits::Builder<'_>) {
        p.set_max(self.pids.unwrap_or(0));
    }

    fn fill_disk(&self, mut d: api::disk_limits::Builder<'_>) {
        d.set_byte_hard(self.disk.unwrap_or(0));
        d.set_inode_hard(self.disk_inodes.unwrap_or(0));
        d.set_scope(if self.disk_scope.as_deref() == Some("exclusive") {
            api::disk_limits::Scope::Exclusive
        } else {
            api::disk_limits::Scope::Total
        });
    }

    fn fill_bandwidth(&self, mut b: api::bandwidth_limits::Builder<'_>) {
        let (rate, burst) = self.bandwidth.unwrap_or((0, 0));
        b.set_rate_in_bytes_per_second(rate);
        b.set_burst_rate_in_bytes_per_second(burst);
    }

    fn has_disk(&self) -> bool {
        self.disk.is_some() || self.disk_inodes.is_some()
    }

    fn has_cpu(&self) -> bool {
        self.cpu_shares.is_some() || self.cpu_quota.is_some() || self.cpuset.is_some()
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 64M)"))?;
    let factor: u64 = match unit.to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(format!("{s:?}: unknown unit {unit:?} (use K, M or G)")),
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn parse_bandwidth(s: &str) -> Result<(u64, u64), String> {
    let (rate, burst) = s.split_once(':').unwrap_or((s, s));
    Ok((parse_size(rate)?, parse_size(burst)?))
}

/// A bind mount as the command line gives it.
#[derive(Debug, Clone)]
struct Bind {
    src: String,
    dst: String,
    rw: bool,
}

fn parse_bind(s: &str) -> Result<Bind, String> {
    let bad = || format!("{s:?} is not SRC:DST[:ro|:rw] with absolute paths");
    let parts: Vec<&str> = s.split(':').collect();
    let (src, dst, rw) = match parts.as_slice() {
        [src, dst] => (src, dst, false),
        [src, dst, "ro"] => (src, dst, false),
        [src, dst, "rw"] => (src, dst, true),
        _ => return Err(bad()),
    };
    if !src.starts_with('/') || !dst.starts_with('/') {
        return Err(bad());
    }
    Ok(Bind {
        src: src.to_string(),
        dst: dst.to_string(),
        rw,
    })
}

fn parse_port_pair(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not HOST_PORT:CONTAINER_PORT (0..65535 each)");
    let (host, container) = s.split_once(':').ok_or_else(bad)?;
    Ok((
        host.parse().map_err(|_| bad())?,
        container.parse().map_err(|_| bad())?,
    ))
}

fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?} is not a port N or a range N-M (1..65535)");
    let (start, end) = s.split_once('-').unwrap_or((s, s));
    Ok((
        start.parse().map_err(|_| bad())?,
        end.parse().map_err(|_| bad())?,
    ))
}

fn parse_ip_range(s: &str) -> Result<(String, String), String> {
    let bad = || format!("{s:?} is not an IPv4 address A.B.C.D or a range A.B.C.D-E.F.G.H");
    let (start, end) = s.split_once('-').unwrap_or((s, s));
    start.parse::<Ipv4Addr>().map_err(|_| bad())?;
    end.parse::<Ipv4Addr>().map_err(|_| bad())?;
    Ok((start.to_string(), end.to_string()))
}

fn parse_quota(s: &str) -> Result<(u64, u64), String> {
    let (quota, period) = s.split_once('/').unwrap_or((s, "100000"));
    let number = |v: &str| {
        v.parse::<u64>()
            .map_err(|_| format!("{s:?} is not QUOTA[/PERIOD] in microseconds"))
    };
    Ok((number(quota)?, number(period)?))
}

pub fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn main() -> ExitCode {
    // A shell asking for completions gets them, and nothing else runs.
    completion::answer_if_asked();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; a usage
            // error is Grove's error, as podman's are.
            let _ = e.print();
            return exit(if e.use_stderr() { GROVE_ERROR } else { 0 });
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grove: starting the runtime: {e}");
            return exit(GROVE_ERROR);
        }
    };
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&runtime, execute(cli));
    // Nothing left running may hold the exit up (a blocking read of a
    // terminal would, until Enter).
    runtime.shutdown_background();
    match result {
        Ok(code) => exit(code),
        Err(e) => {
            report(&e);
            exit(if e.kind() == ErrorCode::ExecutableNotFound {
                NOT_FOUND
            } else {
                GROVE_ERROR
            })
        }
    }
}

fn exit(code: i32) -> ExitCode {
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// An error on one line of stderr: `grove: MESSAGE (CODE)`, or without the
/// code for one of this command's own (a local file, say).
pub fn report(e: &Error) {
    if e.code.is_empty() {
        eprintln!("grove: {}", e.message);
    } else {
        eprintln!("grove: {} ({})", e.message, e.code);
    }
}

async fn execute(cli: Cli) -> Result<i32, Error> {
    // What needs no connection: completions, and usage checks clap cannot
    // make (they exit as clap's own do).
    if let Cmd::Completions { shell } = cli.command {
        use std::io::Write;
        let mut script = Vec::new();
        completion::registration(&shell.to_string(), &mut script)
            .map_err(|e| cli_stream::local(format!("completions for {shell}: {e}")))?;
        // A closed pipe (`| head`) is not worth a complaint.
        let _ = std::io::stdout().write_all(&script);
        return Ok(0);
    }
    if let Cmd::Manpages { dir } = &cli.command {
        let pages = manpages::write_all(dir)
            .map_err(|e| cli_stream::local(format!("man pages in {}: {e}", dir.display())))?;
        eprintln!("{} man pages in {}", pages.len(), dir.display());
        return Ok(0);
    }
    check_usage(&cli.command);
    let json = cli.json;
    let sizes = human::Sizes { raw: cli.bytes };
    let client = cli.connection.connect().await?;
    match cli.command {
        Cmd::Ping => {
            client.ping().await?;
            if json {
                cli_json::print(&serde_json::json!({ "ok": true }));
            } else {
                println!("ok");
            }
        }
        Cmd::Capacity => {
            let response = client.grove.capacity_request().send().promise.await?;
            let c = response.get()?.get_capacity()?;
            if json {
                cli_json::print(&cli_json::capacity(c));
            } else {
                println!("memory_in_bytes: {}", sizes.show(c.get_memory_in_bytes()));
                println!("disk_in_bytes: {}", sizes.show(c.get_disk_in_bytes()));
                println!("max_containers: {}", c.get_max_containers());
            }
        }
        Cmd::Create {
            handle,
            rootfs,
            image,
            image_username,
            image_password,
            env,
            properties,
            network,
            net_in,
            net_out,
            binds,
            binds_inside,
            privileged,
            grace_time,
            limits,
        } => {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(handle.as_deref().unwrap_or(""));
            spec.set_rootfs(rootfs.as_deref().unwrap_or(""));
            // --rootfs takes an image URI too (the API's rootfs does).
            let source = image.as_deref().or(rootfs.as_deref()).unwrap_or("");
            let pulling = source.starts_with("docker:");
            // Credentials from the environment only for a pull (groved
            // refuses them for anything else); given as flags, always.
            let from_env = |name: &str| {
                std::env::var(name)
                    .ok()
                    .filter(|v| pulling && !v.is_empty())
            };
            let username = image_username.or_else(|| from_env("GROVE_IMAGE_USERNAME"));
            let password = image_password.or_else(|| from_env("GROVE_IMAGE_PASSWORD"));
            // Else the user's auth.json (image_cmd.rs).
            let (username, password) = match (username, password) {
                (None, None) if pulling => {
                    match image_cmd::login_for(source, Default::default())? {
                        Some(l) => (Some(l.username), Some(l.password)),
                        None => (None, None),
                    }
                }
                given => given,
            };
            if image.is_some() || username.is_some() || password.is_some() {
                let mut i = spec.reborrow().init_image();
                i.set_uri(image.as_deref().unwrap_or(""));
                i.set_username(username.as_deref().unwrap_or(""));
                i.set_password(password.as_deref().unwrap_or(""));
            }
            if pulling {
                spec.set_pull_progress(capnp_rpc::new_client(progress::Bar::new()));
            }
            grove_client::fill_text_list(spec.reborrow().init_env(env.len() as u32), &env);
            if !limits.is_empty() {
                let mut l = spec.reborrow().init_limits();
                limits.fill_memory(l.reborrow().init_memory());
                limits.fill_cpu(l.reborrow().init_cpu());
                limits.fill_disk(l.reborrow().init_disk());
                limits.fill_bandwidth(l.reborrow().init_bandwidth());
                limits.fill_pids(l.init_pid());
            }
            spec.set_network(network.as_deref().unwrap_or(""));
            spec.set_privileged(privileged);
            spec.set_grace_time_seconds(grace_time.unwrap_or(0));
            let all: Vec<(&Bind, bool)> = binds
                .iter()
                .map(|b| (b, false))
                .chain(binds_inside.iter().map(|b| (b, true)))
                .collect();
            let mut list = spec.reborrow().init_bind_mounts(all.len() as u32);
            for (i, (b, inside)) in all.iter().enumerate() {
                use grove_client::api::bind_mount::{Mode, Origin};
                let mut m = list.reborrow().get(i as u32);
                m.set_src_path(&b.src);
                m.set_dst_path(&b.dst);
                m.set_mode(if b.rw { Mode::Rw } else { Mode::Ro });
                m.set_origin(if *inside {
                    Origin::Container
                } else {
                    Origin::Host
                });
            }
            let mut list = spec.reborrow().init_net_in(net_in.len() as u32);
            for (i, (host, container)) in net_in.iter().enumerate() {
                let mut m = list.reborrow().get(i as u32);
                m.set_host_port((*host).into());
                m.set_container_port((*container).into());
            }
            let mut list = spec.reborrow().init_net_out(net_out.len() as u32);
            for (i, rule) in net_out.iter().enumerate() {
                rule.rule().fill(list.reborrow().get(i as u32));
            }
            let mut list = spec.init_properties(properties.len() as u32);
            for (i, (k, v)) in properties.iter().enumerate() {
                let mut p = list.reborrow().get(i as u32);
                p.set_name(k);
                p.set_value(v);
            }
            let container = request.send().pipeline.get_container();
            if grace_time == Some(0) {
                // The spec's 0 means the server's default: ask for "never"
                // right after the create (pipelined, before anything else).
                let mut never = container.set_grace_time_request();
                never.get().set_grace_time_seconds(0);
                never.send().promise.await?;
            }
            let response = container.handle_request().send().promise.await?;
            let handle = response
                .get()?
                .get_handle()?
                .to_str()
                .map_err(capnp::Error::from)?;
            if json {
                cli_json::print(&serde_json::json!({ "handle": handle }));
            } else {
                println!("{handle}");
            }
        }
        Cmd::Limit { handle, limits } => {
            let container = client.lookup(&handle).await?;
            // One call per kind; each is all-or-nothing on its own.
            if let Some(memory) = limits.memory {
                let mut request = container.limit_memory_request();
                request.get().init_limits().set_limit_in_bytes(memory);
                request.send().promise.await?;
            }
            if limits.has_cpu() {
                let mut request = container.limit_cpu_request();
                limits.fill_cpu(request.get().init_limits());
                request.send().promise.await?;
            }
            if let Some(pids) = limits.pids {
                let mut request = container.limit_pids_request();
                request.get().init_limits().set_max(pids);
                request.send().promise.await?;
            }
            if limits.has_disk() {
                let mut request = container.limit_disk_request();
                limits.fill_disk(request.get().init_limits());
                request.send().promise.await?;
            }
            if limits.bandwidth.is_some() {
                let mut request = container.limit_bandwidth_request();
                limits.fill_bandwidth(request.get().init_limits());
                request.send().promise.await?;
            }
        }
        Cmd::Limits { handle } => {
            let container = client.lookup(&handle).await?;
            cli_json::with_limits(&container, |limits| {
                if json {
                    cli_json::print(&cli_json::limits(limits)?);
                    Ok(())
                } else {
                    print_limits(limits, sizes)
                }
            })
            .await?;
        }
        Cmd::Metrics { handle } => {
            let container = client.lookup(&handle).await?;
            let response = container.metrics_request().send().promise.await?;
            let m = response.get()?.get_metrics()?;
            if json {
                cli_json::print(&cli_json::metrics(m)?);
            } else {
                print_metrics(m, sizes)?;
            }
        }
        Cmd::NetIn {
            handle,
            host_port,
            container_port,
        } => {
            let container = client.lookup(&handle).await?;
            let (host, container) = grove_client::net_in(
                &container,
                host_port.unwrap_or(0).into(),
                container_port.unwrap_or(0).into(),
            )
            .await?;
            if json {
                cli_json::print(&serde_json::json!({
                    "host_port": host,
                    "container_port": container,
                }));
            } else {
                println!("{host} {container}");
            }
        }
        Cmd::NetOut { handle, rule } => {
            let container = client.lookup(&handle).await?;
            grove_client::net_out(&container, &[rule.rule()]).await?;
        }
        Cmd::List(args) => return listing::list(&client, args, json).await,
        Cmd::Inspect { handles } => return listing::inspect(&client, &handles, json).await,
        Cmd::Info { handle } => {
            let container = client.lookup(&handle).await?;
            let response = container.info_request().send().promise.await?;
            let info = response.get()?.get_info()?;
            if json {
                cli_json::print(&cli_json::info(&handle, info)?);
            } else {
                print_info(&handle, info)?;
            }
        }
        Cmd::Image { cmd } => return image_cmd::run(&client, cmd, json).await,
        Cmd::Run(args) => return run::run(&client, args, json).await,
        Cmd::Attach {
            handle,
            process_id,
            signals,
        } => return run::attach(&client, &handle, &process_id, signals).await,
        Cmd::Logs {
            follow,
            handle,
            process_id,
        } => return run::logs(&client, &handle, &process_id, follow).await,
        Cmd::Top { handle } => return top::top(&client, &handle, json, sizes).await,
        Cmd::Stats(args) => return stats::stats(&client, args, json, sizes).await,
        Cmd::Rm(args) => return remove::rm(&client, args, json).await,
        Cmd::Signal {
            handle,
            process_id,
            signal,
        } => {
            let container = client.lookup(&handle).await?;
            // Attach without streams (the output stays for a later attach),
            // then signal the process, pipelined.
            let mut request = container.attach_request();
            request.get().set_process_id(&process_id);
            request.get().init_io();
            let process = request.send().pipeline.get_process();
            let mut request = process.signal_request();
            request.get().set_signal(signal);
            request.send().promise.await?;
        }
        Cmd::Stop { kill, handle } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.stop_request();
            request.get().set_kill(kill);
            request.send().promise.await?;
        }
        Cmd::Destroy { handle } => client.destroy(&handle).await?,
        Cmd::Properties { handle, action } => {
            let container = client.lookup(&handle).await?;
            properties(&container, action, json).await?;
        }
        Cmd::SetGraceTime { handle, seconds } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.set_grace_time_request();
            request.get().set_grace_time_seconds(seconds);
            request.send().promise.await?;
        }
        Cmd::StreamIn {
            handle,
            path,
            user,
            file,
        } => {
            // Open the file first: a bad name is reported before any call.
            let input = cli_stream::Input::open(file.as_deref()).await?;
            let container = client.lookup(&handle).await?;
            let mut request = container.stream_in_request();
            request.get().set_path(&path);
            request.get().set_user(user.as_deref().unwrap_or(""));
            // Wait for the answer: a bad path or user is reported before
            // any of the input is read.
            let sink = request.send().promise.await?.get()?.get_sink()?;
            input.copy_to(&sink).await?;
        }
        Cmd::StreamOut {
            handle,
            path,
            user,
            file,
        } => {
            let container = client.lookup(&handle).await?;
            let output = cli_stream::Output::create(file.as_deref())?;
            let mut request = container.stream_out_request();
            request.get().set_path(&path);
            request.get().set_user(user.as_deref().unwrap_or(""));
            request.get().set_sink(output.sink());
            // groved answers once the sink has taken everything and `done`.
            let result = request.send().promise.await;
            output.finish(result.map(drop).map_err(Error::from))?;
        }
        Cmd::Completions { .. } | Cmd::Manpages { .. } => {
            unreachable!("handled before connecting")
        }
    }
    Ok(0)
}

/// Usage errors clap cannot see: they exit with a usage line, as clap's do.
fn check_usage(command: &Cmd) {
    use std::io::IsTerminal;
    let fail = |subcommand: &str, message: &str| -> ! {
        let mut cli = Cli::command();
        cli.build();
        let sub = cli
            .find_subcommand_mut(subcommand)
            .expect("a known subcommand");
        let _ = sub
            .error(clap::error::ErrorKind::MissingRequiredArgument, message)
            .print();
        std::process::exit(GROVE_ERROR)
    };
    let stdio = |file: &Option<PathBuf>| !matches!(file.as_deref(), Some(f) if f != Path::new("-"));
    match command {
        Cmd::Limit { limits, .. } | Cmd::Create { limits, .. }
            if limits.disk_scope.is_some() && !limits.has_disk() =>
        {
            let sub = if matches!(command, Cmd::Limit { .. }) {
                "limit"
            } else {
                "create"
            };
            fail(
                sub,
                "--disk-scope needs --limit-disk or --limit-disk-inodes",
            )
        }
        Cmd::Limit { limits, .. } if limits.is_empty() => {
            fail("limit", "give at least one limit, e.g. --limit-memory 64M")
        }
        Cmd::StreamIn { file, .. } if stdio(file) && std::io::stdin().is_terminal() => fail(
            "stream-in",
            "stdin is a terminal: pipe a tar in, or give --file PATH",
        ),
        Cmd::StreamOut { file, .. } if stdio(file) && std::io::stdout().is_terminal() => fail(
            "stream-out",
            "stdout is a terminal: redirect it to a file, or give --file PATH",
        ),
        _ => {}
    }
}

/// `grove properties HANDLE [get NAME | set NAME VALUE | remove NAME]`.
async fn properties(
    container: &api::container::Client,
    action: Option<PropertyCmd>,
    json: bool,
) -> Result<(), Error> {
    match action {
        None => {
            let response = container.properties_request().send().promise.await?;
            let list = response.get()?.get_properties()?;
            if json {
                cli_json::print(&cli_json::properties(list)?);
            } else {
                for p in list {
                    let name = p.get_name()?.to_str().map_err(capnp::Error::from)?;
                    let value = p.get_value()?.to_str().map_err(capnp::Error::from)?;
                    println!("{name}={value}");
                }
            }
        }
        Some(PropertyCmd::Get { name }) => {
            let mut request = container.property_request();
            request.get().set_name(&name);
            let response = request.send().promise.await?;
            let value = response
                .get()?
                .get_value()?
                .to_str()
                .map_err(capnp::Error::from)?;
            if json {
                cli_json::print(&serde_json::json!({ "name": name, "value": value }));
            } else {
                println!("{value}");
            }
        }
        Some(PropertyCmd::Set { name, value }) => {
            let mut request = container.set_property_request();
            request.get().set_name(&name);
            request.get().set_value(&value);
            request.send().promise.await?;
        }
        Some(PropertyCmd::Remove { name }) => {
            let mut request = container.remove_property_request();
            request.get().set_name(&name);
            request.send().promise.await?;
        }
    }
    Ok(())
}

fn print_limits(l: &cli_json::Limits<'_>, sizes: human::Sizes) -> Result<(), Error> {
    let or_none = |v: u64| {
        if v == 0 {
            "none".to_string()
        } else {
            v.to_string()
        }
    };
    println!(
        "memory_bytes: {}",
        sizes.limit(l.memory.get_limit_in_bytes())
    );
    println!("cpu_shares: {}", or_none(l.cpu.get_weight()));
    if l.cpu.get_quota_micros() == 0 {
        println!("cpu_quota: none");
    } else {
        println!(
            "cpu_quota: {}/{}",
            l.cpu.get_quota_micros(),
            l.cpu.get_quota_period_micros()
        );
    }
    let cpuset = l.cpu.get_cpuset()?.to_str().map_err(capnp::Error::from)?;
    println!("cpuset: {}", if cpuset.is_empty() { "all" } else { cpuset });
    println!("pids_max: {}", or_none(l.pid.get_max()));
    println!(
        "disk_bytes: {} ({})",
        sizes.limit(l.disk.get_byte_hard()),
        cli_json::disk_scope(l.disk)
    );
    println!(
        "disk_inodes: {} ({})",
        or_none(l.disk.get_inode_hard()),
        cli_json::disk_scope(l.disk)
    );
    if l.bandwidth.get_rate_in_bytes_per_second() == 0 {
        println!("bandwidth: none");
    } else {
        println!(
            "bandwidth: {}:{}",
            sizes.show(l.bandwidth.get_rate_in_bytes_per_second()),
            sizes.show(l.bandwidth.get_burst_rate_in_bytes_per_second())
        );
    }
    Ok(())
}

fn print_metrics(m: api::metrics::Reader<'_>, sizes: human::Sizes) -> Result<(), Error> {
    let (memory, cpu, pid) = (m.get_memory()?, m.get_cpu()?, m.get_pid()?);
    println!("memory_usage: {}", sizes.show(memory.get_usage()));
    println!("memory_cache: {}", sizes.show(memory.get_cache()));
    println!("memory_rss: {}", sizes.show(memory.get_rss()));
    println!("cpu_usage_ns: {}", cpu.get_usage_nanos());
    println!("cpu_user_ns: {}", cpu.get_user_nanos());
    println!("cpu_system_ns: {}", cpu.get_system_nanos());
    println!("pids_current: {}", pid.get_current());
    println!(
        "pids_max: {}",
        if pid.get_max() == 0 {
            "none".to_string()
        } else {
            pid.get_max().to_string()
        }
    );
    let disk = m.get_disk()?;
    println!(
        "disk_total_bytes: {}",
        sizes.show(disk.get_total_bytes_used())
    );
    println!(
        "disk_exclusive_bytes: {}",
        sizes.show(disk.get_exclusive_bytes_used())
    );
    println!("disk_total_inodes: {}", disk.get_total_inodes_used());
    println!(
        "disk_exclusive_inodes: {}",
        disk.get_exclusive_inodes_used()
    );
    let network = m.get_network()?;
    println!("net_rx_bytes: {}", sizes.show(network.get_rx_bytes()));
    println!("net_tx_bytes: {}", sizes.show(network.get_tx_bytes()));
    println!("net_rx_packets: {}", network.get_rx_packets());
    println!("net_tx_packets: {}", network.get_tx_packets());
    println!("age_seconds: {:.1}", m.get_age_seconds());
    Ok(())
}

fn print_info(handle: &str, info: api::container_info::Reader<'_>) -> Result<(), Error> {
    println!("handle: {handle}");
    println!(
        "state: {}",
        info.get_state()?.to_str().map_err(capnp::Error::from)?
    );
    let ids: Vec<String> = info
        .get_process_ids()?
        .iter()
        .map(|id| id?.to_string().map_err(capnp::Error::from))
        .collect::<Result<_, capnp::Error>>()?;
    println!("processes: {}", ids.join(" "));
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| -> Result<String, Error> {
        Ok(t?.to_string().map_err(capnp::Error::from)?)
    };
    println!("container_ip: {}", text(info.get_container_ip())?);
    println!("host_ip: {}", text(info.get_host_ip())?);
    let external = text(info.get_external_ip())?;
    if !external.is_empty() {
        println!("external_ip: {external}");
    }
    for m in info.get_mapped_ports()? {
        println!(
            "mapped_port: {}:{}",
            m.get_host_port(),
            m.get_container_port()
        );
    }
    for p in info.get_properties()? {
        let name = p.get_name()?.to_str().map_err(capnp::Error::from)?;
        let value = p.get_value()?.to_str().map_err(capnp::Error::from)?;
        println!("property: {name}={value}");
    }
    for event in info.get_events()? {
        println!("event: {}", event?.to_str().map_err(capnp::Error::from)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_arguments_parse() {
        assert_eq!(parse_bandwidth("1M").unwrap(), (1 << 20, 1 << 20));
        assert_eq!(parse_bandwidth("1M:64K").unwrap(), (1 << 20, 64 << 10));
        assert!(parse_bandwidth("1M:").is_err());
        assert_eq!(parse_port_pair("8080:80").unwrap(), (8080, 80));
        assert_eq!(parse_port_pair("0:0").unwrap(), (0, 0));
        assert!(parse_port_pair("8080").is_err());
        assert!(parse_port_pair("70000:80").is_err());
        assert_eq!(parse_port_range("53").unwrap(), (53, 53));
        assert_eq!(parse_port_range("8000-8080").unwrap(), (8000, 8080));
        assert!(parse_port_range("80-").is_err());
        assert_eq!(
            parse_ip_range("10.0.0.1").unwrap(),
            ("10.0.0.1".to_string(), "10.0.0.1".to_string())
        );
        assert_eq!(
            parse_ip_range("10.0.0.1-10.0.0.9").unwrap().1,
            "10.0.0.9".to_string()
        );
        assert!(parse_ip_range("10.0.0.0/8").is_err());
    }

    #[test]
    fn the_cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "grove",
            "net-out",
            "h",
            "--protocol",
            "icmp",
            "--icmp-type",
            "8",
        ]);
        assert!(cli.is_ok());
        let cli = Cli::try_parse_from([
            "grove",
            "net-out",
            "h",
            "--protocol",
            "icmp",
            "--icmp-code",
            "0",
        ]);
        assert!(cli.is_err(), "--icmp-code needs --icmp-type");
        let cli = Cli::try_parse_from([
            "grove",
            "create",
            "--network",
            "10.254.0.9",
            "--net-in",
            "0:80",
            "--net-in",
            "8080:80",
            "--bandwidth",
            "1M",
            "--grace-time",
            "60",
        ]);
        assert!(cli.is_ok());
        let cli = Cli::try_parse_from(["grove", "set-grace-time", "h", "0"]);
        assert!(cli.is_ok(), "0 = never");
    }

    #[test]
    fn the_issue_s_flag_names_and_the_old_ones_both_parse() {
        let limits = |args: &[&str]| -> LimitArgs {
            let mut argv = vec!["grove", "create"];
            argv.extend(args);
            match Cli::try_parse_from(argv).unwrap().command {
                Cmd::Create { limits, .. } => limits,
                _ => unreachable!(),
            }
        };
        for args in [
            [
                "--limit-memory",
                "64M",
                "--limit-cpu",
                "256",
                "--limit-pids",
                "9",
                "--limit-disk",
                "1G",
                "--limit-bandwidth",
                "1M:64K",
            ],
            [
                "--memory",
                "64M",
                "--cpu-shares",
                "256",
                "--pids",
                "9",
                "--disk",
                "1G",
                "--bandwidth",
                "1M:64K",
            ],
        ] {
            let l = limits(&args);
            assert_eq!(
                (l.memory, l.cpu_shares, l.pids, l.disk, l.bandwidth),
                (
                    Some(64 << 20),
                    Some(256),
                    Some(9),
                    Some(1 << 30),
                    Some((1 << 20, 64 << 10))
                ),
                "{args:?}"
            );
        }
        let cli = Cli::try_parse_from(["grove", "create", "--image", "oci:/x", "--rootfs", "/y"]);
        assert!(cli.is_err(), "an image or a rootfs, not both");
        let cli = Cli::try_parse_from([
            "grove",
            "create",
            "--net-out",
            "tcp,port=443",
            "--net-out",
            "icmp,icmp-type=8",
        ]);
        assert!(matches!(cli.unwrap().command, Cmd::Create { net_out, .. } if net_out.len() == 2));
        let cli = Cli::try_parse_from(["grove", "signal", "h", "p", "SIGKILL"]).unwrap();
        assert!(matches!(
            cli.command,
            Cmd::Signal {
                signal: api::Signal::Kill,
                ..
            }
        ));
        let cli = Cli::try_parse_from(["grove", "--json", "properties", "h", "set", "a", "b"]);
        assert!(matches!(
            cli.unwrap().command,
            Cmd::Properties {
                action: Some(PropertyCmd::Set { .. }),
                ..
            }
        ));
        let cli = Cli::try_parse_from(["grove", "properties", "h"]).unwrap();
        assert!(matches!(cli.command, Cmd::Properties { action: None, .. }));
        let cli = Cli::try_parse_from(["grove", "stream-out", "h", "--path", "/x", "-f", "t.tar"]);
        assert!(cli.is_ok());
        let cli = Cli::try_parse_from(["grove", "info", "h", "--json"]).unwrap();
        assert!(cli.json, "--json is global");
    }

    /// The command of `run` as parsed from `args` (after "grove").
    fn run_of(args: &[&str]) -> run::RunArgs {
        let mut argv = vec!["grove"];
        argv.extend(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Cmd::Run(run) => run,
            _ => unreachable!(),
        }
    }

    #[test]
    fn podman_s_names_and_short_flags_parse() {
        // `--` is optional; what follows the handle is the command, flags
        // included.
        for args in [
            &["run", "h", "--", "sh", "-c", "exit 3"][..],
            &["run", "h", "sh", "-c", "exit 3"],
            &["exec", "h", "sh", "-c", "exit 3"],
        ] {
            let run = run_of(args);
            assert_eq!(
                (run.handle.as_str(), &run.command[..]),
                ("h", &["sh".to_string(), "-c".into(), "exit 3".into()][..]),
                "{args:?}"
            );
        }
        let run = run_of(&[
            "run", "-it", "-e", "A=1", "-u", "1000", "-w", "/tmp", "h", "ls", "-l",
        ]);
        assert!(run.interactive && run.tty);
        assert_eq!(run.env, ["A=1"]);
        assert_eq!(run.user.as_deref(), Some("1000"));
        assert_eq!(run.dir.as_deref(), Some("/tmp"));
        assert_eq!(run.command, ["ls", "-l"]);
        assert!(run.signals.proxy, "podman's default");
        let run = run_of(&["run", "--sig-proxy=false", "--dir", "/x", "h", "true"]);
        assert!(!run.signals.proxy);
        assert_eq!(run.dir.as_deref(), Some("/x"), "--dir stays an alias");
        // Flags after the handle but before the command are flags.
        let run = run_of(&["run", "h", "-i", "cat"]);
        assert!(run.interactive);
        assert_eq!(run.command, ["cat"]);
        assert!(
            Cli::try_parse_from(["grove", "run", "h"]).is_err(),
            "a command is needed"
        );
        assert!(Cli::try_parse_from(["grove", "run", "-d", "-i", "h", "true"]).is_err());

        for alias in ["list", "ps", "ls"] {
            let cli = Cli::try_parse_from(["grove", alias, "--long", "-a"]).unwrap();
            assert!(matches!(
                cli.command,
                Cmd::List(listing::ListArgs { long: true, .. })
            ));
        }
        let cli = Cli::try_parse_from(["grove", "rm", "-f", "a", "b"]).unwrap();
        assert!(
            matches!(cli.command, Cmd::Rm(remove::RmArgs { force: true, ref handles, .. }) if handles.len() == 2)
        );
        assert!(
            Cli::try_parse_from(["grove", "rm"]).is_err(),
            "a handle or -a"
        );
        assert!(Cli::try_parse_from(["grove", "rm", "-a"]).is_ok());
        assert!(Cli::try_parse_from(["grove", "rm", "-a", "x"]).is_err());
        assert!(Cli::try_parse_from(["grove", "inspect"]).is_err());
        let cli = Cli::try_parse_from(["grove", "stats", "--no-stream", "-i", "1"]).unwrap();
        assert!(matches!(
            cli.command,
            Cmd::Stats(stats::StatsArgs {
                no_stream: true,
                interval: 1,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["grove", "stats", "--interval", "0"]).is_err());
        let cli = Cli::try_parse_from(["grove", "logs", "-f", "h", "p"]).unwrap();
        assert!(matches!(cli.command, Cmd::Logs { follow: true, .. }));
        let cli = Cli::try_parse_from(["grove", "create", "-e", "A=1"]).unwrap();
        assert!(matches!(cli.command, Cmd::Create { ref env, .. } if env == &["A=1"]));
        let cli = Cli::try_parse_from(["grove", "--bytes", "metrics", "h"]).unwrap();
        assert!(cli.bytes);
    }

    #[test]
    fn connection_flags_have_their_own_heading() {
        let help = Cli::command().render_long_help().to_string();
        let connection = help.find("Connection:").expect("a Connection heading");
        let output = help.find("Output:").expect("an Output heading");
        for flag in ["--socket", "--address", "--tls-ca", "--tls-server-name"] {
            let at = help.find(flag).unwrap();
            assert!(at > connection, "{flag} under Connection");
        }
        assert!(help.find("--json").unwrap() > output);
    }
}
