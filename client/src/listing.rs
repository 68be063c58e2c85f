//! `grove list` (aliases `ps`, `ls`), its `--long` table, and `inspect`:
//! containers described from groved's bulkInfo and bulkMetrics.

use crate::human;
use crate::{cli_json, parse_pair};
use grove_client::{api, Client, Error};
use serde_json::{json, Value};

#[derive(clap::Args)]
pub struct ListArgs {
    /// Only containers with this property (repeatable: all must match).
    /// Example: --property team=web
    #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
    pub properties: Vec<(String, String)>,
    /// A table: state, IP, mapped ports, running processes and age.
    #[arg(short, long)]
    pub long: bool,
    /// Accepted for podman's `ps -a`: the list always includes stopped
    /// containers.
    #[arg(short, long)]
    pub all: bool,
}

/// One bulk answer per handle: the JSON of its info or metrics, or its
/// error.
pub type Bulk = Vec<(String, Result<Value, Error>)>;

/// An error as bulkInfo and bulkMetrics carry it ("[code] message").
fn bulk_error(text: capnp::Result<capnp::text::Reader<'_>>) -> Error {
    match text.map(|t| t.to_string()) {
        Ok(Ok(text)) => Error::from(capnp::Error::failed(text)),
        Ok(Err(e)) => Error::from(capnp::Error::from(e)),
        Err(e) => Error::from(e),
    }
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Error> {
    Ok(t?.to_string().map_err(capnp::Error::from)?)
}

fn handle_list(mut list: capnp::text_list::Builder<'_>, handles: &[String]) {
    for (i, handle) in handles.iter().enumerate() {
        list.set(i as u32, handle);
    }
}

/// bulkInfo: each container's info as `grove --json info` prints it.
pub async fn bulk_info(client: &Client, handles: &[String]) -> Result<Bulk, Error> {
    let mut request = client.grove.bulk_info_request();
    handle_list(request.get().init_handles(handles.len() as u32), handles);
    let response = request.send().promise.await?;
    let mut out = Vec::new();
    for entry in response.get()?.get_results()? {
        let handle = text(entry.get_handle())?;
        let info = match entry.which()? {
            api::info_result::Info(info) => cli_json::info(&handle, info?),
            api::info_result::Error(e) => Err(bulk_error(e)),
        };
        out.push((handle, info));
    }
    Ok(out)
}

/// bulkMetrics: each container's metrics as `grove --json metrics` prints
/// them.
pub async fn bulk_metrics(client: &Client, handles: &[String]) -> Result<Bulk, Error> {
    let mut request = client.grove.bulk_metrics_request();
    handle_list(request.get().init_handles(handles.len() as u32), handles);
    let response = request.send().promise.await?;
    let mut out = Vec::new();
    for entry in response.get()?.get_results()? {
        let handle = text(entry.get_handle())?;
        let metrics = match entry.which()? {
            api::metrics_result::Metrics(m) => cli_json::metrics(m?),
            api::metrics_result::Error(e) => Err(bulk_error(e)),
        };
        out.push((handle, metrics));
    }
    Ok(out)
}

/// Mapped ports as HOST->CONTAINER, comma-separated ("" when none).
pub fn ports(info: &Value) -> String {
    info["mapped_ports"]
        .as_array()
        .map(|ports| {
            ports
                .iter()
                .map(|p| format!("{}->{}", p["host_port"], p["container_port"]))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

pub async fn list(client: &Client, args: ListArgs, json: bool) -> Result<i32, Error> {
    let handles = client.list(&args.properties).await?;
    if !args.long {
        if json {
            cli_json::print(&json!({ "handles": handles }));
        } else {
            for handle in handles {
                println!("{handle}");
            }
        }
        return Ok(0);
    }
    let (infos, metrics) =
        futures::try_join!(bulk_info(client, &handles), bulk_metrics(client, &handles))?;
    // A container destroyed between the list and the bulk calls is left
    // out; one without metrics shows no age.
    let mut containers = Vec::new();
    for ((handle, info), (_, metrics)) in infos.into_iter().zip(metrics) {
        let Ok(info) = info else { continue };
        let age = metrics.ok().map(|m| m["age_seconds"].clone());
        containers.push(json!({
            "handle": handle,
            "state": info["state"],
            "container_ip": info["container_ip"],
            "mapped_ports": info["mapped_ports"],
            "process_ids": info["process_ids"],
            "age_seconds": age.unwrap_or(Value::Null),
            "properties": info["properties"],
        }));
    }
    if json {
        cli_json::print(&json!({ "containers": containers }));
        return Ok(0);
    }
    let rows: Vec<Vec<String>> = containers
        .iter()
        .map(|c| {
            let shown = |v: &Value| v.as_str().unwrap_or("").to_string();
            vec![
                shown(&c["handle"]),
                shown(&c["state"]),
                shown(&c["container_ip"]),
                or_dash(ports(c)),
                c["process_ids"].as_array().map_or(0, Vec::len).to_string(),
                c["age_seconds"]
                    .as_f64()
                    .map_or("-".into(), human::duration),
            ]
        })
        .collect();
    print!(
        "{}",
        human::table(
            &["HANDLE", "STATE", "IP", "PORTS", "PROCESSES", "AGE"],
            &rows
        )
    );
    Ok(0)
}

fn or_dash(s: String) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s
    }
}

/// `grove inspect H...`: a JSON array, one object per container: its info
/// and the limits in force. Containers that cannot be read are reported on
/// stderr after the array (exit 125).
pub async fn inspect(client: &Client, handles: &[String], json: bool) -> Result<i32, Error> {
    let infos = bulk_info(client, handles).await?;
    let mut found = Vec::new();
    let mut failed = Vec::new();
    for (handle, info) in infos {
        let described = match info {
            Ok(mut info) => {
                let container = client.lookup(&handle).await?;
                match cli_json::with_limits(&container, cli_json::limits).await {
                    Ok(limits) => {
                        info["limits"] = limits;
                        Ok(info)
                    }
                    Err(e) => Err(e),
                }
            }
            Err(e) => Err(e),
        };
        match described {
            Ok(info) => found.push(info),
            Err(e) => failed.push(e),
        }
    }
    let array = Value::Array(found);
    if json {
        cli_json::print(&array);
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&array).expect("a JSON value serializes")
        );
    }
    match failed.len() {
        0 => Ok(0),
        1 => Err(failed.remove(0)),
        _ => {
            let last = failed.pop().expect("two or more");
            for e in failed {
                crate::report(&e);
            }
            Err(last)
        }
    }
}
