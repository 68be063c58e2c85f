//! This command's stdin, read on a thread of its own that stops when told.
//!
//! tokio's stdin reads on a blocking-pool thread that cannot be interrupted:
//! a read pending when the process ends kept `grove run -i` alive until the
//! next line of input (or Enter on a terminal), and took that line from
//! whoever reads the terminal next. Here a thread waits in poll(2) on stdin
//! and on a stop pipe, and reads only what poll says is there: dropping the
//! [`Stdin`] ends it at once, and nothing typed after that is consumed.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use tokio::sync::mpsc;

/// How much one read takes.
const CHUNK: usize = 64 * 1024;

/// Chunks of stdin as they are read, then `None` at end of file (after a
/// read error, that error and then `None`). Dropping it stops the reader.
pub struct Stdin {
    chunks: mpsc::Receiver<std::io::Result<Vec<u8>>>,
    /// The write end of the stop pipe: closing it wakes the reader's poll.
    _stop: OwnedFd,
}

impl Stdin {
    /// Start reading fd 0.
    pub fn start() -> std::io::Result<Stdin> {
        let (stop_read, stop_write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        // Two chunks in flight: a slow consumer holds the reader back.
        let (sender, chunks) = mpsc::channel(2);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || read_until_stopped(&stop_read, &sender))?;
        Ok(Stdin {
            chunks,
            _stop: stop_write,
        })
    }

    /// The next chunk, or `None` once stdin has ended.
    pub async fn next(&mut self) -> Option<std::io::Result<Vec<u8>>> {
        self.chunks.recv().await
    }
}

fn read_until_stopped(stop: &OwnedFd, sender: &mpsc::Sender<std::io::Result<Vec<u8>>>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    // SAFETY: fd 0 stays open for the life of the process (nothing here
    // closes it); the borrow only lives inside this function.
    let stdin = unsafe { BorrowedFd::borrow_raw(libc::STDIN_FILENO) };
    let mut buffer = vec![0u8; CHUNK];
    loop {
        let mut fds = [
            PollFd::new(stdin, PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
        if fds[1].revents().is_some_and(|r| !r.is_empty()) {
            return; // told to stop
        }
        if fds[0].revents().is_none_or(|r| r.is_empty()) {
            continue;
        }
        match nix::unistd::read(libc::STDIN_FILENO, &mut buffer) {
            Ok(0) => return, // end of file: dropping the sender says so
            Ok(n) => {
                if sender.blocking_send(Ok(buffer[..n].to_vec())).is_err() {
                    return; // nobody reads any more
                }
            }
            Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => continue,
            Err(e) => {
                let _ = sender.blocking_send(Err(e.into()));
                return;
            }
        }
    }
}
