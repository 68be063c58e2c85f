//! `grove rm`: destroy several containers, as `podman rm` removes them —
//! those running processes only with `-f`, and exit statuses that tell a
//! missing container (1) from a running one (2) from anything else (125).

use crate::cli_json;
use crate::listing::bulk_info;
use grove_client::{Client, Error, ErrorCode};
use serde_json::json;

#[derive(clap::Args)]
pub struct RmArgs {
    /// Also containers with running processes (they are killed with it);
    /// without -f those are left alone (exit 2).
    #[arg(short, long)]
    pub force: bool,
    /// Every container.
    #[arg(short, long, conflicts_with = "handles")]
    pub all: bool,
    /// Handles that do not exist are no error.
    #[arg(short, long)]
    pub ignore: bool,
    /// The containers to destroy. Example: grove rm -f web db
    #[arg(required_unless_present = "all", value_name = "HANDLE", add = crate::completion::handles())]
    pub handles: Vec<String>,
}

/// Why a container was not removed.
enum Refused {
    Missing(Error),
    Running(String),
    Failed(Error),
}

pub async fn rm(client: &Client, args: RmArgs, json: bool) -> Result<i32, Error> {
    let targets = if args.all {
        client.list(&[]).await?
    } else {
        args.handles.clone()
    };
    let mut refused = Vec::new();
    let mut allowed = Vec::new();
    if args.force {
        allowed = targets;
    } else {
        for (handle, info) in bulk_info(client, &targets).await? {
            match info {
                Ok(info) => {
                    let running: Vec<&str> = info["process_ids"]
                        .as_array()
                        .map(|ids| ids.iter().filter_map(|id| id.as_str()).collect())
                        .unwrap_or_default();
                    if running.is_empty() {
                        allowed.push(handle);
                    } else {
                        refused.push(Refused::Running(format!(
                            "{handle} has running processes ({}): stop them (grove stop {handle}) or use rm -f",
                            running.join(" ")
                        )));
                    }
                }
                Err(e) => refused.push(classify(e)),
            }
        }
    }
    let results =
        futures::future::join_all(allowed.iter().map(|handle| client.destroy(handle))).await;
    let mut removed = Vec::new();
    for (handle, result) in allowed.into_iter().zip(results) {
        match result {
            Ok(()) => removed.push(handle),
            Err(e) => refused.push(classify(e)),
        }
    }
    if json {
        cli_json::print(&json!({ "removed": removed }));
    } else {
        for handle in &removed {
            println!("{handle}");
        }
    }
    let mut status = 0;
    for why in refused {
        let code = match why {
            Refused::Missing(_) if args.ignore => continue,
            Refused::Missing(e) => {
                crate::report(&e);
                1
            }
            Refused::Running(message) => {
                eprintln!("grove: {message}");
                2
            }
            Refused::Failed(e) => {
                crate::report(&e);
                crate::GROVE_ERROR
            }
        };
        // The gravest wins: anything else, then running, then missing.
        status = match (status, code) {
            (crate::GROVE_ERROR, _) | (_, crate::GROVE_ERROR) => crate::GROVE_ERROR,
            (a, b) => a.max(b),
        };
    }
    Ok(status)
}

fn classify(e: Error) -> Refused {
    if e.kind() == ErrorCode::ContainerNotFound {
        Refused::Missing(e)
    } else {
        Refused::Failed(e)
    }
}
