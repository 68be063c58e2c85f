//! Garden's structs to Grove's API and back. What Grove cannot express is a
//! typed not-implemented error naming the field, never silently dropped.

use crate::errors::GardenError;
use crate::wire;
use grove_client::api;
use serde_json::{json, Map, Value};

type R<T> = Result<T, GardenError>;

fn capnp_err(e: capnp::Error) -> GardenError {
    GardenError::from_grove(&grove_client::Error::from(e), "", "")
}

/// Go's time.Duration (ns) as Grove's whole seconds, rounded up so that a
/// grace time under a second does not become 0 ("server default/never").
pub fn nanos_to_secs(ns: i64) -> u64 {
    if ns <= 0 {
        0
    } else {
        (ns as u64).div_ceil(1_000_000_000)
    }
}

/// Garden's rootfs/image URI as Grove's. Garden (Guardian) writes
/// `docker:///repo#tag` (empty host: Docker Hub) and `docker://host/repo#tag`;
/// Grove's are `docker://[HOST/]REPO[:TAG][@DIGEST]` with Docker's short
/// names (grove_schema::image_ref), so `docker:///busybox` names
/// `registry-1.docker.io/library/busybox:latest`. A URI the grammar takes
/// is passed on in its canonical form; one it refuses is passed on as it
/// is, for groved to refuse with the reason. `raw://` and a plain path name
/// a rootfs directory.
pub fn image_uri(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("docker:")?;
    let grove = match rest.split_once('#') {
        Some((r, t)) if !t.is_empty() => format!("{r}:{t}"),
        Some((r, _)) => r.to_string(),
        None => rest.to_string(),
    };
    Some(match grove_schema::image_ref::parse(&grove) {
        Ok(r) => format!("docker://{}", r.name()),
        Err(_) => format!("docker:{grove}"),
    })
}

fn rootfs_path(rootfs: &str) -> String {
    rootfs.strip_prefix("raw://").unwrap_or(rootfs).to_string()
}

pub fn container_spec(
    spec: &wire::ContainerSpec,
    mut b: api::container_spec::Builder<'_>,
) -> R<()> {
    b.set_handle(spec.handle.as_str());
    b.set_grace_time_seconds(nanos_to_secs(spec.grace_time));
    // An image given either way: Garden's `image.uri` wins over `rootfs`.
    let image = if !spec.image.uri.is_empty() {
        Some(image_uri(&spec.image.uri).unwrap_or_else(|| spec.image.uri.clone()))
    } else {
        image_uri(&spec.rootfs)
    };
    match image {
        Some(uri) => {
            let mut i = b.reborrow().init_image();
            i.set_uri(uri.as_str());
            i.set_username(spec.image.username.as_str());
            i.set_password(spec.image.password.as_str());
        }
        None => b.set_rootfs(rootfs_path(&spec.rootfs).as_str()),
    }
    let env = spec.env.clone().unwrap_or_default();
    grove_client::fill_text_list(b.reborrow().init_env(env.len() as u32), &env);
    let binds = spec.bind_mounts.as_deref().unwrap_or_default();
    let mut list = b.reborrow().init_bind_mounts(binds.len() as u32);
    for (i, m) in binds.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_src_path(m.src_path.as_str());
        e.set_dst_path(m.dst_path.as_str());
        e.set_mode(match m.mode {
            0 => api::bind_mount::Mode::Ro,
            1 => api::bind_mount::Mode::Rw,
            n => {
                return Err(GardenError::bad_request(format!(
                    "bind_mounts[{i}].mode: {n} (0 RO, 1 RW)"
                )))
            }
        });
        e.set_origin(match m.origin {
            0 => api::bind_mount::Origin::Host,
            1 => api::bind_mount::Origin::Container,
            n => {
                return Err(GardenError::bad_request(format!(
                    "bind_mounts[{i}].origin: {n} (0 host, 1 container)"
                )))
            }
        });
    }
    b.set_network(spec.network.as_str());
    let props: Vec<_> = spec.properties.iter().flatten().collect();
    let mut list = b.reborrow().init_properties(props.len() as u32);
    for (i, (k, v)) in props.into_iter().enumerate() {
        let mut p = list.reborrow().get(i as u32);
        p.set_name(k.as_str());
        p.set_value(v.as_str());
    }
    b.set_privileged(spec.privileged);
    limits(&spec.limits, b.reborrow().init_limits());
    let rules = spec.netout_rules.as_deref().unwrap_or_default();
    let mut list = b.reborrow().init_net_out(rules.len() as u32);
    for (i, rule) in rules.iter().enumerate() {
        net_out_rule(rule, list.reborrow().get(i as u32))?;
    }
    let netin = spec.netin.as_deref().unwrap_or_default();
    let mut list = b.init_net_in(netin.len() as u32);
    for (i, m) in netin.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_host_port(m.host_port);
        e.set_container_port(m.container_port);
    }
    Ok(())
}

/// Garden's zero values mean "no limit": only the set ones are sent.
fn limits(l: &wire::Limits, mut b: api::limits::Builder<'_>) {
    let bw = &l.bandwidth_limits;
    if bw.rate != 0 || bw.burst != 0 {
        let mut x = b.reborrow().init_bandwidth();
        x.set_rate_in_bytes_per_second(bw.rate);
        x.set_burst_rate_in_bytes_per_second(bw.burst);
    }
    let weight = cpu_weight(&l.cpu_limits);
    if weight != 0 {
        b.reborrow().init_cpu().set_weight(weight);
    }
    let d = &l.disk_limits;
    if d.inode_soft != 0 || d.inode_hard != 0 || d.byte_soft != 0 || d.byte_hard != 0 {
        let mut x = b.reborrow().init_disk();
        x.set_inode_soft(d.inode_soft);
        x.set_inode_hard(d.inode_hard);
        x.set_byte_soft(d.byte_soft);
        x.set_byte_hard(d.byte_hard);
        x.set_scope(if d.scope == 1 {
            api::disk_limits::Scope::Exclusive
        } else {
            api::disk_limits::Scope::Total
        });
    }
    if l.memory_limits.limit_in_bytes != 0 {
        b.reborrow()
            .init_memory()
            .set_limit_in_bytes(l.memory_limits.limit_in_bytes);
    }
    if l.pid_limits.max != 0 {
        b.init_pid().set_max(l.pid_limits.max);
    }
}

/// Garden's `limit_in_shares` is the deprecated name of `weight`.
fn cpu_weight(c: &wire::CpuLimits) -> u64 {
    if c.weight != 0 {
        c.weight
    } else {
        c.limit_in_shares
    }
}

pub fn net_out_rule(rule: &wire::NetOutRule, mut b: api::net_out_rule::Builder<'_>) -> R<()> {
    use api::net_out_rule::Protocol;
    b.set_protocol(match rule.protocol {
        0 => Protocol::All,
        1 => Protocol::Tcp,
        2 => Protocol::Udp,
        3 => Protocol::Icmp,
        4 => Protocol::Icmpv6,
        n => {
            return Err(GardenError::bad_request(format!(
                "protocol {n} (0 all, 1 tcp, 2 udp, 3 icmp, 4 icmpv6)"
            )))
        }
    });
    let networks = rule.networks.as_deref().unwrap_or_default();
    let mut list = b.reborrow().init_networks(networks.len() as u32);
    for (i, n) in networks.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_start(n.start.as_deref().unwrap_or(""));
        e.set_end(n.end.as_deref().unwrap_or(""));
    }
    let ports = rule.ports.as_deref().unwrap_or_default();
    let mut list = b.reborrow().init_ports(ports.len() as u32);
    for (i, p) in ports.iter().enumerate() {
        let mut e = list.reborrow().get(i as u32);
        e.set_start(p.start);
        e.set_end(p.end);
    }
    if let Some(icmp) = &rule.icmps {
        b.set_has_icmps(true);
        let mut e = b.reborrow().init_icmps();
        e.set_type(icmp.kind);
        if let Some(code) = icmp.code {
            e.set_code(code);
            e.set_has_code(true);
        }
    }
    b.set_log(rule.log);
    Ok(())
}

pub fn process_spec(spec: &wire::ProcessSpec, mut b: api::process_spec::Builder<'_>) -> R<()> {
    if let Some(l) = &spec.limits {
        if cpu_weight(&l.cpu_limits) != 0 || l.memory_limits.limit_in_bytes != 0 {
            return Err(GardenError::not_implemented(
                "per-process limits (ProcessSpec.limits): Grove limits whole containers",
            ));
        }
    }
    if !spec.image.uri.is_empty() {
        return Err(GardenError::not_implemented(
            "a process with its own image (ProcessSpec.image, Guardian's peas)",
        ));
    }
    if spec.bind_mounts.as_ref().is_some_and(|m| !m.is_empty()) {
        return Err(GardenError::not_implemented("ProcessSpec.bind_mounts"));
    }
    b.set_path(spec.path.as_str());
    let args = spec.args.clone().unwrap_or_default();
    grove_client::fill_text_list(b.reborrow().init_args(args.len() as u32), &args);
    let env = spec.env.clone().unwrap_or_default();
    grove_client::fill_text_list(b.reborrow().init_env(env.len() as u32), &env);
    b.set_dir(spec.dir.as_str());
    b.set_user(spec.user.as_str());
    b.set_id(spec.id.as_str());
    for (name, value) in spec.rlimits.set() {
        let r = b.reborrow().get_rlimits().map_err(capnp_err)?;
        grove_client::set_rlimit(r, name, value).map_err(GardenError::bad_request)?;
    }
    if let Some(tty) = &spec.tty {
        b.set_has_tty(true);
        let (columns, rows) = window(tty.window_size);
        let mut w = b.init_tty().init_window_size();
        w.set_columns(columns);
        w.set_rows(rows);
    }
    Ok(())
}

/// A terminal's size; Grove needs both at least 1, Garden may send none
/// (then a classic 80x24).
pub fn window(size: Option<wire::WindowSize>) -> (u16, u16) {
    let s = size.unwrap_or_default();
    (
        if s.columns == 0 { 80 } else { s.columns },
        if s.rows == 0 { 24 } else { s.rows },
    )
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> R<String> {
    t.map_err(capnp_err)?
        .to_string()
        .map_err(|e| capnp_err(capnp::Error::from(e)))
}

fn texts(l: capnp::Result<capnp::text_list::Reader<'_>>) -> R<Vec<String>> {
    l.map_err(capnp_err)?.iter().map(text).collect()
}

pub fn properties(
    l: capnp::Result<capnp::struct_list::Reader<'_, api::property::Owned>>,
) -> R<Value> {
    let mut map = Map::new();
    for p in l.map_err(capnp_err)? {
        map.insert(text(p.get_name())?, Value::String(text(p.get_value())?));
    }
    Ok(Value::Object(map))
}

/// garden.ContainerInfo: Go field names as keys.
pub fn info(i: api::container_info::Reader<'_>) -> R<Value> {
    let ports: Vec<Value> = i
        .get_mapped_ports()
        .map_err(capnp_err)?
        .iter()
        .map(|m| json!({"HostPort": m.get_host_port(), "ContainerPort": m.get_container_port()}))
        .collect();
    Ok(json!({
        "State": text(i.get_state())?,
        "Events": texts(i.get_events())?,
        "HostIP": text(i.get_host_ip())?,
        "ContainerIP": text(i.get_container_ip())?,
        "ContainerIPv6": "",
        "ExternalIP": text(i.get_external_ip())?,
        "ContainerPath": text(i.get_container_path())?,
        "ProcessIDs": texts(i.get_process_ids())?,
        "Properties": properties(i.get_properties())?,
        "MappedPorts": ports,
    }))
}

/// The memory.stat fields garden.ContainerMemoryStat has (json tags).
const MEMORY_STAT_FIELDS: &[&str] = &[
    "active_anon",
    "active_file",
    "cache",
    "hierarchical_memory_limit",
    "inactive_anon",
    "inactive_file",
    "mapped_file",
    "pgfault",
    "pgmajfault",
    "pgpgin",
    "pgpgout",
    "rss",
    "total_active_anon",
    "total_active_file",
    "total_cache",
    "total_inactive_anon",
    "total_inactive_file",
    "total_mapped_file",
    "total_pgfault",
    "total_pgmajfault",
    "total_pgpgin",
    "total_pgpgout",
    "total_rss",
    "total_unevictable",
    "unevictable",
    "swap",
    "hierarchical_memsw_limit",
    "total_swap",
    "anon",
    "file",
    "swapcached",
];

/// garden.Metrics: Go field names, memory.stat's fields by their json
/// tags, Age in nanoseconds.
pub fn metrics(m: api::metrics::Reader<'_>) -> R<Value> {
    let mem = m.get_memory().map_err(capnp_err)?;
    let mut stat = Map::new();
    for name in MEMORY_STAT_FIELDS {
        stat.insert(name.to_string(), json!(0u64));
    }
    for s in mem.get_stat().map_err(capnp_err)? {
        let name = text(s.get_name())?;
        if MEMORY_STAT_FIELDS.contains(&name.as_str()) {
            stat.insert(name, json!(s.get_value()));
        }
    }
    stat.insert("cache".into(), json!(mem.get_cache()));
    stat.insert("rss".into(), json!(mem.get_rss()));
    stat.insert(
        "TotalUsageTowardLimit".into(),
        json!(mem.get_total_usage_toward_limit()),
    );
    let cpu = m.get_cpu().map_err(capnp_err)?;
    let disk = m.get_disk().map_err(capnp_err)?;
    let net = m.get_network().map_err(capnp_err)?;
    let pid = m.get_pid().map_err(capnp_err)?;
    Ok(json!({
        "MemoryStat": Value::Object(stat),
        "CPUStat": {"Usage": cpu.get_usage_nanos(), "User": cpu.get_user_nanos(), "System": cpu.get_system_nanos()},
        "DiskStat": {
            "TotalBytesUsed": disk.get_total_bytes_used(),
            "TotalInodesUsed": disk.get_total_inodes_used(),
            "ExclusiveBytesUsed": disk.get_exclusive_bytes_used(),
            "ExclusiveInodesUsed": disk.get_exclusive_inodes_used(),
        },
        "NetworkStat": {"RxBytes": net.get_rx_bytes(), "TxBytes": net.get_tx_bytes()},
        "PidStat": {"Current": pid.get_current(), "Max": pid.get_max()},
        "Age": (m.get_age_seconds() * 1e9) as i64,
        "CPUEntitlement": m.get_cpu_entitlement(),
    }))
}

/// A Grove "[code] message" text (bulk results) as Grove's error.
pub fn coded_error(text: &str) -> grove_client::Error {
    match text.strip_prefix('[').and_then(|r| r.split_once("] ")) {
        Some((code, message)) => grove_client::Error {
            code: code.into(),
            message: message.into(),
        },
        None => grove_client::Error {
            code: "internal".into(),
            message: text.into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_image_uris() {
        assert_eq!(nanos_to_secs(0), 0);
        assert_eq!(nanos_to_secs(1), 1);
        assert_eq!(nanos_to_secs(3_000_000_000), 3);
        for (garden, grove) in [
            (
                "docker:///busybox#1.36",
                "docker://registry-1.docker.io/library/busybox:1.36",
            ),
            (
                "docker:///busybox",
                "docker://registry-1.docker.io/library/busybox:latest",
            ),
            (
                "docker://docker.io/library/busybox",
                "docker://registry-1.docker.io/library/busybox:latest",
            ),
            (
                "docker:///cloudfoundry/cflinuxfs4#1.2",
                "docker://registry-1.docker.io/cloudfoundry/cflinuxfs4:1.2",
            ),
            (
                "docker://127.0.0.1:5000/x",
                "docker://127.0.0.1:5000/x:latest",
            ),
            // Refused by the grammar: passed on for groved to say why.
            (
                "docker://127.0.0.1:5000/UPPER#1",
                "docker://127.0.0.1:5000/UPPER:1",
            ),
        ] {
            assert_eq!(image_uri(garden).as_deref(), Some(grove), "{garden}");
        }
        assert_eq!(image_uri("/var/rootfs"), None);
        assert_eq!(rootfs_path("raw:///var/rootfs"), "/var/rootfs");
        assert_eq!(window(None), (80, 24));
        let e = coded_error("[containerNotFound] unknown handle: x");
        assert_eq!(e.code, "containerNotFound");
    }
}
