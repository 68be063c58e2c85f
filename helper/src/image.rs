//! Container images: OCI image layouts and docker-archive tarballs, unpacked
//! once into a content-addressed layer store in the depot,
//! `depot/.layers/sha256/<diff id>`, whose directories every container of
//! the image shares read-only as overlayfs lower dirs.
//!
//! Everything in an image is untrusted: its JSON, its gzip streams, its tar
//! headers. None of it is parsed by the helper itself. `prepare` forks a
//! child that holds only three fds (the image, the layer store, a report
//! pipe), drops every capability but the five unpacking needs, sets
//! no_new_privs, and reaches files only with *at calls beneath those fds.
//! The child verifies every blob's sha256 before it uses it, unpacks each
//! missing layer into a temp dir and renames it into place only when it is
//! complete and its diff id checks out, and reports back the layer ids and
//! the config's process defaults as JSON. The parent checks that answer
//! (ids are 64 hex digits naming directories that exist) before using it.
//!
//! An unpack is bounded (policy `image_max_bytes`, `image_max_entries`,
//! `image_unpack_timeout`) and never holds the serve loop: `start` forks
//! the child and returns; the loop polls the report pipe and calls
//! `Unpack::advance` until the unpack is done or out of time.
//!
//! Why safe: the child is still uid 0, but without CAP_SYS_PTRACE,
//! CAP_NET_*, CAP_SYS_MODULE, CAP_SETUID and the rest it cannot leave the
//! files it was given by other means than paths, and it opens no path
//! except relative to its dirfds, one component at a time, never following
//! a symlink (see SECURITY.md for what this does and does not stop).

use crate::confine::CapData;
use crate::fs;
use crate::trash::Trash;
use grove_schema::helper::{ErrorKind, HelperError, ImageDefaults, LAYER_MEDIA_TYPES};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::unistd::{Gid, Pid, Uid};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{Read, Seek, SeekFrom};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// The layer store inside the depot (not a valid handle: it starts with '.').
pub const LAYERS_DIR: &str = ".layers";
pub const ALGO_DIR: &str = "sha256";
/// Largest JSON document (index, manifest, config) read from an image.
const MAX_JSON: u64 = 4 << 20;
/// Most memory (RLIMIT_DATA) the unpacking child may use.
const MAX_MEMORY: u64 = 256 << 20;
/// Largest report the child may send.
const MAX_REPORT: usize = 1 << 20;

/// Which kind of image the fd passed to `prepare` is.
pub enum Source {
    /// An OCI layout directory; the tag to look for.
    Oci { tag: String },
    /// A docker-archive tarball (a regular file).
    DockerArchive,
}

pub struct Prepared {
    /// Layer ids (sha256 hex of the uncompressed layer), bottom to top.
    pub layers: Vec<String>,
    pub defaults: ImageDefaults,
}

#[derive(Serialize, Deserialize)]
enum Report {
    Ok {
        layers: Vec<String>,
        /// How many of them this child unpacked (the rest were in the store).
        unpacked: usize,
        defaults: ImageDefaults,
    },
    Err(String),
    /// A bound of the policy was reached (its message names it).
    Exceeded(String),
}

fn invalid(name: &str, msg: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::InvalidValue, format!("image {name}: {msg}"))
}

fn system(what: &str, e: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what}: {e}"))
}

pub fn is_layer_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Open (creating if needed) depot/.layers/sha256.
pub fn open_store(depot: BorrowedFd) -> Result<OwnedFd, HelperError> {
    fs::mkdir_at(depot, LAYERS_DIR, 0o700, true).map_err(|e| system("mkdir .layers", e))?;
    let layers = fs::open_dir(depot, LAYERS_DIR).map_err(|e| system("open .layers", e))?;
    fs::mkdir_at(layers.as_fd(), ALGO_DIR, 0o755, true)
        .map_err(|e| system("mkdir .layers/sha256", e))?;
    fs::open_dir(layers.as_fd(), ALGO_DIR).map_err(|e| system("open .layers/sha256", e))
}

/// What one unpack may cost: the uncompressed bytes of the layers it
/// unpacks (every pass over them counted on its own), their tar entries,
/// and its wall-clock time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    pub max_bytes: u64,
    pub max_entries: u64,
    pub timeout: Duration,
}

impl Default for Bounds {
    /// Generous for real images (large CUDA images unpack to ~10 GiB and
    /// ~300,000 files); a bomb stops at 16 GiB.
    fn default() -> Self {
        Bounds {
            max_bytes: 16 << 30,
            max_entries: 1_000_000,
            timeout: Duration::from_secs(600),
        }
    }
}

/// Most unpacks at once. groved sends one at a time; this stops a
/// compromised groved from running one per connection.
pub const MAX_UNPACKS: usize = 2;

/// An unpack under way: the confined child (by pidfd, so no recycled pid
/// is ever signalled), its report pipe and its deadline. Dropping it kills
/// the child and removes what it had begun. The child itself is reaped by
/// `Helper::reap` with every other child.
pub struct Unpack {
    pidfd: OwnedFd,
    pid: i32,
    /// The read end, non-blocking.
    pipe: OwnedFd,
    report: Vec<u8>,
    store: OwnedFd,
    /// Where its temp dirs go when it fails (removed off the serve loop).
    trash: Trash,
    deadline: Instant,
    timeout: Duration,
    name: String,
    /// The child has closed its pipe (or was killed and cleaned up after).
    done: bool,
}

/// Fork the confined child that unpacks the image behind `image` (opened
/// by the caller from a policy-approved path) into the store.
pub fn start(
    depot: BorrowedFd,
    image: OwnedFd,
    source: Source,
    name: &str,
    bounds: Bounds,
    trash: &Trash,
) -> Result<Unpack, HelperError> {
    let store = open_store(depot)?;
    let trash = trash.clone();
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| system("pipe", e))?;
    // Only our end is non-blocking: the child writes its report whole.
    nix::fcntl::fcntl(
        r.as_raw_fd(),
        nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK),
    )
    .map_err(|e| system("pipe", e))?;
    // SAFETY: the helper is single-threaded, so the child is a complete
    // copy with no lock held by a thread that does not exist; the child
    // never returns from its branch (it _exits).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        drop(r);
        let report = match confine(
            [w.as_raw_fd(), image.as_raw_fd(), store.as_raw_fd()],
            bounds,
        ) {
            Ok([w, image, store]) => {
                // SAFETY: confine placed these fds at 3, 4 and 5 and closed
                // every other fd above 2; they stay open until _exit.
                let (image, store) =
                    unsafe { (BorrowedFd::borrow_raw(image), BorrowedFd::borrow_raw(store)) };
                let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    child_main(image, store, &source, bounds)
                }));
                let report = match outcome {
                    Ok(Ok((layers, unpacked, defaults))) => Report::Ok {
                        layers,
                        unpacked,
                        defaults,
                    },
                    Ok(Err(Fail::Bad(e))) => Report::Err(e),
                    Ok(Err(Fail::Exceeded(e))) => Report::Exceeded(e),
                    Err(_) => Report::Err("the unpacking child panicked".into()),
                };
                (w, report)
            }
            Err(e) => (
                w.as_raw_fd(),
                Report::Err(format!("confining the child: {e}")),
            ),
        };
        let bytes = serde_json::to_vec(&report.1).unwrap_or_default();
        let _ = fs::write_all(report.0, &bytes);
        // SAFETY: _exit ends the child without running the parent's
        // destructors or atexit handlers.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return Err(system("fork", Errno::last()));
    }
    drop(w);
    drop(image);
    // Our unreaped child (the serve loop reaps only after this returns):
    // the pid cannot have been recycled yet.
    let pidfd = match crate::spawn::pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) => {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            return Err(system("pidfd_open of the unpacking child", e));
        }
    };
    log_info!("grove-helper: image {name}: unpacking in child {pid}");
    Ok(Unpack {
        pidfd,
        pid,
        pipe: r,
        report: Vec::new(),
        store,
        trash,
        deadline: Instant::now() + bounds.timeout,
        timeout: bounds.timeout,
        name: name.to_string(),
        done: false,
    })
}

impl Unpack {
    /// Readable when the child has written or exited.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.pipe.as_fd()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// Read what the child has sent so far. `None`: still unpacking;
    /// otherwise the outcome (the child is done, or past its deadline and
    /// killed).
    pub fn advance(&mut self, now: Instant) -> Option<Result<Prepared, HelperError>> {
        if self.done {
            return Some(Err(system("the unpacking child", "already reported")));
        }
        let mut buf = [0u8; 8192];
        loop {
            match nix::unistd::read(self.pipe.as_raw_fd(), &mut buf) {
                Ok(0) => break,
                Ok(n) if self.report.len() + n <= MAX_REPORT => {
                    self.report.extend_from_slice(&buf[..n])
                }
                Ok(_) => return Some(self.fail(system("the unpacking child", "report too large"))),
                Err(Errno::EINTR) => {}
                Err(Errno::EAGAIN) if now >= self.deadline => {
                    let e = HelperError::new(
                        ErrorKind::LimitExceeded,
                        format!(
                            "image {}: unpacking took longer than image_unpack_timeout ({} s)",
                            self.name,
                            self.timeout.as_secs()
                        ),
                    );
                    return Some(self.fail(e));
                }
                Err(Errno::EAGAIN) => return None,
                Err(e) => return Some(self.fail(system("reading the child's report", e))),
            }
        }
        // End of file: the child has exited (or is exiting).
        self.done = true;
        let result = self.verify();
        if result.is_err() {
            // A child that crashed (out of memory, CPU time) left its temp
            // dirs; one that reported an error removed them itself.
            self.remove_temps();
        }
        Some(result)
    }

    /// Kill the child, wait for it to die, remove what it began.
    fn fail(&mut self, e: HelperError) -> Result<Prepared, HelperError> {
        self.done = true;
        let _ = crate::spawn::pidfd_kill(self.pidfd.as_fd());
        crate::spawn::pidfd_wait_exit(self.pidfd.as_fd(), Duration::from_secs(5));
        self.remove_temps();
        Err(e)
    }

    /// Remove the child's temp dirs (`tmp-<diff id>-<its pid>`), off the
    /// serve loop (trash.rs). Why safe: names come from readdir of our own
    /// store dirfd, and removal never follows a symlink.
    fn remove_temps(&self) {
        let suffix = format!("-{}", self.pid);
        let Ok(names) = fs::list_dir(self.store.as_fd()) else {
            return;
        };
        for name in names {
            let name = name.to_string_lossy();
            if name.starts_with("tmp-") && name.ends_with(&suffix) {
                if let Err(e) = self
                    .trash
                    .discard(self.store.as_fd(), &name, Duration::ZERO)
                {
                    log_warn!("grove-helper: removing {name}: {e}");
                }
            }
        }
    }

    /// Check the child's report: every layer it names is in the store.
    fn verify(&self) -> Result<Prepared, HelperError> {
        let name = self.name.as_str();
        if self.report.is_empty() {
            return Err(system(
                "the unpacking child",
                "it died without a report (it may use at most 256 MiB of memory, and \
                 image_unpack_timeout of CPU time)",
            ));
        }
        match serde_json::from_slice::<Report>(&self.report) {
            Ok(Report::Ok {
                layers,
                unpacked,
                defaults,
            }) => {
                for id in &layers {
                    let ok = is_layer_id(id)
                        && nix::sys::stat::fstatat(
                            Some(self.store.as_raw_fd()),
                            id.as_str(),
                            AtFlags::AT_SYMLINK_NOFOLLOW,
                        )
                        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                    if !ok {
                        return Err(system(
                            "the unpacking child",
                            format!("reported a layer {id:?} that is not in the store"),
                        ));
                    }
                }
                if layers.is_empty() {
                    return Err(invalid(name, "the image has no layers"));
                }
                log_info!(
                    "grove-helper: image {name}: {} layers, {unpacked} unpacked now, {} already in the store",
                    layers.len(),
                    layers.len().saturating_sub(unpacked)
                );
                Ok(Prepared { layers, defaults })
            }
            Ok(Report::Err(e)) => Err(invalid(name, e)),
            Ok(Report::Exceeded(e)) => Err(HelperError::new(
                ErrorKind::LimitExceeded,
                format!("image {name}: {e}"),
            )),
            Err(e) => Err(system("the unpacking child's report", e)),
        }
    }
}

impl Drop for Unpack {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.fail(system("unpack", "abandoned"));
        }
    }
}

/// Remove every entry of the layer store not in `in_use` (temp dirs of an
/// interrupted unpack included). Names come from readdir of our own store;
/// removal never follows symlinks.
pub fn collect(
    depot: BorrowedFd,
    in_use: &BTreeSet<String>,
    trash: &Trash,
) -> Result<usize, HelperError> {
    // No store yet (no image ever used): nothing to collect, nothing made.
    let store = match fs::open_dir(depot, LAYERS_DIR)
        .and_then(|layers| fs::open_dir(layers.as_fd(), ALGO_DIR))
    {
        Ok(store) => store,
        Err(Errno::ENOENT) => return Ok(0),
        Err(e) => return Err(system("open the layer store", e)),
    };
    let mut removed = 0;
    for name in fs::list_dir(store.as_fd()).map_err(|e| system("reading the layer store", e))? {
        let name = name.to_string_lossy().into_owned();
        if in_use.contains(&name) {
            continue;
        }
        trash
            .discard(store.as_fd(), &name, Duration::ZERO)
            .map_err(|e| system(&format!("removing layer {name}"), e))?;
        removed += 1;
    }
    Ok(removed)
}

// ------------------------------------------------------------------ child

/// Capabilities the unpacking child keeps: chown and chmod of what it
/// creates (CAP_CHOWN, CAP_FOWNER, CAP_FSETID for set-gid bits), writing
/// into read-only directories of the image (CAP_DAC_OVERRIDE), device
/// nodes and whiteouts (CAP_MKNOD), trusted.overlay.opaque (CAP_SYS_ADMIN).
const KEEP_CAPS: [u32; 6] = [
    0,  // CAP_CHOWN
    1,  // CAP_DAC_OVERRIDE
    3,  // CAP_FOWNER
    4,  // CAP_FSETID
    21, // CAP_SYS_ADMIN
    27, // CAP_MKNOD
];

/// Move `fds` to 3, 4, 5, close every other fd above 2, and drop
/// capabilities and privileges. Returns the new fd numbers.
fn confine(fds: [RawFd; 3], bounds: Bounds) -> Result<[RawFd; 3], String> {
    use nix::sys::resource::{setrlimit, Resource};
    // CPU time as long as the deadline: a backstop for a child whose
    // parent died and so cannot kill it.
    let secs = bounds.timeout.as_secs();
    setrlimit(Resource::RLIMIT_CPU, secs, secs).map_err(|e| format!("RLIMIT_CPU: {e}"))?;
    // The tar reader holds a long-name or pax header whole in memory,
    // however large the entry says it is: a bomb of one would take the
    // host's memory. An allocation past this fails (and the child dies).
    setrlimit(Resource::RLIMIT_DATA, MAX_MEMORY, MAX_MEMORY)
        .map_err(|e| format!("RLIMIT_DATA: {e}"))?;
    let mut high = [0; 3];
    for (i, fd) in fds.iter().enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC duplicates an fd we hold into a new one >= 100.
        high[i] = Errno::result(unsafe { libc::fcntl(*fd, libc::F_DUPFD_CLOEXEC, 100) })
            .map_err(|e| format!("dup: {e}"))?;
    }
    for (i, fd) in high.iter().enumerate() {
        nix::unistd::dup2(*fd, 3 + i as RawFd).map_err(|e| format!("dup2: {e}"))?;
    }
    // SAFETY: close_range only closes fds of this process; the ones we use
    // are 0-5.
    Errno::result(unsafe { libc::close_range(6, libc::c_uint::MAX, 0) })
        .map_err(|e| format!("close_range: {e}"))?;
    // SAFETY: umask only changes this process's file mode mask.
    unsafe { libc::umask(0) };
    for cap in 0..64u32 {
        if KEEP_CAPS.contains(&cap) {
            continue;
        }
        // SAFETY: prctl with integer arguments only.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
        if r != 0 {
            match Errno::last() {
                Errno::EINVAL => break, // past the last capability this kernel knows
                e => return Err(format!("PR_CAPBSET_DROP {cap}: {e}")),
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    let mask = KEEP_CAPS.iter().fold(0u32, |m, c| m | (1 << c));
    let data = [
        CapData {
            effective: mask,
            permitted: mask,
            inheritable: 0,
        },
        CapData::default(),
    ];
    crate::confine::capset(&data).map_err(|e| format!("capset: {e}"))?;
    // SAFETY: prctl with integer arguments only.
    Errno::result(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(|e| format!("no_new_privs: {e}"))?;
    Ok([3, 4, 5])
}

#[derive(Deserialize)]
struct Descriptor {
    #[serde(rename = "mediaType", default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformJson>,
}

#[derive(Deserialize)]
struct PlatformJson {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: String,
}

#[derive(Deserialize)]
struct Index {
    manifests: Vec<Descriptor>,
}

/// A manifest blob that may be an index: an index lists `manifests`.
#[derive(Deserialize)]
struct IndexProbe {
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

/// Most indexes one image may nest (an index of indexes of manifests is 2).
const MAX_INDEX_DEPTH: usize = 4;

/// The entry of an index for the host's platform (the first, when several
/// are); the error lists the platforms there are.
fn for_this_platform<'a>(entries: &[&'a Descriptor], what: &str) -> Result<&'a Descriptor, String> {
    let host = grove_schema::image_ref::host_platform();
    let fits = |d: &&&Descriptor| {
        d.platform
            .as_ref()
            .is_some_and(|p| host.accepts(&p.os, &p.architecture, &p.variant))
    };
    if let Some(d) = entries.iter().find(fits) {
        return Ok(d);
    }
    let platforms: Vec<String> = entries
        .iter()
        .filter_map(|d| d.platform.as_ref())
        .map(|p| {
            if p.variant.is_empty() {
                format!("{}/{}", p.os, p.architecture)
            } else {
                format!("{}/{}/{}", p.os, p.architecture, p.variant)
            }
        })
        .collect();
    Err(format!(
        "{what} has no manifest for this host's platform {host} (platforms: {})",
        if platforms.is_empty() {
            "none given".to_string()
        } else {
            platforms.join(", ")
        }
    ))
}

#[derive(Deserialize)]
struct Manifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

#[derive(Deserialize, Default)]
struct ConfigFile {
    #[serde(default)]
    config: Option<ProcessConfig>,
    rootfs: RootFs,
}

#[derive(Deserialize, Default)]
struct ProcessConfig {
    #[serde(rename = "Env", default)]
    env: Option<Vec<String>>,
    #[serde(rename = "WorkingDir", default)]
    working_dir: Option<String>,
    #[serde(rename = "User", default)]
    user: Option<String>,
}

#[derive(Deserialize, Default)]
struct RootFs {
    #[serde(default)]
    diff_ids: Vec<String>,
}

#[derive(Deserialize)]
struct ArchiveManifest {
    #[serde(rename = "Config")]
    config: String,
    #[serde(rename = "Layers")]
    layers: Vec<String>,
}

/// Where a layer's bytes are.
enum Blob {
    /// An OCI blob file, and the digest it must have.
    File { fd: OwnedFd, digest: String },
    /// A member of the docker-archive tarball.
    Range { offset: u64, size: u64 },
}

struct Layer {
    what: String,
    blob: Blob,
    /// sha256 hex of the uncompressed tar.
    diff_id: String,
}

fn hex_of(digest: &str) -> Result<String, String> {
    match digest.strip_prefix("sha256:") {
        Some(h) if is_layer_id(h) => Ok(h.to_string()),
        _ => Err(format!(
            "digest {digest:?} is not sha256:<64 lowercase hex digits>"
        )),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn file_of(fd: OwnedFd) -> std::fs::File {
    std::fs::File::from(fd)
}

fn dup(fd: BorrowedFd) -> Result<OwnedFd, String> {
    fd.try_clone_to_owned().map_err(|e| format!("dup: {e}"))
}

/// Open a regular file beneath `dir` by a relative path, one component at a
/// time, never following a symlink.
fn open_file_beneath(dir: BorrowedFd, path: &str) -> Result<OwnedFd, String> {
    let comps = components(path.as_bytes())?;
    let (last, parents) = comps
        .split_last()
        .ok_or_else(|| format!("{path:?}: empty path"))?;
    let mut cur = dup(dir)?;
    for c in parents {
        cur = fs::open_dir(cur.as_fd(), c.as_str())
            .map_err(|e| format!("{path}: {c}: {}", e.desc()))?;
    }
    let fd = fs::openat(
        Some(cur.as_fd()),
        last,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_NOCTTY,
        0,
    )
    .map_err(|e| format!("{path}: {}", e.desc()))?;
    let st = nix::sys::stat::fstat(fd.as_raw_fd()).map_err(|e| format!("{path}: {e}"))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err(format!("{path} is not a regular file"));
    }
    Ok(fd)
}

fn read_limited(r: impl Read, what: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    r.take(MAX_JSON + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{what}: {e}"))?;
    if out.len() as u64 > MAX_JSON {
        return Err(format!("{what} is larger than {MAX_JSON} bytes"));
    }
    Ok(out)
}

fn sha256_of(r: impl Read, what: &str) -> Result<String, String> {
    let mut h = HashingReader::new(r);
    std::io::copy(&mut h, &mut std::io::sink()).map_err(|e| format!("{what}: {e}"))?;
    Ok(h.hex())
}

/// Why the child failed: the image is bad, or it is over a bound.
enum Fail {
    Bad(String),
    Exceeded(String),
}

impl From<String> for Fail {
    fn from(e: String) -> Fail {
        Fail::Bad(e)
    }
}

/// What one unpack has spent of its bounds (entries, and the bytes of the
/// pass under way: a `Metered` reader counts them).
struct Budget {
    bounds: Bounds,
    bytes: std::cell::Cell<u64>,
    entries: std::cell::Cell<u64>,
}

impl Budget {
    fn new(bounds: Bounds) -> Budget {
        Budget {
            bounds,
            bytes: 0.into(),
            entries: 0.into(),
        }
    }

    /// Count one tar entry.
    fn entry(&self) -> Result<(), Fail> {
        self.entries.set(self.entries.get() + 1);
        if self.entries.get() > self.bounds.max_entries {
            return Err(Fail::Exceeded(format!(
                "image exceeds image_max_entries: its layers hold more than {} entries \
                 (each directory looked up to reach one counts too)",
                self.bounds.max_entries
            )));
        }
        Ok(())
    }

    /// `e` as the bound it really is when the byte count is over (a
    /// `Metered` read failed, whatever the tar reader made of it).
    fn explain(&self, e: Fail) -> Fail {
        if self.bytes.get() > self.bounds.max_bytes {
            Fail::Exceeded(format!(
                "image exceeds image_max_bytes: its layers unpack to more than {} bytes",
                self.bounds.max_bytes
            ))
        } else {
            e
        }
    }
}

/// Counts the uncompressed bytes read through it against the budget and
/// fails once they pass `image_max_bytes`: a bomb stops there.
struct Metered<'a, R> {
    inner: R,
    budget: &'a Budget,
}

impl<R: Read> Read for Metered<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let used = self.budget.bytes.get().saturating_add(n as u64);
        self.budget.bytes.set(used);
        if used > self.budget.bounds.max_bytes {
            return Err(std::io::Error::other("image_max_bytes reached"));
        }
        Ok(n)
    }
}

fn child_main(
    image: BorrowedFd,
    store: BorrowedFd,
    source: &Source,
    bounds: Bounds,
) -> Result<(Vec<String>, usize, ImageDefaults), Fail> {
    let (config, layers) = match source {
        Source::Oci { tag } => oci_plan(image, tag)?,
        Source::DockerArchive => archive_plan(image)?,
    };
    // Every blob is checked before any is unpacked; decompressing for the
    // check is a pass of its own over the bytes budget. A layer the store
    // has needs no blob: it was checked against its diff id (which the
    // verified config names) when it was unpacked.
    let check = Budget::new(bounds);
    for l in &layers {
        if in_store(store, &l.diff_id)? {
            continue;
        }
        match &l.blob {
            Blob::File { fd, digest } => {
                let got = sha256_of(file_of(dup(fd.as_fd())?), &l.what)?;
                if got != *digest {
                    return Err(Fail::Bad(format!(
                        "blob {} has sha256:{got}, not the sha256:{digest} the manifest names",
                        l.what
                    )));
                }
            }
            Blob::Range { .. } => {
                let metered = Metered {
                    inner: decompressed(layer_reader(image, l)?)?,
                    budget: &check,
                };
                let got = sha256_of(metered, &l.what).map_err(|e| check.explain(e.into()))?;
                if got != l.diff_id {
                    return Err(Fail::Bad(format!(
                        "layer {} has sha256:{got}, not the diff id sha256:{} the config names",
                        l.what, l.diff_id
                    )));
                }
            }
        }
    }
    let budget = Budget::new(bounds);
    let mut unpacked = 0;
    for l in &layers {
        if unpack(image, store, l, &budget)? {
            unpacked += 1;
        }
    }
    let p = config.config.unwrap_or_default();
    let defaults = ImageDefaults {
        env: p.env.unwrap_or_default(),
        working_dir: p.working_dir.unwrap_or_default(),
        user: p.user.unwrap_or_default(),
    };
    for e in &defaults.env {
        if !e.contains('=') || e.starts_with('=') || e.contains('\0') {
            return Err(Fail::Bad(format!(
                "config Env entry {e:?} is not NAME=value"
            )));
        }
    }
    Ok((
        layers.into_iter().map(|l| l.diff_id).collect(),
        unpacked,
        defaults,
    ))
}

fn parse_json<T: for<'de> Deserialize<'de>>(bytes: &[u8], what: &str) -> Result<T, String> {
    serde_json::from_slice(bytes).map_err(|e| format!("{what}: {e}"))
}

fn diff_ids(config: &ConfigFile, n: usize) -> Result<Vec<String>, String> {
    if config.rootfs.diff_ids.len() != n {
        return Err(format!(
            "the config names {} diff ids for {n} layers",
            config.rootfs.diff_ids.len()
        ));
    }
    config.rootfs.diff_ids.iter().map(|d| hex_of(d)).collect()
}

fn oci_plan(dir: BorrowedFd, tag: &str) -> Result<(ConfigFile, Vec<Layer>), String> {
    open_file_beneath(dir, "oci-layout").map_err(|e| format!("not an OCI image layout: {e}"))?;
    let index: Index = parse_json(
        &read_limited(file_of(open_file_beneath(dir, "index.json")?), "index.json")?,
        "index.json",
    )?;
    const REF: &str = "org.opencontainers.image.ref.name";
    let found: Vec<&Descriptor> = index
        .manifests
        .iter()
        .filter(|m| m.annotations.get(REF).map(String::as_str) == Some(tag))
        .collect();
    let untagged = index
        .manifests
        .iter()
        .all(|m| !m.annotations.contains_key(REF));
    let chosen = match found.as_slice() {
        [one] => *one,
        [] if untagged && index.manifests.len() == 1 => &index.manifests[0],
        // An untagged index of one image per platform.
        [] if untagged && !index.manifests.is_empty() => {
            for_this_platform(&index.manifests.iter().collect::<Vec<_>>(), "index.json")?
        }
        [] => {
            let tags: Vec<&str> = index
                .manifests
                .iter()
                .filter_map(|m| m.annotations.get(REF).map(String::as_str))
                .collect();
            return Err(format!(
                "no manifest is tagged {tag:?} in index.json (tags: {})",
                if tags.is_empty() {
                    "none".to_string()
                } else {
                    tags.join(", ")
                }
            ));
        }
        // One tag on an image per platform.
        several if several.iter().all(|m| m.platform.is_some()) => {
            for_this_platform(several, "index.json")?
        }
        _ => return Err(format!("more than one manifest is tagged {tag:?}")),
    };
    let read_blob = |digest: &str, what: &str| -> Result<Vec<u8>, String> {
        let h = hex_of(digest)?;
        let bytes = read_limited(
            file_of(open_file_beneath(dir, &format!("blobs/sha256/{h}"))?),
            what,
        )?;
        let got = hex(&Sha256::digest(&bytes));
        if got != h {
            return Err(format!(
                "{what} blob sha256:{h} has sha256:{got}; the blob is corrupt"
            ));
        }
        Ok(bytes)
    };
    // Down through nested indexes (a multi-platform image) to the manifest
    // for this host's platform.
    let mut digest = chosen.digest.clone();
    let mut bytes = read_blob(&digest, "manifest")?;
    let mut depth = 0;
    while let Some(nested) = parse_json::<IndexProbe>(&bytes, "manifest")?.manifests {
        depth += 1;
        if depth > MAX_INDEX_DEPTH {
            return Err(format!(
                "image indexes nested deeper than {MAX_INDEX_DEPTH} levels are refused"
            ));
        }
        let what = format!("index {digest}");
        digest = for_this_platform(&nested.iter().collect::<Vec<_>>(), &what)?
            .digest
            .clone();
        bytes = read_blob(&digest, "manifest")?;
    }
    let manifest: Manifest = parse_json(&bytes, "manifest")?;
    let config: ConfigFile = parse_json(&read_blob(&manifest.config.digest, "config")?, "config")?;
    let ids = diff_ids(&config, manifest.layers.len())?;
    let mut layers = Vec::new();
    for (d, diff_id) in manifest.layers.iter().zip(ids) {
        if !LAYER_MEDIA_TYPES.contains(&d.media_type.as_str()) {
            return Err(format!(
                "layer {}: media type {:?} is not supported (supported: {})",
                d.digest,
                d.media_type,
                LAYER_MEDIA_TYPES.join(", ")
            ));
        }
        let h = hex_of(&d.digest)?;
        layers.push(Layer {
            what: format!("sha256:{h}"),
            blob: Blob::File {
                fd: open_file_beneath(dir, &format!("blobs/sha256/{h}"))?,
                digest: h,
            },
            diff_id,
        });
    }
    Ok((config, layers))
}

/// Normalise a path inside an archive (for lookups only, never opened).
fn archive_key(path: &str) -> Result<String, String> {
    Ok(components(path.as_bytes())?.join("/"))
}

fn archive_plan(file: BorrowedFd) -> Result<(ConfigFile, Vec<Layer>), String> {
    let st = nix::sys::stat::fstat(file.as_raw_fd()).map_err(|e| e.to_string())?;
    if st.st_mode & libc::S_IFMT != libc::S_IFREG {
        return Err("a docker-archive must be a regular file".into());
    }
    // One pass over the tarball's headers: where each member is.
    let mut members: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut archive = tar::Archive::new(file_of(dup(file)?));
    for entry in archive
        .entries()
        .map_err(|e| format!("reading the tarball: {e}"))?
    {
        let entry = entry.map_err(|e| format!("reading the tarball: {e}"))?;
        let path = String::from_utf8(entry.path_bytes().into_owned())
            .map_err(|_| "a member name is not UTF-8".to_string())?;
        let Ok(key) = archive_key(&path) else {
            continue;
        };
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                members.insert(key, (entry.raw_file_position(), entry.size()));
            }
            tar::EntryType::Symlink => {
                // docker save links identical layers to one copy.
                if let Some(t) = entry.link_name_bytes() {
                    let t = String::from_utf8_lossy(&t).into_owned();
                    let base = key.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    let joined = if t.starts_with('/') {
                        t.clone()
                    } else {
                        format!("{base}/{t}")
                    };
                    if let Ok(k) = resolve_dots(&joined) {
                        links.insert(key, k);
                    }
                }
            }
            _ => {}
        }
        if members.len() + links.len() > 100_000 {
            return Err("the tarball has more than 100000 members".into());
        }
    }
    let find = |name: &str| -> Result<(u64, u64), String> {
        let mut key = archive_key(name)?;
        for _ in 0..8 {
            if let Some(m) = members.get(&key) {
                return Ok(*m);
            }
            match links.get(&key) {
                Some(k) => key = k.clone(),
                None => break,
            }
        }
        Err(format!("the tarball has no member {name:?}"))
    };
    let read_member = |name: &str| -> Result<Vec<u8>, String> {
        let (offset, size) = find(name)?;
        let mut f = file_of(dup(file)?);
        f.seek(SeekFrom::Start(offset)).map_err(|e| e.to_string())?;
        read_limited(f.take(size), name)
    };
    let manifests: Vec<ArchiveManifest> =
        parse_json(&read_member("manifest.json")?, "manifest.json")?;
    let m = match manifests.as_slice() {
        [one] => one,
        [] => return Err("manifest.json lists no image".into()),
        _ => {
            return Err(
                "manifest.json lists more than one image; save one image per tarball".into(),
            )
        }
    };
    // The config's name carries its digest: <hex>.json or blobs/sha256/<hex>.
    let key = archive_key(&m.config)?;
    let base = key.rsplit('/').next().unwrap_or("");
    let want = base.strip_suffix(".json").unwrap_or(base);
    if !is_layer_id(want) {
        return Err(format!(
            "config {:?} is not named by its sha256, so it cannot be verified",
            m.config
        ));
    }
    let bytes = read_member(&m.config)?;
    let got = hex(&Sha256::digest(&bytes));
    if got != want {
        return Err(format!(
            "config {} has sha256:{got}; the blob is corrupt",
            m.config
        ));
    }
    let config: ConfigFile = parse_json(&bytes, "config")?;
    let ids = diff_ids(&config, m.layers.len())?;
    let mut layers = Vec::new();
    for (name, diff_id) in m.layers.iter().zip(ids) {
        let (offset, size) = find(name)?;
        layers.push(Layer {
            what: name.clone(),
            blob: Blob::Range { offset, size },
            diff_id,
        });
    }
    Ok((config, layers))
}

fn resolve_dots(path: &str) -> Result<String, String> {
    let mut out: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop().ok_or("escapes the archive")?;
            }
            c => out.push(c),
        }
    }
    Ok(out.join("/"))
}

/// The layer's raw bytes (possibly compressed).
fn layer_reader(image: BorrowedFd, l: &Layer) -> Result<Box<dyn Read>, String> {
    match &l.blob {
        Blob::File { fd, .. } => {
            let mut f = file_of(dup(fd.as_fd())?);
            f.seek(SeekFrom::Start(0)).map_err(|e| e.to_string())?;
            Ok(Box::new(f))
        }
        Blob::Range { offset, size } => {
            let mut f = file_of(dup(image)?);
            f.seek(SeekFrom::Start(*offset))
                .map_err(|e| e.to_string())?;
            Ok(Box::new(f.take(*size)))
        }
    }
}

/// gzip and zstd are recognised by their magic bytes; anything else is
/// read as tar.
fn decompressed(r: Box<dyn Read>) -> Result<Box<dyn Read>, String> {
    let mut r = std::io::BufReader::with_capacity(64 * 1024, r);
    let head = std::io::BufRead::fill_buf(&mut r).map_err(|e| e.to_string())?;
    if head.starts_with(&crate::zstd::MAGIC) {
        return Ok(Box::new(crate::zstd::Decoder::new(r)));
    }
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::bufread::MultiGzDecoder::new(r)))
    } else {
        Ok(Box::new(r))
    }
}

struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
}

impl<R: Read> HashingReader<R> {
    fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
        }
    }
    fn hex(self) -> String {
        hex(&self.hasher.finalize())
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Unpack one layer unless the store has it: into a temp dir, renamed into
/// place only once complete and its diff id checked. True when it unpacked.
fn unpack(image: BorrowedFd, store: BorrowedFd, l: &Layer, budget: &Budget) -> Result<bool, Fail> {
    if in_store(store, &l.diff_id)? {
        return Ok(false);
    }
    let tmp = format!("tmp-{}-{}", l.diff_id, std::process::id());
    fs::remove_tree(store, &tmp).map_err(|e| format!("removing {tmp}: {e}"))?;
    fs::mkdir_at(store, &tmp, 0o755, false).map_err(|e| format!("mkdir {tmp}: {e}"))?;
    let result = (|| -> Result<(), Fail> {
        let root = fs::open_dir(store, tmp.as_str()).map_err(|e| format!("open {tmp}: {e}"))?;
        let metered = Metered {
            inner: decompressed(layer_reader(image, l)?)?,
            budget,
        };
        let mut hashing = HashingReader::new(metered);
        extract(root.as_fd(), &mut hashing, budget)
            .map_err(|e| match e {
                Fail::Bad(e) => Fail::Bad(format!("layer {}: {e}", l.what)),
                e => e,
            })
            .map_err(|e| budget.explain(e))?;
        // The rest of the stream (tar padding) counts for the diff id too.
        std::io::copy(&mut hashing, &mut std::io::sink())
            .map_err(|e| budget.explain(Fail::Bad(format!("layer {}: {e}", l.what))))?;
        let got = hashing.hex();
        if got != l.diff_id {
            return Err(Fail::Bad(format!(
                "layer {} unpacks to sha256:{got}, not the diff id sha256:{} the config names",
                l.what, l.diff_id
            )));
        }
        // SAFETY: syncfs only flushes the filesystem the fd is on.
        Errno::result(unsafe { libc::syncfs(root.as_raw_fd()) })
            .map(drop)
            .map_err(|e| Fail::Bad(format!("syncfs: {e}")))
    })();
    if let Err(e) = result {
        let _ = fs::remove_tree(store, &tmp);
        return Err(e);
    }
    match nix::fcntl::renameat(
        Some(store.as_raw_fd()),
        tmp.as_str(),
        Some(store.as_raw_fd()),
        l.diff_id.as_str(),
    ) {
        Ok(()) => Ok(true),
        // Another unpack of the same layer finished first: same content
        // (same diff id), so its copy serves.
        Err(Errno::ENOTEMPTY | Errno::EEXIST) => {
            fs::remove_tree(store, &tmp).map_err(|e| format!("removing {tmp}: {e}"))?;
            Ok(false)
        }
        Err(e) => {
            let _ = fs::remove_tree(store, &tmp);
            Err(Fail::Bad(format!("rename {tmp}: {e}")))
        }
    }
}

/// Whether the store holds the layer (complete: a layer dir gets its name
/// only once unpacked and verified).
fn in_store(store: BorrowedFd, diff_id: &str) -> Result<bool, Fail> {
    match nix::sys::stat::fstatat(
        Some(store.as_raw_fd()),
        diff_id,
        AtFlags::AT_SYMLINK_NOFOLLOW,
    ) {
        Ok(_) => Ok(true),
        Err(Errno::ENOENT) => Ok(false),
        Err(e) => Err(Fail::Bad(format!("layer store: {e}"))),
    }
}

/// The components of a path inside a layer: leading "/" and "./" and empty
/// or "." components are dropped by tar convention... except that an
/// absolute path or a ".." component is refused outright.
fn components(path: &[u8]) -> Result<Vec<String>, String> {
    let s = std::str::from_utf8(path).map_err(|_| format!("{path:?}: name is not UTF-8"))?;
    if s.starts_with('/') {
        return Err(format!("{s:?}: absolute paths are refused"));
    }
    if s.contains('\0') {
        return Err(format!("{s:?}: NUL in a name"));
    }
    let mut out = Vec::new();
    for c in s.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{s:?}: \"..\" components are refused")),
            c => out.push(c.to_string()),
        }
    }
    Ok(out)
}

/// Most directories an entry's path may go down (PATH_MAX allows 2048;
/// no real image comes near): `Dirs` holds one fd per level.
const MAX_PATH_DEPTH: usize = 512;

/// Walk to the directory `comps` beneath `root`, one component at a time
/// with O_NOFOLLOW|O_DIRECTORY: a symlink (or a file) on the way is refused,
/// so no entry is ever written through a symlink. Missing directories are
/// created (0755, root) when `create`. Each lookup counts against the
/// entries bound (see `Dirs`).
fn walk(
    root: BorrowedFd,
    comps: &[String],
    create: bool,
    entry: &str,
    budget: &Budget,
) -> Result<OwnedFd, Fail> {
    let mut cur = dup(root)?;
    for c in comps {
        cur = lookup(cur.as_fd(), c, create, entry, budget)?;
    }
    Ok(cur)
}

fn lookup(
    dir: BorrowedFd,
    c: &str,
    create: bool,
    entry: &str,
    budget: &Budget,
) -> Result<OwnedFd, Fail> {
    budget.entry()?;
    let next = match fs::open_dir(dir, c) {
        Err(Errno::ENOENT) if create => {
            fs::mkdir_at(dir, c, 0o755, false).map_err(|e| format!("{entry}: {e}"))?;
            fs::open_dir(dir, c)
        }
        r => r,
    };
    Ok(next.map_err(|e| match e {
        Errno::ELOOP | Errno::ENOTDIR => format!(
            "{entry:?}: {c:?} is a symlink or not a directory; writing through it is refused"
        ),
        e => format!("{entry:?}: {e}"),
    })?)
}

/// The open directories of the previous entry's parent path. A tar lists
/// a directory's entries together, so most entries need no lookup, and
/// each lookup counts against `image_max_entries`: entries alternating
/// between paths 1,500 directories deep cost 1,500 lookups each, and
/// 20,000 of them (a 722 KB gzip, within every bound) held an unpack for
/// 150 s; an image that keeps under the timeout holds every other image
/// create (groved sends them one at a time) for as long.
///
/// The chain held after an entry is exactly its parent path, and an entry
/// replaces or removes only names in that parent (its own, a whiteout's),
/// never a directory of the chain: no held fd is ever stale.
#[derive(Default)]
struct Dirs {
    names: Vec<String>,
    fds: Vec<OwnedFd>,
}

impl Dirs {
    fn walk(
        &mut self,
        root: BorrowedFd,
        comps: &[String],
        entry: &str,
        budget: &Budget,
    ) -> Result<OwnedFd, Fail> {
        if comps.len() > MAX_PATH_DEPTH {
            return Err(Fail::Bad(format!(
                "{entry:?}: deeper than {MAX_PATH_DEPTH} directories"
            )));
        }
        let same = self
            .names
            .iter()
            .zip(comps)
            .take_while(|(a, b)| a == b)
            .count();
        self.names.truncate(same);
        self.fds.truncate(same);
        for c in &comps[same..] {
            let cur = self.fds.last().map_or(root, |f| f.as_fd());
            let next = lookup(cur, c, true, entry, budget)?;
            self.names.push(c.clone());
            self.fds.push(next);
        }
        Ok(dup(self.fds.last().map_or(root, |f| f.as_fd()))?)
    }
}

fn exists(dir: BorrowedFd, name: &str) -> Option<libc::mode_t> {
    nix::sys::stat::fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .ok()
        .map(|st| st.st_mode & libc::S_IFMT)
}

fn clear(dir: BorrowedFd, name: &str) -> Result<(), String> {
    fs::remove_tree(dir, name).map_err(|e| format!("replacing {name:?}: {e}"))
}

fn set_xattrs(fd: RawFd, xattrs: &[(CString, Vec<u8>)]) -> Result<(), String> {
    for (k, v) in xattrs {
        // SAFETY: k is NUL-terminated and v is a live buffer of v.len()
        // bytes; fsetxattr only reads both.
        Errno::result(unsafe {
            libc::fsetxattr(
                fd,
                k.as_ptr(),
                v.as_ptr() as *const libc::c_void,
                v.len(),
                0,
            )
        })
        .map_err(|e| format!("xattr {k:?}: {e}"))?;
    }
    Ok(())
}

fn chown_fd(fd: RawFd, uid: u32, gid: u32, mode: u32) -> Result<(), String> {
    nix::unistd::fchown(fd, Some(Uid::from_raw(uid)), Some(Gid::from_raw(gid)))
        .map_err(|e| format!("chown: {e}"))?;
    nix::sys::stat::fchmod(fd, nix::sys::stat::Mode::from_bits_truncate(mode))
        .map_err(|e| format!("chmod: {e}"))
}

fn extract(root: BorrowedFd, r: &mut dyn Read, budget: &Budget) -> Result<(), Fail> {
    let mut archive = tar::Archive::new(r);
    let mut dirs = Dirs::default();
    for entry in archive.entries().map_err(|e| format!("tar: {e}"))? {
        budget.entry()?;
        let mut entry = entry.map_err(|e| match e.kind() {
            // A long name or pax header larger than the memory bound.
            std::io::ErrorKind::OutOfMemory => Fail::Exceeded(format!(
                "a tar header needs more than the {} MiB of memory the unpacker may use",
                MAX_MEMORY >> 20
            )),
            _ => Fail::Bad(format!("tar: {e}")),
        })?;
        let raw = entry.path_bytes().into_owned();
        let comps = components(&raw)?;
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let header = entry.header();
        let kind = header.entry_type();
        let mode = header.mode().map_err(|e| format!("{shown}: {e}"))? & 0o7777;
        let uid = u32::try_from(header.uid().map_err(|e| format!("{shown}: {e}"))?)
            .map_err(|_| format!("{shown}: uid out of range"))?;
        let gid = u32::try_from(header.gid().map_err(|e| format!("{shown}: {e}"))?)
            .map_err(|_| format!("{shown}: gid out of range"))?;
        let mtime = header.mtime().unwrap_or(0);
        let (major, minor) = (
            header.device_major().ok().flatten().unwrap_or(0),
            header.device_minor().ok().flatten().unwrap_or(0),
        );
        // Only user.* and file capabilities are kept: trusted.* (overlayfs's
        // own metadata among them) and security labels are the host's to set.
        let mut xattrs = Vec::new();
        if let Some(exts) = entry
            .pax_extensions()
            .map_err(|e| format!("{shown}: {e}"))?
        {
            for ext in exts {
                let ext = ext.map_err(|e| format!("{shown}: {e}"))?;
                let Ok(key) = ext.key() else { continue };
                if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                    if name.starts_with("user.") || name == "security.capability" {
                        if let Ok(k) = CString::new(name) {
                            xattrs.push((k, ext.value_bytes().to_vec()));
                        }
                    }
                }
            }
        }
        let link = entry.link_name_bytes().map(|l| l.into_owned());
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root itself ("./").
            if kind == tar::EntryType::Directory {
                chown_fd(root.as_raw_fd(), uid, gid, mode)?;
            }
            continue;
        };
        let parent = dirs.walk(root, parents, &shown, budget)?;
        let p = parent.as_fd();
        if let Some(hidden) = name.strip_prefix(".wh.") {
            if hidden == ".wh..opq" {
                let v = b"y";
                // SAFETY: a NUL-terminated literal name and a live 1-byte value.
                Errno::result(unsafe {
                    libc::fsetxattr(
                        p.as_raw_fd(),
                        c"trusted.overlay.opaque".as_ptr(),
                        v.as_ptr() as *const libc::c_void,
                        1,
                        0,
                    )
                })
                .map_err(|e| format!("{shown}: opaque xattr: {e}"))?;
            } else {
                if hidden.is_empty() || hidden == "." || hidden == ".." {
                    return Err(Fail::Bad(format!("{shown:?}: bad whiteout")));
                }
                clear(p, hidden)?;
                nix::sys::stat::mknodat(
                    Some(p.as_raw_fd()),
                    hidden,
                    nix::sys::stat::SFlag::S_IFCHR,
                    nix::sys::stat::Mode::empty(),
                    0,
                )
                .map_err(|e| format!("{shown}: whiteout: {e}"))?;
            }
            continue;
        }
        let n = name.as_str();
        match kind {
            tar::EntryType::Directory => {
                if exists(p, n).is_some_and(|k| k != libc::S_IFDIR) {
                    clear(p, n)?;
                }
                fs::mkdir_at(p, n, 0o700, true).map_err(|e| format!("{shown}: {e}"))?;
                let d = fs::open_dir(p, n).map_err(|e| format!("{shown}: {e}"))?;
                chown_fd(d.as_raw_fd(), uid, gid, mode).map_err(|e| format!("{shown}: {e}"))?;
                set_xattrs(d.as_raw_fd(), &xattrs).map_err(|e| format!("{shown}: {e}"))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                clear(p, n)?;
                let fd = fs::openat(
                    Some(p),
                    n,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW,
                    0o600,
                )
                .map_err(|e| format!("{shown}: {e}"))?;
                let mut f = file_of(fd);
                std::io::copy(&mut entry, &mut f).map_err(|e| format!("{shown}: {e}"))?;
                chown_fd(f.as_raw_fd(), uid, gid, mode).map_err(|e| format!("{shown}: {e}"))?;
                set_xattrs(f.as_raw_fd(), &xattrs).map_err(|e| format!("{shown}: {e}"))?;
                let t = nix::sys::time::TimeSpec::new(mtime as libc::time_t, 0);
                let _ = nix::sys::stat::futimens(f.as_raw_fd(), &t, &t);
            }
            tar::EntryType::Symlink => {
                let target = link.ok_or_else(|| format!("{shown}: symlink without a target"))?;
                let target = String::from_utf8(target)
                    .map_err(|_| format!("{shown}: symlink target is not UTF-8"))?;
                clear(p, n)?;
                // The target is stored, never followed while unpacking.
                nix::unistd::symlinkat(target.as_str(), Some(p.as_raw_fd()), n)
                    .map_err(|e| format!("{shown}: {e}"))?;
                nix::unistd::fchownat(
                    Some(p.as_raw_fd()),
                    n,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| format!("{shown}: {e}"))?;
            }
            tar::EntryType::Link => {
                let target = link.ok_or_else(|| format!("{shown}: hard link without a target"))?;
                let tcomps = components(&target)?;
                let (tname, tparents) = tcomps
                    .split_last()
                    .ok_or_else(|| format!("{shown}: hard link to the layer root"))?;
                if tcomps == comps {
                    continue;
                }
                let tparent = walk(root, tparents, false, &shown, budget)?;
                clear(p, n)?;
                // flags 0: a symlink source is linked itself, never followed.
                nix::unistd::linkat(
                    Some(tparent.as_raw_fd()),
                    tname.as_str(),
                    Some(p.as_raw_fd()),
                    n,
                    AtFlags::empty(),
                )
                .map_err(|e| format!("{shown}: hard link: {e}"))?;
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let sflag = match kind {
                    tar::EntryType::Char => nix::sys::stat::SFlag::S_IFCHR,
                    tar::EntryType::Block => nix::sys::stat::SFlag::S_IFBLK,
                    _ => nix::sys::stat::SFlag::S_IFIFO,
                };
                clear(p, n)?;
                nix::sys::stat::mknodat(
                    Some(p.as_raw_fd()),
                    n,
                    sflag,
                    nix::sys::stat::Mode::from_bits_truncate(mode),
                    nix::sys::stat::makedev(major as u64, minor as u64),
                )
                .map_err(|e| format!("{shown}: {e}"))?;
                nix::unistd::fchownat(
                    Some(p.as_raw_fd()),
                    n,
                    Some(Uid::from_raw(uid)),
                    Some(Gid::from_raw(gid)),
                    AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(|e| format!("{shown}: {e}"))?;
            }
            tar::EntryType::XGlobalHeader => {}
            other => {
                return Err(Fail::Bad(format!(
                    "{shown}: unsupported tar entry type {other:?}"
                )))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_escapes() {
        assert_eq!(components(b"./a//b/.").unwrap(), vec!["a", "b"]);
        assert!(components(b"/etc/passwd").is_err());
        assert!(components(b"a/../../x").is_err());
        assert!(components(b"").unwrap().is_empty());
        assert!(is_layer_id(&"a".repeat(64)));
        assert!(!is_layer_id(&"A".repeat(64)));
        assert!(hex_of("sha256:xyz").is_err());
        assert_eq!(resolve_dots("a/b/../c").unwrap(), "a/c");
        assert!(resolve_dots("../c").is_err());
    }
}
