//! The groved → grove-helper protocol: a closed, versioned set of requests.
//!
//! One request per SOCK_SEQPACKET datagram of at most [`MAX_DATAGRAM`] bytes,
//! postcard-encoded as an [`Envelope`]. `decode_request` is the only way the
//! helper turns bytes into a request; it refuses trailing bytes, unknown
//! versions and every malformed field (handles validate while decoding). What
//! depends on the helper's policy (which directories may be a rootfs, ...) is
//! checked by the helper after decoding, before anything happens.

pub use crate::envelope::Envelope;
use crate::envelope::{self, DecodeError};
use crate::net::{Bandwidth, NetOutRule, NetStats, NetworkInfo, PortMapping};
use crate::Handle;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

pub const PROTOCOL_VERSION: u16 = 5;
/// Largest datagram either side sends or accepts.
pub const MAX_DATAGRAM: usize = 4096;
/// Largest response datagram (a container list can exceed a request's size).
pub const MAX_RESPONSE: usize = 192 * 1024;
/// Most file descriptors one datagram may carry.
pub const MAX_FDS: usize = 4;
/// Longest path the protocol carries.
pub const MAX_PATH: usize = 1024;
/// The image layer media types Grove unpacks (tar, plain or compressed
/// with gzip or zstd); a manifest naming any other (Docker's foreign
/// Windows layers, unknown types) is refused, by groved before a pull and
/// by the helper.
pub const LAYER_MEDIA_TYPES: [&str; 8] = [
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];
/// Most layers one `Response::Layers` lists (the rest on the next page).
pub const LAYERS_PER_PAGE: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Liveness and version check.
    Ping,
    /// Build and start a container: namespaces, rootfs, cgroup (with the
    /// device allowlist and `limits` in force before wshd starts), wshd as
    /// PID 1.
    ///
    /// Its network: a netns with lo up and a veth pair, the host end on the
    /// policy's bridge, `ip` from the policy's pool (None: the helper picks
    /// a free one), a default route via the bridge, egress denied until
    /// NetOut allows it, `limits.bandwidth` shaped on the host end.
    ///
    /// `privileged`: no user namespace (root in the container is root on
    /// the host); refused unless the policy allows it.
    ///
    /// `binds`: directories or files bind-mounted into the container
    /// (nosuid, nodev), at most MAX_BINDS.
    CreateContainer {
        handle: Handle,
        rootfs: RootfsSource,
        limits: Limits,
        ip: Option<Ipv4Addr>,
        privileged: bool,
        binds: Vec<BindMount>,
    },
    /// Kill every process of the container and remove all it owns.
    DestroyContainer { handle: Handle },
    /// The containers the helper knows, with their state.
    ListContainers,
    /// Change some of a running container's limits: all of them or none.
    SetLimits { handle: Handle, limits: Limits },
    /// The limits in force (`Response::Limits`).
    GetLimits { handle: Handle },
    /// Resource usage from the container's cgroups (`Response::Stats`).
    GetStats { handle: Handle },
    /// An fd that becomes readable when the kernel OOM-kills in the
    /// container (`Response::OomWatch`, the fd attached): on v1 an eventfd
    /// registered on memory.oom_control; on v2 memory.events, which signals
    /// POLLPRI when it changes.
    WatchOom { handle: Handle },
    /// Map a host port to a container port (TCP, DNAT on the host's own
    /// addresses, 127.0.0.1 included). host_port 0: the helper picks one
    /// from the policy's range; container_port 0: the same as the host
    /// port (`Response::NetIn` says which were used).
    NetIn {
        handle: Handle,
        host_port: u16,
        container_port: u16,
    },
    /// Add egress allow rules, all of them or none.
    NetOut {
        handle: Handle,
        rules: Vec<NetOutRule>,
    },
    /// The container's network and NetIn mappings (`Response::Network`).
    GetNetwork { handle: Handle },
    /// A pidfd of the container's wshd (`Response::ExitWatch`, the fd
    /// attached), which polls readable the moment wshd exits: groved
    /// learns of its death at once instead of at its next call. Running
    /// only. The holder cannot signal wshd through it (pidfd_send_signal
    /// checks kill permission) nor take its fds (pidfd_getfd needs ptrace
    /// access); see SECURITY.md.
    WatchExit { handle: Handle },
    /// The unpacked layers in the depot's layer store, in id order, the
    /// first `LAYERS_PER_PAGE` after `after` (`Response::Layers`).
    ListLayers { after: Option<LayerId> },
    /// Remove an unpacked layer (`Response::LayerRemoved`); refused
    /// (`InvalidState`) while a container uses it or an image is being
    /// unpacked, and (`PolicyRefused`) when the policy's `layer_gc` is off.
    RemoveLayer { id: LayerId },
}

/// An unpacked layer's id: the sha256 of its uncompressed tar (its diff
/// id), 64 lowercase hex digits.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct LayerId(String);

impl LayerId {
    pub fn new(s: impl Into<String>) -> Result<LayerId, String> {
        let s = s.into();
        if s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            Ok(LayerId(s))
        } else {
            Err(format!("layer id {s:?} is not 64 lowercase hex digits"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for LayerId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        LayerId::new(s).map_err(crate::envelope::refused)
    }
}

impl From<LayerId> for String {
    fn from(id: LayerId) -> String {
        id.0
    }
}

impl std::fmt::Display for LayerId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One unpacked layer of the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerInfo {
    pub id: LayerId,
    /// Bytes allocated on disk, and inodes (0 when not measured yet).
    pub bytes: u64,
    pub inodes: u64,
    /// Containers (in any state) whose root filesystem stacks it.
    pub containers: u32,
    /// When a container last began or ceased to use it (Unix seconds); 0:
    /// no container has used it yet (an unpack under way, or one whose
    /// create failed).
    pub last_used: u64,
}

/// Most bind mounts one container may have.
pub const MAX_BINDS: usize = 16;

/// A bind mount into a new container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindMount {
    /// Where it comes from: a host path beneath the policy's `bind_allow`,
    /// or a path inside the container's own root filesystem.
    pub src: HostPath,
    pub origin: BindOrigin,
    /// Where it appears inside the container (created if missing).
    pub dst: HostPath,
    pub read_only: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BindOrigin {
    Host,
    Container,
}

/// Resource limits; `None` leaves a limit as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Bytes of memory (v1 memory.limit_in_bytes, v2 memory.max).
    pub memory_bytes: Option<u64>,
    /// Relative CPU weight as v1 shares, 2..=262144 (v2: converted to
    /// cpu.weight).
    pub cpu_shares: Option<u64>,
    /// A hard CPU quota: microseconds of CPU time per period.
    pub cpu_quota: Option<CpuQuota>,
    /// Most tasks (v1/v2 pids.max).
    pub pids_max: Option<u64>,
    /// The CPUs the container may run on, a list such as "0-1,3".
    pub cpuset: Option<String>,
    /// A disk limit on the writable layer (a btrfs qgroup limit, or an
    /// ext4/XFS project quota; see `DiskScope`). Refused when the depot's
    /// filesystem has neither enabled.
    pub disk: Option<DiskLimit>,
    /// Shaping on the container's host-side veth (tc).
    pub bandwidth: Option<Bandwidth>,
}

/// Limits on a container's writable layer, enforced by the kernel: writes
/// (or new files) past them fail with EDQUOT (XFS: ENOSPC). A new `DiskLimit` replaces
/// the one in force as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLimit {
    /// Bytes; 0: no byte limit, else at least 1 MiB.
    pub bytes: u64,
    /// Inodes (files, directories, links …); 0: no inode limit. Only
    /// project quotas (ext4, XFS) count inodes; refused on btrfs.
    pub inodes: u64,
    pub scope: DiskScope,
}

/// What the limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskScope {
    /// The image and the container's writes: the image is shared, so its
    /// size (bytes and inodes, measured at create) is taken off the limit
    /// and the layer gets the rest (btrfs: max_rfer; ext4/XFS: the
    /// project's hard limits); refused when that leaves less than 1 MiB
    /// (or `MIN_WRITABLE_INODES` inodes).
    Total,
    /// The container's own writes only (btrfs: max_excl).
    Exclusive,
}

/// The fewest inodes a total-scope inode limit must leave the container's
/// writes, and the smallest inode limit: the layer's own directories
/// (layer, upper, work and overlayfs's work/work) count too.
pub const MIN_WRITABLE_INODES: u64 = 16;

/// Disk usage of the writable layer. btrfs: from its qgroup, as of the
/// filesystem's last transaction commit (fresh writes show after a sync or
/// within the commit interval), no inode counts. ext4/XFS: from its project
/// quota, current.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskUsage {
    /// The image's size plus the bytes the layer references.
    pub referenced_bytes: u64,
    /// The container's own writes.
    pub exclusive_bytes: u64,
    /// The image's inodes plus the layer's (0 on btrfs).
    pub referenced_inodes: u64,
    /// The layer's inodes (0 on btrfs).
    pub exclusive_inodes: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuQuota {
    /// 1000..=1_000_000.
    pub period_us: u64,
    /// At least 1000; `u64::MAX` removes the quota.
    pub quota_us: u64,
}

/// What the container's cgroups report.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub memory_usage_bytes: u64,
    /// Every field of memory.stat, as the kernel names it.
    pub memory_stat: Vec<(String, u64)>,
    pub cpu_usage_ns: u64,
    pub cpu_user_ns: u64,
    pub cpu_system_ns: u64,
    pub pids_current: u64,
    /// `None`: no limit.
    pub pids_max: Option<u64>,
    /// OOM kills the kernel has counted in this container.
    pub oom_kills: u64,
    /// `None`: the depot cannot measure it (no btrfs qgroups or project quotas).
    pub disk: Option<DiskUsage>,
    /// The container's traffic, from its host-side veth's counters.
    pub net: NetStats,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RootfsSource {
    /// The default rootfs named in the helper's policy.
    Default,
    /// A host directory; the helper's policy must allow it.
    HostDir(HostPath),
    /// An OCI image layout directory and the tag (the
    /// `org.opencontainers.image.ref.name` annotation) of one of its
    /// manifests; the helper's policy (`image_allow`) must allow the path.
    OciLayout { dir: HostPath, tag: ImageTag },
    /// A `docker save` tarball; the policy (`image_allow`) must allow it.
    DockerArchive { path: HostPath },
}

/// An image tag: 1 to 128 of `[A-Za-z0-9._-]`, not starting with '.' or
/// '-' (the OCI ref.name component grammar, narrowed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ImageTag(String);

impl ImageTag {
    pub fn new(s: impl Into<String>) -> Result<ImageTag, String> {
        let s = s.into();
        if s.is_empty() || s.len() > 128 {
            return Err(format!("tag {s:?} must be 1 to 128 characters"));
        }
        if !s
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
            || s.starts_with('.')
            || s.starts_with('-')
        {
            return Err(format!(
                "tag {s:?} may hold only letters, digits, '.', '_' and '-', and may not start with '.' or '-'"
            ));
        }
        Ok(ImageTag(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for ImageTag {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        ImageTag::new(s).map_err(crate::envelope::refused)
    }
}

impl From<ImageTag> for String {
    fn from(t: ImageTag) -> String {
        t.0
    }
}

/// Process defaults from an image's config (`Env`, `WorkingDir`, `User`);
/// empty for a plain rootfs directory.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageDefaults {
    /// "NAME=value" entries, in the image's order.
    pub env: Vec<String>,
    /// Empty: none.
    pub working_dir: String,
    /// Empty: none.
    pub user: String,
}

/// An absolute host path with no "." or ".." components, no NUL and no
/// empty components, at most [`MAX_PATH`] bytes. Syntax only: the helper still
/// resolves it without following symlinks and checks its allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct HostPath(String);

impl HostPath {
    pub fn new(s: impl Into<String>) -> Result<HostPath, String> {
        let s = s.into();
        if s.len() > MAX_PATH {
            return Err(format!(
                "path is {} bytes long; at most {MAX_PATH} are allowed",
                s.len()
            ));
        }
        if !s.starts_with('/') {
            return Err(format!("path {s:?} is not absolute"));
        }
        if s.contains('\0') {
            return Err(format!("path {s:?} contains NUL"));
        }
        let rest = s.strip_prefix('/').unwrap_or(&s);
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if !rest.is_empty()
            && rest
                .split('/')
                .any(|c| c.is_empty() || c == "." || c == "..")
        {
            return Err(format!("path {s:?} has an empty, '.' or '..' component"));
        }
        Ok(HostPath(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The path's components, in order ("/a/b/" gives ["a", "b"]).
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|c| !c.is_empty())
    }
}

impl TryFrom<String> for HostPath {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        HostPath::new(s).map_err(crate::envelope::refused)
    }
}

impl From<HostPath> for String {
    fn from(p: HostPath) -> String {
        p.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ContainerState {
    Creating,
    Running,
    Stopped,
    Destroying,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerSummary {
    pub handle: Handle,
    pub state: ContainerState,
    /// wshd's pid in the host's PID namespace (0 when it is not running).
    pub wshd_pid: i32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong {
        version: u16,
    },
    Created {
        wshd_pid: i32,
        /// The image's process defaults (empty for a rootfs directory).
        defaults: ImageDefaults,
        network: NetworkInfo,
    },
    Destroyed,
    Containers(Vec<ContainerSummary>),
    LimitsSet,
    /// Limits in force; `None` fields have no limit set.
    Limits(Limits),
    Stats(Stats),
    /// The watch fd is attached to this datagram.
    OomWatch,
    NetIn(PortMapping),
    NetOutAdded,
    /// The container's address and NetIn mappings (its NetOut rules are
    /// not sent back: 512 rules of 32 ranges would not fit a response).
    Network {
        info: NetworkInfo,
        net_in: Vec<PortMapping>,
    },
    Error(HelperError),
    /// wshd's pidfd is attached to this datagram.
    ExitWatch,
    /// A page of the layer store; `more`: ask again after the last one.
    Layers {
        layers: Vec<LayerInfo>,
        more: bool,
    },
    /// The layer is gone; what it had allocated.
    LayerRemoved {
        bytes: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// The datagram could not be decoded (truncated, garbage, bad field).
    Malformed,
    /// The envelope names a protocol version this helper does not speak.
    UnsupportedVersion,
    /// The request is well-formed but the helper's policy forbids it.
    PolicyRefused,
    /// A field's value is out of range or malformed (e.g. a limit); the
    /// message names the field and what is allowed.
    InvalidValue,
    /// No container has that handle.
    NotFound,
    /// A container with that handle exists already.
    AlreadyExists,
    /// The container's state does not allow the operation.
    InvalidState,
    /// A configured limit (e.g. the number of containers) is reached.
    LimitExceeded,
    /// The kernel refused a step; the message says which.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct HelperError {
    pub kind: ErrorKind,
    pub message: String,
}

impl HelperError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> HelperError {
        HelperError {
            kind,
            message: message.into(),
        }
    }
}

/// Decode one request datagram. Every way the bytes can be wrong is an
/// error of kind `Malformed` or `UnsupportedVersion`, never a panic.
pub fn decode_request(bytes: &[u8]) -> Result<Request, HelperError> {
    decode(bytes, MAX_DATAGRAM)
}

pub fn decode_response(bytes: &[u8]) -> Result<Response, HelperError> {
    decode(bytes, MAX_RESPONSE)
}

pub fn encode_request(request: &Request) -> Vec<u8> {
    encode(request)
}

pub fn encode_response(response: &Response) -> Vec<u8> {
    encode(response)
}

fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    envelope::encode(PROTOCOL_VERSION, body)
}

fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8], max: usize) -> Result<T, HelperError> {
    envelope::decode(bytes, max, PROTOCOL_VERSION).map_err(|e| match e {
        DecodeError::Malformed(m) => HelperError::new(ErrorKind::Malformed, m),
        DecodeError::UnsupportedVersion(m) => HelperError::new(ErrorKind::UnsupportedVersion, m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(handle: &str) -> Request {
        Request::CreateContainer {
            handle: Handle::new(handle).unwrap(),
            rootfs: RootfsSource::HostDir(HostPath::new("/var/lib/grove/rootfs").unwrap()),
            limits: Limits {
                memory_bytes: Some(1 << 30),
                ..Limits::default()
            },
            ip: None,
            privileged: false,
            binds: Vec::new(),
        }
    }

    #[test]
    fn round_trips() {
        let image = |rootfs| Request::CreateContainer {
            handle: Handle::new("img").unwrap(),
            rootfs,
            limits: Limits::default(),
            ip: None,
            privileged: false,
            binds: Vec::new(),
        };
        for r in [
            Request::Ping,
            Request::ListContainers,
            create("c1"),
            image(RootfsSource::OciLayout {
                dir: HostPath::new("/var/lib/grove/images/x").unwrap(),
                tag: ImageTag::new("v1.0_rc-1").unwrap(),
            }),
            image(RootfsSource::DockerArchive {
                path: HostPath::new("/var/lib/grove/images/x.tar").unwrap(),
            }),
            Request::ListLayers { after: None },
            Request::ListLayers {
                after: Some(LayerId::new("a".repeat(64)).unwrap()),
            },
            Request::RemoveLayer {
                id: LayerId::new("0".repeat(64)).unwrap(),
            },
        ] {
            assert_eq!(decode_request(&encode_request(&r)).unwrap(), r);
        }
        for bad in ["", ".x", "-x", "a/b", "a:b", &"t".repeat(129)] {
            assert!(ImageTag::new(bad).is_err(), "{bad:?}");
        }
        let created = Response::Created {
            wshd_pid: 7,
            defaults: ImageDefaults {
                env: vec!["FOO=bar".into()],
                working_dir: "/opt".into(),
                user: "user".into(),
            },
            network: crate::net::NetworkInfo {
                ip: Ipv4Addr::new(10, 254, 0, 2),
                gateway: Ipv4Addr::new(10, 254, 0, 1),
                prefix_len: 22,
                mtu: 1500,
            },
        };
        assert_eq!(
            decode_response(&encode_response(&created)).unwrap(),
            created
        );
    }

    #[test]
    fn a_full_page_of_layers_fits_a_response() {
        let page = Response::Layers {
            layers: (0..LAYERS_PER_PAGE)
                .map(|i| LayerInfo {
                    id: LayerId::new(format!("{i:064x}")).unwrap(),
                    bytes: u64::MAX,
                    inodes: u64::MAX,
                    containers: u32::MAX,
                    last_used: u64::MAX,
                })
                .collect(),
            more: true,
        };
        let bytes = encode_response(&page);
        assert!(bytes.len() <= MAX_RESPONSE, "{} bytes", bytes.len());
        assert_eq!(decode_response(&bytes).unwrap(), page);
    }

    #[test]
    fn bad_layer_ids_are_refused_while_decoding() {
        #[derive(Serialize)]
        enum Raw {
            RemoveLayer { id: String },
        }
        // RemoveLayer's index in Request.
        let mut bytes = postcard::to_allocvec(&Envelope {
            version: PROTOCOL_VERSION,
            body: Raw::RemoveLayer { id: "A".repeat(64) },
        })
        .unwrap();
        let good = encode_request(&Request::RemoveLayer {
            id: LayerId::new("a".repeat(64)).unwrap(),
        });
        // Same shape: only the variant index differs.
        let at = bytes.len() - 66;
        bytes[at] = good[at];
        let e = decode_request(&bytes).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Malformed);
        assert!(e.message.contains("layer id"), "{}", e.message);
        for bad in ["", "a", &"g".repeat(64), &"a".repeat(65)] {
            assert!(LayerId::new(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_truncation_is_refused() {
        let bytes = encode_request(&create("truncate-me"));
        for n in 0..bytes.len() {
            let err = decode_request(&bytes[..n]).unwrap_err();
            assert_eq!(err.kind, ErrorKind::Malformed, "prefix of {n} bytes");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_request(&Request::Ping);
        bytes.push(0);
        assert!(decode_request(&bytes)
            .unwrap_err()
            .message
            .contains("trailing"));
    }

    #[test]
    fn unknown_variant_and_version_are_refused() {
        let mut bytes = encode_request(&Request::Ping);
        *bytes.last_mut().unwrap() = 200; // no such request
        assert_eq!(
            decode_request(&bytes).unwrap_err().kind,
            ErrorKind::Malformed
        );
        let other = postcard::to_allocvec(&Envelope {
            version: 9,
            body: Request::Ping,
        })
        .unwrap();
        assert_eq!(
            decode_request(&other).unwrap_err().kind,
            ErrorKind::UnsupportedVersion
        );
    }

    #[test]
    fn bad_handles_and_paths_are_refused_while_decoding() {
        #[derive(Serialize)]
        #[allow(clippy::large_enum_variant)]
        enum Raw {
            #[allow(dead_code)]
            Ping,
            CreateContainer {
                handle: String,
                rootfs: RawRootfs,
                limits: Limits,
                ip: Option<Ipv4Addr>,
                privileged: bool,
                /// Always empty here (an empty list encodes alike for any type).
                binds: Vec<u8>,
            },
        }
        #[derive(Serialize)]
        enum RawRootfs {
            #[allow(dead_code)]
            Default,
            HostDir(String),
        }
        let raw = |h: &str, p: &str| {
            postcard::to_allocvec(&Envelope {
                version: PROTOCOL_VERSION,
                body: Raw::CreateContainer {
                    handle: h.into(),
                    rootfs: RawRootfs::HostDir(p.into()),
                    limits: Limits::default(),
                    ip: None,
                    privileged: false,
                    binds: Vec::new(),
                },
            })
            .unwrap()
        };
        assert!(decode_request(&raw("ok", "/srv/rootfs")).is_ok());
        for (h, p, says) in [
            ("../x", "/srv", "../x"),
            ("a/b", "/srv", "a/b"),
            ("ok", "srv", "not absolute"),
            ("ok", "/srv/../etc", "'..' component"),
        ] {
            let e = decode_request(&raw(h, p)).unwrap_err();
            assert_eq!(e.kind, ErrorKind::Malformed, "{h} {p}");
            // The refusal names what was wrong, not just "undecodable".
            assert!(e.message.contains(says), "{h} {p}: {}", e.message);
        }
    }

    #[test]
    fn oversized_datagrams_are_refused() {
        assert_eq!(
            decode_request(&vec![0; MAX_DATAGRAM + 1]).unwrap_err().kind,
            ErrorKind::Malformed
        );
    }
}
