//! Garden's JSON, as its Go client encodes requests and decodes answers
//! (cloudfoundry/garden client.go, container.go, net_out_rule.go, net_in.go,
//! transport/payload.go). Request structs use the Go json tags as keys;
//! several answers (ContainerInfo, Metrics, the Create and List answers,
//! errors) have no tags, so their keys are the Go field names. Durations
//! are Go's time.Duration: integer nanoseconds. Absent keys and `null`
//! take Go's zero values; unknown keys are ignored, as encoding/json does.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Go's `omitempty` for numbers.
pub fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ContainerSpec {
    pub handle: String,
    /// Nanoseconds; 0: the server's default.
    pub grace_time: i64,
    pub rootfs: String,
    pub image: ImageRef,
    pub bind_mounts: Option<Vec<BindMount>>,
    pub network: String,
    pub properties: Option<BTreeMap<String, String>>,
    pub env: Option<Vec<String>>,
    pub privileged: bool,
    pub limits: Limits,
    pub netout_rules: Option<Vec<NetOutRule>>,
    pub netin: Option<Vec<NetIn>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ImageRef {
    pub uri: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BindMount {
    pub src_path: String,
    pub dst_path: String,
    /// 0 read-only, 1 read-write.
    pub mode: u8,
    /// 0 host, 1 container.
    pub origin: u8,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct Limits {
    pub bandwidth_limits: BandwidthLimits,
    pub cpu_limits: CpuLimits,
    pub disk_limits: DiskLimits,
    pub memory_limits: MemoryLimits,
    pub pid_limits: PidLimits,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct BandwidthLimits {
    #[serde(skip_serializing_if = "is_zero")]
    pub rate: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub burst: u64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct CpuLimits {
    #[serde(skip_serializing_if = "is_zero")]
    pub weight: u64,
    /// Deprecated in Garden; the same thing as weight.
    #[serde(skip_serializing_if = "is_zero")]
    pub limit_in_shares: u64,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct DiskLimits {
    #[serde(skip_serializing_if = "is_zero")]
    pub inode_soft: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub inode_hard: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub byte_soft: u64,
    #[serde(skip_serializing_if = "is_zero")]
    pub byte_hard: u64,
    /// 0 total, 1 exclusive.
    #[serde(skip_serializing_if = "is_zero_u8")]
    pub scope: u8,
}

fn is_zero_u8(n: &u8) -> bool {
    *n == 0
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct MemoryLimits {
    #[serde(skip_serializing_if = "is_zero")]
    pub limit_in_bytes: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PidLimits {
    pub max: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetIn {
    pub host_port: u32,
    pub container_port: u32,
}

/// transport.NetInRequest (its `handle` is ignored: the path names it).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetInRequest {
    pub host_port: u32,
    pub container_port: u32,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct NetOutRule {
    /// 0 all, 1 tcp, 2 udp, 3 icmp, 4 icmpv6.
    pub protocol: u8,
    pub networks: Option<Vec<IpRange>>,
    pub ports: Option<Vec<PortRange>>,
    pub icmps: Option<IcmpControl>,
    pub log: bool,
}

/// Go's net.IP marshals as its text ("10.0.0.1"); nil is omitted.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IpRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PortRange {
    pub start: u16,
    pub end: u16,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct IcmpControl {
    #[serde(rename = "type")]
    pub kind: u8,
    pub code: Option<u8>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProcessSpec {
    pub id: String,
    pub path: String,
    pub args: Option<Vec<String>>,
    pub env: Option<Vec<String>>,
    pub dir: String,
    pub user: String,
    pub rlimits: ResourceLimits,
    /// Per-process cgroup limits (Guardian's OverrideContainerLimits).
    pub limits: Option<ProcessLimits>,
    pub tty: Option<TtySpec>,
    /// A process with its own rootfs (Guardian's "peas").
    pub image: ImageRef,
    pub bind_mounts: Option<Vec<BindMount>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ProcessLimits {
    pub cpu_limits: CpuLimits,
    pub memory_limits: MemoryLimits,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ResourceLimits {
    #[serde(rename = "as")]
    pub as_: Option<u64>,
    pub core: Option<u64>,
    pub cpu: Option<u64>,
    pub data: Option<u64>,
    pub fsize: Option<u64>,
    pub locks: Option<u64>,
    pub memlock: Option<u64>,
    pub msgqueue: Option<u64>,
    pub nice: Option<u64>,
    pub nofile: Option<u64>,
    pub nproc: Option<u64>,
    pub rss: Option<u64>,
    pub rtprio: Option<u64>,
    pub sigpending: Option<u64>,
    pub stack: Option<u64>,
}

impl ResourceLimits {
    /// (name as grove_client::set_rlimit knows it, value) of the set ones.
    pub fn set(&self) -> Vec<(&'static str, u64)> {
        [
            ("as", self.as_),
            ("core", self.core),
            ("cpu", self.cpu),
            ("data", self.data),
            ("fsize", self.fsize),
            ("locks", self.locks),
            ("memlock", self.memlock),
            ("msgqueue", self.msgqueue),
            ("nice", self.nice),
            ("nofile", self.nofile),
            ("nproc", self.nproc),
            ("rss", self.rss),
            ("rtprio", self.rtprio),
            ("sigpending", self.sigpending),
            ("stack", self.stack),
        ]
        .into_iter()
        .filter_map(|(name, v)| v.map(|v| (name, v)))
        .collect()
    }
}

#[derive(Debug, Default, Clone, Deserialize, Serialize)]
#[serde(default)]
pub struct TtySpec {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub window_size: Option<WindowSize>,
}

#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize)]
#[serde(default)]
pub struct WindowSize {
    pub columns: u16,
    pub rows: u16,
}

/// transport.ProcessPayload: one line of JSON each way on a run/attach
/// connection. `source` 0 is stdin; `signal` 0 terminate, 1 kill.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(default)]
pub struct ProcessPayload {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub process_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub stream_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exit_status: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tty: Option<TtySpec>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signal: Option<i64>,
}

/// `{"kill": bool}` (Stop).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct StopRequest {
    pub kill: bool,
}

/// `{"value": "..."}` (SetProperty).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PropertyValue {
    pub value: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_as_gos_client_encodes_it() {
        let spec: ContainerSpec = serde_json::from_str(
            r#"{"handle":"h","grace_time":5000000000,"image":{},"properties":{"a":"b"},
                "limits":{"bandwidth_limits":{},"cpu_limits":{"limit_in_shares":5},
                "disk_limits":{},"memory_limits":{"limit_in_bytes":1024},"pid_limits":{}},
                "netout_rules":[{"protocol":1,"networks":[{"start":"10.0.0.1","end":"10.0.0.9"}],
                "ports":[{"start":80,"end":81}]}],"netin":[{"host_port":0,"container_port":8080}],
                "unknown":null}"#,
        )
        .unwrap();
        assert_eq!(spec.grace_time, 5_000_000_000);
        assert_eq!(spec.limits.cpu_limits.limit_in_shares, 5);
        assert_eq!(
            spec.netout_rules.unwrap()[0].ports.as_ref().unwrap()[0].end,
            81
        );
        let p: ProcessSpec = serde_json::from_str(
            r#"{"path":"sh","rlimits":{"nofile":10},"tty":{"window_size":{"columns":3,"rows":4}},"image":{}}"#,
        )
        .unwrap();
        assert_eq!(p.rlimits.set(), [("nofile", 10)]);
        assert_eq!(p.tty.unwrap().window_size.unwrap().rows, 4);
    }

    #[test]
    fn payloads_omit_what_is_unset() {
        let p = ProcessPayload {
            process_id: "p".into(),
            exit_status: Some(0),
            ..Default::default()
        };
        assert_eq!(
            serde_json::to_string(&p).unwrap(),
            r#"{"process_id":"p","exit_status":0}"#
        );
        assert_eq!(
            serde_json::to_string(&BandwidthLimits::default()).unwrap(),
            "{}"
        );
    }
}
