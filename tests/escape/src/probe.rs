//! `grove-escape probe …`: single system calls whose answer the seccomp
//! tests (tests/tests/seccomp.rs) check, one `PROBE … ok` or
//! `PROBE … errno=N` line each:
//!
//! - `probe syscall NR…`: syscall(NR, 0, 0, 0, 0, 0, 0). Only for numbers
//!   whose zero-argument call is harmless (the tests pass unused numbers
//!   and calls that fail with EFAULT/EINVAL on NULL pointers).
//! - `probe socket FAMILY TYPE`: socket(FAMILY, TYPE, 0), closed at once.
//! - `probe tiocsti`: in a new session on a fresh pseudo-terminal (its
//!   controlling terminal), TIOCSTI of one byte, which is then read back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn outcome(rc: libc::c_long) -> String {
    if rc < 0 {
        format!("errno={}", errno())
    } else {
        "ok".into()
    }
}

fn number(s: &str) -> i64 {
    s.parse().unwrap_or_else(|_| {
        eprintln!("grove-escape probe: {s:?} is not a number");
        std::process::exit(2)
    })
}

/// Runs `probe ARGS…` and returns the exit code (2 on bad usage).
pub fn main(args: &[String]) -> i32 {
    match args {
        [what, nrs @ ..] if what == "syscall" && !nrs.is_empty() => {
            for nr in nrs {
                // SAFETY: the caller passes only numbers harmless with zero
                // arguments (unused ones, or calls refusing NULL pointers).
                let rc = unsafe { libc::syscall(number(nr), 0, 0, 0, 0, 0, 0) };
                println!("PROBE syscall {nr} {}", outcome(rc));
            }
            0
        }
        [what, family, kind] if what == "socket" => {
            let (family, kind) = (number(family), number(kind));
            // SAFETY: plain socket(2); the fd is closed right away.
            let fd = unsafe { libc::socket(family as i32, kind as i32, 0) };
            if fd >= 0 {
                // SAFETY: our own new fd.
                unsafe { libc::close(fd) };
            }
            println!("PROBE socket {family} {kind} {}", outcome(fd.into()));
            0
        }
        [what] if what == "tiocsti" => {
            println!("PROBE tiocsti {}", tiocsti());
            0
        }
        _ => {
            eprintln!(
                "grove-escape probe: usage: probe syscall NR… | probe socket FAMILY TYPE | probe tiocsti"
            );
            2
        }
    }
}

/// A forked child (so that setsid works whatever process group we are in)
/// makes a pty its controlling terminal and injects a byte; the answer
/// comes back through a pipe.
fn tiocsti() -> String {
    let mut pipe = [0; 2];
    // SAFETY: a plain pipe.
    if unsafe { libc::pipe(pipe.as_mut_ptr()) } != 0 {
        return format!("pipe errno={}", errno());
    }
    // SAFETY: the child makes system calls, writes to the pipe and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // Closing the master hangs up the session we lead.
        // SAFETY: sets a disposition, no handler.
        unsafe { libc::signal(libc::SIGHUP, libc::SIG_IGN) };
        let answer = tiocsti_in_new_session();
        // SAFETY: writes our own buffer to our pipe, then exits.
        unsafe {
            libc::write(pipe[1], answer.as_ptr().cast(), answer.len());
            libc::_exit(0);
        }
    }
    // SAFETY: our own pipe end.
    unsafe { libc::close(pipe[1]) };
    // SAFETY: the read end is ours; File takes it over.
    let mut reader = unsafe { std::fs::File::from_raw_fd(pipe[0]) };
    let mut answer = String::new();
    let _ = std::io::Read::read_to_string(&mut reader, &mut answer);
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    if answer.is_empty() {
        format!("child died (status {status:#x})")
    } else {
        answer
    }
}

fn tiocsti_in_new_session() -> String {
    // SAFETY: plain system calls on fds this function owns.
    unsafe {
        if libc::setsid() < 0 {
            return format!("setsid errno={}", errno());
        }
        let master = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        if master < 0 {
            return format!("posix_openpt errno={}", errno());
        }
        let master = OwnedFd::from_raw_fd(master);
        if libc::grantpt(master.as_raw_fd()) != 0 || libc::unlockpt(master.as_raw_fd()) != 0 {
            return format!("unlockpt errno={}", errno());
        }
        let mut name = [0 as libc::c_char; 64];
        if libc::ptsname_r(master.as_raw_fd(), name.as_mut_ptr(), name.len()) != 0 {
            return format!("ptsname errno={}", errno());
        }
        let slave = libc::open(name.as_ptr(), libc::O_RDWR | libc::O_NONBLOCK);
        if slave < 0 {
            return format!("open pts errno={}", errno());
        }
        let slave = OwnedFd::from_raw_fd(slave);
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) != 0 {
            return format!("TIOCSCTTY errno={}", errno());
        }
        let byte = b'Z';
        if libc::ioctl(slave.as_raw_fd(), libc::TIOCSTI, &byte) != 0 {
            return format!("errno={}", errno());
        }
        // Injected: the terminal's reader sees it (canonical mode: once a
        // newline follows).
        let newline = b'\n';
        libc::ioctl(slave.as_raw_fd(), libc::TIOCSTI, &newline);
        let mut buf = [0u8; 8];
        let n = libc::read(slave.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len());
        if n > 0 && buf[0] == byte {
            "ok injected".into()
        } else {
            "ok".into()
        }
    }
}
