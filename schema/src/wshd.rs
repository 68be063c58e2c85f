//! The groved ↔ wshd protocol. wshd (PID 1 of a container) listens on a
//! SOCK_SEQPACKET unix socket that grove-helper bound for it; groved connects
//! once per operation. One postcard-encoded message per datagram.
//!
//! `Spawn` answers `Spawned` with the parent ends of the process's pipes
//! attached (SCM_RIGHTS), in this order: stdout (read end), stderr (read
//! end), then stdin (write end) when `open_stdin` was asked for. wshd keeps
//! its own copies, so the process neither sees EOF on stdin nor dies of
//! SIGPIPE if groved goes away; `CloseStdin` and `Release` drop them.
//! stdout and stderr pipes hold `OUTPUT_BUFFER` bytes: that is the output
//! kept while nobody reads it (groved reads only for attached clients), and
//! it survives a groved restart because wshd holds the read ends too.
//!
//! A tty process runs on a pseudo-terminal. wshd relays the terminal's
//! output into a pipe of the same size; the fds are: output (read end),
//! then the terminal's master (for input and nothing else) when
//! `open_stdin` was asked for. There is no separate stderr.
//! `Wait` is answered once the process has exited; the connection stays
//! open until then.
//!
//! `StreamIn` and `StreamOut` move a tar archive into or out of the
//! container. wshd forks a child that takes the user's identity (as
//! `Spawn` does) and checks the path before wshd answers, so a bad path or
//! user is refused at once. The answer, `StreamStarted`, carries one fd: the
//! write end of a pipe the child extracts from (`StreamIn`), or the read end
//! of a pipe the child writes the tar to (`StreamOut`). wshd keeps no copy,
//! so closing it is the end of the archive (in) or stops the child (out).
//! `StreamWait` on the same connection answers `StreamFinished` or the
//! child's error once it has exited. A stream belongs to the connection that
//! started it: when that connection closes, an unfinished stream is killed
//! and its record dropped.

pub use crate::envelope::Envelope;
use crate::envelope::{self, DecodeError};
use serde::{Deserialize, Serialize};

pub const PROTOCOL_VERSION: u16 = 1;
/// Largest datagram either side sends or accepts (args and env included).
pub const MAX_DATAGRAM: usize = 128 * 1024;
/// Most file descriptors one datagram carries.
pub const MAX_FDS: usize = 3;
/// Longest process id.
pub const MAX_PROCESS_ID: usize = 128;
/// Capacity of each output pipe: what is kept while nobody reads.
pub const OUTPUT_BUFFER: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Spawn(SpawnSpec),
    /// Answered with `Exited` once the process has exited.
    Wait {
        id: String,
    },
    /// Deliver a signal to one process.
    Signal {
        id: String,
        signal: i32,
    },
    /// Deliver a signal to every process in the container but wshd.
    SignalAll {
        signal: i32,
    },
    /// Close wshd's copy of the process's stdin, so it sees end-of-file.
    CloseStdin {
        id: String,
    },
    /// Forget a process that has exited, and drop wshd's copies of its fds.
    Release {
        id: String,
    },
    /// Every process wshd knows.
    List,
    /// Hand over the parent-side fds of a known process again (after a
    /// groved restart): answered with `Attached` and the same fd layout as
    /// `Spawned`, minus stdin once it was closed.
    Reattach {
        id: String,
    },
    /// Resize a tty process's terminal; the kernel sends it SIGWINCH.
    SetWindowSize {
        id: String,
        size: WindowSize,
    },
    /// Extract a tar into the directory `path` (created, as the user, when
    /// missing) as `user` (`None`: root). Answered with `StreamStarted` and
    /// the write end of the pipe the tar goes into.
    StreamIn {
        path: String,
        user: Option<String>,
    },
    /// Write a tar of `path` (a file or a directory), read as `user`, with
    /// entries named relative to its parent (`tar -C dirname -cf - basename`;
    /// a trailing '/' names the directory's contents "./..."). Answered with
    /// `StreamStarted` and the read end of the pipe the tar comes out of.
    StreamOut {
        path: String,
        user: Option<String>,
    },
    /// Answered with `StreamFinished` or an error once the stream's child has
    /// exited; the stream is then forgotten.
    StreamWait {
        id: u64,
    },
    /// Every process of the container as /proc shows it (`Response::Top`).
    /// A wshd older than this request answers `Malformed`.
    Top,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowSize {
    pub columns: u16,
    pub rows: u16,
}

/// The resource limits a process may be given (setrlimit), by name as in
/// Garden's ResourceLimits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rlimit {
    As,
    Core,
    Cpu,
    Data,
    Fsize,
    Locks,
    Memlock,
    Msgqueue,
    Nice,
    Nofile,
    Nproc,
    Rss,
    Rtprio,
    Sigpending,
    Stack,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpawnSpec {
    /// Unique among this container's processes.
    pub id: String,
    /// Absolute, or looked up in PATH from `env` (or the default PATH).
    pub path: String,
    pub args: Vec<String>,
    /// "NAME=value"; wshd adds HOME, USER and PATH when they are missing.
    pub env: Vec<String>,
    /// Working directory; `None`: the user's home directory.
    pub dir: Option<String>,
    /// A user name or `uid[:gid]`, resolved with the container's /etc/passwd
    /// and /etc/group; `None`: root.
    pub user: Option<String>,
    /// Whether the process gets a stdin pipe (else it reads /dev/null).
    pub open_stdin: bool,
    /// Run on a new pseudo-terminal of this size instead of pipes.
    pub tty: Option<WindowSize>,
    /// setrlimit before exec; soft and hard limits both set to the value.
    pub rlimits: Vec<(Rlimit, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExitStatus {
    Code(i32),
    Signal(i32),
}

impl ExitStatus {
    /// The API's encoding: the exit code, or minus the signal number.
    pub fn to_api(self) -> i32 {
        match self {
            ExitStatus::Code(c) => c,
            ExitStatus::Signal(s) => -s,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessSummary {
    pub id: String,
    pub pid: i32,
    pub tty: bool,
    /// `None` while the process runs.
    pub exit: Option<ExitStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Pong,
    Spawned {
        pid: i32,
    },
    /// Answer to `Reattach`: `tty` and `stdin` say which fds follow.
    Attached {
        pid: i32,
        tty: bool,
        stdin: bool,
        exit: Option<ExitStatus>,
    },
    Exited(ExitStatus),
    Ok,
    Processes(Vec<ProcessSummary>),
    /// Answer to `StreamIn` / `StreamOut`; one fd follows.
    StreamStarted {
        id: u64,
    },
    /// Answer to `StreamWait`: the archive was extracted or written whole.
    StreamFinished,
    Error(WshdError),
    /// Answer to `Top`, in pid order; `truncated`: more processes than fit
    /// in one datagram (`TOP_BUDGET`) were left out.
    Top {
        processes: Vec<ProcessStatus>,
        truncated: bool,
    },
}

/// Most bytes of a `Top` answer's process list (the rest of the datagram is
/// headroom for its encoding).
pub const TOP_BUDGET: usize = 100 * 1024;
/// Longest command line `Top` reports (longer ones are cut).
pub const TOP_COMMAND_MAX: usize = 1024;

/// One process of the container, as its /proc describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessStatus {
    pub pid: i32,
    pub ppid: i32,
    /// The real uid.
    pub uid: u32,
    /// Its name in the container's /etc/passwd, if it has one.
    pub user: Option<String>,
    /// /proc's state letter (R, S, D, Z, T, ...).
    pub state: char,
    /// User + system CPU time.
    pub cpu_millis: u64,
    /// Time since the process started.
    pub elapsed_millis: u64,
    pub rss_bytes: u64,
    /// The command line, arguments joined by spaces (cut to
    /// `TOP_COMMAND_MAX`), or `[name]` for a process without one.
    pub command: String,
    /// The id of the spawned process it is or descends from.
    pub process_id: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    Malformed,
    UnsupportedVersion,
    /// A process with that id exists already (Spawn).
    DuplicateId,
    /// No process has that id.
    ProcessNotFound,
    /// `path` does not name an executable file.
    ExecutableNotFound,
    /// The user or group is not in the container's /etc/passwd or /etc/group.
    UnknownUser,
    /// The spec is malformed (a bad env entry, a bad signal, ...).
    InvalidSpec,
    /// A system call failed; the message says which.
    System,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{kind:?}: {message}")]
pub struct WshdError {
    pub kind: ErrorKind,
    pub message: String,
}

impl WshdError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> WshdError {
        WshdError {
            kind,
            message: message.into(),
        }
    }
}

pub fn encode<T: Serialize>(body: &T) -> Vec<u8> {
    envelope::encode(PROTOCOL_VERSION, body)
}

pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, WshdError> {
    envelope::decode(bytes, MAX_DATAGRAM, PROTOCOL_VERSION).map_err(|e| match e {
        DecodeError::Malformed(m) => WshdError::new(ErrorKind::Malformed, m),
        DecodeError::UnsupportedVersion(m) => WshdError::new(ErrorKind::UnsupportedVersion, m),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_truncation() {
        let r = Request::Spawn(SpawnSpec {
            id: "p1".into(),
            path: "/bin/echo".into(),
            args: vec!["hi".into()],
            env: vec!["A=b".into()],
            dir: None,
            user: Some("nobody".into()),
            open_stdin: true,
            tty: Some(WindowSize {
                columns: 80,
                rows: 24,
            }),
            rlimits: vec![(Rlimit::Nofile, 1024)],
        });
        let bytes = encode(&r);
        assert_eq!(decode::<Request>(&bytes).unwrap(), r);
        for n in 0..bytes.len() {
            assert!(decode::<Request>(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn stream_requests_round_trip() {
        for r in [
            Request::StreamIn {
                path: "/a".into(),
                user: Some("user".into()),
            },
            Request::StreamOut {
                path: "/b/".into(),
                user: None,
            },
            Request::StreamWait { id: 7 },
        ] {
            assert_eq!(decode::<Request>(&encode(&r)).unwrap(), r);
        }
        assert_eq!(
            decode::<Request>(&encode(&Request::Top)).unwrap(),
            Request::Top
        );
        let top = Response::Top {
            processes: vec![ProcessStatus {
                pid: 7,
                ppid: 1,
                uid: 1000,
                user: Some("user".into()),
                state: 'S',
                cpu_millis: 20,
                elapsed_millis: 3000,
                rss_bytes: 4096,
                command: "sleep 300".into(),
                process_id: Some("p1".into()),
            }],
            truncated: false,
        };
        assert_eq!(decode::<Response>(&encode(&top)).unwrap(), top);
        for r in [Response::StreamStarted { id: 3 }, Response::StreamFinished] {
            assert_eq!(decode::<Response>(&encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn exit_status_encoding_is_distinct() {
        assert_eq!(ExitStatus::Code(137).to_api(), 137);
        assert_eq!(ExitStatus::Signal(9).to_api(), -9);
    }
}
