//! Running under systemd: socket activation (sd_listen_fds(3)) and
//! readiness, status and watchdog notifications (sd_notify(3), formatted by
//! the `sd-notify` crate), for all three daemons; none needs systemd.
//!
//! Both daemons read what systemd passed them once, at the very start, and
//! take it out of their environment (`capture`), so nothing they start
//! inherits it. Sockets are checked before use (`take_listener`): a socket
//! unit with the wrong `Listen…=` line is refused with a message that says
//! which one is needed. The notification socket is connected once, before
//! the daemon confines itself (`Notifier::connect`): afterwards sending
//! on it is a plain send(2) on a connected datagram socket, which both
//! seccomp allowlists permit and which Landlock's abstract-socket scope
//! does not check again (it checks connect(2) and unconnected sends).

use nix::sys::socket::SockType;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub use sd_notify::NotifyState;

/// The first fd systemd passes (SD_LISTEN_FDS_START).
const LISTEN_FDS_START: RawFd = 3;
/// More would be a mistake in a unit file; refused rather than believed.
const MAX_LISTEN_FDS: usize = 16;

/// What systemd put in the environment, taken out of it.
#[derive(Debug, Default)]
pub struct SystemdEnv {
    /// Socket activation: how many fds from 3 on, and their names (empty
    /// when LISTEN_FDNAMES was not set).
    pub listen: Option<(usize, Vec<String>)>,
    /// NOTIFY_SOCKET: a path, or `@name` for an abstract socket.
    pub notify_socket: Option<OsString>,
    /// WATCHDOG_USEC, when it is meant for this process.
    pub watchdog: Option<Duration>,
}

const VARIABLES: [&str; 6] = [
    "LISTEN_PID",
    "LISTEN_FDS",
    "LISTEN_FDNAMES",
    "NOTIFY_SOCKET",
    "WATCHDOG_USEC",
    "WATCHDOG_PID",
];

/// Read systemd's variables and remove them from the environment. Call it
/// first thing in main, while the process has one thread.
pub fn capture() -> Result<SystemdEnv, String> {
    let var = |k: &str| std::env::var(k).ok();
    let listen = parse_listen(
        var("LISTEN_PID").as_deref(),
        var("LISTEN_FDS").as_deref(),
        var("LISTEN_FDNAMES").as_deref(),
        std::process::id(),
    );
    let watchdog = sd_notify::watchdog_enabled();
    let notify_socket = std::env::var_os("NOTIFY_SOCKET").filter(|s| !s.is_empty());
    for k in VARIABLES {
        std::env::remove_var(k);
    }
    Ok(SystemdEnv {
        listen: listen?,
        notify_socket,
        watchdog,
    })
}

/// LISTEN_PID, LISTEN_FDS and LISTEN_FDNAMES as sd_listen_fds(3) reads
/// them: the fds are ours only when LISTEN_PID is our pid.
pub fn parse_listen(
    pid: Option<&str>,
    fds: Option<&str>,
    names: Option<&str>,
    own_pid: u32,
) -> Result<Option<(usize, Vec<String>)>, String> {
    let (Some(pid), Some(fds)) = (pid, fds) else {
        return Ok(None);
    };
    match pid.trim().parse::<u32>() {
        Ok(p) if p == own_pid => {}
        Ok(_) => return Ok(None),
        Err(_) => {
            return Err(format!(
                "socket activation: LISTEN_PID={pid:?} is not a pid"
            ))
        }
    }
    let n: usize = fds
        .trim()
        .parse()
        .map_err(|_| format!("socket activation: LISTEN_FDS={fds:?} is not a number"))?;
    if n == 0 {
        return Ok(None);
    }
    if n > MAX_LISTEN_FDS {
        return Err(format!(
            "socket activation: LISTEN_FDS={n}; at most {MAX_LISTEN_FDS} are accepted"
        ));
    }
    let names: Vec<String> = match names {
        Some(s) if !s.is_empty() => s.split(':').map(str::to_string).collect(),
        _ => Vec::new(),
    };
    if !names.is_empty() && names.len() != n {
        return Err(format!(
            "socket activation: LISTEN_FDS={n} but LISTEN_FDNAMES names {}",
            names.len()
        ));
    }
    Ok(Some((n, names)))
}

/// Which of `n` passed fds (by index) is the one named `wanted`: the only
/// one, whatever its name, or the one of that name.
pub fn pick(n: usize, names: &[String], wanted: &str) -> Result<usize, String> {
    if n == 1 {
        return Ok(0);
    }
    names.iter().position(|name| name == wanted).ok_or_else(|| {
        format!(
            "socket activation: {n} sockets were passed (names: {}) and none is named {wanted:?} \
             (FileDescriptorName={wanted} in the socket unit)",
            if names.is_empty() {
                "none".to_string()
            } else {
                names.join(", ")
            }
        )
    })
}

impl SystemdEnv {
    /// How many fds from 3 on systemd passed (0 without socket activation).
    pub fn passed_fds(&self) -> usize {
        self.listen.as_ref().map_or(0, |(n, _)| *n)
    }

    /// The listening socket systemd passed, if it did: the one named
    /// `wanted` (or the only one), checked to be a listening AF_UNIX socket
    /// of type `ty`. The other passed fds are closed. Without socket
    /// activation, None: the daemon binds its socket itself.
    pub fn take_listener(
        &mut self,
        daemon: &str,
        wanted: &str,
        ty: SockType,
        unit_line: &str,
    ) -> Result<Option<OwnedFd>, String> {
        let Some((n, names)) = self.listen.take() else {
            return Ok(None);
        };
        let index = pick(n, &names, wanted)?;
        let mut chosen = None;
        for i in 0..n {
            let raw = LISTEN_FDS_START + i as RawFd;
            // SAFETY: systemd passed fds 3..3+n to this process (LISTEN_PID
            // is ours) and nothing else in it has taken them.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            if i == index {
                chosen = Some(fd);
            }
        }
        let fd = chosen.expect("pick returns an index below n");
        // systemd passes them without FD_CLOEXEC: nothing we start may get it.
        nix::fcntl::fcntl(
            fd.as_raw_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| format!("socket activation: fd {}: {e}", fd.as_raw_fd()))?;
        check_listener(
            std::os::fd::AsFd::as_fd(&fd),
            ty,
            &format!(
                "{daemon} needs a listening AF_UNIX {} socket ({unit_line} in its socket unit)",
                type_name(ty)
            ),
        )?;
        Ok(Some(fd))
    }
}

fn type_name(ty: SockType) -> &'static str {
    match ty {
        SockType::Stream => "SOCK_STREAM",
        SockType::SeqPacket => "SOCK_SEQPACKET",
        SockType::Datagram => "SOCK_DGRAM",
        _ => "other",
    }
}

fn int_option(fd: BorrowedFd, option: libc::c_int) -> std::io::Result<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `value`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            option,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(value)
}

/// Refuse anything but a listening AF_UNIX socket of type `ty`.
pub fn check_listener(fd: BorrowedFd, ty: SockType, need: &str) -> Result<(), String> {
    let raw = fd.as_raw_fd();
    let what = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOTSOCK) => format!("socket activation: fd {raw} is not a socket; {need}"),
        _ => format!("socket activation: fd {raw}: {e}; {need}"),
    };
    let domain = int_option(fd, libc::SO_DOMAIN).map_err(what)?;
    let kind = int_option(fd, libc::SO_TYPE).map_err(what)?;
    let listening = int_option(fd, libc::SO_ACCEPTCONN).map_err(what)?;
    if domain != libc::AF_UNIX {
        return Err(format!(
            "socket activation: fd {raw} is not an AF_UNIX socket (family {domain}); {need}"
        ));
    }
    if kind != ty as libc::c_int {
        let got = match kind {
            libc::SOCK_STREAM => "SOCK_STREAM",
            libc::SOCK_DGRAM => "SOCK_DGRAM",
            libc::SOCK_SEQPACKET => "SOCK_SEQPACKET",
            _ => "of another type",
        };
        return Err(format!(
            "socket activation: fd {raw} is a {got} socket; {need}"
        ));
    }
    if listening == 0 {
        return Err(format!(
            "socket activation: fd {raw} is not listening; {need}"
        ));
    }
    Ok(())
}

/// Where a listening unix socket is bound, for logs.
pub fn bound_path(fd: BorrowedFd) -> String {
    match nix::sys::socket::getsockname::<nix::sys::socket::UnixAddr>(fd.as_raw_fd()) {
        Ok(addr) => match (addr.path(), addr.as_abstract()) {
            (Some(p), _) => p.display().to_string(),
            (None, Some(a)) => format!("@{}", String::from_utf8_lossy(a)),
            _ => "an unnamed socket".to_string(),
        },
        Err(e) => format!("an unknown address ({e})"),
    }
}

/// The connection to systemd's notification socket, if there is one.
#[derive(Debug, Default)]
pub struct Notifier {
    sock: Option<UnixDatagram>,
    watchdog: Option<Duration>,
}

impl Notifier {
    /// Connect to NOTIFY_SOCKET (a path, or `@name` for an abstract
    /// socket). Without one, or if it cannot be reached (said on stderr),
    /// every notification is a no-op.
    pub fn connect(daemon: &str, env: &SystemdEnv) -> Notifier {
        let Some(address) = &env.notify_socket else {
            return Notifier::default();
        };
        match connect(address) {
            Ok(sock) => Notifier {
                sock: Some(sock),
                watchdog: env.watchdog,
            },
            Err(e) => {
                log_warn!("{daemon}: NOTIFY_SOCKET={address:?}: {e}; not notifying systemd");
                Notifier::default()
            }
        }
    }

    /// Whether systemd listens.
    pub fn enabled(&self) -> bool {
        self.sock.is_some()
    }

    /// How often to send WATCHDOG=1: half of WATCHDOG_USEC, when set.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.sock.as_ref()?;
        self.watchdog.map(|w| w / 2)
    }

    /// Send `states` in one datagram. Never blocks: a full queue loses the
    /// message (the next watchdog or status update follows soon).
    pub fn notify(&self, states: &[NotifyState]) {
        let Some(sock) = &self.sock else {
            return;
        };
        let message: Vec<String> = states.iter().map(|s| s.to_string()).collect();
        let _ = sock.send(message.join("\n").as_bytes());
    }
}

fn connect(address: &OsString) -> std::io::Result<UnixDatagram> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = address.as_bytes();
    let sock = UnixDatagram::unbound()?;
    match bytes.first() {
        Some(b'@') => {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(&bytes[1..])?;
            sock.connect_addr(&addr)?;
        }
        Some(b'/') => sock.connect(address)?,
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "neither an absolute path nor an abstract name (@…)",
            ))
        }
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_variables_are_ours_only_with_our_pid() {
        assert_eq!(parse_listen(None, Some("1"), None, 7), Ok(None));
        assert_eq!(parse_listen(Some("8"), Some("1"), None, 7), Ok(None));
        assert_eq!(
            parse_listen(Some("7"), Some("1"), None, 7),
            Ok(Some((1, vec![])))
        );
        assert_eq!(parse_listen(Some("7"), Some("0"), None, 7), Ok(None));
        assert_eq!(
            parse_listen(Some("7"), Some("2"), Some("a:b"), 7),
            Ok(Some((2, vec!["a".into(), "b".into()])))
        );
        assert!(parse_listen(Some("x"), Some("1"), None, 7).is_err());
        assert!(parse_listen(Some("7"), Some("x"), None, 7).is_err());
        assert!(parse_listen(Some("7"), Some("99"), None, 7).is_err());
        assert!(parse_listen(Some("7"), Some("2"), Some("a"), 7).is_err());
    }

    #[test]
    fn the_only_socket_or_the_named_one_is_picked() {
        assert_eq!(pick(1, &[], "api"), Ok(0));
        assert_eq!(pick(1, &["other".into()], "api"), Ok(0));
        assert_eq!(pick(2, &["x".into(), "api".into()], "api"), Ok(1));
        let e = pick(2, &["x".into(), "y".into()], "api").unwrap_err();
        assert!(e.contains("FileDescriptorName=api"), "{e}");
        assert!(pick(2, &[], "api").is_err());
    }

    #[test]
    fn a_listener_of_the_wrong_type_is_refused() {
        let dir = std::env::temp_dir().join(format!("grove-sd-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("s.sock");
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let fd = std::os::fd::AsFd::as_fd(&listener);
        assert_eq!(check_listener(fd, SockType::Stream, "need"), Ok(()));
        let e = check_listener(fd, SockType::SeqPacket, "need it").unwrap_err();
        assert!(e.contains("SOCK_STREAM") && e.contains("need it"), "{e}");
        assert_eq!(bound_path(fd), path.display().to_string());
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let e = check_listener(std::os::fd::AsFd::as_fd(&a), SockType::Stream, "n").unwrap_err();
        assert!(e.contains("not listening"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn notifications_reach_a_path_and_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("grove-sd-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        let env = SystemdEnv {
            notify_socket: Some(format!("@{name}").into()),
            watchdog: Some(Duration::from_secs(4)),
            ..Default::default()
        };
        let n = Notifier::connect("test", &env);
        assert!(n.enabled());
        assert_eq!(n.watchdog_interval(), Some(Duration::from_secs(2)));
        n.notify(&[NotifyState::Ready, NotifyState::Status("serving")]);
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1\nSTATUS=serving");
        let none = Notifier::connect("test", &SystemdEnv::default());
        assert!(!none.enabled());
        assert_eq!(none.watchdog_interval(), None);
        none.notify(&[NotifyState::Ready]);
    }
}
