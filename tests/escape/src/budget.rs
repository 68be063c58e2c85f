//! `grove-escape budget …`: spend a per-user kernel budget, for the tests
//! of tests/tests/budgets.rs (one container spends, another container and
//! a host root process must not notice).
//!
//! - `budget spend inotify-instances`: inotify_init1 until it fails.
//! - `budget spend inotify-watches DIR COUNT`: makes DIR with COUNT empty
//!   files, then as many inotify instances as it gets (at most 128), each
//!   watching every file, until a watch fails (ENOSPC: the per-user watch
//!   limit) or all are watched.
//! - `budget spend mqueues`: POSIX message queues (mq_open O_CREAT, the
//!   kernel's default sizes) until mq_open fails.
//!
//! Each prints `SPENT <what> <count> errno=<N>` (N: why the last one failed,
//! 0 if nothing did) and then holds what it got until killed.
//!
//! - `budget try inotify-instance|inotify-watch FILE|mqueue`: one of each,
//!   released at once; prints `TRY <what> ok` or `TRY <what> errno=<N>`.

use std::ffi::CString;

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn inotify() -> Result<i32, i32> {
    // SAFETY: inotify_init1 takes flags only.
    let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd)
    }
}

fn watch(fd: i32, path: &CString) -> Result<(), i32> {
    // SAFETY: a NUL-terminated path and a mask.
    if unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) } < 0 {
        Err(errno())
    } else {
        Ok(())
    }
}

/// mq_open(name, O_CREAT|O_RDWR, 0600, default attributes) as a raw
/// system call (the name without the leading slash libc strips).
fn mqueue(name: &str) -> Result<i32, i32> {
    let name = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name, flags, a mode and a NULL attr.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_mq_open,
            name.as_ptr(),
            libc::O_CREAT | libc::O_RDWR | libc::O_CLOEXEC,
            0o600,
            std::ptr::null::<libc::mq_attr>(),
        )
    };
    if fd < 0 {
        Err(errno())
    } else {
        Ok(fd as i32)
    }
}

fn unlink_mqueue(name: &str) {
    let name = CString::new(name).unwrap();
    // SAFETY: a NUL-terminated name.
    unsafe { libc::syscall(libc::SYS_mq_unlink, name.as_ptr()) };
}

/// DIR with COUNT empty files; their paths.
fn make_files(dir: &str, count: &str) -> Vec<CString> {
    let count: usize = count.parse().unwrap_or_else(|_| {
        eprintln!("grove-escape budget: {count:?} is not a count");
        std::process::exit(2)
    });
    let fail = |what: &str, e: std::io::Error| -> ! {
        eprintln!("grove-escape budget: {what}: {e}");
        std::process::exit(2)
    };
    std::fs::create_dir_all(dir).unwrap_or_else(|e| fail(dir, e));
    (0..count)
        .map(|i| {
            let path = format!("{dir}/f{i}");
            std::fs::write(&path, b"").unwrap_or_else(|e| fail(&path, e));
            CString::new(path).unwrap()
        })
        .collect()
}

fn hold() -> ! {
    loop {
        // SAFETY: pause only waits for a signal.
        unsafe { libc::pause() };
    }
}

fn spend(what: &str, args: &[String]) -> i32 {
    let (count, last) = match (what, args) {
        ("inotify-instances", []) => {
            let mut n = 0;
            let last = loop {
                match inotify() {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            (n, last)
        }
        ("inotify-watches", [dir, count]) => {
            let paths = make_files(dir, count);
            let (mut n, mut last) = (0, 0);
            'instances: for _ in 0..128 {
                let fd = match inotify() {
                    Ok(fd) => fd,
                    Err(e) => {
                        last = e;
                        break;
                    }
                };
                for p in &paths {
                    match watch(fd, p) {
                        Ok(()) => n += 1,
                        Err(e) => {
                            last = e;
                            break 'instances;
                        }
                    }
                }
            }
            (n, last)
        }
        ("mqueues", []) => {
            let mut n = 0;
            let last = loop {
                match mqueue(&format!("grove-budget-{n}")) {
                    Ok(_) => n += 1,
                    Err(e) => break e,
                }
            };
            (n, last)
        }
        _ => return usage(),
    };
    println!("SPENT {what} {count} errno={last}");
    hold()
}

fn try_one(what: &str, args: &[String]) -> i32 {
    let result = match (what, args) {
        ("inotify-instance", []) => inotify().map(|fd| {
            // SAFETY: our own fd.
            unsafe { libc::close(fd) };
        }),
        ("inotify-watch", [file]) => {
            let path = CString::new(file.as_str()).unwrap();
            inotify().and_then(|fd| {
                let r = watch(fd, &path);
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                r
            })
        }
        ("mqueue", []) => {
            let name = format!("grove-budget-try-{}", std::process::id());
            mqueue(&name).map(|fd| {
                // SAFETY: our own fd.
                unsafe { libc::close(fd) };
                unlink_mqueue(&name);
            })
        }
        _ => return usage(),
    };
    match result {
        Ok(()) => println!("TRY {what} ok"),
        Err(e) => println!("TRY {what} errno={e}"),
    }
    0
}

fn usage() -> i32 {
    eprintln!(
        "grove-escape budget: spend inotify-instances | spend inotify-watches DIR COUNT \
         | spend mqueues | try inotify-instance | try inotify-watch FILE | try mqueue"
    );
    2
}

/// Runs `budget ARGS…` and returns the exit code (2 on bad usage).
pub fn main(args: &[String]) -> i32 {
    match args {
        [verb, what, rest @ ..] if verb == "spend" => spend(what, rest),
        [verb, what, rest @ ..] if verb == "try" => try_one(what, rest),
        _ => usage(),
    }
}
