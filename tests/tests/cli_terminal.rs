//! The `grove` CLI on a real pseudo-terminal (openpty, the CLI a session
//! leader with it as its controlling terminal, as under a shell): `run -it`
//! ends when the shell does and gives the terminal back as it was; Ctrl-C,
//! TERM and HUP reach the process; `--sig-proxy=false` leaves it running
//! and says how to re-attach; a stdin that stays open does not hold a
//! finished run; `stats` redraws in place.
//!
//! Times here are only generous bounds against hangs, never speed checks.

use grove_tests::*;
use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, LocalFlags, Termios};
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The bound on anything here taking long: a hang, not slowness.
const PATIENCE: Duration = Duration::from_secs(30);

/// `grove` running on a pseudo-terminal of its own.
struct OnPty {
    child: Child,
    master: std::fs::File,
    /// The slave, kept open here to read the terminal's settings.
    slave: OwnedFd,
    /// Everything the terminal showed so far.
    shown: Arc<Mutex<Vec<u8>>>,
}

impl OnPty {
    fn spawn(env: &TestEnv, args: &[&str], size: (u16, u16)) -> OnPty {
        use std::os::unix::process::CommandExt;
        let winsize = Winsize {
            ws_row: size.1,
            ws_col: size.0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&winsize), None).expect("openpty");
        let io = |fd: &OwnedFd| Stdio::from(fd.try_clone().unwrap());
        let mut command = std::process::Command::new(bin_dir().join("grove"));
        command
            .arg("--socket")
            .arg(&env.socket)
            .args(args)
            .stdin(io(&pty.slave))
            .stdout(io(&pty.slave))
            .stderr(io(&pty.slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                // A session of its own, the terminal its controlling one
                // (and so its process group the terminal's foreground).
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            })
        };
        let child = command.spawn().expect("running grove");
        let master = std::fs::File::from(pty.master);
        let shown = Arc::new(Mutex::new(Vec::new()));
        let mut reader = master.try_clone().unwrap();
        let sink = shown.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // EIO once every holder of the slave is gone.
            while let Ok(n) = reader.read(&mut buffer) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buffer[..n]);
            }
        });
        OnPty {
            child,
            master,
            slave: pty.slave,
            shown,
        }
    }

    fn shown(&self) -> String {
        String::from_utf8_lossy(&self.shown.lock().unwrap()).into_owned()
    }

    /// Wait until the terminal shows `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = Instant::now() + PATIENCE;
        while !self.shown().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "the terminal never showed {needle:?}; it shows {:?}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Type on the terminal.
    fn type_in(&mut self, text: &[u8]) {
        self.master.write_all(text).unwrap();
    }

    fn settings(&self) -> Termios {
        tcgetattr(self.slave.as_fd()).unwrap()
    }

    /// The exit code, once grove has ended (by itself: nothing is typed
    /// meanwhile).
    fn exit_code(&mut self) -> i32 {
        let status = self.exit_status();
        status.code().unwrap_or_else(|| {
            panic!(
                "grove was killed: {status:?}; the terminal: {:?}",
                self.shown()
            )
        })
    }

    fn exit_status(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "grove still runs after {PATIENCE:?}; the terminal: {:?}",
                self.shown()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, signal).unwrap();
    }
}

impl Drop for OnPty {
    fn drop(&mut self) {
        // A failed test must not leave its grove behind.
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

fn running(env: &TestEnv, handle: &str) -> Vec<String> {
    let info = json(&run_cli_ok(env, &["--json", "info", handle]));
    info["process_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|id| id.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn run_it_ends_with_the_shell_and_restores_the_terminal() {
    let env = TestEnv::start();
    run_cli_ok(&env, &["create", "--handle", "tty"]);

    // An interactive shell, left with `exit 3`: grove ends with it at
    // once, without another key pressed.
    let mut shell = OnPty::spawn(&env, &["run", "-it", "tty", "/bin/sh"], (100, 30));
    let cooked = shell.settings();
    assert!(cooked
        .local_flags
        .contains(LocalFlags::ICANON | LocalFlags::ECHO));
    shell.type_in(b"echo ready-$((6*7))\r");
    shell.wait_for("ready-42");
    let raw = shell.settings();
    assert!(
        !raw.local_flags
            .intersects(LocalFlags::ICANON | LocalFlags::ECHO),
        "raw while the shell runs"
    );
    // The size followed, and TERM was set (podman's xterm).
    shell.type_in(b"stty size; echo term=$TERM\r");
    shell.wait_for("term=xterm");
    assert!(shell.shown().contains("30 100"), "{}", shell.shown());
    shell.type_in(b"exit 3\r");
    assert_eq!(shell.exit_code(), 3);
    let after = shell.settings();
    assert_eq!(
        (after.input_flags, after.output_flags, after.local_flags),
        (cooked.input_flags, cooked.output_flags, cooked.local_flags),
        "the terminal is as it was"
    );
    assert_eq!(after.control_chars, cooked.control_chars);

    // A command that ends by itself: nothing typed at all. `--` is
    // optional, and -e TERM wins over the default.
    let mut once = OnPty::spawn(
        &env,
        &[
            "run",
            "-it",
            "-e",
            "TERM=vt100",
            "tty",
            "sh",
            "-c",
            "echo term=$TERM; exit 3",
        ],
        (80, 24),
    );
    assert_eq!(once.exit_code(), 3);
    once.wait_for("term=vt100");

    // -i alone on a terminal: the run ends with the process too.
    let mut plain = OnPty::spawn(&env, &["run", "-i", "tty", "--", "true"], (80, 24));
    assert_eq!(plain.exit_code(), 0);
    assert!(running(&env, "tty").is_empty());
}

#[test]
fn an_open_stdin_does_not_hold_a_finished_run() {
    let env = TestEnv::start();
    run_cli_ok(&env, &["create", "--handle", "pipe"]);
    // `(sleep 600; echo) | grove run -i pipe true`: the pipe stays open
    // (its write end here) until grove has ended.
    let mut child = std::process::Command::new(bin_dir().join("grove"))
        .arg("--socket")
        .arg(&env.socket)
        .args(["run", "-i", "pipe", "true"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let writer = child.stdin.take().unwrap();
    let deadline = Instant::now() + PATIENCE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "grove waited for its stdin to end"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    drop(writer);
    assert_eq!(status.code(), Some(0));

    // What is written before the end still arrives, and its end closes the
    // process's stdin.
    let out = run_cli(
        &env,
        &["run", "-i", "pipe", "--", "wc", "-c"],
        Some(b"12345"),
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "5");
}

#[test]
fn signals_reach_the_process_without_a_terminal() {
    let env = TestEnv::start();
    run_cli_ok(&env, &["create", "--handle", "sig"]);
    let trap = |signal: &str, code: u8| {
        format!("trap 'echo got-{signal}; exit {code}' {signal}; echo armed; while :; do sleep 0.1; done")
    };

    // Ctrl-C typed on grove's terminal: the terminal sends grove SIGINT,
    // and grove passes it on.
    let script = trap("INT", 7);
    let mut run = OnPty::spawn(&env, &["run", "sig", "sh", "-c", &script], (80, 24));
    run.wait_for("armed");
    run.type_in(b"\x03");
    assert_eq!(run.exit_code(), 7);
    // (What grove wrote before it exited may still be on its way through
    // the terminal to this test's reader.)
    run.wait_for("got-INT");

    for (signal, name, code) in [
        (nix::sys::signal::Signal::SIGTERM, "TERM", 9),
        (nix::sys::signal::Signal::SIGHUP, "HUP", 11),
    ] {
        let script = trap(name, code);
        let mut run = OnPty::spawn(&env, &["run", "sig", "sh", "-c", &script], (80, 24));
        run.wait_for("armed");
        run.signal(signal);
        assert_eq!(run.exit_code(), code as i32, "{name}");
        run.wait_for(&format!("got-{name}"));
    }
    eventually("no process left in sig", || running(&env, "sig").is_empty());

    // Without the proxy, Ctrl-C ends grove and leaves the process running;
    // grove says how to find it again.
    let mut left = OnPty::spawn(
        &env,
        &[
            "run",
            "--sig-proxy=false",
            "sig",
            "sh",
            "-c",
            "echo armed; exec sleep 300",
        ],
        (80, 24),
    );
    left.wait_for("armed");
    left.type_in(b"\x03");
    assert_eq!(left.exit_code(), 128 + libc::SIGINT);
    let ids = running(&env, "sig");
    assert_eq!(ids.len(), 1, "the process runs on");
    let note = format!("grove attach sig {}", ids[0]);
    left.wait_for(&note);
    run_cli_ok(&env, &["signal", "sig", &ids[0], "KILL"]);
    eventually("the sleeper is gone", || running(&env, "sig").is_empty());
}

#[test]
fn stats_redraws_in_place_on_a_terminal() {
    let env = TestEnv::start();
    run_cli_ok(&env, &["create", "--handle", "live"]);
    let mut stats = OnPty::spawn(&env, &["stats", "--interval", "1", "live"], (120, 24));
    let clear = "\x1b[H\x1b[2J";
    let deadline = Instant::now() + PATIENCE;
    while stats.shown().matches(clear).count() < 2 {
        assert!(Instant::now() < deadline, "{:?}", stats.shown());
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = stats.shown();
    let last = shown.rsplit(clear).next().unwrap();
    let lines: Vec<&str> = last.lines().collect();
    assert!(lines[0].starts_with("HANDLE"), "{last:?}");
    assert!(lines[0].contains("MEM USAGE / LIMIT"), "{last:?}");
    assert!(lines[1].starts_with("live "), "{last:?}");
    // Ctrl-C ends it (as it ends any command).
    stats.type_in(b"\x03");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(stats.exit_status().signal(), Some(libc::SIGINT));
}
