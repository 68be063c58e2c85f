//! `grove stats`: a live table of containers' resource usage from
//! groved's bulkMetrics, refreshed every interval (on a terminal, in place)
//! until interrupted; `--no-stream` prints one.

use crate::human::{self, Sizes};
use crate::listing::bulk_metrics;

use grove_client::{Client, Error};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

#[derive(clap::Args)]
pub struct StatsArgs {
    /// Print the table once and exit.
    #[arg(long)]
    pub no_stream: bool,
    /// Seconds between refreshes. Example: --interval 1
    #[arg(
        short,
        long,
        value_name = "SECONDS",
        default_value_t = 5,
        value_parser = clap::value_parser!(u64).range(1..)
    )]
    pub interval: u64,
    /// The containers (default: every one, as they come and go).
    #[arg(value_name = "HANDLE", add = crate::completion::handles())]
    pub handles: Vec<String>,
}

/// One container's figures in one sample.
struct Sample {
    handle: String,
    cpu_percent: f64,
    memory_usage: u64,
    /// The memory limit, or the host's memory where there is none.
    memory_limit: u64,
    rx: u64,
    tx: u64,
    disk: u64,
    pids: u64,
}

impl Sample {
    fn memory_percent(&self) -> f64 {
        if self.memory_limit == 0 {
            0.0
        } else {
            self.memory_usage as f64 * 100.0 / self.memory_limit as f64
        }
    }

    fn json(&self) -> Value {
        json!({
            "handle": self.handle,
            "cpu_percent": round(self.cpu_percent),
            "memory_usage": self.memory_usage,
            "memory_limit": self.memory_limit,
            "memory_percent": round(self.memory_percent()),
            "net_rx_bytes": self.rx,
            "net_tx_bytes": self.tx,
            "disk_exclusive_bytes": self.disk,
            "pids": self.pids,
        })
    }

    fn row(&self, sizes: Sizes) -> Vec<String> {
        vec![
            self.handle.clone(),
            format!("{:.2}%", self.cpu_percent),
            format!(
                "{} / {}",
                sizes.show(self.memory_usage),
                sizes.show(self.memory_limit)
            ),
            format!("{:.2}%", self.memory_percent()),
            format!("{} / {}", sizes.show(self.rx), sizes.show(self.tx)),
            sizes.show(self.disk),
            self.pids.to_string(),
        ]
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// CPU use as a percentage of one CPU: since the previous sample, or for
/// the first, since the container started.
fn cpu_percent(
    usage_nanos: u64,
    age_seconds: f64,
    previous: Option<(u64, Instant)>,
    now: Instant,
) -> f64 {
    let (used, wall) = match previous {
        Some((before, at)) => (
            usage_nanos.saturating_sub(before) as f64,
            now.duration_since(at).as_nanos() as f64,
        ),
        None => (usage_nanos as f64, age_seconds * 1e9),
    };
    if wall <= 0.0 {
        0.0
    } else {
        used * 100.0 / wall
    }
}

pub async fn stats(
    client: &Client,
    args: StatsArgs,
    json: bool,
    sizes: Sizes,
) -> Result<i32, Error> {
    let host_memory = client.capacity().await?.memory_bytes;
    let live = !args.no_stream && std::io::stdout().is_terminal();
    let mut previous: HashMap<String, (u64, Instant)> = HashMap::new();
    let mut first = true;
    loop {
        let handles = if args.handles.is_empty() {
            client.list(&[]).await?
        } else {
            args.handles.clone()
        };
        let (metrics, limits) = futures::join!(
            bulk_metrics(client, &handles),
            memory_limits(client, &handles)
        );
        let now = Instant::now();
        let mut samples = Vec::new();
        for ((handle, metrics), limit) in metrics?.into_iter().zip(limits) {
            let m = match metrics {
                Ok(m) => m,
                // A named container must be there; one of "all" may have
                // gone since the list.
                Err(e) if !args.handles.is_empty() => return Err(e),
                Err(_) => continue,
            };
            let n = |v: &Value| v.as_u64().unwrap_or(0);
            let usage = n(&m["cpu"]["usage_nanos"]);
            let age = m["age_seconds"].as_f64().unwrap_or(0.0);
            samples.push(Sample {
                cpu_percent: cpu_percent(usage, age, previous.get(&handle).copied(), now),
                memory_usage: n(&m["memory"]["usage"]),
                memory_limit: limit.filter(|&l| l > 0).unwrap_or(host_memory),
                rx: n(&m["network"]["rx_bytes"]),
                tx: n(&m["network"]["tx_bytes"]),
                disk: n(&m["disk"]["exclusive_bytes_used"]),
                pids: n(&m["pid"]["current"]),
                handle: handle.clone(),
            });
            previous.insert(handle, (usage, now));
        }
        if let Err(e) = print_sample(&samples, json, sizes, live, first) {
            // A closed pipe (`| head`) ends the command quietly.
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(0);
            }
            return Err(crate::cli_stream::local(format!("writing stdout: {e}")));
        }
        first = false;
        if args.no_stream {
            return Ok(0);
        }
        tokio::time::sleep(Duration::from_secs(args.interval)).await;
    }
}

fn print_sample(
    samples: &[Sample],
    json: bool,
    sizes: Sizes,
    live: bool,
    first: bool,
) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    if json {
        let all: Vec<Value> = samples.iter().map(Sample::json).collect();
        writeln!(out, "{}", json!({ "containers": all }))
    } else {
        let rows: Vec<Vec<String>> = samples.iter().map(|s| s.row(sizes)).collect();
        let table = human::table(
            &[
                "HANDLE",
                "CPU %",
                "MEM USAGE / LIMIT",
                "MEM %",
                "NET RX / TX",
                "DISK",
                "PIDS",
            ],
            &rows,
        );
        // On a terminal the table is redrawn in place; elsewhere each
        // sample follows the last, a blank line apart.
        let lead = if live {
            "\x1b[H\x1b[2J"
        } else if first {
            ""
        } else {
            "\n"
        };
        write!(out, "{lead}{table}")
    }?;
    out.flush()
}

/// Each container's memory limit (0: none), `None` where it cannot be read.
async fn memory_limits(client: &Client, handles: &[String]) -> Vec<Option<u64>> {
    let reads = handles.iter().map(|handle| async move {
        let container = client.lookup(handle).await.ok()?;
        let response = container
            .current_memory_limits_request()
            .send()
            .promise
            .await
            .ok()?;
        Some(response.get().ok()?.get_limits().ok()?.get_limit_in_bytes())
    });
    futures::future::join_all(reads).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_a_share_of_one_cpu() {
        let t0 = Instant::now();
        // First sample: half a CPU over the container's 2 s.
        assert_eq!(cpu_percent(1_000_000_000, 2.0, None, t0), 50.0);
        let t1 = t0 + Duration::from_secs(1);
        assert_eq!(
            cpu_percent(3_000_000_000, 3.0, Some((1_000_000_000, t0)), t1),
            200.0
        );
        assert_eq!(cpu_percent(5, 0.0, None, t0), 0.0);
    }
}
