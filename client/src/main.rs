//! `grove`: the command-line client for groved.

use clap::{Parser, Subcommand};
use grove_client::{
    api, shell_exit_code, socket_path, writer_sink, Client, Command, Error, NetOutRule,
};
use std::net::Ipv4Addr;
use std::path::PathBuf;

mod progress;
mod terminal;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "grove",
    version,
    about = "Command-line client for the Grove container server"
)]
struct Cli {
    /// groved's socket [default: $GROVE_SOCKET, else /run/grove/grove.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check that groved (and grove-helper behind it) answer.
    Ping,
    /// Show the host's capacity for containers.
    Capacity,
    /// Create a container and print its handle.
    Create {
        /// The handle (default: generated).
        #[arg(long)]
        handle: Option<String>,
        /// A host directory to use as the rootfs (default: the server's).
        #[arg(long)]
        rootfs: Option<String>,
        /// NAME=value for every process's environment (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// NAME=value property (repeatable).
        #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
        /// The container's IPv4 address, A.B.C.D[/N] (default: one from the server's pool).
        #[arg(long, value_name = "IP")]
        network: Option<String>,
        /// Map a host port to a container port (TCP; 0 = picked / the same; repeatable).
        #[arg(long = "net-in", value_name = "HOST:CONTAINER", value_parser = parse_port_pair)]
        net_in: Vec<(u16, u16)>,
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
        #[arg(long, value_name = "SECONDS")]
        grace_time: Option<u64>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Set a container's grace time and restart its countdown: it is
    /// destroyed after SECONDS without a request about it (0 = never).
    SetGraceTime { handle: String, seconds: u64 },
    /// Change a container's memory, CPU, pid, disk or bandwidth limits
    /// (each kind is all or none).
    Limit {
        handle: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Show the limits in force.
    Limits { handle: String },
    /// Show a container's resource usage.
    Metrics { handle: String },
    /// Map a port of the host to a port of the container (TCP); prints
    /// HOST_PORT CONTAINER_PORT.
    NetIn {
        handle: String,
        /// The host port (default: one from the server's range).
        #[arg(long)]
        host_port: Option<u16>,
        /// The container port (default: the same as the host port).
        #[arg(long)]
        container_port: Option<u16>,
    },
    /// Allow traffic out of a container (everything else stays denied).
    NetOut {
        handle: String,
        /// The traffic it allows.
        #[arg(long, value_parser = ["all", "tcp", "udp", "icmp"])]
        protocol: String,
        /// Destination addresses, A.B.C.D or A.B.C.D-E.F.G.H (repeatable; default: all).
        #[arg(long = "network", value_name = "A.B.C.D[-E.F.G.H]", value_parser = parse_ip_range)]
        networks: Vec<(String, String)>,
        /// Destination ports, N or N-M, tcp and udp only (repeatable; default: all).
        #[arg(long = "port", value_name = "N[-M]", value_parser = parse_port_range)]
        ports: Vec<(u16, u16)>,
        /// ICMP type (icmp only; default: every type).
        #[arg(long)]
        icmp_type: Option<u8>,
        /// ICMP code (default: every code of the type).
        #[arg(long, requires = "icmp_type")]
        icmp_code: Option<u8>,
        /// Log new connections (tcp and all only).
        #[arg(long)]
        log: bool,
    },
    /// List container handles, optionally only those with all given properties.
    List {
        #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
    },
    /// Show a container's state, processes and properties.
    Info { handle: String },
    /// Run a command in a container, streaming its output; exits with its status.
    Run(RunArgs),
    /// Re-attach to a running or finished process: its unread output, then
    /// everything that follows; exits with its status.
    Attach { handle: String, process_id: String },
    /// Stop every process in a container: SIGTERM, then SIGKILL after 10 s.
    Stop {
        /// SIGKILL at once.
        #[arg(long)]
        kill: bool,
        handle: String,
    },
    /// Destroy a container and everything it owns.
    Destroy { handle: String },
    /// Extract a tar read from stdin into a directory of the container
    /// (created when missing), as a user.
    StreamIn {
        handle: String,
        /// The directory to extract into (absolute).
        #[arg(long)]
        path: String,
        /// User name or uid[:gid] inside the container (default: root).
        #[arg(long)]
        user: Option<String>,
    },
    /// Write a tar of a file or directory of the container to stdout, read
    /// as a user; entries are named from the path's parent directory.
    StreamOut {
        handle: String,
        /// The file or directory to archive (absolute).
        #[arg(long)]
        path: String,
        /// User name or uid[:gid] inside the container (default: root).
        #[arg(long)]
        user: Option<String>,
    },
}

#[derive(clap::Args, Default)]
struct LimitArgs {
    /// Memory limit in bytes (suffixes K, M, G).
    #[arg(long, value_parser = parse_size)]
    memory: Option<u64>,
    /// Relative CPU weight (cgroup v1 shares, 2..262144).
    #[arg(long)]
    cpu_shares: Option<u64>,
    /// Hard CPU quota, QUOTA or QUOTA/PERIOD in microseconds (e.g. 50000/100000 = half a CPU).
    #[arg(long, value_parser = parse_quota)]
    cpu_quota: Option<(u64, u64)>,
    /// The CPUs it may use, e.g. 0-1,3.
    #[arg(long)]
    cpuset: Option<String>,
    /// Most processes and threads.
    #[arg(long)]
    pids: Option<u64>,
    /// Disk limit in bytes for the container's writable layer (suffixes K, M, G).
    #[arg(long, value_parser = parse_size)]
    disk: Option<u64>,
    /// What the disk limit counts: total or exclusive.
    #[arg(long, value_parser = ["total", "exclusive"], requires = "disk")]
    disk_scope: Option<String>,
    /// Traffic shaping, bytes per second and burst bytes (suffixes K, M, G;
    /// the burst defaults to the rate).
    #[arg(long, value_name = "RATE[:BURST]", value_parser = parse_bandwidth)]
    bandwidth: Option<(u64, u64)>,
}

impl LimitArgs {
    fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.disk.is_none()
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

#[derive(clap::Args)]
struct RunArgs {
    /// Pass this command's stdin to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Run on a terminal (implies -i); the local terminal goes raw.
    #[arg(short, long)]
    tty: bool,
    /// User name or uid[:gid] inside the container (default: root).
    #[arg(long)]
    user: Option<String>,
    /// Working directory (default: the user's home).
    #[arg(long)]
    dir: Option<String>,
    /// NAME=value added to the environment (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A resource limit, e.g. nofile=1024 (repeatable).
    #[arg(long = "rlimit", value_name = "NAME=VALUE", value_parser = parse_rlimit)]
    rlimits: Vec<(String, u64)>,
    /// A process id of your choosing (default: generated).
    #[arg(long)]
    id: Option<String>,
    handle: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_rlimit(s: &str) -> Result<(String, u64), String> {
    let (name, value) = parse_pair(s)?;
    if !grove_client::RLIMIT_NAMES.contains(&name.as_str()) {
        return Err(format!(
            "unknown limit {name:?} (known: {})",
            grove_client::RLIMIT_NAMES.join(", ")
        ));
    }
    let value = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    Ok((name, value))
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grove: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, execute(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("grove: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<i32, Error> {
    let client = Client::connect(&socket_path(cli.socket)).await?;
    match cli.command {
        Cmd::Ping => {
            client.ping().await?;
            println!("ok");
        }
        Cmd::Capacity => {
            let response = client.grove.capacity_request().send().promise.await?;
            let c = response.get()?.get_capacity()?;
            println!("memory_in_bytes: {}", c.get_memory_in_bytes());
            println!("disk_in_bytes: {}", c.get_disk_in_bytes());
            println!("max_containers: {}", c.get_max_containers());
        }
        Cmd::Create {
            handle,
            rootfs,
            env,
            properties,
            network,
            net_in,
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
            let pulling = rootfs
                .as_deref()
                .is_some_and(|r| r.starts_with("docker://"));
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
            println!(
                "{}",
                response
                    .get()?
                    .get_handle()?
                    .to_str()
                    .map_err(capnp::Error::from)?
            );
        }
        Cmd::Limit { handle, limits } => {
            if limits.is_empty() {
                return Err(Error {
                    code: "invalidSpec".into(),
                    message: "give at least one limit (see grove limit --help)".into(),
                });
            }
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
            if limits.disk.is_some() {
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
            let memory = container
                .current_memory_limits_request()
                .send()
                .promise
                .await?;
            let cpu = container
                .current_cpu_limits_request()
                .send()
                .promise
                .await?;
            let pids = container
                .current_pid_limits_request()
                .send()
                .promise
                .await?;
            let (memory, cpu, pids) = (
                memory.get()?.get_limits()?,
                cpu.get()?.get_limits()?,
                pids.get()?.get_limits()?,
            );
            let or_none = |v: u64| {
                if v == 0 {
                    "none".to_string()
                } else {
                    v.to_string()
                }
            };
            println!("memory_bytes: {}", or_none(memory.get_limit_in_bytes()));
            println!("cpu_shares: {}", or_none(cpu.get_weight()));
            if cpu.get_quota_micros() == 0 {
                println!("cpu_quota: none");
            } else {
                println!(
                    "cpu_quota: {}/{}",
                    cpu.get_quota_micros(),
                    cpu.get_quota_period_micros()
                );
            }
            let cpuset = cpu.get_cpuset()?.to_str().map_err(capnp::Error::from)?;
            println!("cpuset: {}", if cpuset.is_empty() { "all" } else { cpuset });
            println!("pids_max: {}", or_none(pids.get_max()));
            let disk = container
                .current_disk_limits_request()
                .send()
                .promise
                .await?;
            let disk = disk.get()?.get_limits()?;
            let scope = match disk.get_scope() {
                Ok(api::disk_limits::Scope::Exclusive) => "exclusive",
                _ => "total",
            };
            println!("disk_bytes: {} ({scope})", or_none(disk.get_byte_hard()));
            let bandwidth = container
                .current_bandwidth_limits_request()
                .send()
                .promise
                .await?;
            let bandwidth = bandwidth.get()?.get_limits()?;
            if bandwidth.get_rate_in_bytes_per_second() == 0 {
                println!("bandwidth: none");
            } else {
                println!(
                    "bandwidth: {}:{}",
                    bandwidth.get_rate_in_bytes_per_second(),
                    bandwidth.get_burst_rate_in_bytes_per_second()
                );
            }
        }
        Cmd::Metrics { handle } => {
            let container = client.lookup(&handle).await?;
            let response = container.metrics_request().send().promise.await?;
            let m = response.get()?.get_metrics()?;
            let (memory, cpu, pid) = (m.get_memory()?, m.get_cpu()?, m.get_pid()?);
            println!("memory_usage: {}", memory.get_usage());
            println!("memory_cache: {}", memory.get_cache());
            println!("memory_rss: {}", memory.get_rss());
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
            println!("disk_total_bytes: {}", disk.get_total_bytes_used());
            println!("disk_exclusive_bytes: {}", disk.get_exclusive_bytes_used());
            let network = m.get_network()?;
            println!("net_rx_bytes: {}", network.get_rx_bytes());
            println!("net_tx_bytes: {}", network.get_tx_bytes());
            println!("net_rx_packets: {}", network.get_rx_packets());
            println!("net_tx_packets: {}", network.get_tx_packets());
            println!("age_seconds: {:.1}", m.get_age_seconds());
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
            println!("{host} {container}");
        }
        Cmd::NetOut {
            handle,
            protocol,
            networks,
            ports,
            icmp_type,
            icmp_code,
            log,
        } => {
            let protocol = match protocol.as_str() {
                "tcp" => api::net_out_rule::Protocol::Tcp,
                "udp" => api::net_out_rule::Protocol::Udp,
                "icmp" => api::net_out_rule::Protocol::Icmp,
                _ => api::net_out_rule::Protocol::All,
            };
            let rule = NetOutRule {
                networks,
                ports,
                icmp: icmp_type.map(|t| (t, icmp_code)),
                log,
                ..NetOutRule::new(protocol)
            };
            let container = client.lookup(&handle).await?;
            grove_client::net_out(&container, &[rule]).await?;
        }
        Cmd::List { properties } => {
            for handle in client.list(&properties).await? {
                println!("{handle}");
            }
        }
        Cmd::Info { handle } => {
            let container = client.lookup(&handle).await?;
            let response = container.info_request().send().promise.await?;
            print_info(&handle, response.get()?.get_info()?)?;
        }
        Cmd::Run(args) => return run(&client, args).await,
        Cmd::Attach { handle, process_id } => return attach(&client, &handle, &process_id).await,
        Cmd::Stop { kill, handle } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.stop_request();
            request.get().set_kill(kill);
            request.send().promise.await?;
        }
        Cmd::Destroy { handle } => client.destroy(&handle).await?,
        Cmd::SetGraceTime { handle, seconds } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.set_grace_time_request();
            request.get().set_grace_time_seconds(seconds);
            request.send().promise.await?;
        }
        Cmd::StreamIn { handle, path, user } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.stream_in_request();
            request.get().set_path(&path);
            request.get().set_user(user.as_deref().unwrap_or(""));
            // Wait for the answer: a bad path or user is reported before
            // any of stdin is read.
            let sink = request.send().promise.await?.get()?.get_sink()?;
            stream_stdin_to(&sink).await?;
        }
        Cmd::StreamOut { handle, path, user } => {
            let container = client.lookup(&handle).await?;
            let (sink, _done) = writer_sink(std::io::stdout());
            let mut request = container.stream_out_request();
            request.get().set_path(&path);
            request.get().set_user(user.as_deref().unwrap_or(""));
            request.get().set_sink(sink);
            // groved answers once the sink has taken everything and `done`.
            request.send().promise.await?;
        }
    }
    Ok(0)
}

/// Copy this command's stdin to a ByteStream, then `done`, whose answer
/// (the extraction's outcome) is the result.
async fn stream_stdin_to(sink: &api::byte_stream::Client) -> Result<(), Error> {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = stdin.read(&mut buffer).await.map_err(|e| Error {
            code: "internal".into(),
            message: format!("reading stdin: {e}"),
        })?;
        if n == 0 {
            break;
        }
        let mut request = sink.write_request();
        request.get().set_data(&buffer[..n]);
        request.send().await?;
    }
    sink.done_request().send().promise.await?;
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

async fn run(client: &Client, args: RunArgs) -> Result<i32, Error> {
    let container = client.lookup(&args.handle).await?;
    let (path, argv) = args.command.split_first().expect("clap requires a command");
    let terminal = if args.tty {
        Some(terminal::size())
    } else {
        None
    };
    let cmd = Command {
        path: path.clone(),
        args: argv.to_vec(),
        env: args.env,
        dir: args.dir.unwrap_or_default(),
        user: args.user.unwrap_or_default(),
        id: args.id.unwrap_or_default(),
        rlimits: args.rlimits,
        tty: terminal,
    };
    let (stdout, stdout_done) = writer_sink(std::io::stdout());
    let (stderr, stderr_done) = writer_sink(std::io::stderr());
    let interactive = args.interactive || args.tty;
    let mut request = container.run_request();
    cmd.fill(request.get().init_spec()).map_err(|m| Error {
        code: "invalidSpec".into(),
        message: m,
    })?;
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    io.set_open_stdin(interactive);
    let process = request.send().pipeline.get_process();
    // Raw mode while the remote terminal runs; restored when this ends.
    let _raw = if args.tty {
        terminal::RawMode::enter()
    } else {
        None
    };
    if args.tty {
        tokio::task::spawn_local(forward_window_changes(process.clone()));
    }
    if interactive {
        let stdin = process.stdin_request().send().pipeline.get_stream();
        tokio::task::spawn_local(forward_stdin(stdin));
    }
    let response = process.wait_request().send().promise.await?;
    let status = response.get()?.get_exit_status();
    finish_output(stdout_done, stderr_done).await;
    Ok(shell_exit_code(status))
}

async fn attach(client: &Client, handle: &str, process_id: &str) -> Result<i32, Error> {
    let container = client.lookup(handle).await?;
    let (stdout, stdout_done) = writer_sink(std::io::stdout());
    let (stderr, stderr_done) = writer_sink(std::io::stderr());
    let mut request = container.attach_request();
    request.get().set_process_id(process_id);
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    let process = request.send().pipeline.get_process();
    let response = process.wait_request().send().promise.await?;
    let status = response.get()?.get_exit_status();
    finish_output(stdout_done, stderr_done).await;
    Ok(shell_exit_code(status))
}

/// Let the last output land before exiting. When the output reached end of
/// file, groved told the streams `done` before answering wait, so this
/// returns at once; when a process left behind keeps the pipes open, the
/// command still ends shortly after the process.
async fn finish_output(
    stdout: tokio::sync::oneshot::Receiver<()>,
    stderr: tokio::sync::oneshot::Receiver<()>,
) {
    let both = async {
        let _ = stdout.await;
        let _ = stderr.await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), both).await;
}

/// Tell the process about every resize of the local terminal.
async fn forward_window_changes(process: api::process::Client) {
    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
        return;
    };
    while changes.recv().await.is_some() {
        let (columns, rows) = terminal::size();
        let mut request = process.set_tty_request();
        let mut size = request.get().init_window_size();
        size.set_columns(columns);
        size.set_rows(rows);
        if request.send().promise.await.is_err() {
            return;
        }
    }
}

/// Copy this command's stdin to the process, then close it.
async fn forward_stdin(stream: api::byte_stream::Client) {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut request = stream.write_request();
                request.get().set_data(&buffer[..n]);
                if request.send().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.done_request().send().promise.await;
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
}
