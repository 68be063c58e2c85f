//! Copies a pseudo-terminal's output into a pipe (the process's output
//! pipe), on tokio's reactor.
//!
//! The master's file description is shared with the copy groved gets for
//! input, so its O_NONBLOCK flag is left alone (groved may or may not set
//! it): a read is only made after poll(2) says it will not block, and
//! EAGAIN is handled as well. Only wshd reads the master. When the pipe is
//! full the master is not read (backpressure: the process blocks once the
//! terminal's own buffer is full too). When the last holder of the slave
//! is gone the master reads EIO and the pipe's write end is closed, so the
//! reader sees end-of-file after the rest of the output.
//!
//! A pipe holds `OUTPUT_BUFFER` bytes only when its pages are full, and the
//! kernel appends a write to the last page only when the write's sub-page
//! remainder fits there (else it starts a new page). So the relay splits
//! its writes at page boundaries: first what completes the current page,
//! then the rest.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::task::JoinHandle;

use crate::wire::set_nonblocking;

/// Starts the relay task (on the current LocalSet).
pub fn start(master: OwnedFd, out: OwnedFd) -> std::io::Result<JoinHandle<()>> {
    // The write end is wshd's alone: its own file description.
    set_nonblocking(&out)?;
    // SAFETY: an OwnedFd stays open and keeps its number until dropped,
    // which is when its AsyncFd is dropped.
    let master = unsafe { AsyncFd::register_with_interest(master, Interest::READABLE) }?;
    // SAFETY: as above.
    let out = unsafe { AsyncFd::register_with_interest(out, Interest::WRITABLE) }?;
    Ok(tokio::task::spawn_local(relay(master, out)))
}

/// Whether a read of `fd` would not block (data, hang-up or error).
fn read_would_not_block(fd: &OwnedFd) -> Result<bool, Errno> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll on one valid pollfd, without waiting.
    let n = unsafe { libc::poll(&mut pfd, 1, 0) };
    if n < 0 {
        return Err(Errno::last());
    }
    Ok(n > 0 && pfd.revents != 0)
}

/// Bytes waiting in a pipe (FIONREAD works on either end).
fn pipe_len(fd: &OwnedFd) -> Option<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to a valid pointer.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) };
    (r == 0).then_some(n as usize)
}

fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(n).ok().filter(|&n| n > 0).unwrap_or(4096)
}

async fn relay(master: AsyncFd<OwnedFd>, out: AsyncFd<OwnedFd>) {
    let page = page_size();
    let mut buf = vec![0u8; 16 * 1024];
    let (mut start, mut end) = (0, 0);
    // How far the pipe's last page is filled, as far as the relay knows.
    let mut in_page = 0;
    loop {
        if start < end {
            let Ok(mut guard) = out.writable().await else {
                return;
            };
            if pipe_len(out.get_ref()) == Some(0) {
                in_page = 0; // drained: the next write starts a new page
            }
            let len = if in_page == 0 {
                end - start
            } else {
                (end - start).min(page - in_page)
            };
            match nix::unistd::write(out.get_ref(), &buf[start..start + len]) {
                Ok(n) => {
                    start += n;
                    in_page = (in_page + n) % page;
                }
                Err(Errno::EAGAIN) => guard.clear_ready(),
                Err(Errno::EINTR) => {}
                Err(e) => {
                    // EPIPE: the read ends are gone (only after Release).
                    log!("terminal relay: writing the output pipe: {e}");
                    return;
                }
            }
            continue;
        }
        (start, end) = (0, 0);
        let Ok(mut guard) = master.readable().await else {
            return;
        };
        match read_would_not_block(master.get_ref()) {
            Ok(true) => {}
            Ok(false) => {
                guard.clear_ready();
                continue;
            }
            Err(Errno::EINTR) => continue,
            Err(e) => {
                log!("terminal relay: poll: {e}");
                return;
            }
        }
        match nix::unistd::read(master.get_ref().as_raw_fd(), &mut buf) {
            Ok(0) | Err(Errno::EIO) => return, // every slave holder is gone
            Ok(n) => end = n,
            Err(Errno::EAGAIN) => guard.clear_ready(),
            Err(Errno::EINTR) => {}
            Err(e) => {
                log!("terminal relay: reading the terminal: {e}");
                return;
            }
        }
    }
}

/// Aborts a task when dropped.
pub struct AbortOnDrop(pub JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
