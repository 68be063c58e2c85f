//! A process groved runs through wshd: its exit status, its stdin, and the
//! output streams that carry its stdout and stderr from the pipes wshd
//! handed over to every client stream attached to it.
//!
//! Output is never thrown away. groved reads a pipe only while at least one
//! client stream is attached to it; otherwise the output waits in the pipe,
//! which wshd sized to `wshd::OUTPUT_BUFFER` (1 MiB), and when that is full
//! the process blocks (backpressure). wshd holds the pipes' read ends too, so
//! the unread output survives a groved restart. Each chunk read goes to all
//! attached streams; a slow client slows the pump rather than growing
//! groved's memory: at most one chunk per stream is in hand.

use crate::error::{ApiError, ApiResult, Code};
use crate::wshd_client;
use futures::future::join_all;
use grove_schema::api_capnp::byte_stream;
use grove_schema::wshd::{ExitStatus, Request, Response};
use std::cell::{Cell, RefCell};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{watch, Notify};

/// Most bytes read from a pipe at once (and sent in one write).
const CHUNK: usize = 256 * 1024;

/// How long `wait` gives a terminal's last output to reach end of file.
const TTY_DRAIN: Duration = Duration::from_secs(2);

/// How long `wait` gives a process left behind by an exited one to let go
/// of the output pipes before it answers without their end of file. Many
/// hold them only for a moment: busybox `timeout`'s watcher, forked with
/// the pipes, redirects them to /dev/null right after its fork; a
/// subshell that backgrounds a redirected command holds them until its
/// child has redirected. Under load that moment can outlast the process.
const LEFTOVER_GRACE: Duration = Duration::from_millis(250);

/// How long a process that has exited stays known: late `attach` and `wait`
/// calls see its exit status and the output nobody read. Then it is
/// forgotten and its unread output discarded.
pub const KEEP_FINISHED: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitState {
    Running,
    Exited(ExitStatus),
    /// The process's fate cannot be known (its container went away).
    Lost(String),
    /// The container's init (wshd) died, and the process with it (the
    /// kernel kills a PID namespace's every process with its PID 1): why.
    InitDied(String),
}

/// The streams a client attaches (to `run` or `attach`).
pub struct Sinks {
    pub stdout: Option<byte_stream::Client>,
    pub stderr: Option<byte_stream::Client>,
    /// End each stream once it has carried the output waiting now (the
    /// API's `ProcessIO.backlogOnly`), not at the end of the output.
    pub backlog_only: bool,
}

/// The parent-side fds of a process, as wshd hands them over.
pub struct ProcessFds {
    pub stdout: OwnedFd,
    /// `None` for a tty process (the terminal has one output).
    pub stderr: Option<OwnedFd>,
    pub stdin: Option<OwnedFd>,
}

impl ProcessFds {
    /// Split wshd's fd list: stdout, stderr (not for a tty), then stdin.
    pub fn from_wshd(fds: Vec<OwnedFd>, tty: bool, stdin: bool) -> ApiResult<ProcessFds> {
        let expected = 1 + usize::from(!tty) + usize::from(stdin);
        if fds.len() != expected {
            return Err(ApiError::internal(format!(
                "wshd passed {} file descriptors; {expected} were expected",
                fds.len()
            )));
        }
        let mut fds = fds.into_iter();
        let stdout = fds.next().expect("length checked above");
        let stderr = if tty { None } else { fds.next() };
        Ok(ProcessFds {
            stdout,
            stderr,
            stdin: fds.next(),
        })
    }
}

pub struct ProcessEntry {
    pub id: String,
    pub wshd_socket: PathBuf,
    pub tty: bool,
    exit: watch::Sender<ExitState>,
    /// Set once the process is forgotten (see KEEP_FINISHED).
    released: watch::Sender<bool>,
    pub stdout: Rc<OutputStream>,
    pub stderr: Rc<OutputStream>,
    /// Our end of the process's stdin, while it is open.
    stdin: RefCell<Option<Rc<AsyncFd<OwnedFd>>>>,
    pub has_stdin: bool,
}

impl ProcessEntry {
    /// Take over a process wshd runs: a fresh one (`exit` None) or one found
    /// again after a restart (maybe exited already).
    pub fn start(
        id: String,
        wshd_socket: PathBuf,
        tty: bool,
        fds: ProcessFds,
        exit: Option<ExitStatus>,
        sinks: Sinks,
    ) -> ApiResult<Rc<ProcessEntry>> {
        let stdout = OutputStream::new(Some(async_fd(fds.stdout)?));
        let stderr = OutputStream::new(fds.stderr.map(async_fd).transpose()?);
        let has_stdin = fds.stdin.is_some();
        let stdin = fds.stdin.map(async_fd).transpose()?.map(Rc::new);
        let state = exit.map(ExitState::Exited).unwrap_or(ExitState::Running);
        let entry = Rc::new(ProcessEntry {
            id,
            wshd_socket,
            tty,
            exit: watch::channel(state).0,
            released: watch::channel(false).0,
            stdout,
            stderr,
            stdin: RefCell::new(stdin),
            has_stdin,
        });
        entry.attach(sinks);
        tokio::task::spawn_local(entry.stdout.clone().pump());
        tokio::task::spawn_local(entry.stderr.clone().pump());
        tokio::task::spawn_local(entry.clone().watch_exit());
        Ok(entry)
    }

    /// Attach a client's streams: each gets what the pipe holds, then
    /// everything that follows.
    pub fn attach(&self, sinks: Sinks) {
        if let Some(sink) = sinks.stdout {
            self.stdout.subscribe(sink, sinks.backlog_only);
        }
        if let Some(sink) = sinks.stderr {
            self.stderr.subscribe(sink, sinks.backlog_only);
        }
    }

    pub fn exit_state(&self) -> ExitState {
        self.exit.borrow().clone()
    }

    pub fn is_running(&self) -> bool {
        self.exit_state() == ExitState::Running
    }

    /// Mark the process lost (its container is being destroyed).
    pub fn mark_lost(&self, why: &str) {
        self.end(ExitState::Lost(why.to_string()));
    }

    /// The container's init died, taking the process with it: every
    /// waiter is told `why` (its output still reaches attached streams).
    pub fn mark_init_died(&self, why: &str) {
        self.end(ExitState::InitDied(why.to_string()));
    }

    /// The end of a running process (an end already known stays).
    fn end(&self, end: ExitState) {
        self.exit.send_if_modified(|state| {
            if *state == ExitState::Running {
                *state = end;
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
                self.settled().await;
                Ok(status)
            }
            ExitState::Lost(why) => Err(ApiError::new(
                Code::ProcessNotFound,
                format!("process {}: {why}", self.id),
            )),
            ExitState::InitDied(why) => {
                self.settled().await;
                Err(ApiError::new(
                    Code::InvalidState,
                    format!("process {}: {why}", self.id),
                ))
            }
            ExitState::Running => unreachable!("wait_for returned a running state"),
        }
    }

    /// Both output streams settled (see `OutputStream::settled`), with one
    /// patience for the two: a terminal's relay, or a process left behind,
    /// gets that long from now to let go of the output.
    async fn settled(&self) {
        let patience = if self.tty { TTY_DRAIN } else { LEFTOVER_GRACE };
        let patience = tokio::time::Instant::now() + patience;
        self.stdout.settled(patience).await;
        self.stderr.settled(patience).await;
    }

    /// Ask wshd for the exit status (the answer comes when the process
    /// exits), keep the finished process for KEEP_FINISHED, then release it.
    async fn watch_exit(self: Rc<Self>) {
        if self.is_running() {
            let state = self.exit_from_wshd().await;
            self.end(state);
        }
        // A process whose init died is dead too: its output is kept for
        // late attaches as an exited one's is.
        if matches!(
            self.exit_state(),
            ExitState::Exited(_) | ExitState::InitDied(_)
        ) {
            self.stdout.close_if_drained();
            self.stderr.close_if_drained();
            tokio::time::sleep(KEEP_FINISHED).await;
            // Output still being read to a client is not cut off, but a
            // client that went away without a word cannot hold it forever.
            let streaming = async {
                while self.stdout.is_streaming() || self.stderr.is_streaming() {
                    self.stdout.finished_or_idle().await;
                    self.stderr.finished_or_idle().await;
                }
            };
            let _ = tokio::time::timeout(KEEP_FINISHED, streaming).await;
            let release = Request::Release {
                id: self.id.clone(),
            };
            if let Err(e) = wshd_client::call(&self.wshd_socket, &release).await {
                tracing::debug!(process = %self.id, error = %e, "release");
            }
        }
        // Exited or lost: either way its pipes are of no more use.
        self.stdout.close();
        self.stderr.close();
        self.released.send_replace(true);
    }

    /// Ask wshd for the exit status; the answer comes when the process
    /// exits. A passing failure (a full accept queue, a broken connection)
    /// is retried while wshd is there; only its absence makes the process
    /// lost.
    async fn exit_from_wshd(&self) -> ExitState {
        let request = Request::Wait {
            id: self.id.clone(),
        };
        let mut delay = Duration::from_millis(50);
        loop {
            match wshd_client::call(&self.wshd_socket, &request).await {
                Ok((Response::Exited(status), _)) => return ExitState::Exited(status),
                Ok((other, _)) => {
                    return ExitState::Lost(format!("unexpected answer from wshd: {other:?}"))
                }
                Err(e) if e.code == Code::ProcessNotFound || !self.wshd_socket.exists() => {
                    return ExitState::Lost(format!("lost contact with wshd: {e}"))
                }
                Err(e) if !self.is_running() => return ExitState::Lost(e.to_string()),
                Err(e) => {
                    tracing::debug!(process = %self.id, error = %e, "waiting again");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(2));
                }
            }
        }
    }

    /// Resolves once the process is forgotten.
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
                Ok(Err(e)) if matches!(e.raw_os_error(), Some(libc::EPIPE) | Some(libc::EIO)) => {
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

/// Register a pipe (or other fd) with the runtime, non-blocking.
pub(crate) fn async_fd(fd: OwnedFd) -> ApiResult<AsyncFd<OwnedFd>> {
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

/// A client stream attached to an output pipe.
#[derive(Clone)]
struct Subscriber {
    id: u64,
    sink: byte_stream::Client,
    /// Backlog only: the bytes still owed before the stream ends.
    owed: Option<usize>,
}

/// One output pipe and the client streams attached to it.
pub struct OutputStream {
    /// The pipe, until end of file (`None` for a tty's absent stderr).
    fd: RefCell<Option<Rc<AsyncFd<OwnedFd>>>>,
    subscribers: RefCell<Vec<Subscriber>>,
    next_subscriber: Cell<u64>,
    /// A chunk read while streams were attached that none of them took
    /// (they all went away): the next stream to attach gets it first.
    carry: RefCell<Option<Vec<u8>>>,
    /// Data is in hand: read from the pipe, not yet handed to every stream.
    busy: Cell<bool>,
    /// End of file was read and every attached stream told (`done`).
    finished: Cell<bool>,
    changed: Notify,
}

impl OutputStream {
    fn new(fd: Option<AsyncFd<OwnedFd>>) -> Rc<OutputStream> {
        let finished = fd.is_none();
        Rc::new(OutputStream {
            fd: RefCell::new(fd.map(Rc::new)),
            subscribers: RefCell::new(Vec::new()),
            next_subscriber: Cell::new(0),
            carry: RefCell::new(None),
            busy: Cell::new(false),
            finished: Cell::new(finished),
            changed: Notify::new(),
        })
    }

    fn subscribe(&self, sink: byte_stream::Client, backlog_only: bool) {
        // Finished, or at end of file and telling the streams: nothing more
        // will come, so end this one at once.
        let waiting = match self.fd.borrow().as_ref() {
            Some(fd) if !self.finished.get() => {
                bytes_in_pipe(fd) + self.carry.borrow().as_ref().map_or(0, Vec::len)
            }
            _ => {
                end_stream(sink);
                return;
            }
        };
        // Backlog only, and none: nothing is owed.
        if backlog_only && waiting == 0 {
            end_stream(sink);
            return;
        }
        let id = self.next_subscriber.get();
        self.next_subscriber.set(id + 1);
        self.subscribers.borrow_mut().push(Subscriber {
            id,
            sink,
            owed: backlog_only.then_some(waiting),
        });
        self.changed.notify_waiters();
    }

    /// Whether attached streams are still being fed.
    fn is_streaming(&self) -> bool {
        !self.finished.get() && !self.subscribers.borrow().is_empty()
    }

    /// After the process exited: with nobody attached, nothing in hand and
    /// the pipe empty at end of file, nothing more can come of it, so let
    /// go of it now rather than when the process is forgotten. (Pipes are
    /// counted against a per-user budget — fs.pipe-user-pages-soft — that
    /// the pipes of hundreds of finished processes used up, leaving new
    /// processes page-sized pipes.) A later attach ends at once, as it
    /// would on the empty pipe.
    fn close_if_drained(&self) {
        let drained = {
            let fd = self.fd.borrow();
            match fd.as_ref() {
                None => false,
                Some(fd) => {
                    self.subscribers.borrow().is_empty()
                        && !self.busy.get()
                        && self.carry.borrow().is_none()
                        && hang_up_pending(fd)
                        && bytes_in_pipe(fd) == 0
                }
            }
        };
        if drained {
            self.close();
        }
    }

    /// Drop the pipe: the process is forgotten.
    fn close(&self) {
        self.fd.borrow_mut().take();
        self.subscribers.borrow_mut().clear();
        self.finished.set(true);
        self.changed.notify_waiters();
    }

    async fn pump(self: Rc<Self>) {
        let Some(fd) = self.fd.borrow().clone() else {
            return;
        };
        let mut buffer = vec![0u8; CHUNK];
        loop {
            if self.subscribers.borrow().is_empty() {
                // Nobody to deliver to: leave the output in the pipe.
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.subscribers.borrow().is_empty() {
                    if self.fd.borrow().is_none() {
                        return; // closed: the process was forgotten
                    }
                    notified.await;
                    continue;
                }
            }
            let carried = self.carry.borrow_mut().take();
            if let Some(chunk) = carried {
                self.busy.set(true);
                self.deliver(chunk).await;
                self.busy.set(false);
                self.changed.notify_waiters();
                continue;
            }
            let Ok(mut guard) = fd.readable().await else {
                break;
            };
            self.busy.set(true);
            let read = guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buffer)
                    .map_err(std::io::Error::from)
            });
            match read {
                Ok(Ok(0)) => break,
                Ok(Ok(n)) => self.deliver(buffer[..n].to_vec()).await,
                Ok(Err(e)) if e.raw_os_error() == Some(libc::EIO) => break, // a tty hung up
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "reading process output");
                    break;
                }
                Err(_would_block) => {}
            }
            self.busy.set(false);
            self.changed.notify_waiters();
        }
        drop(fd);
        self.fd.borrow_mut().take();
        self.busy.set(true);
        let subscribers = std::mem::take(&mut *self.subscribers.borrow_mut());
        // `done` is not a streaming call, so it is delivered only after
        // every write before it has returned: once it answers, the client
        // has seen all of the output.
        join_all(
            subscribers
                .iter()
                .map(|s| s.sink.done_request().send().promise),
        )
        .await;
        self.busy.set(false);
        self.finished.set(true);
        self.changed.notify_waiters();
    }

    /// Hand one chunk to every attached stream, together; drop the streams
    /// whose client went away. If all went away, keep the chunk.
    async fn deliver(&self, chunk: Vec<u8>) {
        let subscribers = self.subscribers.borrow().clone();
        let sends = subscribers.iter().map(|s| {
            let mut request = s.sink.write_request();
            request.get().set_data(&chunk);
            request.send()
        });
        let results = join_all(sends).await;
        let failed: Vec<u64> = subscribers
            .iter()
            .zip(&results)
            .filter(|(_, r)| r.is_err())
            .map(|(s, _)| s.id)
            .collect();
        let delivered: Vec<u64> = subscribers
            .iter()
            .map(|s| s.id)
            .filter(|id| !failed.contains(id))
            .collect();
        // A backlog-only stream that has had what it was owed ends here;
        // what follows stays for the next attach.
        let mut ended = Vec::new();
        self.subscribers.borrow_mut().retain_mut(|s| {
            if failed.contains(&s.id) {
                return false;
            }
            if let Some(owed) = s.owed.as_mut().filter(|_| delivered.contains(&s.id)) {
                *owed = owed.saturating_sub(chunk.len());
                if *owed == 0 {
                    ended.push(s.sink.clone());
                    return false;
                }
            }
            true
        });
        ended.into_iter().for_each(end_stream);
        if !subscribers.is_empty() && failed.len() == subscribers.len() {
            *self.carry.borrow_mut() = Some(chunk);
        }
    }

    /// Resolves once nothing is being streamed to an attached client.
    async fn finished_or_idle(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_streaming() {
                return;
            }
            notified.await;
        }
    }

    /// After the process exited: resolves once everything in the pipe has
    /// been delivered to the attached streams — at end of file, or, when
    /// something still keeps the pipe open (a terminal's relay, a process
    /// left behind) past `patience`, once the pipe is empty and nothing is in
    /// hand. With no stream attached there is nobody to wait for: the output
    /// stays in the pipe for a later attach.
    async fn settled(&self, patience: tokio::time::Instant) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.finished.get() || (self.subscribers.borrow().is_empty() && !self.busy.get()) {
                return;
            }
            let drained = {
                let fd = self.fd.borrow();
                match fd.as_ref() {
                    // End of file was read; the streams are being told.
                    None => false,
                    Some(fd) => !self.busy.get() && !hang_up_pending(fd) && bytes_in_pipe(fd) == 0,
                }
            };
            if drained && tokio::time::Instant::now() >= patience {
                return;
            }
            if drained {
                let _ = tokio::time::timeout_at(patience, notified).await;
            } else {
                notified.await;
            }
        }
    }
}

/// Tell a stream it has ended (`done`), in the background.
fn end_stream(sink: byte_stream::Client) {
    tokio::task::spawn_local(async move {
        let _ = sink.done_request().send().promise.await;
    });
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
