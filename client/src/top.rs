//! `grove top`: the processes in a container, as its init reads them from
//! the container's /proc, with the API process each belongs to.

use crate::cli_json;
use crate::human::{self, Sizes};
use grove_client::{Client, Error};
use serde_json::{json, Value};

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Error> {
    Ok(t?.to_string().map_err(capnp::Error::from)?)
}

pub async fn top(client: &Client, handle: &str, json: bool, sizes: Sizes) -> Result<i32, Error> {
    let container = client.lookup(handle).await?;
    let response = container.top_request().send().promise.await?;
    let answer = response.get()?;
    let mut processes = Vec::new();
    for p in answer.get_processes()? {
        processes.push(json!({
            "pid": p.get_pid(),
            "parent_pid": p.get_parent_pid(),
            "uid": p.get_uid(),
            "user": text(p.get_user())?,
            "state": text(p.get_state())?,
            "cpu_millis": p.get_cpu_millis(),
            "elapsed_millis": p.get_elapsed_millis(),
            "rss_bytes": p.get_rss_bytes(),
            "command": text(p.get_command())?,
            "process_id": text(p.get_process_id())?,
        }));
    }
    let truncated = answer.get_truncated();
    if json {
        cli_json::print(&json!({ "processes": processes, "truncated": truncated }));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = processes.iter().map(|p| row(p, sizes)).collect();
    print!(
        "{}",
        human::table(
            &["PID", "PPID", "USER", "STATE", "TIME", "ELAPSED", "RSS", "PROCESS", "COMMAND"],
            &rows
        )
    );
    if truncated {
        eprintln!("grove: more processes than fit in one answer; the list stops short");
    }
    Ok(0)
}

/// One process as a table row; its text (from inside the container)
/// escaped for the terminal.
fn row(p: &Value, sizes: Sizes) -> Vec<String> {
    let s = |v: &Value| human::printable(v.as_str().unwrap_or(""));
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let user = match s(&p["user"]) {
        name if name.is_empty() => p["uid"].to_string(),
        name => name,
    };
    let process = match s(&p["process_id"]) {
        id if id.is_empty() => "-".to_string(),
        id => id,
    };
    vec![
        p["pid"].to_string(),
        p["parent_pid"].to_string(),
        user,
        s(&p["state"]),
        human::cpu_time(n(&p["cpu_millis"])),
        human::duration(n(&p["elapsed_millis"]) as f64 / 1000.0),
        sizes.show(n(&p["rss_bytes"])),
        process,
        s(&p["command"]),
    ]
}
