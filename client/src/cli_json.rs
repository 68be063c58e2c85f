//! `grove --json`: what each command prints, as one JSON document. Field
//! names follow schema/api.capnp in snake_case; sizes are bytes and 0 means
//! "no limit" / "not set", as in the API.

use grove_client::{api, Error};
use serde_json::{json, Map, Value};

/// Print one JSON document (compact, one line) on stdout.
pub fn print(value: &Value) {
    println!("{value}");
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String, Error> {
    Ok(t?.to_string().map_err(capnp::Error::from)?)
}

fn texts(list: capnp::Result<capnp::text_list::Reader<'_>>) -> Result<Vec<String>, Error> {
    list?.iter().map(text).collect()
}

/// Properties as an object, name → value.
pub fn properties(
    list: capnp::struct_list::Reader<'_, api::property::Owned>,
) -> Result<Value, Error> {
    let mut map = Map::new();
    for p in list {
        map.insert(text(p.get_name())?, Value::String(text(p.get_value())?));
    }
    Ok(Value::Object(map))
}

pub fn capacity(c: api::capacity::Reader<'_>) -> Value {
    json!({
        "memory_in_bytes": c.get_memory_in_bytes(),
        "disk_in_bytes": c.get_disk_in_bytes(),
        "schedulable_disk_in_bytes": c.get_schedulable_disk_in_bytes(),
        "max_containers": c.get_max_containers(),
    })
}

pub fn info(handle: &str, info: api::container_info::Reader<'_>) -> Result<Value, Error> {
    let mapped: Vec<Value> = info
        .get_mapped_ports()?
        .iter()
        .map(|m| json!({"host_port": m.get_host_port(), "container_port": m.get_container_port()}))
        .collect();
    Ok(json!({
        "handle": handle,
        "state": text(info.get_state())?,
        "process_ids": texts(info.get_process_ids())?,
        "container_ip": text(info.get_container_ip())?,
        "host_ip": text(info.get_host_ip())?,
        "external_ip": text(info.get_external_ip())?,
        "container_path": text(info.get_container_path())?,
        "mapped_ports": mapped,
        "properties": properties(info.get_properties()?)?,
        "events": texts(info.get_events())?,
    }))
}

pub fn metrics(m: api::metrics::Reader<'_>) -> Result<Value, Error> {
    let memory = m.get_memory()?;
    let mut stat = Map::new();
    for s in memory.get_stat()? {
        stat.insert(text(s.get_name())?, s.get_value().into());
    }
    let (cpu, disk, network, pid) = (m.get_cpu()?, m.get_disk()?, m.get_network()?, m.get_pid()?);
    Ok(json!({
        "memory": {
            "usage": memory.get_usage(),
            "cache": memory.get_cache(),
            "rss": memory.get_rss(),
            "total_usage_toward_limit": memory.get_total_usage_toward_limit(),
            "stat": stat,
        },
        "cpu": {
            "usage_nanos": cpu.get_usage_nanos(),
            "user_nanos": cpu.get_user_nanos(),
            "system_nanos": cpu.get_system_nanos(),
        },
        "disk": {
            "total_bytes_used": disk.get_total_bytes_used(),
            "total_inodes_used": disk.get_total_inodes_used(),
            "exclusive_bytes_used": disk.get_exclusive_bytes_used(),
            "exclusive_inodes_used": disk.get_exclusive_inodes_used(),
        },
        "network": {
            "rx_bytes": network.get_rx_bytes(),
            "tx_bytes": network.get_tx_bytes(),
            "rx_packets": network.get_rx_packets(),
            "tx_packets": network.get_tx_packets(),
        },
        "pid": {
            "current": pid.get_current(),
            "max": pid.get_max(),
        },
        "age_seconds": m.get_age_seconds(),
        "cpu_entitlement": m.get_cpu_entitlement(),
    }))
}

/// The limits in force, one object per kind.
pub struct Limits<'a> {
    pub memory: api::memory_limits::Reader<'a>,
    pub cpu: api::cpu_limits::Reader<'a>,
    pub pid: api::pid_limits::Reader<'a>,
    pub disk: api::disk_limits::Reader<'a>,
    pub bandwidth: api::bandwidth_limits::Reader<'a>,
}

/// "total" or "exclusive".
pub fn disk_scope(disk: api::disk_limits::Reader<'_>) -> &'static str {
    match disk.get_scope() {
        Ok(api::disk_limits::Scope::Exclusive) => "exclusive",
        _ => "total",
    }
}

pub fn limits(l: &Limits<'_>) -> Result<Value, Error> {
    Ok(json!({
        "memory": {"limit_in_bytes": l.memory.get_limit_in_bytes()},
        "cpu": {
            "weight": l.cpu.get_weight(),
            "quota_micros": l.cpu.get_quota_micros(),
            "quota_period_micros": l.cpu.get_quota_period_micros(),
            "cpuset": text(l.cpu.get_cpuset())?,
        },
        "pid": {"max": l.pid.get_max()},
        "disk": {
            "byte_hard": l.disk.get_byte_hard(),
            "byte_soft": l.disk.get_byte_soft(),
            "inode_hard": l.disk.get_inode_hard(),
            "inode_soft": l.disk.get_inode_soft(),
            "scope": disk_scope(l.disk),
        },
        "bandwidth": {
            "rate_in_bytes_per_second": l.bandwidth.get_rate_in_bytes_per_second(),
            "burst_rate_in_bytes_per_second": l.bandwidth.get_burst_rate_in_bytes_per_second(),
        },
    }))
}

/// Ask for the limits in force (all five kinds at once, pipelined) and
/// hand them to `read`.
pub async fn with_limits<R>(
    container: &api::container::Client,
    read: impl FnOnce(&Limits<'_>) -> Result<R, Error>,
) -> Result<R, Error> {
    let (memory, cpu, pids, disk, bandwidth) = futures::try_join!(
        container.current_memory_limits_request().send().promise,
        container.current_cpu_limits_request().send().promise,
        container.current_pid_limits_request().send().promise,
        container.current_disk_limits_request().send().promise,
        container.current_bandwidth_limits_request().send().promise,
    )?;
    read(&Limits {
        memory: memory.get()?.get_limits()?,
        cpu: cpu.get()?.get_limits()?,
        pid: pids.get()?.get_limits()?,
        disk: disk.get()?.get_limits()?,
        bandwidth: bandwidth.get()?.get_limits()?,
    })
}
