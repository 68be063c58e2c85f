//! grove-bench: measures a running Grove (groved + grove-helper) side by
//! side with runc, crun and bubblewrap on the same machine, and prints the
//! results as Markdown. `bench/run` (./dev bench) starts the daemons,
//! runs this, and writes bench/RESULTS.md.
//!
//! Benchmarks are not tests: nothing here fails on a slow figure; missed
//! targets are reported as missed.

mod grove;
mod image_cache;
mod memory;
mod peers;
mod stats;
mod tty;

use grove_client::Client;
use stats::{mib, ms, ratio, Samples};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The cgroup limits every lifecycle container (Grove's and the peers')
/// asks for.
pub const MEMORY_LIMIT: u64 = 256 << 20;
pub const PIDS_MAX: u64 = 1024;
pub const CPU_WEIGHT: u64 = 512;

const USAGE: &str = "usage: grove-bench --socket PATH --rootfs DIR --cgroup-parent NAME \
--work DIR --grove-cli PATH [--groved-pid N] [--helper-pid N] [--rounds N] \
[--clients N] [--concurrent N] [--density N] [--stdout-bytes N] [--only a,b,...] [--no-limits] \
[--registry 127.0.0.1:PORT]
sections: lifecycle exec pipelined concurrency density stdout tty image-cache";

struct Options {
    socket: PathBuf,
    rootfs: PathBuf,
    cgroup_parent: String,
    work: PathBuf,
    grove_cli: PathBuf,
    groved_pid: u32,
    helper_pid: u32,
    rounds: usize,
    clients: usize,
    concurrent: usize,
    density: usize,
    stdout_bytes: u64,
    only: Vec<String>,
    /// Lifecycle containers without cgroup limits (to see what limits cost).
    no_limits: bool,
    /// Where to start a docker-registry for the image-cache section
    /// (groved's insecure_registries names it).
    registry: Option<String>,
}

fn parse_options() -> Result<Options, String> {
    let mut o = Options {
        socket: PathBuf::new(),
        rootfs: PathBuf::new(),
        cgroup_parent: String::new(),
        work: PathBuf::new(),
        grove_cli: PathBuf::new(),
        groved_pid: 0,
        helper_pid: 0,
        rounds: 200,
        clients: 10,
        concurrent: 100,
        density: 1000,
        stdout_bytes: 2 << 30,
        only: Vec::new(),
        no_limits: false,
        registry: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value\n{USAGE}"));
        let number = |v: String| -> Result<u64, String> {
            v.parse()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--socket" => o.socket = value()?.into(),
            "--rootfs" => o.rootfs = value()?.into(),
            "--cgroup-parent" => o.cgroup_parent = value()?,
            "--work" => o.work = value()?.into(),
            "--grove-cli" => o.grove_cli = value()?.into(),
            "--groved-pid" => o.groved_pid = number(value()?)? as u32,
            "--helper-pid" => o.helper_pid = number(value()?)? as u32,
            "--rounds" => o.rounds = number(value()?)? as usize,
            "--clients" => o.clients = number(value()?)? as usize,
            "--concurrent" => o.concurrent = number(value()?)? as usize,
            "--density" => o.density = number(value()?)? as usize,
            "--stdout-bytes" => o.stdout_bytes = number(value()?)?,
            "--only" => o.only = value()?.split(',').map(str::to_string).collect(),
            "--no-limits" => o.no_limits = true,
            "--registry" => o.registry = Some(value()?),
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown flag {other}\n{USAGE}")),
        }
    }
    for (name, empty) in [
        ("--socket", o.socket.as_os_str().is_empty()),
        ("--rootfs", o.rootfs.as_os_str().is_empty()),
        ("--cgroup-parent", o.cgroup_parent.is_empty()),
        ("--work", o.work.as_os_str().is_empty()),
        ("--grove-cli", o.grove_cli.as_os_str().is_empty()),
    ] {
        if empty {
            return Err(format!("{name} is required\n{USAGE}"));
        }
    }
    if o.rounds == 0 || o.clients == 0 || o.concurrent < o.clients || o.density < 20 {
        return Err(
            "--rounds and --clients must be > 0, --concurrent ≥ --clients, --density ≥ 20".into(),
        );
    }
    Ok(o)
}

/// One row of the targets table.
struct Target {
    what: String,
    goal: String,
    measured: String,
    met: bool,
}

#[derive(Default)]
struct Report {
    sections: Vec<String>,
    targets: Vec<Target>,
}

impl Report {
    fn target(&mut self, what: &str, goal: &str, measured: String, met: bool) {
        eprintln!(
            "    target {what}: {measured} (goal {goal}) {}",
            if met { "met" } else { "MISSED" }
        );
        self.targets.push(Target {
            what: what.into(),
            goal: goal.into(),
            measured,
            met,
        });
    }

    fn markdown(&self) -> String {
        let mut out =
            String::from("## Targets\n\n| what | target | measured | met |\n|---|---|---|---|\n");
        for t in &self.targets {
            out += &format!(
                "| {} | {} | {} | {} |\n",
                t.what,
                t.goal,
                t.measured,
                if t.met { "yes" } else { "**no**" }
            );
        }
        // In the order of their numbers ("## 4. …"), whatever order they ran.
        let mut sections: Vec<&String> = self.sections.iter().collect();
        sections.sort_by_key(|s| {
            s.trim_start_matches("## ")
                .split('.')
                .next()
                .and_then(|n| n.parse::<u32>().ok())
                .unwrap_or(u32::MAX)
        });
        for s in sections {
            out += "\n";
            out += s;
        }
        out
    }
}

fn main() {
    let options = match parse_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("grove-bench: {e}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, bench(&options)) {
        Ok(report) => print!("{}", report.markdown()),
        Err(e) => {
            eprintln!("grove-bench: {e}");
            std::process::exit(1);
        }
    }
}

fn wanted(o: &Options, section: &str) -> bool {
    o.only.is_empty() || o.only.iter().any(|s| s == section)
}

async fn bench(o: &Options) -> Result<Report, String> {
    let client = Client::connect(&o.socket)
        .await
        .map_err(|e| e.to_string())?;
    client.ping().await.map_err(|e| e.to_string())?;
    let mut report = Report::default();
    // Each section starts on a quiet machine: the kernel finishes work of
    // its own after destroys return (network namespaces, btrfs subvolume
    // cleanup), which would otherwise share the CPU with what comes next.
    // Density goes last: after 1,000 destroys that work lasts longest.
    let veths = memory::veth_count();
    type Section = for<'a> fn(
        &'a Options,
        &'a Client,
        &'a mut Report,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), String>> + 'a>,
    >;
    let sections: [(&str, Section); 8] = [
        ("lifecycle", |o, c, r| Box::pin(lifecycle(o, c, r))),
        ("exec", |o, c, r| Box::pin(exec(o, c, r))),
        ("pipelined", |o, c, r| Box::pin(pipelined(o, c, r))),
        ("stdout", |o, c, r| Box::pin(stdout(o, c, r))),
        ("tty", |o, c, r| Box::pin(tty_exit(o, c, r))),
        ("image-cache", |o, c, r| {
            Box::pin(image_cache::image_cache(o, c, r))
        }),
        ("concurrency", |o, _, r| Box::pin(concurrency(o, r))),
        ("density", |o, c, r| Box::pin(density(o, c, r))),
    ];
    for (name, section) in sections {
        if !wanted(o, name) {
            continue;
        }
        settle(veths).await;
        let waited = quiet().await;
        if waited > Duration::from_secs(1) {
            eprintln!(
                "    (waited {:.1} s for an idle machine)",
                waited.as_secs_f64()
            );
        }
        section(o, &client, &mut report).await?;
    }
    Ok(report)
}

/// Wait (up to 5 minutes) until no more container veths exist than
/// `baseline`: the kernel removes a destroyed container's with its network
/// namespace, after destroy has returned. Returns how long that took.
async fn settle(baseline: usize) -> Duration {
    let start = Instant::now();
    while memory::veth_count() > baseline && start.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    start.elapsed()
}

/// Wait (up to 5 minutes) until the CPUs were at least 90 % idle for two
/// seconds in a row. Returns how long that took.
async fn quiet() -> Duration {
    let start = Instant::now();
    let mut calm = 0;
    while calm < 2 && start.elapsed() < Duration::from_secs(300) {
        let before = memory::cpu_times();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = memory::cpu_times();
        let busy = after.0.saturating_sub(before.0) as f64;
        let idle = after.1.saturating_sub(before.1) as f64;
        if idle / (busy + idle).max(1.0) >= 0.9 {
            calm += 1;
        } else {
            calm = 0;
        }
    }
    start.elapsed()
}

fn handle(kind: &str, i: usize) -> String {
    format!("bench-{kind}-{i}")
}

fn row(name: &str, s: &Samples) -> String {
    format!(
        "| {name} | {} | {} | {} |\n",
        s.len(),
        ms(s.p50()),
        ms(s.p99())
    )
}

/// Time `rounds` runs of the peer, or say why it was skipped.
fn peer(name: &str, result: Option<Result<Samples, String>>) -> (String, Option<Samples>) {
    match result {
        None => (format!("| {name} | not installed | | |\n"), None),
        Some(Err(e)) => {
            eprintln!("    {name} failed: {e}");
            (format!("| {name} | failed: {e} | | |\n"), None)
        }
        Some(Ok(s)) => {
            eprintln!("    {name}: p50 {} p99 {}", ms(s.p50()), ms(s.p99()));
            (row(name, &s), Some(s))
        }
    }
}

/// 1. create → run /bin/true → wait → destroy, against `runc run`,
///    `crun run` and `bwrap --unshare-all`.
async fn lifecycle(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    eprintln!(
        "==> lifecycle: create → run /bin/true → wait → destroy, {} rounds",
        o.rounds
    );
    let spec = grove::Spec { limits: true };
    // A few unmeasured rounds warm the page cache and the daemons.
    for i in 0..5 {
        let h = handle("warm", i);
        let c = grove::create(client, &h, spec).await?;
        grove::ok(grove::run_and_wait(&c, "/bin/true").await?, "warm-up")?;
        grove::destroy(client, &h).await?;
    }
    let mut total = Samples::default();
    let (mut create, mut run, mut destroy) =
        (Samples::default(), Samples::default(), Samples::default());
    for i in 0..o.rounds {
        let h = handle("life", i);
        let t0 = Instant::now();
        let c = grove::create(client, &h, spec).await?;
        let t1 = Instant::now();
        grove::ok(grove::run_and_wait(&c, "/bin/true").await?, "lifecycle")?;
        let t2 = Instant::now();
        grove::destroy(client, &h).await?;
        let t3 = Instant::now();
        create.push(t1 - t0);
        run.push(t2 - t1);
        destroy.push(t3 - t2);
        total.push(t3 - t0);
    }
    eprintln!("    grove: p50 {} p99 {}", ms(total.p50()), ms(total.p99()));
    let bundle = peers::Bundle::write(
        &o.work.join("bundle-true"),
        &o.rootfs,
        &["/bin/true"],
        Some(&o.cgroup_parent),
    )?;
    let unlimited = peers::Bundle::write(
        &o.work.join("bundle-true-unlimited"),
        &o.rootfs,
        &["/bin/true"],
        None,
    )?;
    let runc = peers::find("runc");
    let (runc_row, runc_s) = peer(
        "`runc run`",
        runc.as_ref()
            .map(|r| peers::oci_run(r, &bundle, o.rounds, "grove-bench-runc")),
    );
    let (crun_row, _) = peer(
        "`crun run` ¹",
        peers::find("crun").map(|r| peers::oci_run(&r, &unlimited, o.rounds, "grove-bench-crun")),
    );
    let (bwrap_row, _) = peer(
        "`bwrap --unshare-all` ²",
        peers::find("bwrap").map(|b| peers::bwrap(&b, &o.rootfs, o.rounds)),
    );
    let mut s = String::from(
        "## 1. Lifecycle\n\ncreate (default rootfs, network, memory/pids/cpu limits) → run `/bin/true` → wait → destroy, \
one round after the other over one connection.\n\n| | rounds | p50 | p99 |\n|---|---|---|---|\n",
    );
    s += &row("**Grove** (whole round)", &total);
    s += &row("… create", &create);
    s += &row("… run + wait", &run);
    s += &row("… destroy", &destroy);
    s += &runc_row;
    s += &crun_row;
    s += &bwrap_row;
    s += "\nThe peers run the same busybox rootfs (read-only) with the same limits. \
They do less: no veth, address, firewall rules or writable layer (runc's network \
namespace is empty), no user namespace.\n\
¹ crun gets a bundle without limits (it cannot use cgroup v1 controllers); where it still refuses a hybrid cgroup host, its row says so.\n\
² bubblewrap has no cgroups.\n";
    report.sections.push(s);
    if let Some(runc_s) = runc_s {
        report.target(
            "lifecycle p50 vs `runc run`",
            "≤ 0.5 ×",
            format!(
                "{} vs {} = {} ×",
                ms(total.p50()),
                ms(runc_s.p50()),
                ratio(total.p50(), runc_s.p50())
            ),
            total.p50().as_secs_f64() <= 0.5 * runc_s.p50().as_secs_f64(),
        );
    }
    Ok(())
}

/// 2. run /bin/true in an existing container and wait, against `runc exec`.
async fn exec(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    eprintln!(
        "==> exec: run /bin/true in a running container and wait, {} rounds",
        o.rounds
    );
    let h = handle("exec", 0);
    let c = grove::create(client, &h, grove::Spec { limits: true }).await?;
    let measured = async {
        for _ in 0..5 {
            grove::ok(grove::run_and_wait(&c, "/bin/true").await?, "warm-up")?;
        }
        let mut samples = Samples::default();
        for _ in 0..o.rounds {
            let t = Instant::now();
            grove::ok(grove::run_and_wait(&c, "/bin/true").await?, "exec")?;
            samples.push(t.elapsed());
        }
        Ok::<_, String>(samples)
    }
    .await;
    grove::destroy(client, &h).await?;
    let grove_s = measured?;
    eprintln!(
        "    grove: p50 {} p99 {}",
        ms(grove_s.p50()),
        ms(grove_s.p99())
    );
    let bundle = peers::Bundle::write(
        &o.work.join("bundle-sleep"),
        &o.rootfs,
        &["/bin/sleep", "3600"],
        Some(&o.cgroup_parent),
    )?;
    let (runc_row, runc_s) = peer(
        "`runc exec`",
        peers::find("runc").map(|r| peers::runc_exec(&r, &bundle, o.rounds)),
    );
    let mut s = String::from(
        "## 2. Exec\n\nrun `/bin/true` in a running container and wait for its exit status.\n\n| | rounds | p50 | p99 |\n|---|---|---|---|\n",
    );
    s += &row("**Grove** run + wait", &grove_s);
    s += &runc_row;
    report.sections.push(s);
    if let Some(runc_s) = runc_s {
        report.target(
            "exec p50 vs `runc exec`",
            "≤ 0.1 ×",
            format!(
                "{} vs {} = {} ×",
                ms(grove_s.p50()),
                ms(runc_s.p50()),
                ratio(grove_s.p50(), runc_s.p50())
            ),
            grove_s.p50().as_secs_f64() <= 0.1 * runc_s.p50().as_secs_f64(),
        );
    }
    Ok(())
}

/// 3. create → run → wait pipelined in one round trip, against the same
///    calls awaited one by one (destroy follows, untimed).
async fn pipelined(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    let rounds = o.rounds.min(100);
    eprintln!("==> pipelined vs awaited create → run → wait, {rounds} rounds each, alternating");
    let spec = grove::Spec { limits: true };
    let (mut piped, mut awaited) = (Samples::default(), Samples::default());
    for i in 0..rounds {
        let h = handle("piped", i);
        let t = Instant::now();
        grove::ok(
            grove::pipelined(client, &h, spec, "/bin/true").await?,
            "pipelined",
        )?;
        piped.push(t.elapsed());
        grove::destroy(client, &h).await?;
        let h = handle("awaited", i);
        let t = Instant::now();
        grove::ok(
            grove::awaited(client, &h, spec, "/bin/true").await?,
            "awaited",
        )?;
        awaited.push(t.elapsed());
        grove::destroy(client, &h).await?;
    }
    eprintln!(
        "    pipelined p50 {}, awaited p50 {}",
        ms(piped.p50()),
        ms(awaited.p50())
    );
    let saved = awaited.p50().saturating_sub(piped.p50());
    let mut s = String::from(
        "## 3. Pipelining\n\ncreate → run `/bin/true` → wait: sent at once on promises (one round trip), \
or each awaited before the next is sent (three). Rounds alternate; destroy follows untimed.\n\n\
| | rounds | p50 | p99 |\n|---|---|---|---|\n",
    );
    s += &row("pipelined", &piped);
    s += &row("awaited one by one", &awaited);
    s += &format!("\nPipelining saves {} at the median (over a local unix socket, where a round trip is cheap).\n", ms(saved));
    report.sections.push(s);
    Ok(())
}

/// 4. `concurrent` containers created by `clients` clients at once, each
///    on its own connection; then destroyed the same way.
async fn concurrency(o: &Options, report: &mut Report) -> Result<(), String> {
    eprintln!(
        "==> concurrency: {} creates from {} clients",
        o.concurrent, o.clients
    );
    let mut clients = Vec::new();
    for _ in 0..o.clients {
        clients.push(
            Client::connect(&o.socket)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let per_client = o.concurrent / o.clients;
    let spec = grove::Spec { limits: true };
    let start = Instant::now();
    let creates = clients.iter().enumerate().map(|(c, client)| async move {
        let mut samples = Vec::new();
        for i in 0..per_client {
            let t = Instant::now();
            grove::create(client, &handle("conc", c * per_client + i), spec).await?;
            samples.push(t.elapsed());
        }
        Ok::<_, String>(samples)
    });
    let results = futures::future::join_all(creates).await;
    let create_total = start.elapsed();
    let start = Instant::now();
    let destroys = clients.iter().enumerate().map(|(c, client)| async move {
        let mut samples = Vec::new();
        for i in 0..per_client {
            let t = Instant::now();
            // Destroy what exists even if some creates failed.
            let _ = grove::destroy(client, &handle("conc", c * per_client + i)).await;
            samples.push(t.elapsed());
        }
        samples
    });
    let destroy_samples = Samples(futures::future::join_all(destroys).await.concat());
    let destroy_total = start.elapsed();
    let mut create_samples = Samples::default();
    for r in results {
        create_samples.0.extend(r?);
    }
    let n = per_client * o.clients;
    eprintln!(
        "    {n} creates in {:.2} s, p99 {}",
        create_total.as_secs_f64(),
        ms(create_samples.p99())
    );
    let mut s = format!(
        "## 4. Concurrency\n\n{n} containers (with limits) created by {} clients at once, each on its own \
connection and creating one after another; then destroyed the same way.\n\n\
| | total | p50 per call | p99 per call |\n|---|---|---|---|\n",
        o.clients
    );
    s += &format!(
        "| {n} creates | {:.2} s | {} | {} |\n| {n} destroys | {:.2} s | {} | {} |\n",
        create_total.as_secs_f64(),
        ms(create_samples.p50()),
        ms(create_samples.p99()),
        destroy_total.as_secs_f64(),
        ms(destroy_samples.p50()),
        ms(destroy_samples.p99()),
    );
    report.sections.push(s);
    report.target(
        &format!("{n} concurrent creates ({} clients)", o.clients),
        "≤ 3 s",
        format!(
            "{:.2} s (p99 {})",
            create_total.as_secs_f64(),
            ms(create_samples.p99())
        ),
        create_total <= Duration::from_secs(3),
    );
    Ok(())
}

/// 5. `density` idle containers: what each costs the host, and whether
///    create latency stays flat as they pile up.
async fn density(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    let n = o.density;
    eprintln!("==> density: {n} idle containers");
    let pause = || std::thread::sleep(Duration::from_secs(2));
    pause();
    let host_before = memory::host_used();
    let veths_before = memory::veth_count();
    let groved_before = memory::rss(o.groved_pid);
    let helper_before = memory::rss(o.helper_pid);
    let spec = grove::Spec { limits: true };
    let mut latency = Samples::default();
    let mut made = 0;
    let mut failure = None;
    for i in 0..n {
        let t = Instant::now();
        match grove::create(client, &handle("dense", i), spec).await {
            Ok(_) => {
                latency.push(t.elapsed());
                made += 1;
            }
            Err(e) => {
                failure = Some(format!("create {} failed: {e}", i + 1));
                break;
            }
        }
        if (i + 1) % 100 == 0 {
            eprintln!("    {} created, last {}", i + 1, ms(t.elapsed()));
        }
    }
    pause();
    let host_after = memory::host_used();
    let groved_after = memory::rss(o.groved_pid);
    let helper_after = memory::rss(o.helper_pid);
    let (mut wshd_rss, mut wshd_pss, mut wshds) = (0u64, 0u64, 0u64);
    let (mut cg_usage, mut cg_kmem) = (0u64, 0u64);
    for i in 0..made {
        let h = handle("dense", i);
        for pid in memory::cgroup_pids(&o.cgroup_parent, &h) {
            wshd_rss += memory::rss(pid);
            wshd_pss += memory::pss(pid);
            wshds += 1;
        }
        cg_usage += memory::memory_cgroup(&o.cgroup_parent, &h, "memory.usage_in_bytes");
        cg_kmem += memory::memory_cgroup(&o.cgroup_parent, &h, "memory.kmem.usage_in_bytes");
    }
    let start = Instant::now();
    for i in 0..made {
        grove::destroy(client, &handle("dense", i)).await?;
    }
    let destroy_all = start.elapsed();
    // The kernel dismantles the destroyed containers' network namespaces
    // (and their veths) on its own after destroy returns; wait for it, so
    // that what runs next does not share the CPU with that.
    let dismantled = settle(veths_before).await;
    let quieted = quiet().await;
    if let Some(f) = failure {
        return Err(f);
    }
    let per = |bytes: u64| bytes as f64 / n as f64;
    let host_per = per(host_after.saturating_sub(host_before));
    // Medians over the first and the last WINDOW creates: "the 1st" and
    // "the 1,000th" without one scheduling hiccup deciding either.
    const WINDOW: usize = 50;
    let w = WINDOW.min(n / 2);
    let first = latency.slice(0..w);
    let last = latency.slice(n - w..n);
    eprintln!(
        "    host {} per container; create p50 first {w} {}, last {w} {}",
        mib(host_per),
        ms(first.p50()),
        ms(last.p50())
    );
    let mut s = format!(
        "## 5. Density\n\n{n} idle containers (with limits), created one after another.\n\n\
| memory | total | per container |\n|---|---|---|\n"
    );
    let mut line = |what: &str, total: u64| {
        s += &format!("| {what} | {} | {} |\n", mib(total as f64), mib(per(total)));
    };
    line(
        "**host** (MemTotal − MemAvailable, after − before)",
        host_after.saturating_sub(host_before),
    );
    line("wshd RSS (sum)", wshd_rss);
    line("wshd PSS (sum: shared pages split)", wshd_pss);
    line(
        "groved RSS growth",
        groved_after.saturating_sub(groved_before),
    );
    line(
        "grove-helper RSS growth",
        helper_after.saturating_sub(helper_before),
    );
    line("containers' memory cgroups: usage", cg_usage);
    line("containers' memory cgroups: kernel (kmem)", cg_kmem);
    s += &format!(
        "\n{wshds} processes in the containers' cgroups (one wshd each). The host figure is the one that counts: \
it includes what no cgroup is charged for (network namespaces, veths, mounts, the daemons).\n\n\
| create latency | p50 | p99 |\n|---|---|---|\n\
| containers 1–{w} | {} | {} |\n| containers {}–{n} | {} | {} |\n| all {n} | {} | {} |\n\n\
Destroying all {n}: {:.1} s; the kernel had removed their network namespaces {:.1} s later, \
and the machine was idle again (btrfs cleaning up the deleted writable layers) after {:.1} s more.\n",
        ms(first.p50()),
        ms(first.p99()),
        n - w + 1,
        ms(last.p50()),
        ms(last.p99()),
        ms(latency.p50()),
        ms(latency.p99()),
        destroy_all.as_secs_f64(),
        dismantled.as_secs_f64(),
        quieted.as_secs_f64()
    );
    report.sections.push(s);
    // MemAvailable also moves with page cache the kernel drops or keeps
    // meanwhile, so it can undercount: the figure held to the target is
    // the larger of it and what the containers' cgroups are charged.
    let charged_per = per(cg_usage);
    let counted = host_per.max(charged_per);
    report.target(
        "host memory per idle container",
        "≤ 2 MiB",
        format!(
            "{} (the larger of the host's MemAvailable drop, {}, and the containers' memory cgroups, {})",
            mib(counted),
            mib(host_per),
            mib(charged_per)
        ),
        counted <= 2.0 * 1048576.0,
    );
    report.target(
        &format!("create latency at container {n} vs the 1st"),
        "≤ 1.5 ×",
        format!(
            "p50 of the last {w} {} vs the first {w} {} = {} ×",
            ms(last.p50()),
            ms(first.p50()),
            ratio(last.p50(), first.p50())
        ),
        last.p50().as_secs_f64() <= 1.5 * first.p50().as_secs_f64(),
    );
    Ok(())
}

/// 6. stdout throughput: a producer in a container relayed to the `grove`
///    CLI, against the same producer piped into `cat` on the host.
async fn stdout(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    let bytes = o.stdout_bytes;
    let mebibytes = bytes / 1048576;
    eprintln!("==> stdout throughput, {bytes} bytes, best of 3");
    let h = handle("stdout", 0);
    grove::create(client, &h, grove::Spec { limits: false }).await?;
    let busybox = o.rootfs.join("bin/busybox");
    let best = |command: &str| -> Result<Duration, String> {
        let mut best = Duration::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            peers::run(
                std::process::Command::new("/bin/sh")
                    .args(["-c", command])
                    .env("GROVE_SOCKET", &o.socket),
            )?;
            best = best.min(t.elapsed());
        }
        Ok(best)
    };
    let cli = o.grove_cli.display();
    let bb = busybox.display();
    let producers = [
        (
            format!("head -c {bytes} /dev/zero"),
            format!("{bb} head -c {bytes} /dev/zero"),
        ),
        (
            format!("dd if=/dev/zero bs=1M count={mebibytes}"),
            format!("{bb} dd if=/dev/zero bs=1M count={mebibytes} 2>/dev/null"),
        ),
    ];
    let mut rows = String::new();
    let mut dd_ratio = 0.0;
    for (label, host) in &producers {
        let raw = best(&format!("{host} | cat > /dev/null"));
        let grove = best(&format!("{cli} run {h} -- {label} 2>/dev/null > /dev/null"));
        let (raw, grove) = match (raw, grove) {
            (Ok(r), Ok(g)) => (r, g),
            (r, g) => {
                let _ = grove::destroy(client, &h).await;
                return Err(format!("stdout: raw {r:?}, grove {g:?}"));
            }
        };
        let rate = |d: Duration| mebibytes as f64 / d.as_secs_f64();
        let share = raw.as_secs_f64() / grove.as_secs_f64();
        dd_ratio = share;
        eprintln!(
            "    {label}: raw {:.0} MiB/s, grove {:.0} MiB/s",
            rate(raw),
            rate(grove)
        );
        rows += &format!(
            "| `{label}` | {:.3} s, {:.0} MiB/s | {:.3} s, {:.0} MiB/s | {:.0} % |\n",
            raw.as_secs_f64(),
            rate(raw),
            grove.as_secs_f64(),
            rate(grove),
            100.0 * share
        );
    }
    grove::destroy(client, &h).await?;
    report.sections.push(format!(
        "## 6. stdout throughput\n\n{mebibytes} MiB of zeros to stdout. Raw pipe: the producer piped into \
`cat > /dev/null` on the host. Grove: the same producer in a container, relayed through wshd's pipe → \
groved → Cap'n Proto ByteStream → the `grove` CLI → /dev/null. The producer is the rootfs's busybox \
on both sides (busybox `head` writes 4 KiB at a time and is itself the bottleneck; `dd bs=1M` shows \
what the relay costs). Best of 3.\n\n| producer | raw pipe | grove run | grove / raw |\n|---|---|---|---|\n{rows}"
    ));
    report.target(
        "stdout throughput vs a raw pipe (`dd bs=1M`)",
        "≥ 50 %",
        format!("{:.0} %", 100.0 * dd_ratio),
        dd_ratio >= 0.5,
    );
    Ok(())
}

/// 7. `grove run -it` exit latency: from the shell's last output on the
///    terminal to the CLI's exit.
async fn tty_exit(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    let rounds = o.rounds.min(100);
    eprintln!("==> tty: grove run -it exit latency after the shell exits, {rounds} rounds");
    let h = handle("tty", 0);
    grove::create(client, &h, grove::Spec { limits: false }).await?;
    let (cli, socket) = (o.grove_cli.clone(), o.socket.clone());
    let handle = h.clone();
    // Blocking (a pty and a child process): off the runtime's thread.
    let measured =
        tokio::task::spawn_blocking(move || tty::exit_latency(&cli, &socket, &handle, rounds))
            .await
            .map_err(|e| e.to_string())?;
    grove::destroy(client, &h).await?;
    let samples = measured?;
    eprintln!(
        "    grove run -it: p50 {} p99 {}",
        ms(samples.p50()),
        ms(samples.p99())
    );
    let mut s = String::from(
        "## 7. Terminal exit\n\n`grove run -it H /bin/sh` on a pseudo-terminal of its own; the shell is told \
`echo bye-5; exit 3`. Timed from the moment `bye-5` reaches the terminal to the CLI's exit (with \
status 3): the shell's exit, wshd's reaping, groved's answer to wait, and the CLI giving the \
terminal back.\n\n| | rounds | p50 | p99 |\n|---|---|---|---|\n",
    );
    s += &row("`grove run -it` exit", &samples);
    report.sections.push(s);
    Ok(())
}
