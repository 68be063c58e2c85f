//! Bandwidth shaping with tc on a container's host-side veth: a tbf qdisc
//! at its root shapes what the container receives; its ingress (what the
//! container sends) is redirected (mirred) to an ifb device of its own
//! whose root tbf shapes it. (This kernel has no police action or
//! matchall classifier, so ingress is shaped through ifb with u32.)
//!
//! Why safe: tc runs by absolute path with an empty environment and an
//! argv of fixed words, link names the helper derived, and integers.

use grove_schema::net::Bandwidth;
use std::process::{Command, Stdio};

pub const TC: &str = "/usr/sbin/tc";

fn tc(args: &[&str]) -> Result<String, String> {
    let out = Command::new(TC)
        .args(args)
        .env_clear()
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{TC}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "tc {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Put (or replace) a tbf qdisc at the root of `dev`.
pub fn set_tbf(dev: &str, b: Bandwidth) -> Result<(), String> {
    let rate = format!("{}bit", b.rate_bytes_per_sec.saturating_mul(8));
    let burst = b.burst_bytes.to_string();
    tc(&[
        "qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate, "burst", &burst, "latency",
        "50ms",
    ])
    .map(drop)
}

/// Remove the root qdisc of `dev` (back to the default).
pub fn clear_root(dev: &str) -> Result<(), String> {
    tc(&["qdisc", "del", "dev", dev, "root"]).map(drop)
}

/// Redirect everything arriving on `dev` to the egress of `ifb`.
pub fn redirect_ingress(dev: &str, ifb: &str) -> Result<(), String> {
    tc(&["qdisc", "replace", "dev", dev, "handle", "ffff:", "ingress"])?;
    tc(&[
        "filter", "replace", "dev", dev, "parent", "ffff:", "protocol", "all", "prio", "1",
        "handle", "800::800", "u32", "match", "u32", "0", "0", "action", "mirred", "egress",
        "redirect", "dev", ifb,
    ])
    .map(drop)
}

/// The tbf at the root of `dev`, if there is one, as the kernel has it.
pub fn get_tbf(dev: &str) -> Result<Option<Bandwidth>, String> {
    let text = tc(&["-j", "qdisc", "show", "dev", dev, "root"])?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("tc -j qdisc show {dev}: {e}"))?;
    for q in v.as_array().into_iter().flatten() {
        if q.get("kind").and_then(|k| k.as_str()) == Some("tbf") {
            let opt = |k: &str| {
                q.get("options")
                    .and_then(|o| o.get(k))
                    .and_then(|x| x.as_u64())
                    .ok_or_else(|| format!("tc -j qdisc show {dev}: no {k} in {q}"))
            };
            return Ok(Some(Bandwidth {
                rate_bytes_per_sec: opt("rate")?,
                burst_bytes: opt("burst")?,
            }));
        }
    }
    Ok(None)
}
