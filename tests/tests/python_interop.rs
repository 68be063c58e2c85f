//! Interop: the Python example client (examples/python/grove_example.py,
//! pycapnp loading schema/api.capnp at run time, no Rust involved) drives a
//! real groved through create, run with live output, wait and destroy.
//!
//! It runs with `target/pyvenv/bin/python` (`./dev setup` makes that venv
//! and installs pycapnp into it) or with `$GROVE_PYTHON`. A missing Python
//! fails the test: it is never skipped.

use grove_tests::*;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const HANDLE: &str = "py-interop";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lies in the repository")
        .to_path_buf()
}

/// `$GROVE_PYTHON`, else the venv `./dev setup` makes.
fn python() -> PathBuf {
    let (path, from) = match std::env::var_os("GROVE_PYTHON") {
        Some(p) => (PathBuf::from(p), "GROVE_PYTHON"),
        None => (repo_root().join("target/pyvenv/bin/python"), "the default"),
    };
    assert!(
        path.exists(),
        "no Python at {} ({from}): run ./dev setup (it makes target/pyvenv with pycapnp)",
        path.display()
    );
    let import = Command::new(&path)
        .args(["-c", "import capnp"])
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", path.display()));
    assert!(
        import.status.success(),
        "{} ({from}) cannot import pycapnp: run ./dev setup (it makes target/pyvenv with pycapnp)\n{}",
        path.display(),
        String::from_utf8_lossy(&import.stderr)
    );
    path
}

/// Run `command` to its end, at most `limit`; (exit code, stdout, stderr).
fn run_with_limit(mut command: Command, limit: Duration) -> (Option<i32>, String, String) {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the Python example");
    let reader = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = reader(Box::new(child.stdout.take().unwrap()));
    let stderr = reader(Box::new(child.stderr.take().unwrap()));
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            // Our own child, by its pid (Child::kill).
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the Python example did not finish within {limit:?}\nstdout:\n{}\nstderr:\n{}",
                stdout.join().unwrap(),
                stderr.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (
        status.code(),
        stdout.join().unwrap(),
        stderr.join().unwrap(),
    )
}

/// The lines the example prints for a stream's output,
/// `[+0.205s stdout] line 2`: (seconds since the run started, text).
fn stream_lines(output: &str, stream: &str) -> Vec<(f64, String)> {
    output
        .lines()
        .filter_map(|line| {
            let rest = line.strip_prefix("[+")?;
            let (stamp, rest) = rest.split_once("s ")?;
            let text = rest.strip_prefix(stream)?.strip_prefix("] ")?;
            Some((stamp.parse().ok()?, text.to_string()))
        })
        .collect()
}

#[test]
fn python_client_creates_runs_waits_and_destroys() {
    let python = python();
    let env = TestEnv::start();
    // groved answers before the example connects.
    env.run(|client| async move {
        assert!(!client.list(&[]).await.unwrap().contains(&HANDLE.into()));
    });

    let root = repo_root();
    let mut command = Command::new(&python);
    command
        .arg(root.join("examples/python/grove_example.py"))
        .arg("--socket")
        .arg(&env.socket)
        .arg("--handle")
        .arg(HANDLE)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .current_dir(&root);
    let (code, stdout, stderr) = run_with_limit(command, Duration::from_secs(30));
    let report = format!(
        "{} exited {code:?}\nstdout:\n{stdout}\nstderr:\n{stderr}\n{}",
        python.display(),
        env.logs()
    );
    assert_eq!(code, Some(0), "{report}");
    println!("the example printed:\n{stdout}");

    // The three stdout lines, in order, each printed as its chunk arrived:
    // the command sleeps 0.2 s after each, so line 3 reached Python at least
    // ~0.4 s after line 1 (0.3 s allows for scheduling).
    let out = stream_lines(&stdout, "stdout");
    let texts: Vec<&str> = out.iter().map(|(_, t)| t.as_str()).collect();
    assert_eq!(texts, ["line 1", "line 2", "line 3"], "{report}");
    assert!(
        out[0].0 <= out[1].0 && out[1].0 <= out[2].0,
        "timestamps out of order\n{report}"
    );
    assert!(
        out[2].0 - out[0].0 >= 0.3,
        "the lines did not arrive as they were written (all at once?)\n{report}"
    );
    let err = stream_lines(&stdout, "stderr");
    assert_eq!(err.len(), 1, "{report}");
    assert_eq!(err[0].1, "err", "{report}");
    assert!(err[0].0 >= out[2].0, "stderr came before line 3\n{report}");

    assert!(
        stdout.contains(&format!("created container {HANDLE}")),
        "{report}"
    );
    assert!(stdout.contains("exit status: 3\n"), "{report}");
    assert!(
        stdout.contains(&format!("destroyed container {HANDLE}")),
        "{report}"
    );
    assert!(
        !stderr.contains("error") && !stderr.contains("Traceback"),
        "the example reported an error\n{report}"
    );

    // The container is gone, as groved sees it.
    env.run(|client| async move {
        let handles = client.list(&[]).await.unwrap();
        assert!(
            !handles.contains(&HANDLE.to_string()),
            "{HANDLE} is still listed: {handles:?}"
        );
    });
}
