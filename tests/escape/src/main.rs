//! grove-escape: tries to break out of the Grove container it runs in, with
//! the real syscalls, and prints one line per attempt:
//!
//! ```text
//! ATTEMPT <name> BLOCKED <how>
//! ATTEMPT <name> BLOCKED-NOT-AN-ESCAPE <why it succeeded and why that is fine>
//! ATTEMPT <name> ESCAPED <evidence>
//! ```
//!
//! It exits 1 when any attempt escaped, 0 otherwise (2 on bad usage). Lines
//! starting with `INFO` describe the process (uid, capabilities, ...).
//!
//! # What counts as an escape
//!
//! An attempt ESCAPES when it demonstrates reach beyond the container:
//!
//! - `[host-reached]`: it read or changed something that belongs to the host
//!   or to every container: a host file (the host's /etc/shadow, recognised
//!   by the sha256 the test passes in), the host's root directory
//!   (recognised by its dev:ino), host-global kernel state (/proc/sys
//!   entries that are not namespaced, sysrq, /sys/kernel, a cgroup
//!   hierarchy's release_agent), a device, PID 1's (wshd's) memory or
//!   executable, or a namespace of the host.
//! - `[capability]`: a syscall got past a capability check that is made
//!   against the *initial* user namespace (CAP_SYS_ADMIN for mounts,
//!   CAP_SYS_MODULE, CAP_SYS_BOOT for kexec, CAP_BPF/CAP_PERFMON for tracing
//!   programs, CAP_DAC_READ_SEARCH for open_by_handle_at, ...). Such a
//!   capability is host root's, whatever namespaces surround the process,
//!   and turns into host access by known routes (mount a cgroup and set its
//!   release_agent, load a module, read kernel memory, ...). Each such
//!   attempt stops at the capability check or does something harmless
//!   (writes back the value it read, passes a garbage module image, an
//!   invalid kexec segment count, a bad reboot magic).
//! - `[shared-with-host]`: the container shares a kernel object with host
//!   processes it should not (the user keyring of a host uid, when the
//!   container has no user namespace).
//!
//! It is BLOCKED-NOT-AN-ESCAPE when the syscall worked but its effect stays
//! inside namespaces the container owns: a raw socket in the container's own
//! network namespace (CAP_NET_RAW, Docker keeps it), a mount inside a user
//! namespace the container created, writing the hostname of its own UTS
//! namespace, setns into the namespaces it is already in, reboot in its own
//! PID namespace (that only ends the container), userfaultfd (an exploit
//! aid, not an escape by itself).
//!
//! `grove-escape probe …` makes single system calls instead (see probe.rs).
//!
//! Flags: `--list` prints the attempt names; `--only a,b` runs only those;
//! `--expect-setuid` adds the setuid attempt (run a setuid-root copy as a
//! non-root user). The environment may carry the host's identity, so
//! success can be told from harmless success:
//! `GROVE_HOST_SHADOW_SHA256` (hex sha256 of the host's /etc/shadow),
//! `GROVE_HOST_ROOT` (`dev:ino` of the host's `/`), `GROVE_HOST_NS`
//! (space-separated `/proc/self/ns/*` link texts of the host, e.g.
//! `mnt:[4026531841]`).

mod budget;
mod probe;

use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;

enum Outcome {
    Blocked(String),
    NotAnEscape(String),
    Escaped(String),
}
use Outcome::*;

struct Ctx {
    host_shadow: Option<String>,
    host_root: Option<(u64, u64)>,
    /// kind ("mnt", ...) -> link text (`mnt:[4026531841]`).
    host_ns: BTreeMap<String, String>,
    /// Is this process in the initial user namespace?
    init_userns: bool,
    /// dev:ino of the container's `/` at start-up.
    own_root: (u64, u64),
    uid: u32,
    euid: u32,
    gid: u32,
    escaped: usize,
    only: Option<BTreeSet<String>>,
    expect_setuid: bool,
}

const SCRATCH: &str = "/tmp/.grove-escape";

const ATTEMPTS: &[&str] = &[
    "setuid-root",
    "mount-tmpfs",
    "mount-proc",
    "mount-bind-root",
    "cgroup-release-agent",
    "unshare-user-then-mount",
    "unshare-mount-ns",
    "setns-pid1",
    "ptrace-attach-pid1",
    "process-vm-readv-pid1",
    "proc-sys-hostname",
    "proc-sys-drop-caches",
    "proc-sys-core-pattern",
    "sysrq-trigger",
    "sys-kernel-write",
    "sys-remount-rw",
    "mknod-block",
    "host-char-devices",
    "kernel-modules",
    "raw-socket",
    "chroot-climb",
    "pivot-root",
    "proc-pid-root",
    "proc-self-exe-write",
    "proc-1-exe-write",
    "open-by-handle-at",
    "host-shadow",
    "keyctl-add-key",
    "bpf-prog-load",
    "perf-event-open",
    "userfaultfd",
    "kexec-load",
    "reboot",
    "umount-proc-masks",
    "umount-proc",
];

fn main() {
    // `probe …`: single system calls for the seccomp tests (probe.rs).
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("probe") {
        std::process::exit(probe::main(&argv[1..]));
    }
    // `budget …`: spend per-user kernel budgets (budget.rs).
    if argv.first().map(String::as_str) == Some("budget") {
        std::process::exit(budget::main(&argv[1..]));
    }
    let mut args = std::env::args().skip(1);
    let mut only = None;
    let mut expect_setuid = false;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--list" => {
                for name in ATTEMPTS {
                    println!("{name}");
                }
                return;
            }
            "--only" => {
                let v = args.next().unwrap_or_default();
                only = Some(v.split(',').map(str::to_string).collect());
            }
            "--expect-setuid" => expect_setuid = true,
            other => {
                eprintln!("grove-escape: unknown argument {other:?} (--list, --only a,b, --expect-setuid)");
                std::process::exit(2);
            }
        }
    }
    let host_ns = std::env::var("GROVE_HOST_NS")
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|l| Some((l.split_once(':')?.0.to_string(), l.to_string())))
        .collect::<BTreeMap<_, _>>();
    let host_root = std::env::var("GROVE_HOST_ROOT").ok().and_then(|s| {
        let (d, i) = s.split_once(':')?;
        Some((d.parse().ok()?, i.parse().ok()?))
    });
    let own_root = std::fs::metadata("/")
        .map(|m| (m.dev(), m.ino()))
        .unwrap_or((0, 0));
    let own_user = ns_link("self", "user");
    let init_userns = match (host_ns.get("user"), &own_user) {
        (Some(host), Some(own)) => host == own,
        // No oracle: an identity map of every uid is the initial namespace.
        _ => std::fs::read_to_string("/proc/self/uid_map")
            .map(|m| m.split_whitespace().collect::<Vec<_>>() == ["0", "0", "4294967295"])
            .unwrap_or(false),
    };
    // SAFETY: plain getters.
    let (uid, euid, gid) = unsafe { (libc::getuid(), libc::geteuid(), libc::getgid()) };
    let mut ctx = Ctx {
        host_shadow: std::env::var("GROVE_HOST_SHADOW_SHA256")
            .ok()
            .map(|s| s.trim().to_lowercase()),
        host_root,
        host_ns,
        init_userns,
        own_root,
        uid,
        euid,
        gid,
        escaped: 0,
        only,
        expect_setuid,
    };
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).map(|v| v.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    println!(
        "INFO uid={} euid={} gid={} CapEff={} CapBnd={} NoNewPrivs={} Seccomp={} userns={} user_ns={} root={}:{}",
        ctx.uid,
        ctx.euid,
        ctx.gid,
        field("CapEff:"),
        field("CapBnd:"),
        field("NoNewPrivs:"),
        field("Seccomp:"),
        if ctx.init_userns { "initial" } else { "own" },
        own_user.unwrap_or_default(),
        own_root.0,
        own_root.1,
    );
    let _ = std::fs::create_dir_all(SCRATCH);
    run_all(&mut ctx);
    let _ = std::io::stdout().flush();
    std::process::exit(if ctx.escaped > 0 { 1 } else { 0 });
}

impl Ctx {
    fn wants(&self, name: &str) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(name))
    }

    fn report(&mut self, name: &str, outcome: Outcome) {
        let (word, text) = match outcome {
            Blocked(t) => ("BLOCKED", t),
            NotAnEscape(t) => ("BLOCKED-NOT-AN-ESCAPE", t),
            Escaped(t) => {
                self.escaped += 1;
                ("ESCAPED", t)
            }
        };
        println!("ATTEMPT {name} {word} {}", text.replace('\n', " | "));
        let _ = std::io::stdout().flush();
    }

    /// A syscall that needs a capability succeeded: host root's capability
    /// when we are in the initial user namespace, the container's own
    /// otherwise.
    fn privileged(&self, what: &str, cap: &str) -> Outcome {
        if self.init_userns {
            Escaped(format!(
                "[capability] {what} succeeded: {cap} of the initial user namespace is host root's"
            ))
        } else {
            NotAnEscape(format!(
                "{what} succeeded with {cap} of the container's own user namespace"
            ))
        }
    }

    fn is_host_ns(&self, link: &str) -> bool {
        self.host_ns.values().any(|h| h == link)
    }

    /// Is `dev:ino` the host's root directory?
    fn is_host_root(&self, id: (u64, u64)) -> bool {
        self.host_root == Some(id)
    }
}

fn run_all(ctx: &mut Ctx) {
    type Attempt = fn(&mut Ctx, &str);
    let table: &[(&str, Attempt)] = &[
        ("setuid-root", setuid_root),
        ("mount-tmpfs", |c, n| {
            let o = mount_try(c, "tmpfs", "tmpfs", 0, "size=1m");
            c.report(n, o)
        }),
        ("mount-proc", |c, n| {
            let o = mount_try(c, "proc", "proc", 0, "");
            c.report(n, o)
        }),
        ("mount-bind-root", mount_bind_root),
        ("cgroup-release-agent", cgroup_release_agent),
        ("unshare-user-then-mount", unshare_user),
        ("unshare-mount-ns", unshare_mount_ns),
        ("setns-pid1", setns_pid1),
        ("ptrace-attach-pid1", ptrace_pid1),
        ("process-vm-readv-pid1", vm_readv_pid1),
        ("proc-sys-hostname", |c, n| {
            proc_write(c, n, "/proc/sys/kernel/hostname", None, Some("uts"))
        }),
        ("proc-sys-drop-caches", |c, n| {
            proc_write(c, n, "/proc/sys/vm/drop_caches", Some("1\n"), None)
        }),
        ("proc-sys-core-pattern", |c, n| {
            proc_write(c, n, "/proc/sys/kernel/core_pattern", None, None)
        }),
        ("sysrq-trigger", |c, n| {
            // Any key the kernel does not know prints the sysrq help to the
            // kernel log: harmless, but only the host may do it.
            proc_write(c, n, "/proc/sysrq-trigger", Some("h"), None)
        }),
        ("sys-kernel-write", sys_kernel_write),
        ("sys-remount-rw", sys_remount_rw),
        ("mknod-block", mknod_block),
        ("host-char-devices", host_char_devices),
        ("kernel-modules", kernel_modules),
        ("raw-socket", raw_socket),
        ("chroot-climb", chroot_climb),
        ("pivot-root", pivot_root),
        ("proc-pid-root", proc_pid_root),
        ("proc-self-exe-write", proc_self_exe),
        ("proc-1-exe-write", proc_1_exe),
        ("open-by-handle-at", open_by_handle),
        ("host-shadow", host_shadow),
        ("keyctl-add-key", keyctl),
        ("bpf-prog-load", bpf),
        ("perf-event-open", perf),
        ("userfaultfd", userfaultfd),
        ("kexec-load", kexec),
        ("reboot", reboot),
        // Last: they may take /proc away.
        ("umount-proc-masks", umount_proc_masks),
        ("umount-proc", umount_proc),
    ];
    for (name, f) in table {
        if *name == "setuid-root" && !ctx.expect_setuid {
            continue;
        }
        if ctx.wants(name) {
            f(ctx, name);
        }
    }
}

// ------------------------------------------------------------------ helpers

fn c(s: &str) -> CString {
    CString::new(s).expect("no NUL in a literal path")
}

fn err() -> String {
    let e = std::io::Error::last_os_error();
    let name = match e.raw_os_error().unwrap_or(0) {
        libc::EPERM => "EPERM",
        libc::EACCES => "EACCES",
        libc::EINVAL => "EINVAL",
        libc::ENOENT => "ENOENT",
        libc::EROFS => "EROFS",
        libc::ENOSYS => "ENOSYS",
        libc::EBUSY => "EBUSY",
        libc::ETXTBSY => "ETXTBSY",
        libc::ESRCH => "ESRCH",
        libc::EBADF => "EBADF",
        libc::EFAULT => "EFAULT",
        libc::ENOEXEC => "ENOEXEC",
        libc::ENODEV => "ENODEV",
        libc::ENXIO => "ENXIO",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::ESTALE => "ESTALE",
        libc::EEXIST => "EEXIST",
        _ => "",
    };
    format!("{name} ({e})")
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ns_link(pid: &str, kind: &str) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn dev_ino(path: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn scratch(name: &str) -> String {
    let p = format!("{SCRATCH}/{name}");
    let _ = std::fs::create_dir_all(&p);
    p
}

fn mount(src: &str, target: &str, fstype: Option<&str>, flags: libc::c_ulong, data: &str) -> bool {
    let (src, target, data) = (c(src), c(target), c(data));
    let fstype = fstype.map(c);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |f| f.as_ptr()),
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data.as_ptr().cast()
            },
        ) == 0
    }
}

fn umount(target: &str) -> bool {
    let t = c(target);
    // SAFETY: a NUL-terminated path.
    unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) == 0 }
}

/// Run `f` in a forked child (so it may change its namespaces, root or
/// credentials without touching the other attempts) and bring its outcome
/// back over a pipe. The child dies after 20 s whatever it does.
fn in_child(f: impl FnOnce() -> Outcome) -> Outcome {
    let mut fds = [0; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Blocked(format!("(test setup) pipe: {}", err()));
    }
    let _ = std::io::stdout().flush();
    // SAFETY: this program is single-threaded; the child runs plain Rust and
    // leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Blocked(format!("(test setup) fork: {}", err()));
    }
    if pid == 0 {
        // SAFETY: alarm and close are async-signal-safe.
        unsafe {
            libc::alarm(20);
            libc::close(fds[0]);
        }
        let (tag, text) = match f() {
            Blocked(t) => ('B', t),
            NotAnEscape(t) => ('N', t),
            Escaped(t) => ('E', t),
        };
        let msg = format!("{tag}{text}");
        // SAFETY: writes our own buffer to our own pipe, then leaves.
        unsafe {
            libc::write(fds[1], msg.as_ptr().cast(), msg.len());
            libc::_exit(0);
        }
    }
    // SAFETY: we own fds[1]; from_raw_fd takes fds[0].
    unsafe { libc::close(fds[1]) };
    let mut pipe = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fds[0]) };
    let mut text = String::new();
    let _ = pipe.read_to_string(&mut text);
    let mut status = 0;
    // SAFETY: waits for the child we forked.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut chars = text.chars();
    match chars.next() {
        Some('B') => Blocked(chars.collect()),
        Some('N') => NotAnEscape(chars.collect()),
        Some('E') => Escaped(chars.collect()),
        _ => Blocked(format!(
            "the attempt's child died without an answer (wait status {status:#x})"
        )),
    }
}

/// Files reached by a path that resolve to the host's /etc/shadow.
fn shadow_check(ctx: &Ctx, path: &str) -> Option<String> {
    let want = ctx.host_shadow.as_ref()?;
    let data = std::fs::read(path).ok()?;
    (sha256_hex(&data) == *want)
        .then(|| format!("[host-reached] {path} is the host's /etc/shadow (sha256 {want})"))
}

// ------------------------------------------------------------------ attempts

fn setuid_root(ctx: &mut Ctx, name: &str) {
    let o = if ctx.uid == 0 {
        Blocked("(run as root: nothing to gain from a setuid-root binary)".into())
    } else if ctx.euid == 0 {
        NotAnEscape(format!(
            "a setuid-root binary made uid {} euid 0 (neither no_new_privs nor nosuid stopped it); \
             the attempts below run with euid 0 and show what it reaches",
            ctx.uid
        ))
    } else {
        Blocked(format!(
            "the setuid bit was ignored: euid stays {} (no_new_privs or a nosuid mount)",
            ctx.euid
        ))
    };
    ctx.report(name, o);
}

fn mount_try(ctx: &Ctx, src: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> Outcome {
    let dir = scratch(&format!("mnt-{fstype}"));
    if mount(src, &dir, Some(fstype), flags, data) {
        umount(&dir);
        ctx.privileged(&format!("mount({fstype})"), "CAP_SYS_ADMIN")
    } else {
        Blocked(format!("mount({fstype}): {}", err()))
    }
}

fn mount_bind_root(ctx: &mut Ctx, name: &str) {
    let dir = scratch("mnt-bind");
    let o = if mount("/", &dir, None, libc::MS_BIND | libc::MS_REC, "") {
        let reached = dev_ino(&dir);
        umount(&dir);
        match reached {
            Some(id) if ctx.is_host_root(id) => Escaped(format!(
                "[host-reached] a bind of / showed the host's root ({}:{})",
                id.0, id.1
            )),
            _ => ctx.privileged(
                "bind mount of / (the container's own root)",
                "CAP_SYS_ADMIN",
            ),
        }
    } else {
        Blocked(format!("mount(/, MS_BIND|MS_REC): {}", err()))
    };
    ctx.report(name, o);
}

/// The cgroup v1 release_agent escape (CVE-2022-0492 and before): mount a
/// hierarchy and set the program the kernel runs as host root when a cgroup
/// empties. We only write back the value we read.
fn cgroup_release_agent(ctx: &mut Ctx, name: &str) {
    let controllers: Vec<String> = std::fs::read_to_string("/proc/cgroups")
        .unwrap_or_default()
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4 && f[3] == "1").then(|| f[0].to_string())
        })
        .collect();
    let dir = scratch("cgroup");
    let mut tried = Vec::new();
    let mut mounted_any = false;
    for controller in controllers
        .iter()
        .map(String::as_str)
        .chain(["none,name=grove-escape"])
    {
        let data = controller.to_string();
        if !mount("cgroup", &dir, Some("cgroup"), 0, &data) {
            tried.push(format!("{controller}: {}", err()));
            continue;
        }
        mounted_any = true;
        let agent = format!("{dir}/release_agent");
        let result = match std::fs::read_to_string(&agent) {
            Err(e) => format!("{controller}: mounted, no release_agent ({e}): the cgroup namespace hides the root"),
            Ok(current) => {
                let value = format!("{}\n", current.trim());
                match std::fs::OpenOptions::new().write(true).open(&agent) {
                    Err(e) => format!("{controller}: mounted, open release_agent: {e}"),
                    Ok(mut f) => match f.write_all(value.as_bytes()) {
                        Ok(()) => {
                            umount(&dir);
                            return ctx.report(
                                name,
                                Escaped(format!(
                                    "[host-reached] mounted cgroup {controller} and wrote its release_agent \
                                     (wrote back {:?}): any program there would run as host root",
                                    current.trim()
                                )),
                            );
                        }
                        Err(e) => format!("{controller}: mounted, write release_agent: {e}"),
                    },
                }
            }
        };
        umount(&dir);
        tried.push(result);
    }
    let o = if mounted_any {
        match ctx.privileged("mount(cgroup)", "CAP_SYS_ADMIN") {
            Escaped(t) => Escaped(format!("{t}; {}", tried.join("; "))),
            _ => NotAnEscape(tried.join("; ")),
        }
    } else {
        Blocked(tried.join("; "))
    };
    ctx.report(name, o);
}

fn write_file(path: &str, data: &str) -> Result<(), String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|mut f| f.write_all(data.as_bytes()))
        .map_err(|e| format!("{path}: {e}"))
}

fn unshare_user(ctx: &mut Ctx, name: &str) {
    let (uid, gid) = (ctx.euid, ctx.gid);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let o = in_child(move || {
        // SAFETY: unshare changes only this (single-threaded) child.
        if unsafe { libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) } != 0 {
            return Blocked(format!("unshare(CLONE_NEWUSER|CLONE_NEWNS): {}", err()));
        }
        let mut notes = vec!["unshare(CLONE_NEWUSER|CLONE_NEWNS) worked".to_string()];
        let maps = write_file("/proc/self/setgroups", "deny")
            .and_then(|()| write_file("/proc/self/uid_map", &format!("0 {uid} 1")))
            .and_then(|()| write_file("/proc/self/gid_map", &format!("0 {gid} 1")));
        notes.push(match maps {
            Ok(()) => "mapped root".into(),
            Err(e) => format!("mapping: {e}"),
        });
        let dir = scratch("mnt-userns");
        notes.push(if mount("tmpfs", &dir, Some("tmpfs"), 0, "size=1m") {
            "mount(tmpfs) in its own mount namespace: ok".into()
        } else {
            format!("mount(tmpfs): {}", err())
        });
        let proc_dir = scratch("mnt-userns-proc");
        notes.push(if mount("proc", &proc_dir, Some("proc"), 0, "") {
            "mount(proc) of the container's PID namespace: ok".into()
        } else {
            format!("mount(proc): {}", err())
        });
        // The container's UTS namespace belongs to the parent user
        // namespace: a capability over it from here would be regained
        // power.
        let h = hostname.trim();
        // SAFETY: a valid buffer of h.len() bytes.
        if unsafe { libc::sethostname(h.as_ptr().cast(), h.len()) } == 0 {
            return Escaped(format!(
                "[capability] after unshare(CLONE_NEWUSER), sethostname on the container's UTS \
                 namespace (owned by the parent user namespace) worked: {}",
                notes.join("; ")
            ));
        }
        notes.push(format!("sethostname (parent's UTS): {}", err()));
        NotAnEscape(format!(
            "capabilities only over namespaces it created: {}",
            notes.join("; ")
        ))
    });
    ctx.report(name, o);
}

fn unshare_mount_ns(ctx: &mut Ctx, name: &str) {
    let init = ctx.init_userns;
    let o = in_child(move || {
        // SAFETY: changes only this child.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Blocked(format!("unshare(CLONE_NEWNS): {}", err()));
        }
        if init {
            Escaped("[capability] unshare(CLONE_NEWNS) succeeded: CAP_SYS_ADMIN of the initial user namespace is host root's".into())
        } else {
            NotAnEscape("unshare(CLONE_NEWNS) inside the container's own user namespace".into())
        }
    });
    ctx.report(name, o);
}

fn setns_pid1(ctx: &mut Ctx, name: &str) {
    for kind in ["mnt", "pid", "net", "uts", "ipc", "cgroup", "user"] {
        let target = ns_link("1", kind);
        let own = ns_link("self", kind);
        let path = format!("/proc/1/ns/{kind}");
        let host = target.as_deref().is_some_and(|t| ctx.is_host_ns(t));
        let o = match std::fs::File::open(&path) {
            Err(e) => Blocked(format!("open {path}: {e}")),
            Ok(f) => {
                let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
                let (target, own) = (
                    target.clone().unwrap_or_default(),
                    own.clone().unwrap_or_default(),
                );
                in_child(move || {
                    // SAFETY: fd is open; setns changes only this child.
                    if unsafe { libc::setns(fd, 0) } != 0 {
                        return Blocked(format!("setns({path} = {target}): {}", err()));
                    }
                    if host {
                        Escaped(format!("[host-reached] setns into the host's {target}"))
                    } else if target == own {
                        NotAnEscape(format!(
                            "setns({path}) worked, but {target} is the container's own namespace (PID 1 is its wshd)"
                        ))
                    } else {
                        NotAnEscape(format!(
                            "setns({path}) worked into {target}, not ours ({own}) but not the host's either"
                        ))
                    }
                })
            }
        };
        ctx.report(&format!("{name}-{kind}"), o);
    }
}

fn ptrace_pid1(ctx: &mut Ctx, name: &str) {
    // SAFETY: PTRACE_ATTACH with null addr/data.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_ATTACH,
            1 as libc::pid_t,
            std::ptr::null_mut::<libc::c_void>(),
            std::ptr::null_mut::<libc::c_void>(),
        )
    };
    let o = if rc == 0 {
        let mut status = 0;
        // SAFETY: we are PID 1's tracer now; wait for its stop, then let go.
        unsafe {
            libc::waitpid(1, &mut status, libc::__WALL);
            libc::ptrace(
                libc::PTRACE_DETACH,
                1 as libc::pid_t,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::null_mut::<libc::c_void>(),
            );
        }
        Escaped(
            "[host-reached] PTRACE_ATTACH to PID 1 (wshd) worked: its tracer controls wshd, \
             which holds host-side descriptors (its API socket in the helper's runtime dir, its log in the depot)"
                .into(),
        )
    } else {
        Blocked(format!("ptrace(PTRACE_ATTACH, 1): {}", err()))
    };
    ctx.report(name, o);
}

fn vm_readv_pid1(ctx: &mut Ctx, name: &str) {
    let maps = std::fs::read_to_string("/proc/1/maps");
    let addr = maps
        .as_ref()
        .ok()
        .and_then(|m| m.lines().next())
        .and_then(|l| l.split('-').next())
        .and_then(|a| usize::from_str_radix(a, 16).ok());
    let maps_note = match &maps {
        Ok(_) => "from /proc/1/maps".to_string(),
        Err(e) => format!("/proc/1/maps: {e}; guessed"),
    };
    let addr = addr.unwrap_or(0x400000);
    let mut buf = [0u8; 64];
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: local points at our buffer; the kernel checks the remote side.
    let n = unsafe { libc::process_vm_readv(1, &local, 1, &remote, 1, 0) };
    let o = if n > 0 {
        Escaped(format!(
            "[host-reached] read {n} bytes of PID 1's (wshd's) memory at {addr:#x} ({maps_note}): {:02x?}",
            &buf[..4]
        ))
    } else {
        Blocked(format!(
            "process_vm_readv(1, {addr:#x} {maps_note}): {}",
            err()
        ))
    };
    ctx.report(name, o);
}

/// Write to a /proc file: `data`, or what it holds now (so a success
/// changes nothing). `namespaced`: the namespace kind whose own copy the
/// file is (success is then fine unless that namespace is the host's).
fn proc_write(ctx: &mut Ctx, name: &str, path: &str, data: Option<&str>, namespaced: Option<&str>) {
    let current = std::fs::read_to_string(path).ok();
    let data = match (data, &current) {
        (Some(d), _) => d.to_string(),
        (None, Some(c)) => c.clone(),
        (None, None) => "\n".to_string(),
    };
    let o = match std::fs::OpenOptions::new().write(true).open(path) {
        Err(e) => Blocked(format!("open {path} for writing: {e}")),
        Ok(mut f) => match f.write_all(data.as_bytes()) {
            Err(e) => Blocked(format!("write {path}: {e}")),
            Ok(()) => match namespaced {
                Some(kind) => {
                    let own = ns_link("self", kind).unwrap_or_default();
                    if ctx.is_host_ns(&own) {
                        Escaped(format!("[host-reached] wrote {path} in the host's {own}"))
                    } else {
                        NotAnEscape(format!(
                            "wrote {path} (wrote back {:?}): it belongs to the container's own {own}",
                            data.trim()
                        ))
                    }
                }
                None => Escaped(format!(
                    "[host-reached] wrote {:?} to {path}, which is host-global",
                    data.trim()
                )),
            },
        },
    };
    ctx.report(name, o);
}

const SYS_FILES: &[&str] = &[
    "/sys/kernel/mm/ksm/run",
    "/sys/kernel/uevent_helper",
    "/sys/kernel/mm/transparent_hugepage/khugepaged/defrag",
    "/sys/kernel/profiling",
];

/// Write back the value of the first writable-looking /sys/kernel file.
fn sys_write_one() -> Result<String, String> {
    let mut tried = Vec::new();
    for path in SYS_FILES {
        let Ok(current) = std::fs::read_to_string(path) else {
            tried.push(format!("{path}: absent"));
            continue;
        };
        match write_file(path, &current) {
            Ok(()) => return Ok(format!("wrote back {:?} to {path}", current.trim())),
            Err(e) => tried.push(e),
        }
    }
    Err(tried.join("; "))
}

fn sys_kernel_write(ctx: &mut Ctx, name: &str) {
    let o = match sys_write_one() {
        Ok(what) => Escaped(format!("[host-reached] {what} (host-global)")),
        Err(e) => Blocked(e),
    };
    ctx.report(name, o);
}

fn sys_remount_rw(ctx: &mut Ctx, name: &str) {
    let init = ctx.init_userns;
    let o = in_child(move || {
        // In a mount namespace of our own if we may, so the container's
        // /sys stays as it was; if we may not, on the container's /sys.
        // SAFETY: changes only this child.
        let private = unsafe { libc::unshare(libc::CLONE_NEWNS) } == 0;
        if !mount("none", "/sys", None, libc::MS_REMOUNT | libc::MS_BIND, "") {
            return Blocked(format!("remount /sys read-write: {}", err()));
        }
        let result = sys_write_one();
        if !private {
            mount(
                "none",
                "/sys",
                None,
                libc::MS_REMOUNT
                    | libc::MS_BIND
                    | libc::MS_RDONLY
                    | libc::MS_NOSUID
                    | libc::MS_NODEV
                    | libc::MS_NOEXEC,
                "",
            );
        }
        match result {
            Ok(what) => Escaped(format!(
                "[host-reached] remounted /sys read-write and {what} (host-global)"
            )),
            Err(e) if init => Escaped(format!(
                "[capability] remounted /sys read-write (CAP_SYS_ADMIN of the initial user namespace); writes: {e}"
            )),
            Err(e) => NotAnEscape(format!("remounted /sys read-write in its own user namespace; writes: {e}")),
        }
    });
    ctx.report(name, o);
}

fn makedev(major: u32, minor: u32) -> libc::dev_t {
    libc::makedev(major, minor)
}

fn mknod(path: &str, mode: libc::mode_t, dev: libc::dev_t) -> bool {
    let p = c(path);
    let _ = std::fs::remove_file(path);
    // SAFETY: a NUL-terminated path.
    unsafe { libc::mknod(p.as_ptr(), mode, dev) == 0 }
}

fn mknod_block(ctx: &mut Ctx, name: &str) {
    let mut devices: Vec<(u32, u32, String)> = std::fs::read_to_string("/proc/partitions")
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 4).then(|| (f[0].parse().ok(), f[1].parse().ok(), f[3].to_string()))
        })
        .filter_map(|(a, b, n)| Some((a?, b?, n)))
        .collect();
    for (major, minor, dev) in [
        (8, 0, "sda?"),
        (253, 0, "vda/dm-0?"),
        (254, 0, "vda?"),
        (259, 0, "nvme0n1?"),
    ] {
        if !devices.iter().any(|d| d.0 == major && d.1 == minor) {
            devices.push((major, minor, dev.to_string()));
        }
    }
    let dir = scratch("dev");
    for (major, minor, dev) in devices {
        let path = format!("{dir}/blk-{major}-{minor}");
        let o = if !mknod(&path, libc::S_IFBLK | 0o600, makedev(major, minor)) {
            Blocked(format!("mknod {major}:{minor} ({dev}): {}", err()))
        } else {
            let o = match std::fs::File::open(&path) {
                Err(e) => Blocked(format!(
                    "mknod {major}:{minor} ({dev}) worked; open: {e} (the device cgroup)"
                )),
                Ok(mut f) => {
                    let mut buf = [0u8; 512];
                    match f.read(&mut buf) {
                        Ok(n) => Escaped(format!(
                            "[host-reached] opened block device {major}:{minor} ({dev}) and read {n} bytes"
                        )),
                        Err(e) => Escaped(format!(
                            "[host-reached] opened block device {major}:{minor} ({dev}) (read: {e})"
                        )),
                    }
                }
            };
            let _ = std::fs::remove_file(&path);
            o
        };
        ctx.report(&format!("{name}-{major}:{minor}"), o);
    }
}

fn host_char_devices(ctx: &mut Ctx, name: &str) {
    let dir = scratch("dev");
    // (name, major, minor, read a little?)
    for (dev, major, minor, read) in [
        ("kmsg", 1, 11, true),
        ("mem", 1, 1, true),
        ("kmem", 1, 2, false),
        ("port", 1, 4, false),
        ("console", 5, 1, false),
        ("tty0", 4, 0, false),
        ("vda", 254, 0, true),
    ] {
        let in_dev = format!("/dev/{dev}");
        let (path, made) = if std::path::Path::new(&in_dev).exists() {
            (in_dev, false)
        } else {
            let p = format!("{dir}/chr-{dev}");
            let kind = if dev == "vda" {
                libc::S_IFBLK
            } else {
                libc::S_IFCHR
            };
            if !mknod(&p, kind | 0o600, makedev(major, minor)) {
                ctx.report(
                    &format!("{name}-{dev}"),
                    Blocked(format!(
                        "/dev/{dev} absent; mknod {major}:{minor}: {}",
                        err()
                    )),
                );
                continue;
            }
            (p, true)
        };
        let p = c(&path);
        // SAFETY: a NUL-terminated path.
        let fd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        let o = if fd < 0 {
            Blocked(format!("open {path} ({major}:{minor}): {}", err()))
        } else {
            let mut buf = [0u8; 256];
            let n = if read {
                // SAFETY: reads into our buffer from the fd we opened.
                unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) }
            } else {
                0
            };
            // SAFETY: closes the fd we opened.
            unsafe { libc::close(fd) };
            Escaped(format!(
                "[host-reached] opened the host device {major}:{minor} ({dev}) at {path}{}",
                if n > 0 {
                    format!(", read {n} bytes")
                } else {
                    String::new()
                }
            ))
        };
        if made {
            let _ = std::fs::remove_file(&path);
        }
        ctx.report(&format!("{name}-{dev}"), o);
    }
}

/// Refused with EPERM: blocked. ENOSYS: the kernel has no such feature.
/// Anything else: the capability check passed, only the (deliberately bad)
/// argument was refused.
fn cap_probe(what: &str, rc: libc::c_long, cap: &str, consequence: &str) -> Outcome {
    if rc == 0 {
        return Escaped(format!(
            "[capability] {what} succeeded ({cap}): {consequence}"
        ));
    }
    let e = errno();
    match e {
        libc::EPERM | libc::EACCES => Blocked(format!("{what}: {}", err())),
        libc::ENOSYS => Blocked(format!("{what}: {} (the kernel lacks it)", err())),
        _ => Escaped(format!(
            "[capability] {what}: {} after the {cap} check passed: {consequence}",
            err()
        )),
    }
}

fn kernel_modules(ctx: &mut Ctx, name: &str) {
    let garbage = [0x5au8; 64];
    let params = c("");
    // SAFETY: a 64-byte buffer and an empty parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_init_module,
            garbage.as_ptr(),
            garbage.len(),
            params.as_ptr(),
        )
    };
    let o = cap_probe(
        "init_module(garbage)",
        rc,
        "CAP_SYS_MODULE",
        "a real module would load into the host kernel",
    );
    ctx.report(&format!("{name}-init"), o);

    let path = format!("{SCRATCH}/garbage.ko");
    let _ = std::fs::write(&path, garbage);
    let o = match std::fs::File::open(&path) {
        Err(e) => Blocked(format!("(test setup) {path}: {e}")),
        Ok(f) => {
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // SAFETY: an open fd and an empty parameter string.
            let rc = unsafe { libc::syscall(libc::SYS_finit_module, fd, params.as_ptr(), 0) };
            cap_probe(
                "finit_module(garbage)",
                rc,
                "CAP_SYS_MODULE",
                "a real module would load into the host kernel",
            )
        }
    };
    ctx.report(&format!("{name}-finit"), o);

    let module = c("grove_escape_no_such_module");
    // SAFETY: a NUL-terminated name.
    let rc = unsafe { libc::syscall(libc::SYS_delete_module, module.as_ptr(), libc::O_NONBLOCK) };
    let o = cap_probe(
        "delete_module(no such module)",
        rc,
        "CAP_SYS_MODULE",
        "host modules could be unloaded",
    );
    ctx.report(&format!("{name}-delete"), o);
}

fn raw_socket(ctx: &mut Ctx, name: &str) {
    for (label, domain, ty, proto) in [
        (
            "packet",
            libc::AF_PACKET,
            libc::SOCK_RAW,
            (libc::ETH_P_ALL as u16).to_be() as i32,
        ),
        ("inet", libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW),
    ] {
        // SAFETY: plain socket(2).
        let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, proto) };
        let o = if fd < 0 {
            Blocked(format!("socket({label}, SOCK_RAW): {}", err()))
        } else {
            // SAFETY: closes the fd we opened.
            unsafe { libc::close(fd) };
            let net = ns_link("self", "net").unwrap_or_default();
            if ctx.is_host_ns(&net) {
                Escaped(format!(
                    "[host-reached] a raw {label} socket in the host's {net}"
                ))
            } else {
                NotAnEscape(format!(
                    "a raw {label} socket (CAP_NET_RAW) works, in the container's own {net}: \
                     it sees only the container's lo and eth0"
                ))
            }
        };
        ctx.report(&format!("{name}-{label}"), o);
    }
}

/// What a directory we reached is: the host's root, our own root, or
/// something else above or beside it.
fn judge_reached(ctx: &Ctx, how: &str, reached: (u64, u64)) -> Outcome {
    if ctx.is_host_root(reached) {
        return Escaped(format!(
            "[host-reached] {how} reached the host's root directory ({}:{})",
            reached.0, reached.1
        ));
    }
    if let Some(hit) = shadow_check(ctx, "/etc/shadow") {
        return Escaped(format!("{how}: {hit}"));
    }
    if reached == ctx.own_root {
        Blocked(format!(
            "{how} stopped at the container's own root ({}:{})",
            reached.0, reached.1
        ))
    } else {
        let names: Vec<String> = std::fs::read_dir("/")
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .take(20)
                    .collect()
            })
            .unwrap_or_default();
        Escaped(format!(
            "[host-reached] {how} reached {}:{}, above the container's root {}:{} (holds {names:?})",
            reached.0, reached.1, ctx.own_root.0, ctx.own_root.1
        ))
    }
}

fn chroot_climb(ctx: &mut Ctx, name: &str) {
    let jail = scratch("jail");
    let snapshot = Ctx {
        host_shadow: ctx.host_shadow.clone(),
        host_root: ctx.host_root,
        host_ns: ctx.host_ns.clone(),
        only: None,
        ..*ctx
    };
    let o = in_child(move || {
        let root = c("/");
        // SAFETY: opens "/" and chroots/chdirs with NUL-terminated paths.
        unsafe {
            let fd = libc::open(root.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
            if fd < 0 {
                return Blocked(format!("(test setup) open /: {}", err()));
            }
            let j = c(&jail);
            if libc::chroot(j.as_ptr()) != 0 {
                return Blocked(format!("chroot({jail}): {}", err()));
            }
            // The fd opened before the chroot lies outside the new root.
            libc::fchdir(fd);
            let up = c("..");
            for _ in 0..256 {
                libc::chdir(up.as_ptr());
            }
            let dot = c(".");
            if libc::chroot(dot.as_ptr()) != 0 {
                return Blocked(format!("chroot(.) after climbing: {}", err()));
            }
        }
        match dev_ino("/") {
            None => Blocked("stat / after climbing failed".into()),
            Some(id) => judge_reached(&snapshot, "chroot + fchdir to an old fd + 256 × \"..\"", id),
        }
    });
    ctx.report(name, o);
}

fn pivot_root(ctx: &mut Ctx, name: &str) {
    let jail = scratch("pivot");
    let init = ctx.init_userns;
    let host_root = ctx.host_root;
    let o = in_child(move || {
        // SAFETY: changes only this child.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Blocked(format!("unshare(CLONE_NEWNS) for pivot_root: {}", err()));
        }
        if !mount("none", "/", None, libc::MS_REC | libc::MS_PRIVATE, "") {
            return Blocked(format!("make / private: {}", err()));
        }
        if !mount(&jail, &jail, None, libc::MS_BIND, "") {
            return Blocked(format!("bind {jail}: {}", err()));
        }
        let old = format!("{jail}/old");
        let _ = std::fs::create_dir_all(&old);
        let (n, o) = (c(&jail), c(&old));
        // SAFETY: NUL-terminated paths.
        if unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } != 0 {
            return Blocked(format!("pivot_root: {}", err()));
        }
        let reached = dev_ino("/old");
        if reached.is_some() && reached == host_root {
            return Escaped("[host-reached] pivot_root's old root is the host's root".into());
        }
        if init {
            Escaped("[capability] pivot_root in a new mount namespace worked (CAP_SYS_ADMIN of the initial user namespace); the old root was the container's".into())
        } else {
            NotAnEscape("pivot_root worked inside the container's own namespaces; the old root was the container's".into())
        }
    });
    ctx.report(name, o);
}

fn pids() -> Vec<String> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
                .collect()
        })
        .unwrap_or_default()
}

fn proc_pid_root(ctx: &mut Ctx, name: &str) {
    let mut same = 0;
    let mut refused = Vec::new();
    let mut others = Vec::new();
    for pid in pids() {
        let root = format!("/proc/{pid}/root/");
        match dev_ino(&root) {
            None => refused.push(pid.clone()),
            Some(id) if ctx.is_host_root(id) => {
                return ctx.report(
                    name,
                    Escaped(format!(
                        "[host-reached] {root} is the host's root ({}:{})",
                        id.0, id.1
                    )),
                )
            }
            Some(id) if id == ctx.own_root => same += 1,
            Some(id) => others.push(format!("{pid}:{}:{}", id.0, id.1)),
        }
    }
    let o = if others.is_empty() {
        Blocked(format!(
            "{same} /proc/<pid>/root lead to the container's own root; {} refused{}",
            refused.len(),
            if refused.len() <= 10 {
                format!(" ({})", refused.join(","))
            } else {
                String::new()
            }
        ))
    } else {
        NotAnEscape(format!(
            "{same} lead to the container's root; others lead elsewhere but not to the host's root: {}",
            others.join(" ")
        ))
    };
    ctx.report(name, o);
}

fn open_write(path: &str) -> Result<std::fs::File, String> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("open {path} for writing: {e}"))
}

fn proc_self_exe(ctx: &mut Ctx, name: &str) {
    let o = match open_write("/proc/self/exe") {
        Err(e) => Blocked(e),
        Ok(_) => NotAnEscape(
            "opened our own running binary for writing: it is a file of the container's own layer"
                .into(),
        ),
    };
    ctx.report(name, o);
}

/// PID 1 is wshd, run from the helper's sealed memfd that every container's
/// PID 1 shares: writing it would reach every container.
fn proc_1_exe(ctx: &mut Ctx, name: &str) {
    let try_write = |f: std::fs::File, how: &str| -> Outcome {
        use std::os::unix::fs::FileExt;
        let mut byte = [0u8; 1];
        let first = std::fs::File::open("/proc/1/exe").and_then(|r| r.read_exact_at(&mut byte, 0));
        if let Err(e) = first {
            return Escaped(format!(
                "[host-reached] {how}: opened wshd's executable for writing (could not read its first byte to write it back: {e})"
            ));
        }
        match f.write_at(&byte, 0) {
            Ok(_) => Escaped(format!(
                "[host-reached] {how}: wrote (the same byte back) into wshd's executable, which every container's PID 1 runs"
            )),
            Err(e) => Blocked(format!("{how}: opened for writing, but the write failed: {e} (sealed)")),
        }
    };
    let o = match open_write("/proc/1/exe") {
        Ok(f) => try_write(f, "open(/proc/1/exe, O_WRONLY)"),
        Err(e1) => {
            // The CVE-2019-5736 route: an O_PATH fd reopened for writing.
            let p = c("/proc/1/exe");
            // SAFETY: a NUL-terminated path.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
            if fd < 0 {
                Blocked(format!("{e1}; open(O_PATH): {}", err()))
            } else {
                let reopened = open_write(&format!("/proc/self/fd/{fd}"));
                // SAFETY: closes the fd we opened.
                unsafe { libc::close(fd) };
                match reopened {
                    Ok(f) => try_write(f, "O_PATH fd of /proc/1/exe reopened O_WRONLY"),
                    Err(e2) => Blocked(format!("{e1}; via an O_PATH fd: {e2}")),
                }
            }
        }
    };
    ctx.report(name, o);
}

#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

fn open_by_handle(ctx: &mut Ctx, name: &str) {
    let mut notes = Vec::new();
    // 1. A genuine handle of a file on a filesystem the host shares with
    //    us (/dev/null is bind-mounted from the host's devtmpfs).
    let mut fh = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id = 0;
    let null = c("/dev/null");
    // SAFETY: fh has room for 128 handle bytes, as handle_bytes says.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            null.as_ptr(),
            &mut fh as *mut FileHandle,
            &mut mount_id as *mut libc::c_int,
            0,
        )
    };
    // SAFETY: a NUL-terminated path.
    // open_by_handle_at takes no O_PATH descriptor as its mount fd.
    let null_fd = unsafe { libc::open(null.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if rc != 0 || null_fd < 0 {
        let e = err();
        notes.push(format!("name_to_handle_at(/dev/null): {e}"));
        ctx.report(
            &format!("{name}-genuine"),
            Blocked(format!("name_to_handle_at(/dev/null): {e}")),
        );
    } else {
        // SAFETY: fh was filled by the kernel.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                null_fd,
                &mut fh as *mut FileHandle,
                libc::O_RDONLY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            // SAFETY: closes the fd we got.
            unsafe { libc::close(fd as i32) };
            let o = if ctx.init_userns {
                Escaped("[capability] open_by_handle_at with a handle of the host devtmpfs's /dev/null worked \
                         (CAP_DAC_READ_SEARCH of the initial user namespace): handles bypass the container's mount tree (shocker)".into())
            } else {
                NotAnEscape("open_by_handle_at of /dev/null worked within the container's own user namespace".into())
            };
            ctx.report(&format!("{name}-genuine"), o);
        } else {
            ctx.report(
                &format!("{name}-genuine"),
                Blocked(format!(
                    "open_by_handle_at(/dev/null's own handle): {}",
                    err()
                )),
            );
        }
    }
    // 2. Shocker proper: the root inode of an ext4 filesystem (FILEID_INO32_GEN,
    //    inode 2, generation 0), through every mount fd we can open.
    let mut reached = None;
    for path in [
        "/",
        "/dev/null",
        "/etc/hosts",
        "/etc/resolv.conf",
        "/etc/hostname",
        "/proc/self/exe",
    ] {
        let p = c(path);
        // SAFETY: a NUL-terminated path.
        let mfd = unsafe {
            libc::open(
                p.as_ptr(),
                libc::O_RDONLY | libc::O_NONBLOCK | libc::O_CLOEXEC,
            )
        };
        if mfd < 0 {
            continue;
        }
        let mut fh = FileHandle {
            handle_bytes: 8,
            handle_type: 1,
            f_handle: [0; 128],
        };
        fh.f_handle[..4].copy_from_slice(&2u32.to_ne_bytes());
        // SAFETY: a handle of 8 bytes in a 128-byte buffer.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_open_by_handle_at,
                mfd,
                &mut fh as *mut FileHandle,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        if fd >= 0 {
            let fd = fd as i32;
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            // SAFETY: fstat into a zeroed stat of the fd we got.
            unsafe { libc::fstat(fd, &mut st) };
            let id = (st.st_dev, st.st_ino);
            let shadow = format!("/proc/self/fd/{fd}/etc/shadow");
            let hit = shadow_check(ctx, &shadow);
            // SAFETY: closes the fd we got.
            unsafe { libc::close(fd) };
            if ctx.is_host_root(id) || hit.is_some() {
                reached = Some(format!(
                    "[host-reached] open_by_handle_at(inode 2) through {path} opened the host's root directory {}:{}{}",
                    id.0,
                    id.1,
                    hit.map(|h| format!("; {h}")).unwrap_or_default()
                ));
            } else {
                notes.push(format!(
                    "through {path}: opened {}:{} (not the host's root)",
                    id.0, id.1
                ));
            }
        } else {
            notes.push(format!("through {path}: {}", err()));
        }
        // SAFETY: closes the fd we opened.
        unsafe { libc::close(mfd) };
    }
    if null_fd >= 0 {
        // SAFETY: closes the fd we opened.
        unsafe { libc::close(null_fd) };
    }
    let o = match reached {
        Some(e) => Escaped(e),
        None => Blocked(format!("ext4 root inode by handle: {}", notes.join("; "))),
    };
    ctx.report(&format!("{name}-shocker"), o);
}

fn host_shadow(ctx: &mut Ctx, name: &str) {
    if ctx.host_shadow.is_none() {
        return ctx.report(
            name,
            Blocked("no GROVE_HOST_SHADOW_SHA256 given: nothing to compare with".into()),
        );
    }
    let mut paths = vec![
        "/etc/shadow".to_string(),
        "/proc/self/root/etc/shadow".into(),
        "/proc/1/cwd/etc/shadow".into(),
        "/proc/1/cwd/../../../../etc/shadow".into(),
        "/etc/../../../etc/shadow".into(),
    ];
    paths.extend(
        pids()
            .into_iter()
            .map(|p| format!("/proc/{p}/root/etc/shadow")),
    );
    let mut readable = 0;
    let mut unreadable = 0;
    for path in &paths {
        if let Some(hit) = shadow_check(ctx, path) {
            return ctx.report(name, Escaped(hit));
        }
        if std::fs::File::open(path).is_ok() {
            readable += 1;
        } else {
            unreadable += 1;
        }
    }
    ctx.report(
        name,
        Blocked(format!(
            "{} paths: {readable} readable, none of them the host's /etc/shadow; {unreadable} unreadable",
            paths.len()
        )),
    );
}

fn keyctl(ctx: &mut Ctx, name: &str) {
    let (ty, desc, payload) = (c("user"), c("grove-escape-probe"), b"x");
    // KEY_SPEC_USER_KEYRING = -4: the keyring of our uid, as the kernel
    // knows it (without a user namespace: the host's uid).
    // SAFETY: NUL-terminated strings and a 1-byte payload.
    let id = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            ty.as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            -4i32,
        )
    };
    let o = if id < 0 {
        Blocked(format!("add_key(user, KEY_SPEC_USER_KEYRING): {}", err()))
    } else {
        // KEYCTL_INVALIDATE = 21: remove the key again.
        // SAFETY: plain keyctl.
        unsafe { libc::syscall(libc::SYS_keyctl, 21, id) };
        if ctx.init_userns {
            Escaped(format!(
                "[shared-with-host] add_key put key {id} into the user keyring of host uid {} \
                 (no user namespace: it is the keyring the host's processes of that uid use)",
                ctx.euid
            ))
        } else {
            NotAnEscape(format!(
                "add_key worked, in the keyring of the container's own (mapped) uid {}",
                ctx.euid
            ))
        }
    };
    ctx.report(name, o);
}

fn bpf_load(prog_type: u32) -> libc::c_long {
    // r0 = 0; exit
    let insns: [u64; 2] = [0x0000_0000_0000_00b7, 0x0000_0000_0000_0095];
    let license = c("GPL");
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&prog_type.to_ne_bytes());
    attr[4..8].copy_from_slice(&2u32.to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    // SAFETY: attr is a BPF_PROG_LOAD attribute whose pointers outlive the call.
    unsafe {
        libc::syscall(
            libc::SYS_bpf,
            5, /* BPF_PROG_LOAD */
            attr.as_ptr(),
            attr.len(),
        )
    }
}

fn bpf(ctx: &mut Ctx, name: &str) {
    let fd = bpf_load(1); // BPF_PROG_TYPE_SOCKET_FILTER
    let o = if fd >= 0 {
        // SAFETY: closes the fd we got.
        unsafe { libc::close(fd as i32) };
        NotAnEscape("a socket-filter BPF program loads (it can only filter its own sockets)".into())
    } else {
        Blocked(format!("BPF_PROG_LOAD(socket filter): {}", err()))
    };
    ctx.report(&format!("{name}-socket-filter"), o);
    let fd = bpf_load(5); // BPF_PROG_TYPE_TRACEPOINT
    let o = if fd >= 0 {
        // SAFETY: closes the fd we got.
        unsafe { libc::close(fd as i32) };
        Escaped("[capability] a tracepoint BPF program loaded (CAP_BPF + CAP_PERFMON of the initial user namespace): \
                 tracing programs read kernel and any host process's memory".into())
    } else {
        Blocked(format!("BPF_PROG_LOAD(tracepoint): {}", err()))
    };
    ctx.report(&format!("{name}-tracepoint"), o);
}

fn perf_open(pid: i32, cpu: i32) -> libc::c_long {
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
                                                       // config 0 = PERF_COUNT_SW_CPU_CLOCK; flags: disabled (bit 0).
    attr[40..48].copy_from_slice(&1u64.to_ne_bytes());
    // SAFETY: a zero-padded perf_event_attr of the size it states.
    unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_ptr(),
            pid,
            cpu,
            -1,
            8, /* FD_CLOEXEC */
        )
    }
}

fn perf(ctx: &mut Ctx, name: &str) {
    let fd = perf_open(-1, 0);
    let o = if fd >= 0 {
        // SAFETY: closes the fd we got.
        unsafe { libc::close(fd as i32) };
        Escaped("[capability] a CPU-wide perf event on CPU 0 opened: it observes every process on that CPU, the host's included".into())
    } else {
        Blocked(format!("perf_event_open(pid=-1, cpu=0): {}", err()))
    };
    ctx.report(&format!("{name}-cpu-wide"), o);
    let fd = perf_open(0, -1);
    let o = if fd >= 0 {
        // SAFETY: closes the fd we got.
        unsafe { libc::close(fd as i32) };
        NotAnEscape("a perf event on ourselves opened (observes only this process)".into())
    } else {
        Blocked(format!("perf_event_open(self): {}", err()))
    };
    ctx.report(&format!("{name}-self"), o);
}

fn userfaultfd(ctx: &mut Ctx, name: &str) {
    // SAFETY: plain syscall.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
    let o = if fd >= 0 {
        // SAFETY: closes the fd we got.
        unsafe { libc::close(fd as i32) };
        NotAnEscape("userfaultfd (kernel faults too) is available: an aid to kernel exploits, not an escape by itself".into())
    } else {
        Blocked(format!("userfaultfd: {}", err()))
    };
    ctx.report(name, o);
}

fn kexec(ctx: &mut Ctx, name: &str) {
    // nr_segments = KEXEC_SEGMENT_MAX + 1: refused with EINVAL right after
    // the CAP_SYS_BOOT check, so nothing is ever loaded or unloaded.
    // SAFETY: null segments are never read (the count is refused first).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_load,
            0usize,
            17usize,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    let o = cap_probe(
        "kexec_load(17 segments)",
        rc,
        "CAP_SYS_BOOT",
        "a new kernel could replace the host's",
    );
    ctx.report(&format!("{name}-load"), o);
    // SAFETY: bad fds; refused after the capability check with EBADF.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kexec_file_load,
            -1,
            -1,
            0usize,
            std::ptr::null::<u8>(),
            0usize,
        )
    };
    let o = cap_probe(
        "kexec_file_load(bad fds)",
        rc,
        "CAP_SYS_BOOT",
        "a new kernel could replace the host's",
    );
    ctx.report(&format!("{name}-file-load"), o);
}

fn reboot(ctx: &mut Ctx, name: &str) {
    // A wrong magic: EINVAL right after the capability check, whatever the
    // namespace; nothing reboots.
    // SAFETY: no pointer argument is read.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_reboot,
            0xdead_i64,
            0i64,
            0i64,
            std::ptr::null::<u8>(),
        )
    };
    let e = errno();
    let pid_ns = ns_link("self", "pid").unwrap_or_default();
    let o = if rc != 0 && (e == libc::EPERM || e == libc::EACCES) {
        Blocked(format!("reboot(bad magic): {}", err()))
    } else if rc != 0 && e == libc::ENOSYS {
        Blocked(format!("reboot: {}", err()))
    } else if ctx.is_host_ns(&pid_ns) {
        Escaped(format!(
            "[capability] reboot passed the CAP_SYS_BOOT check in the host's {pid_ns}"
        ))
    } else {
        NotAnEscape(format!(
            "reboot passed the CAP_SYS_BOOT check ({}), but in the container's own {pid_ns} it only ends the container",
            if rc == 0 { "succeeded".into() } else { err() }
        ))
    };
    ctx.report(name, o);
}

fn proc_submounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(str::to_string))
        .filter(|mp| mp.starts_with("/proc/"))
        .collect()
}

/// Masks over /proc entries (bind mounts of /dev/null or read-only
/// remounts): removing one defeats that defence.
fn umount_proc_masks(ctx: &mut Ctx, name: &str) {
    let masks = proc_submounts();
    if masks.is_empty() {
        return ctx.report(
            name,
            Blocked("no masks mounted over /proc entries (nothing to remove)".into()),
        );
    }
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    for mp in &masks {
        if umount(mp) {
            removed.push(mp.clone());
        } else {
            kept.push(format!("{mp}: {}", err()));
        }
    }
    let o = if removed.is_empty() {
        Blocked(format!("every mask stays: {}", kept.join("; ")))
    } else {
        Escaped(format!(
            "[host-reached] removed the masks over {}",
            removed.join(", ")
        ))
    };
    ctx.report(name, o);
}

fn umount_proc(ctx: &mut Ctx, name: &str) {
    let o = if umount("/proc") {
        ctx.privileged("umount(/proc)", "CAP_SYS_ADMIN")
    } else {
        Blocked(format!("umount(/proc): {}", err()))
    };
    ctx.report(name, o);
}
