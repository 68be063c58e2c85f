//! Soak: a seeded, reproducible random sequence of API operations from 8
//! concurrent clients against one groved, each result checked against a
//! per-client model, then everything destroyed and a full leak check.
//!
//! `GROVE_SOAK_SEED=<n>` runs one seed (decimal or 0x hex), else the
//! default and regression seeds; `GROVE_SOAK_OPS=<n>` sets the number of
//! operations per seed (default 2,000, spread over the 8 clients).
//!
//! What is reproducible: each client's sequence of operations and their
//! arguments derives only from (seed, client index), never from results or
//! timing, so a failing seed replays the same requests. Their interleaving
//! across clients, and so the outcome of the races the soak provokes on
//! purpose, is up to the scheduler.
//!
//! Races: a client's containers are private or shared, by a name anyone can
//! compute (`c<client>s<n>` shared, `c<client>p<n>` private). Other clients
//! run, inspect and destroy shared ones (and two destroys of one container
//! race), so on those the owner also accepts "gone" (containerNotFound and
//! what the API documents for a container destroyed mid-operation). On a
//! private container every result must be exactly the model's. Containers
//! made with a short grace time may be reaped by groved at any idle moment
//! and are treated like shared ones until a setGraceTime(0) pins them.
//!
//! Two races with a destroy were found by this soak and fixed in groved
//! (see `known_race`); they fail it like anything else.
//! `GROVE_SOAK_LENIENT=1` tolerates them again (counted and printed), for
//! bisecting.

use futures::future::join_all;
use grove_client::{
    api, channel_sink, Chunk, Client, Command, Container, ContainerSpec, NetOutRule, Process,
    Signal,
};
use grove_tests::leaks::Baseline;
use grove_tests::*;
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::{Duration, Instant};

/// Seeds run when `GROVE_SOAK_SEED` is unset.
const DEFAULT_SEEDS: &[u64] = &[0x5eed_0001, 0x5eed_0002];

/// Seeds that once failed, kept (after the fix) as regression tests; each
/// names the bug it found. (A seed fixes the requests, not their
/// interleaving: a race a seed found may need a few runs to recur.)
const REGRESSION_SEEDS: &[u64] = &[
    // The soak's own bug: after alreadyDestroying it looked the container
    // up at once, before the other client's destroy had finished.
    5,
    // The soak's own bug: a shared container destroyed by another client
    // right after its create showed no NetIn mapping in the first check,
    // which did not yet allow for the stale view during a destroy.
    3,
    // groved: info and list showed a container being destroyed, half gone
    // (state "active" after a stop, no NetIn mappings); now hidden.
    13,
    // groved: a streamOut that a destroy overtook answered
    // serviceUnavailable ("connection reset by peer"), not
    // containerNotFound. (Clients interleave differently run to run: the
    // seed makes the race likely, not certain.)
    4,
];

const CLIENTS: usize = 8;
const DEFAULT_OPS: usize = 2000;
/// Containers a client holds at most (so ports and addresses never run
/// out: 8 × 4 containers × at most 3 NetIn mappings < the env's 100 ports).
const MAX_LIVE: usize = 4;
const MAX_NET_IN: usize = 3;
/// A hung operation fails the soak instead of hanging it.
const OP_TIMEOUT: Duration = Duration::from_secs(120);

// ------------------------------------------------------------------ PRNG

/// splitmix64: small, fast, and the same on every platform.
struct Rng(u64);

impl Rng {
    fn new(seed: u64, stream: u64) -> Rng {
        let mut r = Rng(seed ^ stream.wrapping_add(1).wrapping_mul(0xd1b5_4a32_d192_ed03));
        r.next();
        r
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn token(&mut self) -> String {
        format!("{:08x}", self.next() as u32)
    }
}

/// Whether client `client`'s `n`-th container is shared: a function of the
/// seed and the name alone, so other clients know which they may touch.
fn is_shared(seed: u64, client: usize, n: u64) -> bool {
    Rng::new(seed ^ 0x5a5a, (client as u64) << 32 | n).below(3) == 0
}

fn handle_of(seed: u64, client: usize, n: u64) -> String {
    let kind = if is_shared(seed, client, n) { 's' } else { 'p' };
    format!("c{client}{kind}{n}")
}

// ----------------------------------------------------------------- model

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Create,
    Destroy,
    DoubleDestroy,
    RunEcho,
    RunExit,
    RunStdin,
    RunSignal,
    RunEnv,
    RunKept,
    Attach,
    Stop,
    Info,
    List,
    LimitMemory,
    LimitPids,
    LimitCpu,
    NetIn,
    NetOut,
    StreamIn,
    StreamOut,
    Property,
    Metrics,
    GraceTime,
    Cross,
}

/// (operation, weight) for a client that has containers.
const WEIGHTS: &[(Op, u64)] = &[
    (Op::Create, 10),
    (Op::Destroy, 6),
    (Op::DoubleDestroy, 1),
    (Op::RunEcho, 7),
    (Op::RunExit, 4),
    (Op::RunStdin, 4),
    (Op::RunSignal, 3),
    (Op::RunEnv, 2),
    (Op::RunKept, 4),
    (Op::Attach, 4),
    (Op::Stop, 2),
    (Op::Info, 5),
    (Op::List, 4),
    (Op::LimitMemory, 3),
    (Op::LimitPids, 3),
    (Op::LimitCpu, 3),
    (Op::NetIn, 3),
    (Op::NetOut, 3),
    (Op::StreamIn, 4),
    (Op::StreamOut, 3),
    (Op::Property, 7),
    (Op::Metrics, 3),
    (Op::GraceTime, 2),
    (Op::Cross, 6),
];

/// A container as its owner believes it is. Every field evolves from the
/// requests made, never from their results, so the sequence of requests
/// stays the same whatever the races did.
struct Cont {
    handle: String,
    /// From create (None if create failed in a documented way, or the
    /// container vanished before its first lookup).
    c: Option<Container>,
    shared: bool,
    /// Made with a short grace time and not pinned since: groved may reap it.
    volatile: bool,
    /// Seen gone (only allowed when shared or volatile); every later
    /// operation must find it gone too.
    gone: bool,
    stopped: bool,
    props: BTreeMap<String, String>,
    env_value: String,
    /// NetIn mappings requested: container ports asked for (0 = same as
    /// the host port); the host ports granted are in `ports`.
    net_in_requests: usize,
    ports: Vec<(u32, u32)>,
    memory: Option<u64>,
    pids: Option<u64>,
    cpu: Option<u64>,
    files: Vec<(String, Vec<u8>)>,
    /// Processes run with their output kept for attach: (id, token).
    kept: Vec<(String, String)>,
    /// A `sleep` left running (its id), for info and stop.
    sleeper: Option<String>,
}

impl Cont {
    fn may_vanish(&self) -> bool {
        self.shared || self.volatile
    }
}

#[derive(Default)]
struct Stats {
    ops: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    created: u64,
    checks: u64,
    /// Failures tolerated because the container was destroyed meanwhile
    /// (`known_race`), by kind, and their messages.
    races: BTreeMap<&'static str, u64>,
    raced: Vec<String>,
}

/// What every client shares: the env, the log, the figures, a stop flag.
struct Shared<'a> {
    env: &'a TestEnv,
    seed: u64,
    log: RefCell<Vec<String>>,
    step: Cell<u64>,
    stats: RefCell<Stats>,
    failed: Cell<bool>,
}

impl Shared<'_> {
    fn log(&self, client: usize, n: usize, line: String) {
        let step = self.step.get();
        self.step.set(step + 1);
        self.log
            .borrow_mut()
            .push(format!("{step:5} c{client}#{n:<4} {line}"));
    }

    fn count_error(&self, e: &grove_client::Error) {
        *self
            .stats
            .borrow_mut()
            .errors
            .entry(e.code.clone())
            .or_default() += 1;
    }
}

type Failure = String;

fn err_text(e: &grove_client::Error) -> String {
    format!("[{}] {}", e.code, e.message)
}

/// The races below fail the soak unless `GROVE_SOAK_LENIENT=1`.
fn strict() -> bool {
    !std::env::var("GROVE_SOAK_LENIENT").is_ok_and(|v| v == "1")
}

/// The races with a destroy this soak found (fixed: groved hides a
/// container being destroyed, and answers containerNotFound to a run that
/// a destroy overtook), tolerated only with `GROVE_SOAK_LENIENT=1` on a
/// shared or volatile container that is then gone:
/// - "stale view": groved keeps answering info and properties for a
///   container while it is being destroyed, from its record, with what the
///   helper has left (no NetIn mappings, state "active" after a stop), and
///   helper-backed calls may already say containerNotFound meanwhile;
/// - "serviceUnavailable": a run (or stream) that reached wshd just as the
///   destroy killed it answers serviceUnavailable ("wshd closed the
///   connection") instead of containerNotFound.
///
/// Any other error code fails the soak.
fn known_race(failure: &str) -> Option<&'static str> {
    const CODES: &[&str] = &[
        "internal",
        "containerNotFound",
        "handleTaken",
        "processNotFound",
        "executableNotFound",
        "invalidSpec",
        "limitExceeded",
        "policyRefused",
        "notImplemented",
        "alreadyDestroying",
        "invalidState",
        "disconnected",
    ];
    if failure.contains("[serviceUnavailable]") {
        Some("serviceUnavailable from a run/stream racing a destroy")
    } else if CODES.iter().any(|c| failure.contains(&format!("[{c}]"))) {
        None
    } else if [
        ": state ",
        ": properties ",
        ": mapped ports ",
        ": running sleeper ",
        "succeeded after the container was seen gone",
    ]
    .iter()
    .any(|p| failure.contains(p))
    {
        Some("stale info/properties of a container being destroyed")
    } else {
        None
    }
}

/// What a result on a container of this client's model means: Some(value)
/// when it succeeded, None when the container is (documented) gone, else
/// the failure. `also` lists other codes the operation may answer here.
fn judge<T>(
    sh: &Shared,
    cont: &mut Cont,
    what: &str,
    r: grove_client::Result<T>,
    also: &[&str],
) -> Result<Option<T>, Failure> {
    match r {
        Ok(_) if cont.gone => Err(format!(
            "{what} on {} succeeded after the container was seen gone",
            cont.handle
        )),
        Ok(v) => Ok(Some(v)),
        Err(e) => {
            sh.count_error(&e);
            if e.is("containerNotFound") && (cont.may_vanish() || cont.gone) {
                cont.gone = true;
                Ok(None)
            } else if also.contains(&e.code.as_str()) {
                Ok(None)
            } else {
                Err(format!("{what} on {}: {}", cont.handle, err_text(&e)))
            }
        }
    }
}

fn check(cond: bool, what: impl FnOnce() -> String) -> Result<(), Failure> {
    if cond {
        Ok(())
    } else {
        Err(what())
    }
}

// ------------------------------------------------------------ raw helpers

async fn create_raw(
    client: &Client,
    spec: &ContainerSpec,
    net_in: Option<u32>,
) -> grove_client::Result<()> {
    let mut request = client.grove.create_request();
    spec.fill(request.get().init_spec());
    if let Some(port) = net_in {
        let mut m = request.get().get_spec()?.init_net_in(1).get(0);
        m.set_host_port(0);
        m.set_container_port(port);
    }
    request.send().promise.await?;
    Ok(())
}

/// Run `command` with output streamed back: (status, stdout).
async fn run_collect(
    c: &Container,
    command: &Command,
    stdin: Option<&[u8]>,
) -> grove_client::Result<(i32, Vec<u8>)> {
    let (out_sink, mut out) = channel_sink();
    let (err_sink, _err) = channel_sink();
    let mut request = c.raw().run_request();
    command
        .fill(request.get().init_spec())
        .expect("a valid command");
    let mut io = request.get().init_io();
    io.set_stdout(out_sink);
    io.set_stderr(err_sink);
    io.set_open_stdin(stdin.is_some());
    let process = request.send().promise.await?.get()?.get_process()?;
    if let Some(data) = stdin {
        let sink = process
            .stdin_request()
            .send()
            .promise
            .await?
            .get()?
            .get_stream()?;
        for chunk in data.chunks(16 * 1024) {
            let mut write = sink.write_request();
            write.get().set_data(chunk);
            write.send().await?;
        }
        sink.done_request().send().promise.await?;
    }
    let status = process
        .wait_request()
        .send()
        .promise
        .await?
        .get()?
        .get_exit_status();
    Ok((status, collect(&mut out)))
}

fn collect(rx: &mut tokio::sync::mpsc::UnboundedReceiver<Chunk>) -> Vec<u8> {
    let mut data = Vec::new();
    while let Ok(chunk) = rx.try_recv() {
        if let Chunk::Data(d) = chunk {
            data.extend(d);
        }
    }
    data
}

/// Attach to process `id` and wait: (status, stdout).
async fn attach_wait(c: &Container, id: &str) -> grove_client::Result<(i32, Vec<u8>)> {
    let (out_sink, mut out) = channel_sink();
    let (err_sink, _err) = channel_sink();
    let mut request = c.raw().attach_request();
    request.get().set_process_id(id);
    let mut io = request.get().init_io();
    io.set_stdout(out_sink);
    io.set_stderr(err_sink);
    let process = request.send().promise.await?.get()?.get_process()?;
    let status = process
        .wait_request()
        .send()
        .promise
        .await?
        .get()?
        .get_exit_status();
    Ok((status, collect(&mut out)))
}

/// Attach to a running process, signal it and wait.
async fn attach_signal(
    c: &Container,
    id: &str,
    signal: Signal,
) -> grove_client::Result<(i32, Vec<u8>)> {
    let (out_sink, mut out) = channel_sink();
    let (err_sink, _err) = channel_sink();
    let mut request = c.raw().attach_request();
    request.get().set_process_id(id);
    let mut io = request.get().init_io();
    io.set_stdout(out_sink);
    io.set_stderr(err_sink);
    let raw = request.send().promise.await?.get()?.get_process()?;
    let mut sig = raw.signal_request();
    sig.get().set_signal(signal.into());
    sig.send().promise.await?;
    let status = raw
        .wait_request()
        .send()
        .promise
        .await?
        .get()?
        .get_exit_status();
    Ok((status, collect(&mut out)))
}

async fn memory_limit(c: &Container) -> grove_client::Result<u64> {
    let r = c
        .raw()
        .current_memory_limits_request()
        .send()
        .promise
        .await?;
    Ok(r.get()?.get_limits()?.get_limit_in_bytes())
}

async fn pid_limit(c: &Container) -> grove_client::Result<u64> {
    let r = c.raw().current_pid_limits_request().send().promise.await?;
    Ok(r.get()?.get_limits()?.get_max())
}

async fn cpu_weight(c: &Container) -> grove_client::Result<u64> {
    let r = c.raw().current_cpu_limits_request().send().promise.await?;
    Ok(r.get()?.get_limits()?.get_weight())
}

/// (memory usage, pids max, age) from metrics.
async fn metrics(c: &Container) -> grove_client::Result<(u64, u64, f64)> {
    let r = c.raw().metrics_request().send().promise.await?;
    let m = r.get()?.get_metrics()?;
    Ok((
        m.get_memory()?.get_usage(),
        m.get_pid()?.get_max(),
        m.get_age_seconds(),
    ))
}

fn signal_status(s: Signal) -> i32 {
    match s {
        Signal::Terminate => -15,
        Signal::Kill => -9,
        Signal::Interrupt => -2,
        Signal::Hangup => -1,
        Signal::Quit => -3,
        Signal::User1 => -10,
        Signal::User2 => -12,
    }
}

fn file_in_tar(tar: &[u8], name: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut archive = tar::Archive::new(tar);
    for entry in archive.entries().ok()? {
        let mut entry = entry.ok()?;
        let path = entry.path().ok()?.to_string_lossy().into_owned();
        if path.trim_start_matches("./") == name {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).ok()?;
            return Some(data);
        }
    }
    None
}

// ---------------------------------------------------------------- client

struct Soaker<'a, 'b> {
    sh: &'b Shared<'a>,
    i: usize,
    client: Client,
    rng: Rng,
    conts: Vec<Cont>,
    /// Handles this client destroyed: list must never show them again.
    destroyed: BTreeSet<String>,
    next: u64,
    n: usize,
}

impl Soaker<'_, '_> {
    fn pick_op(&mut self) -> Op {
        if self.conts.is_empty() {
            return Op::Create;
        }
        let total: u64 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let mut x = self.rng.below(total);
        for (op, w) in WEIGHTS {
            if x < *w {
                return match op {
                    Op::Create if self.conts.len() >= MAX_LIVE => Op::Destroy,
                    op => *op,
                };
            }
            x -= w;
        }
        unreachable!()
    }

    async fn run(mut self, ops: usize) -> Result<(), Failure> {
        for n in 0..ops {
            if self.sh.failed.get() {
                return Ok(());
            }
            self.n = n;
            let op = self.pick_op();
            *self
                .sh
                .stats
                .borrow_mut()
                .ops
                .entry(format!("{op:?}"))
                .or_default() += 1;
            let result = match tokio::time::timeout(OP_TIMEOUT, self.step(op)).await {
                Ok(r) => r,
                Err(_) => Err(format!("{op:?} did not finish in {OP_TIMEOUT:?}")),
            };
            if let Err(e) = result {
                self.sh.log(self.i, n, format!("FAILED {op:?}: {e}"));
                self.sh.failed.set(true);
                return Err(format!("client {} op #{n} {op:?}: {e}", self.i));
            }
        }
        Ok(())
    }

    fn log(&self, line: String) {
        self.sh.log(self.i, self.n, line);
    }

    /// Whether `handle` is (or within 10 s becomes) unknown to groved.
    async fn vanishes(&self, handle: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.client.lookup(handle).await {
                Err(e) if e.is("containerNotFound") => return true,
                _ if Instant::now() > deadline => return false,
                _ => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }

    fn pick(&mut self) -> usize {
        self.rng.below(self.conts.len() as u64) as usize
    }

    async fn step(&mut self, op: Op) -> Result<(), Failure> {
        match op {
            Op::Create => self.create().await,
            Op::Destroy => {
                let k = self.pick();
                self.destroy(k, false).await
            }
            Op::DoubleDestroy => {
                let k = self.pick();
                self.destroy(k, true).await
            }
            Op::Cross => self.cross().await,
            Op::List => self.list().await,
            _ => {
                let k = self.pick();
                let mut result = self.on_container(op, k).await;
                if result.is_ok() {
                    result = self.verify(k).await;
                }
                self.tolerate(k, result).await
            }
        }
    }

    /// A shared or volatile container destroyed in the middle of an
    /// operation may answer with what is left of it (`known_race`): that
    /// is a race, not a failure, if the container is then gone.
    async fn tolerate(&mut self, k: usize, result: Result<(), Failure>) -> Result<(), Failure> {
        let Err(e) = &result else {
            return result;
        };
        let handle = self.conts[k].handle.clone();
        if let Some(kind) = known_race(e).filter(|_| !strict()) {
            if self.conts[k].may_vanish() && self.vanishes(&handle).await {
                self.conts[k].gone = true;
                self.log(format!("tolerated, {handle} was being destroyed: {e}"));
                let mut stats = self.sh.stats.borrow_mut();
                *stats.races.entry(kind).or_default() += 1;
                stats.raced.push(e.clone());
                return Ok(());
            }
        }
        result
    }

    async fn create(&mut self) -> Result<(), Failure> {
        let n = self.next;
        self.next += 1;
        let handle = handle_of(self.sh.seed, self.i, n);
        let r = &mut self.rng;
        let mut props = BTreeMap::new();
        props.insert("owner".to_string(), format!("c{}", self.i));
        for _ in 0..r.below(3) {
            props.insert(format!("k{}", r.below(4)), r.token());
        }
        let memory = r.chance(30).then(|| r.range(32, 256) << 20);
        let pids = r.chance(30).then(|| r.range(32, 256));
        let cpu = r.chance(30).then(|| r.range(2, 100_000));
        let env_value = r.token();
        let net_in = r.chance(25).then(|| r.range(1024, 65535) as u32);
        let volatile = r.chance(10);
        let grace = if volatile {
            r.range(2, 4)
        } else if r.chance(30) {
            600
        } else {
            0
        };
        let net_out = if r.chance(20) {
            let mut rule = NetOutRule::new(api::net_out_rule::Protocol::Tcp);
            rule.ports = vec![(80, 0), (8000, 8080)];
            vec![rule]
        } else {
            Vec::new()
        };
        let spec = ContainerSpec {
            handle: handle.clone(),
            env: vec![format!("SOAK_ENV={env_value}")],
            properties: props.clone().into_iter().collect(),
            grace_time_seconds: (grace > 0).then_some(grace),
            memory_limit_bytes: memory,
            pids_max: pids,
            cpu_weight: cpu,
            net_out,
            ..ContainerSpec::default()
        };
        let cont = Cont {
            handle: handle.clone(),
            c: None,
            shared: is_shared(self.sh.seed, self.i, n),
            volatile,
            gone: false,
            stopped: false,
            props,
            env_value,
            net_in_requests: net_in.is_some() as usize,
            ports: Vec::new(),
            memory,
            pids,
            cpu,
            files: Vec::new(),
            kept: Vec::new(),
            sleeper: None,
        };
        let created = create_raw(&self.client, &spec, net_in).await;
        self.log(format!(
            "create {handle} mem={memory:?} pids={pids:?} cpu={cpu:?} netin={net_in:?} \
             grace={grace} -> {}",
            outcome(&created)
        ));
        if let Err(e) = created {
            self.sh.count_error(&e);
            return Err(format!("create {handle}: {}", err_text(&e)));
        }
        self.sh.stats.borrow_mut().created += 1;
        self.conts.push(cont);
        let k = self.conts.len() - 1;
        let result = self.after_create(k, net_in).await;
        self.tolerate(k, result).await
    }

    /// A capability of our own for a new container, the NetIn port it was
    /// granted, and the first check against the model.
    async fn after_create(&mut self, k: usize, net_in: Option<u32>) -> Result<(), Failure> {
        let sh = self.sh;
        let cont = &mut self.conts[k];
        let handle = cont.handle.clone();
        let looked = self.client.container(&handle).await;
        if let Some(c) = judge(sh, cont, "lookup", looked, &[])? {
            cont.c = Some(c);
        }
        if let (Some(port), Some(c)) = (net_in, cont.c.clone()) {
            if let Some(info) = judge(sh, cont, "info", c.info().await, &[])? {
                check(
                    info.mapped_ports.len() == 1 && info.mapped_ports[0].1 == port,
                    || format!("{handle}: mapped ports {:?}", info.mapped_ports),
                )?;
                cont.ports = info.mapped_ports;
            }
        }
        self.verify(k).await
    }

    async fn destroy(&mut self, k: usize, twice: bool) -> Result<(), Failure> {
        let cont = self.conts.remove(k);
        self.destroyed.insert(cont.handle.clone());
        let (a, b) = if twice {
            let (a, b) = futures::join!(
                self.client.destroy(&cont.handle),
                self.client.destroy(&cont.handle)
            );
            (a, Some(b))
        } else {
            (self.client.destroy(&cont.handle).await, None)
        };
        self.log(format!(
            "destroy {}{} -> {}{}",
            cont.handle,
            if twice { " twice" } else { "" },
            outcome(&a),
            b.as_ref()
                .map(|b| format!(", {}", outcome(b)))
                .unwrap_or_default()
        ));
        let results: Vec<_> = std::iter::once(a).chain(b).collect();
        let oks = results.iter().filter(|r| r.is_ok()).count();
        for e in results.iter().filter_map(|r| r.as_ref().err()) {
            self.sh.count_error(e);
            let allowed = if e.is("alreadyDestroying") {
                twice || cont.shared
            } else if e.is("containerNotFound") {
                twice || cont.may_vanish() || cont.gone
            } else {
                false
            };
            check(allowed, || {
                format!("destroy {}: {}", cont.handle, err_text(e))
            })?;
        }
        // Our own private, pinned container: exactly one destroy wins.
        if !cont.may_vanish() && !cont.gone {
            check(oks == 1, || {
                format!("destroy {}: {oks} of the destroys succeeded", cont.handle)
            })?;
        }
        // Gone for good once our destroy returned ok; after
        // alreadyDestroying, once the other destroy finishes.
        let gone = if oks > 0 {
            let looked = self.client.lookup(&cont.handle).await;
            matches!(&looked, Err(e) if e.is("containerNotFound"))
        } else {
            self.vanishes(&cont.handle).await
        };
        check(gone, || {
            format!("{} is still there after its destroy", cont.handle)
        })?;
        if let Some(c) = &cont.c {
            let r = c.info().await;
            check(matches!(&r, Err(e) if e.is("containerNotFound")), || {
                format!("info of destroyed {}: {:?}", cont.handle, r.err())
            })?;
        }
        Ok(())
    }

    /// An operation on another client's shared container: run, info or
    /// destroy, racing its owner and the others.
    async fn cross(&mut self) -> Result<(), Failure> {
        let other = (self.i + 1 + self.rng.below(CLIENTS as u64 - 1) as usize) % CLIENTS;
        // Somewhere in the range the other client has probably reached.
        let n = self.rng.below(self.next + 3);
        let what = self.rng.below(3);
        let token = self.rng.token();
        let handle = format!("c{other}s{n}");
        if !is_shared(self.sh.seed, other, n) {
            self.log(format!("cross {handle}: not shared, skipped"));
            return Ok(());
        }
        let gone = |e: &grove_client::Error| e.is("containerNotFound") || e.is("alreadyDestroying");
        match what {
            0 => {
                let r = self.client.destroy(&handle).await;
                self.log(format!("cross destroy {handle} -> {}", outcome(&r)));
                if let Err(e) = &r {
                    self.sh.count_error(e);
                    check(gone(e), || {
                        format!("cross destroy {handle}: {}", err_text(e))
                    })?;
                }
            }
            _ => {
                let c = match self.client.container(&handle).await {
                    Ok(c) => c,
                    Err(e) => {
                        self.sh.count_error(&e);
                        self.log(format!("cross lookup {handle} -> {}", err_text(&e)));
                        return check(e.is("containerNotFound"), || {
                            format!("cross lookup {handle}: {}", err_text(&e))
                        });
                    }
                };
                if what == 1 {
                    let r = run_collect(&c, &Command::new("echo", &[&token]), None).await;
                    self.log(format!("cross run {handle} echo -> {}", outcome(&r)));
                    match r {
                        Ok((status, out)) => check(
                            status == 0 && out == format!("{token}\n").as_bytes()
                                // Destroyed while it ran: killed with the container.
                                || status == -9 && format!("{token}\n").as_bytes().starts_with(&out),
                            || format!("cross run {handle}: {status} {out:?}"),
                        )?,
                        Err(e) => {
                            self.sh.count_error(&e);
                            let failure = format!("cross run {handle}: {}", err_text(&e));
                            // Stopped by its owner; destroyed before or while it ran.
                            let documented =
                                gone(&e) || e.is("invalidState") || e.is("processNotFound");
                            let race = known_race(&failure).filter(|_| !strict());
                            match race {
                                Some(kind) if !documented && self.vanishes(&handle).await => {
                                    self.log(format!("tolerated: {failure}"));
                                    let mut stats = self.sh.stats.borrow_mut();
                                    *stats.races.entry(kind).or_default() += 1;
                                    stats.raced.push(failure);
                                }
                                _ => check(documented, || failure)?,
                            }
                        }
                    }
                } else {
                    let r = c.info().await;
                    self.log(format!("cross info {handle} -> {}", outcome(&r)));
                    match r {
                        Ok(info) => check(
                            info.properties
                                .contains(&("owner".to_string(), format!("c{other}"))),
                            || format!("cross info {handle}: {:?}", info.properties),
                        )?,
                        Err(e) => {
                            self.sh.count_error(&e);
                            check(e.is("containerNotFound"), || {
                                format!("cross info {handle}: {}", err_text(&e))
                            })?
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn list(&mut self) -> Result<(), Failure> {
        let me = format!("c{}", self.i);
        let mut filter = vec![("owner".to_string(), me.clone())];
        // Sometimes AND a property one of our containers has.
        if self.rng.chance(50) {
            let k = self.pick();
            let props: Vec<_> = self.conts[k].props.clone().into_iter().collect();
            let p = props[self.rng.below(props.len() as u64) as usize].clone();
            if p.0 != "owner" {
                filter.push(p);
            }
        }
        let all = self.rng.chance(30);
        let r = if all {
            self.client.list(&[]).await
        } else {
            self.client.list(&filter).await
        };
        self.log(format!(
            "list {} -> {}",
            if all {
                "all".to_string()
            } else {
                format!("{filter:?}")
            },
            match &r {
                Ok(h) => format!("{} handles", h.len()),
                Err(e) => err_text(e),
            }
        ));
        let handles: BTreeSet<String> = r
            .map_err(|e| format!("list: {}", err_text(&e)))?
            .into_iter()
            .collect();
        let matches = |c: &Cont| all || filter.iter().all(|(k, v)| c.props.get(k) == Some(v));
        for c in &self.conts {
            // Our pinned private containers that match are listed.
            if !c.may_vanish() && !c.gone && matches(c) {
                check(handles.contains(&c.handle), || {
                    format!("list {filter:?} lacks {} ({:?})", c.handle, c.props)
                })?;
            }
            if c.gone {
                check(!handles.contains(&c.handle), || {
                    format!("list shows {}, seen gone", c.handle)
                })?;
            }
        }
        for h in &handles {
            check(!self.destroyed.contains(h), || {
                format!("list shows {h}, destroyed by this client")
            })?;
            if !all {
                // Only ours (owner filter), and only ones that match.
                let c = self.conts.iter().find(|c| &c.handle == h);
                check(c.is_some_and(&matches), || {
                    format!("list {filter:?} shows {h}, which is not ours or does not match")
                })?;
            }
        }
        Ok(())
    }

    /// After every operation on one of our containers: its info matches
    /// the model (state, properties, NetIn mappings, address, processes).
    async fn verify(&mut self, k: usize) -> Result<(), Failure> {
        let sh = self.sh;
        let env = sh.env;
        let cont = &mut self.conts[k];
        let Some(c) = cont.c.clone() else {
            return Ok(());
        };
        sh.stats.borrow_mut().checks += 1;
        let Some(info) = judge(sh, cont, "info", c.info().await, &[])? else {
            return Ok(());
        };
        let h = &cont.handle;
        let want_state = if cont.stopped { "stopped" } else { "active" };
        check(info.state == want_state, || {
            format!("{h}: state {} (model {want_state})", info.state)
        })?;
        let props: BTreeMap<_, _> = info.properties.iter().cloned().collect();
        check(props == cont.props, || {
            format!("{h}: properties {props:?} (model {:?})", cont.props)
        })?;
        let mut ports = info.mapped_ports.clone();
        ports.sort();
        let mut want = cont.ports.clone();
        want.sort();
        check(ports == want, || {
            format!("{h}: mapped ports {ports:?} (model {want:?})")
        })?;
        let ip: Option<std::net::Ipv4Addr> = info.container_ip.parse().ok();
        check(ip.is_some_and(|ip| env.in_pool(ip)), || {
            format!("{h}: address {:?} outside the pool", info.container_ip)
        })?;
        check(info.host_ip == env.gateway.to_string(), || {
            format!("{h}: host ip {}", info.host_ip)
        })?;
        if let Some(id) = cont.sleeper.as_ref().filter(|id| !id.is_empty()) {
            check(info.process_ids.contains(id), || {
                format!("{h}: running sleeper {id} not in {:?}", info.process_ids)
            })?;
        }
        // (A stopped container's list may still name a process that
        // stop(kill) signalled but whose exit is not yet in: not checked.)
        Ok(())
    }

    async fn on_container(&mut self, op: Op, k: usize) -> Result<(), Failure> {
        let sh = self.sh;
        let env = sh.env;
        let r = &mut self.rng;
        let token = r.token();
        let cont = &mut self.conts[k];
        let h = cont.handle.clone();
        let Some(c) = cont.c.clone() else {
            // Vanished before we looked it up: nothing to call it on.
            self.sh.log(self.i, self.n, format!("{op:?} {h}: skipped"));
            return Ok(());
        };
        // run on a stopped container is invalidState (README); a process
        // whose container was destroyed meanwhile is processNotFound.
        let run_also: &[&str] = if cont.stopped {
            &["invalidState"]
        } else if cont.may_vanish() {
            &["processNotFound"]
        } else {
            &[]
        };
        let stopped_must_fail = |cont: &Cont, got: bool| -> Result<(), Failure> {
            check(!(cont.stopped && got && !cont.gone), || {
                format!("run on stopped {} succeeded", cont.handle)
            })
        };
        let line: String;
        match op {
            Op::RunEcho => {
                let res = run_collect(&c, &Command::new("echo", &[&token]), None).await;
                line = format!("run {h} echo {token} -> {}", outcome(&res));
                if let Some((status, out)) = judge(sh, cont, "run echo", res, run_also)? {
                    stopped_must_fail(cont, true)?;
                    check(
                        status == 0 && out == format!("{token}\n").as_bytes(),
                        || format!("{h}: echo gave {status} {out:?}"),
                    )?;
                }
            }
            Op::RunExit => {
                let code = r.below(256) as i32;
                let res = run_collect(
                    &c,
                    &Command::new("sh", &["-c", &format!("exit {code}")]),
                    None,
                )
                .await;
                line = format!("run {h} exit {code} -> {}", outcome(&res));
                if let Some((status, _)) = judge(sh, cont, "run exit", res, run_also)? {
                    stopped_must_fail(cont, true)?;
                    check(status == code, || format!("{h}: exit {code} gave {status}"))?;
                }
            }
            Op::RunStdin => {
                let len = r.range(0, 200_000) as usize;
                let data: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                let res = run_collect(&c, &Command::new("cat", &[]), Some(&data)).await;
                line = format!("run {h} cat <{len} bytes> -> {}", outcome(&res));
                if let Some((status, out)) = judge(sh, cont, "run cat", res, run_also)? {
                    stopped_must_fail(cont, true)?;
                    check(status == 0 && out == data, || {
                        format!("{h}: cat gave {status}, {} of {len} bytes", out.len())
                    })?;
                }
            }
            Op::RunEnv => {
                let mut command = Command::new("sh", &["-c", "echo $SOAK_ENV $SOAK_RUN"]);
                command.env = vec![format!("SOAK_RUN={token}")];
                let res = run_collect(&c, &command, None).await;
                line = format!("run {h} env -> {}", outcome(&res));
                if let Some((status, out)) = judge(sh, cont, "run env", res, run_also)? {
                    stopped_must_fail(cont, true)?;
                    let want = format!("{} {token}\n", cont.env_value);
                    check(status == 0 && out == want.as_bytes(), || {
                        format!("{h}: env gave {status} {:?}", String::from_utf8_lossy(&out))
                    })?;
                }
            }
            Op::RunSignal => {
                let signal = [
                    Signal::Terminate,
                    Signal::Kill,
                    Signal::Interrupt,
                    Signal::User1,
                ][r.below(4) as usize];
                // Half the time the sleep is left running instead, for
                // info's process list and for stop; one at a time.
                if cont.sleeper.is_none() && r.chance(50) {
                    let res = c.run(&Command::new("sleep", &["1000"])).await;
                    line = format!("run {h} sleep (kept) -> {}", outcome(&res));
                    if let Some(p) = judge(sh, cont, "run sleep", res, run_also)? {
                        stopped_must_fail(cont, true)?;
                        cont.sleeper = Some(p.id().to_string());
                    }
                    // The model keeps what was asked for.
                    if !cont.stopped {
                        cont.sleeper.get_or_insert_with(String::new);
                    }
                } else if let Some(id) = cont.sleeper.take().filter(|id| !id.is_empty()) {
                    let res = attach_signal(&c, &id, signal).await;
                    line = format!("attach {h} {id} + {signal:?} -> {}", outcome(&res));
                    if let Some((status, _)) = judge(sh, cont, "attach+signal", res, run_also)? {
                        check(status == signal_status(signal), || {
                            format!("{h}: sleeper after {signal:?}: {status}")
                        })?;
                    }
                } else {
                    let res = start_signal(&c, signal).await;
                    line = format!("run {h} sleep + {signal:?} -> {}", outcome(&res));
                    if let Some(status) = judge(sh, cont, "run+signal", res, run_also)? {
                        stopped_must_fail(cont, true)?;
                        check(status == signal_status(signal), || {
                            format!("{h}: sleep after {signal:?}: {status}")
                        })?;
                    }
                }
            }
            Op::RunKept => {
                let res = c.run(&Command::new("echo", &[&token])).await;
                line = format!("run {h} echo {token} (kept) -> {}", outcome(&res));
                if let Some(p) = judge(sh, cont, "run kept", res, run_also)? {
                    stopped_must_fail(cont, true)?;
                    cont.kept.push((p.id().to_string(), token.clone()));
                }
            }
            Op::Attach => {
                if cont.kept.is_empty() {
                    let res = attach_wait(&c, &format!("none-{token}")).await;
                    line = format!("attach {h} unknown -> {}", outcome(&res));
                    if let Some(v) = judge(sh, cont, "attach unknown", res, &["processNotFound"])? {
                        return Err(format!("{h}: attach to an unknown id gave {v:?}"));
                    }
                } else {
                    let (id, token) = cont.kept.remove(0);
                    let res = attach_wait(&c, &id).await;
                    line = format!("attach {h} {id} -> {}", outcome(&res));
                    let also: &[&str] = if cont.may_vanish() {
                        &["processNotFound"]
                    } else {
                        &[]
                    };
                    if let Some((status, out)) = judge(sh, cont, "attach", res, also)? {
                        check(
                            status == 0 && out == format!("{token}\n").as_bytes(),
                            || format!("{h}: attach {id} gave {status} {out:?}"),
                        )?;
                    }
                }
            }
            Op::Stop => {
                let kill = r.chance(50);
                let res = c.stop(kill).await;
                line = format!("stop {h} kill={kill} -> {}", outcome(&res));
                // A second stop of a stopped container is allowed.
                judge(sh, cont, "stop", res, &[])?;
                cont.stopped = true;
                cont.sleeper = None;
                // Kept processes may have been killed: forget them.
                cont.kept.clear();
            }
            Op::Info => {
                // verify() does the checking.
                line = format!("info {h}");
            }
            Op::LimitMemory => {
                let bytes = r.range(32, 256) << 20;
                let mut req = c.raw().limit_memory_request();
                req.get().init_limits().set_limit_in_bytes(bytes);
                let res = req.send().promise.await.map(drop).map_err(Into::into);
                line = format!("limit {h} memory {bytes} -> {}", outcome(&res));
                if judge(sh, cont, "limitMemory", res, &[])?.is_some() {
                    cont.memory = Some(bytes);
                }
                if let Some(want) = cont.memory {
                    if let Some(got) =
                        judge(sh, cont, "currentMemory", memory_limit(&c).await, &[])?
                    {
                        check(got == want, || {
                            format!("{h}: memory limit {got}, set {want}")
                        })?;
                    }
                }
            }
            Op::LimitPids => {
                let max = r.range(32, 256);
                let mut req = c.raw().limit_pids_request();
                req.get().init_limits().set_max(max);
                let res = req.send().promise.await.map(drop).map_err(Into::into);
                line = format!("limit {h} pids {max} -> {}", outcome(&res));
                if judge(sh, cont, "limitPids", res, &[])?.is_some() {
                    cont.pids = Some(max);
                }
                if let Some(want) = cont.pids {
                    if let Some(got) = judge(sh, cont, "currentPids", pid_limit(&c).await, &[])? {
                        check(got == want, || format!("{h}: pids limit {got}, set {want}"))?;
                    }
                }
            }
            Op::LimitCpu => {
                let weight = r.range(2, 100_000);
                let mut req = c.raw().limit_cpu_request();
                req.get().init_limits().set_weight(weight);
                let res = req.send().promise.await.map(drop).map_err(Into::into);
                line = format!("limit {h} cpu {weight} -> {}", outcome(&res));
                if judge(sh, cont, "limitCpu", res, &[])?.is_some() {
                    cont.cpu = Some(weight);
                }
                if let Some(want) = cont.cpu {
                    if let Some(got) = judge(sh, cont, "currentCpu", cpu_weight(&c).await, &[])? {
                        check(got == want, || format!("{h}: cpu weight {got}, set {want}"))?;
                    }
                }
            }
            Op::NetIn => {
                let port = if r.chance(30) {
                    0
                } else {
                    r.range(1024, 65535) as u32
                };
                if cont.net_in_requests >= MAX_NET_IN {
                    line = format!("netIn {h}: enough mappings, skipped");
                } else {
                    cont.net_in_requests += 1;
                    let res = c.net_in(0, port).await;
                    line = format!("netIn {h} 0:{port} -> {}", outcome(&res));
                    if let Some((hp, cp)) = judge(sh, cont, "netIn", res, &[])? {
                        check(
                            (env.ports.0 as u32..=env.ports.1 as u32).contains(&hp),
                            || format!("{h}: host port {hp} outside {:?}", env.ports),
                        )?;
                        let want = if port == 0 { hp } else { port };
                        check(cp == want, || {
                            format!("{h}: container port {cp}, want {want}")
                        })?;
                        cont.ports.push((hp, cp));
                    }
                }
            }
            Op::NetOut => {
                let rule = match r.below(3) {
                    0 => {
                        let mut rule = NetOutRule::new(api::net_out_rule::Protocol::Tcp);
                        rule.networks = vec![("10.1.2.3".into(), "10.1.2.9".into())];
                        rule.ports = vec![(r.range(1, 65535) as u16, 0)];
                        rule
                    }
                    1 => {
                        let mut rule = NetOutRule::new(api::net_out_rule::Protocol::Icmp);
                        rule.icmp = Some((8, None));
                        rule
                    }
                    _ => {
                        let mut rule = NetOutRule::new(api::net_out_rule::Protocol::Udp);
                        rule.networks = vec![(env.gateway.to_string(), String::new())];
                        rule.ports = vec![(53, 0)];
                        rule
                    }
                };
                let res = c.net_out(std::slice::from_ref(&rule)).await;
                line = format!("netOut {h} {:?} -> {}", rule.protocol, outcome(&res));
                judge(sh, cont, "netOut", res, &[])?;
            }
            Op::StreamIn => {
                let name = format!("f{}", r.token());
                let len = r.range(0, 64 * 1024) as usize;
                let data: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
                let res = c.stream_in("/soak", "", &tar_of(&name, &data)).await;
                line = format!(
                    "streamIn {h} /soak/{name} <{len} bytes> -> {}",
                    outcome(&res)
                );
                judge(sh, cont, "streamIn", res, &[])?;
                cont.files.push((name, data));
            }
            Op::StreamOut => {
                if cont.files.is_empty() {
                    let res = c.stream_out("/etc/passwd", "").await;
                    line = format!("streamOut {h} /etc/passwd -> {}", outcome(&res));
                    if let Some(tar) = judge(sh, cont, "streamOut", res, &[])? {
                        check(
                            file_in_tar(&tar, "passwd").is_some_and(|d| d.starts_with(b"root:")),
                            || format!("{h}: streamOut /etc/passwd gave no passwd"),
                        )?;
                    }
                } else {
                    let f = r.below(cont.files.len() as u64) as usize;
                    let (name, data) = cont.files[f].clone();
                    let res = c.stream_out(&format!("/soak/{name}"), "").await;
                    line = format!("streamOut {h} /soak/{name} -> {}", outcome(&res));
                    if let Some(tar) = judge(sh, cont, "streamOut", res, &[])? {
                        let got = file_in_tar(&tar, &name);
                        check(got.as_deref() == Some(&data[..]), || {
                            format!(
                                "{h}: streamOut {name}: {:?} bytes, streamed in {}",
                                got.map(|g| g.len()),
                                data.len()
                            )
                        })?;
                    }
                }
            }
            Op::Property => {
                let key = format!("k{}", r.below(4));
                match r.below(3) {
                    0 => {
                        let res = c.set_property(&key, &token).await;
                        line = format!("setProperty {h} {key}={token} -> {}", outcome(&res));
                        judge(sh, cont, "setProperty", res, &[])?;
                        cont.props.insert(key, token.clone());
                    }
                    1 => {
                        let res = c.property(&key).await;
                        line = format!("property {h} {key} -> {}", outcome(&res));
                        let want = cont.props.get(&key).cloned();
                        let also: &[&str] = if want.is_none() {
                            &["invalidSpec"]
                        } else {
                            &[]
                        };
                        let got = judge(sh, cont, "property", res, also)?;
                        if !cont.gone {
                            check(got == want, || {
                                format!("{h}: property {key} is {got:?}, model {want:?}")
                            })?;
                        }
                    }
                    _ => {
                        let res = c.remove_property(&key).await;
                        line = format!("removeProperty {h} {key} -> {}", outcome(&res));
                        let had = cont.props.remove(&key).is_some();
                        let also: &[&str] = if had { &[] } else { &["invalidSpec"] };
                        let got = judge(sh, cont, "removeProperty", res, also)?;
                        check(got.is_none() || had, || {
                            format!("{h}: removing absent {key} succeeded")
                        })?;
                    }
                }
            }
            Op::Metrics => {
                let res = metrics(&c).await;
                line = format!("metrics {h} -> {}", outcome(&res));
                if let Some((usage, pids_max, age)) = judge(sh, cont, "metrics", res, &[])? {
                    check(usage > 0 && age >= 0.0, || {
                        format!("{h}: metrics usage {usage} age {age}")
                    })?;
                    if let Some(want) = cont.pids {
                        check(pids_max == want, || {
                            format!("{h}: metrics pids max {pids_max}, set {want}")
                        })?;
                    }
                }
            }
            Op::GraceTime => {
                // Never a short one: that would make a pinned container
                // vanish at random. 0 pins a volatile one.
                let seconds = if r.chance(50) { 0 } else { 600 };
                let res = c.set_grace_time(seconds).await;
                line = format!("setGraceTime {h} {seconds} -> {}", outcome(&res));
                if judge(sh, cont, "setGraceTime", res, &[])?.is_some() {
                    cont.volatile = false;
                }
            }
            Op::Create | Op::Destroy | Op::DoubleDestroy | Op::List | Op::Cross => unreachable!(),
        }
        self.sh.log(self.i, self.n, line);
        Ok(())
    }
}

/// Run `sleep`, signal it, wait: the status.
async fn start_signal(c: &Container, signal: Signal) -> grove_client::Result<i32> {
    let p: Process = c.run(&Command::new("sleep", &["1000"])).await?;
    p.signal(signal).await?;
    p.wait().await
}

fn outcome<T>(r: &grove_client::Result<T>) -> String {
    match r {
        Ok(_) => "ok".to_string(),
        Err(e) => format!("[{}]", e.code),
    }
}

// ------------------------------------------------------------------- test

struct Report {
    seed: u64,
    ops: usize,
    stats: Stats,
    wall: Duration,
    leaks: usize,
}

fn soak_one(seed: u64, ops: usize) -> Report {
    let env = TestEnv::start();
    let baseline = Baseline::take(&env);
    assert!(baseline.env.is_empty(), "fresh env: {:?}", baseline.env);
    let shared = Shared {
        env: &env,
        seed,
        log: RefCell::new(Vec::new()),
        step: Cell::new(0),
        stats: RefCell::new(Stats::default()),
        failed: Cell::new(false),
    };
    println!("soak: seed {seed:#x}, {ops} operations, {CLIENTS} clients");
    let started = Instant::now();
    let sh = &shared;
    let failures: Vec<Failure> = block_on(async move {
        let clients = join_all((0..CLIENTS).map(|_| env_connect(sh.env))).await;
        let per_client = ops.div_ceil(CLIENTS);
        let soakers = clients.into_iter().enumerate().map(|(i, client)| Soaker {
            sh,
            i,
            client,
            rng: Rng::new(seed, i as u64),
            conts: Vec::new(),
            destroyed: BTreeSet::new(),
            next: 0,
            n: 0,
        });
        let results = join_all(soakers.map(|s| s.run(per_client))).await;
        let mut failures: Vec<Failure> = results.into_iter().filter_map(|r| r.err()).collect();
        // Destroy what is left (volatile ones may go on their own meanwhile).
        let client = sh.env.connect().await;
        match client.list(&[]).await {
            Ok(handles) => {
                for h in handles {
                    if let Err(e) = client.destroy(&h).await {
                        if !e.is("containerNotFound") {
                            failures.push(format!("final destroy {h}: {}", err_text(&e)));
                        }
                    }
                }
                match client.list(&[]).await {
                    Ok(left) if left.is_empty() => {}
                    other => failures.push(format!("after the final destroys: {other:?}")),
                }
            }
            Err(e) => failures.push(format!("final list: {}", err_text(&e))),
        }
        failures
    });
    let wall = started.elapsed();
    if !failures.is_empty() {
        let log = shared.log.borrow();
        let tail = &log[log.len().saturating_sub(400)..];
        panic!(
            "soak seed {seed:#x} failed (replay: GROVE_SOAK_SEED={seed:#x} GROVE_SOAK_OPS={ops} \
             cargo test --test soak -- --nocapture):\n  {}\n--- last {} of {} operations\n{}\n{}",
            failures.join("\n  "),
            tail.len(),
            log.len(),
            tail.join("\n"),
            env.logs()
        );
    }
    let leaks = grove_tests::leaks::wait_for_no_leaks(&env, grove_tests::leaks::SETTLE);
    let host = baseline.leaks(&env);
    let report = Report {
        seed,
        ops,
        stats: shared.stats.into_inner(),
        wall,
        leaks: leaks.len() + host.len(),
    };
    print_report(&report);
    assert!(
        leaks.is_empty() && host.is_empty(),
        "soak seed {seed:#x}: leaks after destroying everything:\n  {}\n{}",
        leaks
            .iter()
            .chain(&host)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n  "),
        env.logs()
    );
    report
}

async fn env_connect(env: &TestEnv) -> Client {
    env.connect().await
}

fn print_report(r: &Report) {
    let mut s = String::new();
    let total: u64 = r.stats.ops.values().sum();
    let _ = writeln!(
        s,
        "soak seed {:#x}: {total} operations ({} asked) in {:.1} s, {} containers created, \
         {} model checks, {} leaks",
        r.seed,
        r.ops,
        r.wall.as_secs_f64(),
        r.stats.created,
        r.stats.checks,
        r.leaks
    );
    let ops: Vec<String> = r
        .stats
        .ops
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(s, "  by kind: {}", ops.join(", "));
    let errors: Vec<String> = r
        .stats
        .errors
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect();
    let _ = writeln!(
        s,
        "  errors by code (all expected): {}",
        if errors.is_empty() {
            "none".to_string()
        } else {
            errors.join(", ")
        }
    );
    let _ = writeln!(
        s,
        "  results tolerated as races with a destroy: {}",
        r.stats.raced.len()
    );
    for (kind, count) in &r.stats.races {
        let _ = writeln!(s, "    {kind}: {count}");
    }
    for e in r.stats.raced.iter().take(3) {
        let _ = writeln!(s, "    e.g. {e}");
    }
    print!("{s}");
}

fn parse_seed(s: &str) -> u64 {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => s.parse(),
    }
    .unwrap_or_else(|e| panic!("GROVE_SOAK_SEED={s:?}: {e}"))
}

#[test]
fn soak() {
    let seeds: Vec<u64> = match std::env::var("GROVE_SOAK_SEED") {
        Ok(s) if !s.trim().is_empty() => vec![parse_seed(&s)],
        _ => DEFAULT_SEEDS
            .iter()
            .chain(REGRESSION_SEEDS)
            .copied()
            .collect(),
    };
    let ops = std::env::var("GROVE_SOAK_OPS")
        .ok()
        .map(|s| s.trim().parse().expect("GROVE_SOAK_OPS is a number"))
        .unwrap_or(DEFAULT_OPS);
    let started = Instant::now();
    let reports: Vec<Report> = seeds.iter().map(|seed| soak_one(*seed, ops)).collect();
    let total: u64 = reports.iter().flat_map(|r| r.stats.ops.values()).sum();
    println!(
        "soak: {} seed(s) {:x?}, {total} operations, {} leaks, {:.1} s",
        reports.len(),
        seeds,
        reports.iter().map(|r| r.leaks).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    assert!(total >= (ops * seeds.len()) as u64 / 2);
}

#[test]
fn the_prng_is_reproducible() {
    // The same (seed, client) gives the same stream; clients differ.
    let a: Vec<u64> = (0..5)
        .map({
            let mut r = Rng::new(42, 3);
            move |_| r.next()
        })
        .collect();
    let b: Vec<u64> = (0..5)
        .map({
            let mut r = Rng::new(42, 3);
            move |_| r.next()
        })
        .collect();
    let c: Vec<u64> = (0..5)
        .map({
            let mut r = Rng::new(42, 4);
            move |_| r.next()
        })
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(handle_of(42, 1, 7), handle_of(42, 1, 7));
}
