//! groved's metrics, in Prometheus's text exposition format (0.0.4),
//! served by metrics_http.rs when `metrics_listen` is set (off by default).
//!
//! Counters are kept where what they count happens: creates, destroys,
//! processes started and OOM kills in containers.rs, bytes read from
//! registries in registry.rs. Gauges (containers by state, processes,
//! requests waiting for grove-helper, groved's own memory) are read at
//! each scrape. groved serves from one thread, so the counters are plain
//! cells; the registry's byte count is an atomic (pulls run on blocking
//! threads).

use std::cell::{Cell, RefCell};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::time::Duration;

/// Upper bounds (seconds) of the create and destroy latency buckets: a
/// create from a local rootfs takes tens of milliseconds, one that pulls
/// an image minutes.
const LATENCY_BUCKETS: [f64; 12] = [
    0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// How an operation ended, as its `result` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Error,
}

impl Outcome {
    const ALL: [Outcome; 2] = [Outcome::Ok, Outcome::Error];

    fn label(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
        }
    }
}

/// A latency histogram with Prometheus's cumulative buckets.
#[derive(Default)]
struct Histogram {
    /// Observations at most `LATENCY_BUCKETS[i]` and above the bucket
    /// before (made cumulative when rendered).
    buckets: [Cell<u64>; LATENCY_BUCKETS.len()],
    count: Cell<u64>,
    sum: Cell<f64>,
}

impl Histogram {
    fn observe(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS.iter().position(|&le| seconds <= le) {
            self.buckets[i].set(self.buckets[i].get() + 1);
        }
        self.count.set(self.count.get() + 1);
        self.sum.set(self.sum.get() + seconds);
    }
}

/// An operation counted and timed by its outcome (creates, destroys).
#[derive(Default)]
pub struct Timed {
    ok: Histogram,
    error: Histogram,
}

impl Timed {
    pub fn observe(&self, outcome: Outcome, took: Duration) {
        self.of(outcome).observe(took);
    }

    fn of(&self, outcome: Outcome) -> &Histogram {
        match outcome {
            Outcome::Ok => &self.ok,
            Outcome::Error => &self.error,
        }
    }
}

/// groved's counters, one set for its life.
pub struct Metrics {
    pub creates: Timed,
    pub destroys: Timed,
    processes_started: Cell<u64>,
    oom_kills: Cell<u64>,
    /// /proc/self/statm, opened before groved confines itself (Landlock
    /// then refuses to open it) and read again from its start each scrape.
    statm: Option<RefCell<File>>,
    page_size: u64,
}

impl Metrics {
    /// Call it before groved confines itself (see `statm`).
    pub fn new() -> Metrics {
        // SAFETY: sysconf only reads a system value.
        let page_size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        Metrics {
            creates: Timed::default(),
            destroys: Timed::default(),
            processes_started: Cell::new(0),
            oom_kills: Cell::new(0),
            statm: File::open("/proc/self/statm").ok().map(RefCell::new),
            page_size: u64::try_from(page_size).unwrap_or(4096),
        }
    }

    pub fn process_started(&self) {
        self.processes_started.set(self.processes_started.get() + 1);
    }

    /// `kills` more OOM kills were seen in a container.
    pub fn oom_killed(&self, kills: u64) {
        self.oom_kills.set(self.oom_kills.get() + kills);
    }

    /// groved's virtual and resident memory, in bytes.
    fn memory(&self) -> Option<(u64, u64)> {
        let mut file = self.statm.as_ref()?.borrow_mut();
        file.seek(SeekFrom::Start(0)).ok()?;
        let mut text = String::new();
        file.read_to_string(&mut text).ok()?;
        let (size, resident) = parse_statm(&text)?;
        Some((size * self.page_size, resident * self.page_size))
    }
}

/// The first two fields of /proc/<pid>/statm: total and resident pages.
fn parse_statm(text: &str) -> Option<(u64, u64)> {
    let mut fields = text.split_whitespace().map(|f| f.parse::<u64>().ok());
    Some((fields.next()??, fields.next()??))
}

/// What a scrape reads from the rest of groved at that moment.
pub struct Gauges {
    /// Containers by state name (`creating`, `active`, ...).
    pub containers: Vec<(&'static str, u64)>,
    pub processes_running: u64,
    /// Processes that exited and are kept for late `wait` and `attach`.
    pub processes_exited: u64,
    pub helper_in_flight: u64,
    pub helper_queue_limit: u64,
    /// Bytes read from registries (registry.rs).
    pub pull_bytes: u64,
}

/// One metric family's header.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, help: &str, timed: &Timed) {
    family(out, name, "histogram", help);
    for outcome in Outcome::ALL {
        let h = timed.of(outcome);
        let result = outcome.label();
        let mut cumulative = 0;
        for (le, bucket) in LATENCY_BUCKETS.iter().zip(&h.buckets) {
            cumulative += bucket.get();
            let _ = writeln!(
                out,
                "{name}_bucket{{result=\"{result}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_bucket{{result=\"{result}\",le=\"+Inf\"}} {}",
            h.count.get()
        );
        let _ = writeln!(out, "{name}_sum{{result=\"{result}\"}} {}", h.sum.get());
        let _ = writeln!(out, "{name}_count{{result=\"{result}\"}} {}", h.count.get());
    }
}

fn counter_by_result(out: &mut String, name: &str, help: &str, timed: &Timed) {
    family(out, name, "counter", help);
    for outcome in Outcome::ALL {
        let _ = writeln!(
            out,
            "{name}{{result=\"{}\"}} {}",
            outcome.label(),
            timed.of(outcome).count.get()
        );
    }
}

/// The exposition text of one scrape.
pub fn render(metrics: &Metrics, gauges: &Gauges) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "grove_containers",
        "gauge",
        "Containers groved holds, by state.",
    );
    for (state, n) in &gauges.containers {
        let _ = writeln!(out, "grove_containers{{state=\"{state}\"}} {n}");
    }
    counter_by_result(
        &mut out,
        "grove_container_creates_total",
        "Container creates answered, by result.",
        &metrics.creates,
    );
    histogram(
        &mut out,
        "grove_container_create_duration_seconds",
        "Time from a create request to its answer (an image pull included), by result.",
        &metrics.creates,
    );
    counter_by_result(
        &mut out,
        "grove_container_destroys_total",
        "Container destroys answered, by result (grace-time expiries included).",
        &metrics.destroys,
    );
    histogram(
        &mut out,
        "grove_container_destroy_duration_seconds",
        "Time from a destroy request to its answer, by result.",
        &metrics.destroys,
    );
    family(
        &mut out,
        "grove_processes",
        "gauge",
        "Processes groved tracks: running, or exited and kept for a late wait or attach.",
    );
    let _ = writeln!(
        out,
        "grove_processes{{state=\"running\"}} {}",
        gauges.processes_running
    );
    let _ = writeln!(
        out,
        "grove_processes{{state=\"exited\"}} {}",
        gauges.processes_exited
    );
    family(
        &mut out,
        "grove_processes_started_total",
        "counter",
        "Processes started in containers.",
    );
    let _ = writeln!(
        out,
        "grove_processes_started_total {}",
        metrics.processes_started.get()
    );
    family(
        &mut out,
        "grove_oom_kills_total",
        "counter",
        "Processes the kernel's OOM killer killed in containers, as groved saw them.",
    );
    let _ = writeln!(out, "grove_oom_kills_total {}", metrics.oom_kills.get());
    family(
        &mut out,
        "grove_pull_bytes_total",
        "counter",
        "Image bytes read from registries.",
    );
    let _ = writeln!(out, "grove_pull_bytes_total {}", gauges.pull_bytes);
    family(
        &mut out,
        "grove_helper_requests_in_flight",
        "gauge",
        "Requests sent to grove-helper or waiting to be (its queue depth).",
    );
    let _ = writeln!(
        out,
        "grove_helper_requests_in_flight {}",
        gauges.helper_in_flight
    );
    family(
        &mut out,
        "grove_helper_queue_limit",
        "gauge",
        "helper_queue_limit: past it, requests are refused as busy.",
    );
    let _ = writeln!(
        out,
        "grove_helper_queue_limit {}",
        gauges.helper_queue_limit
    );
    if let Some((virtual_bytes, resident)) = metrics.memory() {
        family(
            &mut out,
            "process_resident_memory_bytes",
            "gauge",
            "groved's resident memory.",
        );
        let _ = writeln!(out, "process_resident_memory_bytes {resident}");
        family(
            &mut out,
            "process_virtual_memory_bytes",
            "gauge",
            "groved's virtual memory.",
        );
        let _ = writeln!(out, "process_virtual_memory_bytes {virtual_bytes}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gauges() -> Gauges {
        Gauges {
            containers: vec![("active", 2), ("stopped", 1)],
            processes_running: 3,
            processes_exited: 1,
            helper_in_flight: 0,
            helper_queue_limit: 256,
            pull_bytes: 1234,
        }
    }

    #[test]
    fn histograms_are_cumulative_and_end_in_their_count() {
        let metrics = Metrics::new();
        for ms in [10, 30, 30, 400, 7000, 900_000] {
            metrics
                .creates
                .observe(Outcome::Ok, Duration::from_millis(ms));
        }
        metrics
            .destroys
            .observe(Outcome::Error, Duration::from_millis(1));
        let text = render(&metrics, &gauges());
        let line = |prefix: &str| {
            text.lines()
                .find(|l| l.starts_with(prefix))
                .unwrap_or_else(|| panic!("no {prefix} in\n{text}"))
                .rsplit(' ')
                .next()
                .unwrap()
                .to_string()
        };
        let bucket = "grove_container_create_duration_seconds_bucket{result=\"ok\",";
        assert_eq!(line(&format!("{bucket}le=\"0.025\"}}")), "1");
        assert_eq!(line(&format!("{bucket}le=\"0.05\"}}")), "3");
        assert_eq!(line(&format!("{bucket}le=\"0.5\"}}")), "4");
        assert_eq!(line(&format!("{bucket}le=\"10\"}}")), "5");
        assert_eq!(line(&format!("{bucket}le=\"300\"}}")), "5");
        assert_eq!(line(&format!("{bucket}le=\"+Inf\"}}")), "6");
        assert_eq!(
            line("grove_container_create_duration_seconds_count{result=\"ok\"}"),
            "6"
        );
        assert_eq!(line("grove_container_creates_total{result=\"ok\"}"), "6");
        assert_eq!(
            line("grove_container_destroys_total{result=\"error\"}"),
            "1"
        );
        assert_eq!(line("grove_containers{state=\"active\"}"), "2");
        assert_eq!(line("grove_pull_bytes_total"), "1234");
        assert_eq!(line("grove_helper_queue_limit"), "256");
    }

    #[test]
    fn groved_reads_its_own_memory() {
        let metrics = Metrics::new();
        let (virtual_bytes, resident) = metrics.memory().expect("/proc/self/statm");
        assert!(resident > 0 && virtual_bytes >= resident);
        // Read again from the start: the figure is current, not cached.
        assert!(metrics.memory().is_some());
        assert_eq!(parse_statm("10 4 3 1 0 5 0\n"), Some((10, 4)));
        assert_eq!(parse_statm("x"), None);
    }
}
