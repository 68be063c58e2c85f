//! Section 7: how long `grove run -it` takes to end after the shell in it
//! exits. The CLI runs on a pseudo-terminal of its own (as under a
//! terminal emulator), an interactive /bin/sh in the container is told
//! `echo bye-5; exit 3`, and the time runs from the moment "bye-5" reaches
//! the terminal to the CLI's exit.

use crate::stats::Samples;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

/// How long any one step may take before the round counts as failed.
const PATIENCE: Duration = Duration::from_secs(30);

/// `grove run -it HANDLE /bin/sh` on a new pseudo-terminal.
struct Session {
    child: std::process::Child,
    master: std::fs::File,
    shown: Vec<u8>,
}

impl Session {
    fn start(cli: &Path, socket: &Path, handle: &str) -> Result<Session, String> {
        let pty = nix::pty::openpty(None, None).map_err(|e| format!("openpty: {e}"))?;
        let io = |fd: &OwnedFd| fd.try_clone().map(Stdio::from);
        let mut command = std::process::Command::new(cli);
        command
            .arg("--socket")
            .arg(socket)
            .args(["run", "-it", handle, "/bin/sh"])
            .stdin(io(&pty.slave).map_err(|e| e.to_string())?)
            .stdout(io(&pty.slave).map_err(|e| e.to_string())?)
            .stderr(io(&pty.slave).map_err(|e| e.to_string())?);
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = command
            .spawn()
            .map_err(|e| format!("{}: {e}", cli.display()))?;
        drop(pty.slave);
        Ok(Session {
            child,
            master: std::fs::File::from(pty.master),
            shown: Vec::new(),
        })
    }

    /// Read the terminal until it shows `needle`; the moment it did.
    fn wait_for(&mut self, needle: &str) -> Result<Instant, String> {
        let deadline = Instant::now() + PATIENCE;
        let mut buffer = [0u8; 4096];
        loop {
            if String::from_utf8_lossy(&self.shown).contains(needle) {
                return Ok(Instant::now());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!(
                    "the terminal never showed {needle:?}: {:?}",
                    String::from_utf8_lossy(&self.shown)
                ));
            }
            let mut fds = [libc::pollfd {
                fd: self.master.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            // SAFETY: poll on one valid pollfd.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, left.as_millis().min(1000) as i32) };
            if n > 0 {
                match self.master.read(&mut buffer) {
                    Ok(0) | Err(_) => {
                        return Err(format!(
                            "the terminal closed before {needle:?}: {:?}",
                            String::from_utf8_lossy(&self.shown)
                        ))
                    }
                    Ok(n) => self.shown.extend_from_slice(&buffer[..n]),
                }
            }
        }
    }

    fn type_in(&mut self, text: &str) -> Result<(), String> {
        self.master
            .write_all(text.as_bytes())
            .map_err(|e| e.to_string())
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// One round: the time from the shell's last output to the CLI's exit.
fn round(cli: &Path, socket: &Path, handle: &str) -> Result<Duration, String> {
    let mut session = Session::start(cli, socket, handle)?;
    // $((…)): the terminal's echo of the command line does not match.
    session.type_in("echo ready-$((1+1))\r")?;
    session.wait_for("ready-2")?;
    session.type_in("echo bye-$((2+3)); exit 3\r")?;
    let shell_done = session.wait_for("bye-5")?;
    let status = session.child.wait().map_err(|e| e.to_string())?;
    let ended = Instant::now();
    if status.code() != Some(3) {
        return Err(format!("grove run -it ended with {status:?}, not 3"));
    }
    Ok(ended - shell_done)
}

/// `rounds` rounds (after two unmeasured ones).
pub fn exit_latency(
    cli: &Path,
    socket: &Path,
    handle: &str,
    rounds: usize,
) -> Result<Samples, String> {
    for _ in 0..2 {
        round(cli, socket, handle)?;
    }
    let mut samples = Samples::default();
    for _ in 0..rounds {
        samples.push(round(cli, socket, handle)?);
    }
    Ok(samples)
}
