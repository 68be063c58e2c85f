//! `grove image pull|ls|inspect|rm|prune`: groved's image cache
//! (`Grove.images`), with sizes, and a progress line per layer on a
//! terminal while pulling. Registry logins come from the flags, else from
//! the user's `auth.json` (as podman and skopeo read it) or Docker's
//! `config.json`.

use crate::layer_progress::LayerProgress;
use clap::Subcommand;
use grove_client::{api, Client, Error};
use grove_schema::auth_file::{self, Login};
use grove_schema::image_ref;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Subcommand)]
pub enum ImageCmd {
    /// Pull an image into groved's cache (a tag is asked of the registry
    /// again; blobs the cache has are not downloaded again), with a
    /// progress line per layer on a terminal. Prints its digest and names.
    ///
    /// Example: grove image pull busybox:1.36
    Pull {
        /// The image: busybox, docker.io/library/busybox:1.36,
        /// registry.local:5000/app@sha256:…, or a docker:// URI
        image: String,
        #[command(flatten)]
        login: LoginArgs,
    },
    /// List the cached images (names, digest, platform, downloaded and
    /// unpacked bytes, containers using them, last use).
    ///
    /// Example: grove image ls --layers
    #[command(alias = "list")]
    Ls {
        /// Also list the unpacked layers in the depot (from every kind of
        /// image), with their sizes and users
        #[arg(long)]
        layers: bool,
    },
    /// Show one cached image: names, digests, source, each layer's sizes,
    /// and its config's environment, directory, user, entrypoint and cmd.
    ///
    /// Example: grove image inspect busybox
    Inspect {
        /// A name (as for pull), a digest, or 12 or more of its hex digits
        image: String,
    },
    /// Remove a cached image no container uses: its names, and the blobs
    /// and unpacked layers no other cached image shares.
    ///
    /// Example: grove image rm registry.local:5000/app:1.2
    #[command(alias = "remove")]
    Rm {
        /// A name, a digest, or 12 or more of its hex digits
        image: String,
    },
    /// Apply the cache's GC policy now (groved's image_cache_max_bytes and
    /// image_cache_max_age), or with --all remove every image and layer no
    /// container uses.
    ///
    /// Example: grove image prune --all
    Prune {
        /// Every image and unpacked layer no container uses
        #[arg(long)]
        all: bool,
    },
}

#[derive(clap::Args, Default)]
pub struct LoginArgs {
    /// The registry user [default: $GROVE_IMAGE_USERNAME, else the
    /// registry's entry in the auth file]
    #[arg(long, value_name = "USER")]
    pub username: Option<String>,
    /// The registry password [default: $GROVE_IMAGE_PASSWORD, else the auth
    /// file's]
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,
    /// The auth file (containers-auth.json) [default: $REGISTRY_AUTH_FILE,
    /// else $XDG_RUNTIME_DIR/containers/auth.json,
    /// ~/.config/containers/auth.json, ~/.docker/config.json]
    #[arg(long, value_name = "FILE")]
    pub authfile: Option<PathBuf>,
}

/// The auth files a login is looked up in, first found first.
fn auth_files(explicit: Option<PathBuf>) -> Vec<PathBuf> {
    if let Some(path) = explicit {
        return vec![path];
    }
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("REGISTRY_AUTH_FILE") {
        return vec![path.into()];
    }
    let mut files = Vec::new();
    if let Some(dir) = var("XDG_RUNTIME_DIR") {
        files.push(PathBuf::from(dir).join("containers/auth.json"));
    }
    let home = var("HOME").map(PathBuf::from);
    if let Some(config) = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.as_ref().map(|h| h.join(".config")))
    {
        files.push(config.join("containers/auth.json"));
    }
    match var("DOCKER_CONFIG") {
        Some(dir) => files.push(PathBuf::from(dir).join("config.json")),
        None => {
            if let Some(h) = &home {
                files.push(h.join(".docker/config.json"));
            }
        }
    }
    files
}

/// The login for `uri` (a docker:// URI or a bare reference): the flags or
/// `GROVE_IMAGE_USERNAME`/`GROVE_IMAGE_PASSWORD`, else the first auth file
/// that has an entry for its registry. An auth file that is named
/// explicitly must be readable; one that is malformed is an error.
pub fn login_for(uri: &str, args: LoginArgs) -> Result<Option<Login>, Error> {
    let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let username = args.username.or_else(|| from_env("GROVE_IMAGE_USERNAME"));
    let password = args.password.or_else(|| from_env("GROVE_IMAGE_PASSWORD"));
    if username.is_some() || password.is_some() {
        return Ok(Some(Login {
            username: username.unwrap_or_default(),
            password: password.unwrap_or_default(),
        }));
    }
    let Ok(reference) = image_ref::parse_name(uri) else {
        return Ok(None); // groved says what is wrong with it
    };
    let explicit = args.authfile.is_some() || std::env::var_os("REGISTRY_AUTH_FILE").is_some();
    for path in auth_files(args.authfile) {
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(local(format!("{}: {e}", path.display()))),
        };
        if let Some(login) = auth_file::lookup(&bytes, &reference)
            .map_err(|e| local(format!("{}: {e}", path.display())))?
        {
            return Ok(Some(login));
        }
    }
    Ok(None)
}

fn local(message: String) -> Error {
    Error {
        code: String::new(),
        message,
    }
}

async fn images(client: &Client) -> Result<api::images::Client, Error> {
    Ok(client
        .grove
        .images_request()
        .send()
        .promise
        .await?
        .get()?
        .get_images()?)
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Error> {
    Ok(t?.to_string().map_err(capnp::Error::from)?)
}

fn texts(list: capnp::Result<capnp::text_list::Reader<'_>>) -> Result<Vec<String>, Error> {
    list?.iter().map(text).collect()
}

/// Bytes as people read them: "512 B", "1.5 KiB", "12.3 MiB", "1.2 GiB".
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago Unix second `then` was: "45 s ago", "3 min ago", "2 h
/// ago", "5 d ago"; "never" for 0.
pub fn ago(then: u64, now: u64) -> String {
    if then == 0 {
        return "never".into();
    }
    let s = now.saturating_sub(then);
    match s {
        0..=59 => format!("{s} s ago"),
        60..=3599 => format!("{} min ago", s / 60),
        3600..=86_399 => format!("{} h ago", s / 3600),
        _ => format!("{} d ago", s / 86_400),
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The first 12 hex digits of a digest.
fn short(digest: &str) -> &str {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    &hex[..hex.len().min(12)]
}

fn info_json(i: api::image_info::Reader<'_>) -> Result<Value, Error> {
    Ok(json!({
        "names": texts(i.get_names())?,
        "digest": text(i.get_digest())?,
        "platform": text(i.get_platform())?,
        "downloaded_bytes": i.get_downloaded_bytes(),
        "unpacked_bytes": i.get_unpacked_bytes(),
        "pulled_at": i.get_pulled_at(),
        "last_used": i.get_last_used(),
        "containers": i.get_containers(),
    }))
}

fn removed_json(r: api::prune_result::Reader<'_>) -> Result<Value, Error> {
    Ok(json!({
        "images": texts(r.get_images())?,
        "layers": texts(r.get_layers())?,
        "freed_bytes": r.get_freed_bytes(),
    }))
}

fn print_removed(v: &Value) {
    for image in v["images"].as_array().into_iter().flatten() {
        println!("removed image {}", image.as_str().unwrap_or(""));
    }
    for layer in v["layers"].as_array().into_iter().flatten() {
        println!("removed layer {}", layer.as_str().unwrap_or(""));
    }
    println!("freed {}", size(v["freed_bytes"].as_u64().unwrap_or(0)));
}

/// Rows of a table, columns padded to their widest cell.
fn table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = *w));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

pub async fn run(client: &Client, cmd: ImageCmd, json: bool) -> Result<i32, Error> {
    let images = images(client).await?;
    match cmd {
        ImageCmd::Pull { image, login } => {
            let login = login_for(&image, login)?;
            let mut request = images.pull_request();
            let mut p = request.get();
            let mut r = p.reborrow().init_image();
            r.set_uri(&image);
            if let Some(l) = &login {
                r.set_username(&l.username);
                r.set_password(&l.password);
            }
            p.set_progress(capnp_rpc::new_client(LayerProgress::new()));
            let response = request.send().promise.await?;
            let info = info_json(response.get()?.get_image()?)?;
            if json {
                crate::cli_json::print(&info);
            } else {
                let names: Vec<&str> = info["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                println!(
                    "{} {}",
                    info["digest"].as_str().unwrap_or(""),
                    names.join(" ")
                );
            }
        }
        ImageCmd::Ls { layers } => {
            let response = images.list_request().send().promise.await?;
            let r = response.get()?;
            let list: Vec<Value> = r
                .get_images()?
                .iter()
                .map(info_json)
                .collect::<Result<_, _>>()?;
            let layer_list: Vec<Value> = r
                .get_layers()?
                .iter()
                .map(|l| {
                    Ok(json!({
                        "diff_id": text(l.get_diff_id())?,
                        "bytes": l.get_bytes(),
                        "inodes": l.get_inodes(),
                        "containers": l.get_containers(),
                        "last_used": l.get_last_used(),
                    }))
                })
                .collect::<Result<_, Error>>()?;
            if json {
                crate::cli_json::print(&json!({ "images": list, "layers": layer_list }));
                return Ok(0);
            }
            let now = now();
            let mut rows = Vec::new();
            for i in &list {
                let mut names: Vec<String> = i["names"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|n| n.as_str().map(str::to_string))
                    .collect();
                if names.is_empty() {
                    names.push("<none>".into());
                }
                for name in names {
                    rows.push(vec![
                        name,
                        short(i["digest"].as_str().unwrap_or("")).to_string(),
                        i["platform"].as_str().unwrap_or("").to_string(),
                        size(i["downloaded_bytes"].as_u64().unwrap_or(0)),
                        size(i["unpacked_bytes"].as_u64().unwrap_or(0)),
                        i["containers"].to_string(),
                        ago(i["last_used"].as_u64().unwrap_or(0), now),
                    ]);
                }
            }
            table(
                &[
                    "NAME",
                    "DIGEST",
                    "PLATFORM",
                    "DOWNLOADED",
                    "UNPACKED",
                    "CONTAINERS",
                    "LAST USED",
                ],
                &rows,
            );
            if layers {
                println!();
                let rows: Vec<Vec<String>> = layer_list
                    .iter()
                    .map(|l| {
                        vec![
                            short(l["diff_id"].as_str().unwrap_or("")).to_string(),
                            size(l["bytes"].as_u64().unwrap_or(0)),
                            l["inodes"].to_string(),
                            l["containers"].to_string(),
                            ago(l["last_used"].as_u64().unwrap_or(0), now),
                        ]
                    })
                    .collect();
                table(
                    &["LAYER", "SIZE", "INODES", "CONTAINERS", "LAST USED"],
                    &rows,
                );
            }
        }
        ImageCmd::Inspect { image } => {
            let mut request = images.inspect_request();
            request.get().set_name(&image);
            let response = request.send().promise.await?;
            let d = response.get()?.get_image()?;
            let layers: Vec<Value> = d
                .get_layers()?
                .iter()
                .map(|l| {
                    Ok(json!({
                        "digest": text(l.get_digest())?,
                        "media_type": text(l.get_media_type())?,
                        "size": l.get_size(),
                        "diff_id": text(l.get_diff_id())?,
                        "unpacked": l.get_unpacked(),
                        "unpacked_bytes": l.get_unpacked_bytes(),
                    }))
                })
                .collect::<Result<_, Error>>()?;
            let v = json!({
                "info": info_json(d.get_info()?)?,
                "media_type": text(d.get_media_type())?,
                "config": text(d.get_config())?,
                "source": text(d.get_source())?,
                "layers": layers,
                "env": texts(d.get_env())?,
                "working_dir": text(d.get_working_dir())?,
                "user": text(d.get_user())?,
                "entrypoint": texts(d.get_entrypoint())?,
                "cmd": texts(d.get_cmd())?,
            });
            if json {
                crate::cli_json::print(&v);
            } else {
                print_detail(&v);
            }
        }
        ImageCmd::Rm { image } => {
            let mut request = images.remove_request();
            request.get().set_name(&image);
            let response = request.send().promise.await?;
            let v = removed_json(response.get()?.get_removed()?)?;
            if json {
                crate::cli_json::print(&v);
            } else {
                print_removed(&v);
            }
        }
        ImageCmd::Prune { all } => {
            let mut request = images.prune_request();
            request.get().set_all(all);
            let response = request.send().promise.await?;
            let v = removed_json(response.get()?.get_removed()?)?;
            if json {
                crate::cli_json::print(&v);
            } else {
                print_removed(&v);
            }
        }
    }
    Ok(0)
}

fn print_detail(v: &Value) {
    let s = |v: &Value| v.as_str().unwrap_or("").to_string();
    let list = |v: &Value| -> Vec<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect()
    };
    let info = &v["info"];
    println!("names: {}", list(&info["names"]).join(", "));
    println!("digest: {}", s(&info["digest"]));
    println!("media type: {}", s(&v["media_type"]));
    println!("platform: {}", s(&info["platform"]));
    println!("source: {}", s(&v["source"]));
    println!("config: {}", s(&v["config"]));
    println!(
        "size: {} downloaded, {} unpacked",
        size(info["downloaded_bytes"].as_u64().unwrap_or(0)),
        size(info["unpacked_bytes"].as_u64().unwrap_or(0))
    );
    let now = now();
    println!(
        "pulled: {}",
        ago(info["pulled_at"].as_u64().unwrap_or(0), now)
    );
    println!(
        "last used: {}",
        ago(info["last_used"].as_u64().unwrap_or(0), now)
    );
    println!("containers: {}", info["containers"]);
    println!("layers:");
    for l in v["layers"].as_array().into_iter().flatten() {
        let unpacked = if l["unpacked"].as_bool().unwrap_or(false) {
            format!(
                "unpacked {}",
                size(l["unpacked_bytes"].as_u64().unwrap_or(0))
            )
        } else {
            "not unpacked".to_string()
        };
        println!(
            "  {}  {}  {}  diff id {}",
            s(&l["digest"]),
            size(l["size"].as_u64().unwrap_or(0)),
            unpacked,
            s(&l["diff_id"])
        );
    }
    println!("env: {}", list(&v["env"]).join(" "));
    println!("working dir: {}", s(&v["working_dir"]));
    println!("user: {}", s(&v["user"]));
    println!("entrypoint: {}", list(&v["entrypoint"]).join(" "));
    println!("cmd: {}", list(&v["cmd"]).join(" "));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_well() {
        assert_eq!(size(0), "0 B");
        assert_eq!(size(1023), "1023 B");
        assert_eq!(size(1536), "1.5 KiB");
        assert_eq!(size(5 << 20), "5.0 MiB");
        assert_eq!(size(3 << 30), "3.0 GiB");
        assert_eq!(ago(0, 100), "never");
        assert_eq!(ago(95, 100), "5 s ago");
        assert_eq!(ago(100, 100 + 180), "3 min ago");
        assert_eq!(ago(100, 100 + 7200), "2 h ago");
        assert_eq!(ago(100, 100 + 3 * 86_400), "3 d ago");
        assert_eq!(short("sha256:0123456789abcdef"), "0123456789ab");
    }
}
