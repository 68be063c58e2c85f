//! A process groved started through wshd: its exit status, and the pumps that
//! carry its stdout and stderr from the pipes wshd handed over to the
//! client's ByteStreams while the process runs.
//!
//! Output is never thrown away: when no client stream is attached (it went
//! away mid-stream), a pump keeps up to `RETAIN_LIMIT` bytes and then stops
//! reading, so the process blocks on a full pipe (backpressure) rather than
//! losing output.

use crate::error::{ApiError, ApiResult, Code};
use crate::wshd_client;
use grove_schema::api_capnp::byte_stream;
use grove_schema::wshd::{ExitStatus, Request, Response};
use std::cell::RefCell;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

/// Output kept for a later reader when no client stream is attached.
pub const RETAIN_LIMIT: usize = 1 << 20;
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitState {
    Running,
    Exited(ExitStatus),
    /// The process's fate cannot be known (its container went away).
    Lost(String),
}

pub struct ProcessEntry {
    pub id: String,
    pub wshd_socket: PathBuf,
    exit: watch::Sender<ExitState>,
    /// Set once the output is finished and wshd has forgotten the process.
    released: watch::Sender<bool>,
    pub stdout: Rc<OutputPump>,
    pub stderr: Rc<OutputPump>,
    /// Our end of the process's stdin, while it is open.
    stdin: RefCell<Option<Rc<AsyncFd<OwnedFd>>>>,
    pub has_stdin: bool,
}

impl ProcessEntry {
    /// Take over a freshly spawned process: `fds` are stdout, stderr and
    /// (when asked for) stdin, in wshd's order.
    pub fn start(
        id: String,
        wshd_socket: PathBuf,
        fds: Vec<OwnedFd>,
        open_stdin: bool,
        stdout_sink: Option<byte_stream::Client>,
        stderr_sink: Option<byte_stream::Client>,
    ) -> ApiResult<Rc<ProcessEntry>> {
        let expected = if open_stdin { 3 } else { 2 };
        if fds.len() != expected {
            return Err(ApiError::internal(format!(
                "wshd passed {} file descriptors; {expected} were expected",
                fds.len()
            )));
        }
        let mut fds = fds.into_iter();
        let mut next = || async_fd(fds.next().expect("length checked above"));
        let stdout = OutputPump::new(next()?, stdout_sink);
        let stderr = OutputPump::new(next()?, stderr_sink);
        let stdin = if open_stdin {
            Some(Rc::new(next()?))
        } else {
            None
        };
        let (exit, _) = watch::channel(ExitState::Running);
        let (released, _) = watch::channel(false);
        let entry = Rc::new(ProcessEntry {
            id,
            wshd_socket,
            exit,
            released,
            stdout,
            stderr,
            stdin: RefCell::new(stdin),
            has_stdin: open_stdin,
        });
        tokio::task::spawn_local(entry.stdout.clone().run());
        tokio::task::spawn_local(entry.stderr.clone().run());
        tokio::task::spawn_local(entry.clone().watch_exit());
        Ok(entry)
    }

    pub fn exit_state(&self) -> ExitState {
        self.exit.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        self.exit_state() == ExitState::Running
    }

    /// Mark the process lost (its container is being destroyed).
    pub fn mark_lost(&self, why: &str) {
        self.exit.send_if_modified(|state| {
            if *state == ExitState::Running {
                *state = ExitState::Lost(why.to_string());
                true
            } else {
                false
            }
        });
    }

    /// The exit status, once the process has exited and the output it wrote
    /// before exiting has been handed to the attached streams.
    pub async fn wait(&self) -> ApiResult<ExitStatus> {
        let mut receiver = self.exit.subscribe();
        let state = receiver
            .wait_for(|s| *s != ExitState::Running)
            .await
            .map_err(|_| ApiError::internal("process record dropped"))?
            .clone();
        match state {
            ExitState::Exited(status) => {
                self.stdout.settled().await;
                self.stderr.settled().await;
                Ok(status)
            }
            ExitState::Lost(why) => Err(ApiError::new(
                Code::ProcessNotFound,
                format!("process {}: {why}", self.id),
            )),
            ExitState::Running => unreachable!("wait_for returned a running state"),
        }
    }

    /// Ask wshd for the exit status (the answer comes when the process
    /// exits), then release wshd's copies of the fds once the output is done.
    async fn watch_exit(self: Rc<Self>) {
        let request = Request::Wait {
            id: self.id.clone(),
        };
        let state = match wshd_client::call(&self.wshd_socket, &request).await {
            Ok((Response::Exited(status), _)) => ExitState::Exited(status),
            Ok((other, _)) => ExitState::Lost(format!("unexpected answer from wshd: {other:?}")),
            Err(e) => ExitState::Lost(format!("lost contact with wshd: {e}")),
        };
        let exited = matches!(state, ExitState::Exited(_));
        self.exit.send_if_modified(|current| {
            if *current == ExitState::Running {
                *current = state;
                true
            } else {
                false
            }
        });
        if exited {
            self.stdout.finished().await;
            self.stderr.finished().await;
            let release = Request::Release {
                id: self.id.clone(),
            };
            if let Err(e) = wshd_client::call(&self.wshd_socket, &release).await {
                tracing::debug!(process = %self.id, error = %e, "release");
            }
        }
        self.released.send_replace(true);
    }

    /// Resolves once the process has exited, its output is finished and wshd
    /// has released it (or its fate became unknowable).
    pub async fn released(&self) {
        let _ = self.released.subscribe().wait_for(|r| *r).await;
    }

    /// Write to the process's stdin; waits while the pipe is full.
    pub async fn write_stdin(&self, mut data: &[u8]) -> ApiResult<()> {
        let fd = self.stdin.borrow().clone().ok_or_else(|| self.no_stdin())?;
        while !data.is_empty() {
            let mut guard = fd.writable().await.map_err(ApiError::internal)?;
            match guard.try_io(|fd| {
                nix::unistd::write(fd.get_ref().as_fd(), data).map_err(std::io::Error::from)
            }) {
                Ok(Ok(n)) => data = &data[n..],
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EPIPE) => {
                    return Err(ApiError::new(
                        Code::InvalidState,
                        format!("process {} has closed its stdin", self.id),
                    ))
                }
                Ok(Err(e)) => return Err(ApiError::internal(format!("writing stdin: {e}"))),
                Err(_would_block) => continue,
            }
        }
        Ok(())
    }

    /// Close the process's stdin: our end, and wshd's copy.
    pub async fn close_stdin(&self) -> ApiResult<()> {
        if !self.has_stdin {
            return Err(self.no_stdin());
        }
        self.stdin.borrow_mut().take();
        let request = Request::CloseStdin {
            id: self.id.clone(),
        };
        wshd_client::call(&self.wshd_socket, &request)
            .await
            .map(|_| ())
    }

    fn no_stdin(&self) -> ApiError {
        if self.has_stdin {
            ApiError::new(
                Code::InvalidState,
                format!("the stdin of process {} is closed", self.id),
            )
        } else {
            ApiError::new(
                Code::InvalidState,
                format!("process {} was started without openStdin", self.id),
            )
        }
    }
}

fn async_fd(fd: OwnedFd) -> ApiResult<AsyncFd<OwnedFd>> {
    let flags = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL)
        .map_err(|e| ApiError::internal(format!("fcntl: {e}")))?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags))
        .map_err(|e| ApiError::internal(format!("fcntl: {e}")))?;
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and is not
    // replaced for as long as it is registered.
    unsafe { AsyncFd::register(fd) }
        .map_err(|e| ApiError::internal(format!("registering a pipe: {e}")))
}

#[derive(Default)]
struct PumpState {
    /// Data is in hand: read from the pipe, not yet handed to the sink.
    busy: bool,
    /// End of file was read and the sink told (`done`).
    finished: bool,
    sink: Option<byte_stream::Client>,
    /// Output read while no sink was attached.
    retained: Vec<u8>,
}

pub struct OutputPump {
    /// The pipe, until end of file (then closed, so finished processes hold
    /// no file descriptors).
    fd: RefCell<Option<Rc<AsyncFd<OwnedFd>>>>,
    state: RefCell<PumpState>,
    changed: Notify,
}

impl OutputPump {
    fn new(fd: AsyncFd<OwnedFd>, sink: Option<byte_stream::Client>) -> Rc<OutputPump> {
        Rc::new(OutputPump {
            fd: RefCell::new(Some(Rc::new(fd))),
            state: RefCell::new(PumpState {
                sink,
                ..PumpState::default()
            }),
            changed: Notify::new(),
        })
    }

    async fn run(self: Rc<Self>) {
        let Some(fd) = self.fd.borrow().clone() else {
            return;
        };
        let mut buffer = vec![0u8; CHUNK];
        loop {
            if self.must_hold_back() {
                // Backpressure: nobody to deliver to and the buffer is full.
                // Only a new reader (attach) will wake this pump.
                self.changed.notified().await;
                continue;
            }
            let Ok(mut guard) = fd.readable().await else {
                break;
            };
            self.state.borrow_mut().busy = true;
            let read = guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buffer)
                    .map_err(std::io::Error::from)
            });
            match read {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => self.deliver(&buffer[..n]).await,
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading process output");
                    break;
                }
                Err(_would_block) => {}
            }
            self.state.borrow_mut().busy = false;
            self.changed.notify_waiters();
        }
        drop(fd);
        self.fd.borrow_mut().take();
        self.state.borrow_mut().busy = true;
        let sink = self.state.borrow_mut().sink.take();
        if let Some(sink) = sink {
            // `done` is not a streaming call, so it is delivered only after
            // every write before it has returned: once it answers, the client
            // has seen all of the output.
            let _ = sink.done_request().send().promise.await;
        }
        let mut state = self.state.borrow_mut();
        state.busy = false;
        state.finished = true;
        drop(state);
        self.changed.notify_waiters();
    }

    fn must_hold_back(&self) -> bool {
        let state = self.state.borrow();
        state.sink.is_none() && state.retained.len() >= RETAIN_LIMIT
    }

    async fn deliver(&self, data: &[u8]) {
        let sink = self.state.borrow().sink.clone();
        if let Some(sink) = sink {
            let mut request = sink.write_request();
            request.get().set_data(data);
            if request.send().await.is_ok() {
                return;
            }
            // The client went away: keep the data for a later reader.
            self.state.borrow_mut().sink = None;
        }
        self.state.borrow_mut().retained.extend_from_slice(data);
    }

    /// Resolves at end of file, once the sink has been told.
    async fn finished(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.state.borrow().finished {
                return;
            }
            notified.await;
        }
    }

    /// After the process exited: resolves once everything in the pipe has
    /// been delivered — at end of file, or, when a process it left behind
    /// keeps the pipe open, once the pipe is empty and nothing is in hand.
    async fn settled(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let state = self.state.borrow();
                if state.finished || (state.sink.is_none() && !state.busy) {
                    return;
                }
                let fd = self.fd.borrow();
                let Some(fd) = fd.as_ref() else { return };
                if !state.busy && !hang_up_pending(fd) && bytes_in_pipe(fd) == 0 {
                    return;
                }
            }
            notified.await;
        }
    }
}

/// Whether every writer of the pipe has closed it (end of file is pending).
fn hang_up_pending(fd: &AsyncFd<OwnedFd>) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut fds = [PollFd::new(fd.get_ref().as_fd(), PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(_) => fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLHUP)),
        Err(_) => false,
    }
}

fn bytes_in_pipe(fd: &AsyncFd<OwnedFd>) -> usize {
    let mut count: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid
    // for the duration of the call.
    let rc = unsafe { libc::ioctl(fd.get_ref().as_raw_fd(), libc::FIONREAD, &mut count) };
    if rc == 0 {
        count.max(0) as usize
    } else {
        0
    }
}
