//! Crash points for the fault-injection tests (tests/tests/faults.rs).
//!
//! `crash_point("helper.create.cgroups")` kills the calling process with
//! SIGKILL when the environment variable `GROVE_CRASH_AT` names that point
//! (a comma-separated list), so a test can stop a daemon exactly between
//! two steps of an operation and check what the restarted system makes of
//! it. Only debug builds (the ones the tests run) have them: in a release
//! build the call is empty and the variable is never read.
//!
//! This is the one place in this crate that makes a syscall.

/// The environment variable that arms crash points.
pub const CRASH_AT_ENV: &str = "GROVE_CRASH_AT";

/// Die here, at once and without any clean-up, if `GROVE_CRASH_AT` names
/// `point` (debug builds only).
#[inline(always)]
pub fn crash_point(point: &str) {
    #[cfg(debug_assertions)]
    armed::check(point);
    #[cfg(not(debug_assertions))]
    let _ = point;
}

/// Read `GROVE_CRASH_AT` now, for a process that clears its environment
/// before it reaches its crash points (debug builds; else nothing).
pub fn arm() {
    #[cfg(debug_assertions)]
    armed::points();
}

/// The armed points as this process found them (see `arm`), e.g. for
/// passing them on to a child; `None` in release builds.
pub fn armed_points() -> Option<String> {
    #[cfg(debug_assertions)]
    return armed::points().clone();
    #[cfg(not(debug_assertions))]
    None
}

#[cfg(debug_assertions)]
mod armed {
    use std::sync::OnceLock;

    static POINTS: OnceLock<Option<String>> = OnceLock::new();

    pub fn points() -> &'static Option<String> {
        POINTS.get_or_init(|| {
            std::env::var(super::CRASH_AT_ENV)
                .ok()
                .filter(|v| !v.is_empty())
        })
    }

    pub fn check(point: &str) {
        let Some(points) = points() else {
            return;
        };
        if points.split(',').any(|p| p.trim() == point) {
            eprintln!("crash point {point}: SIGKILL");
            // SAFETY: plain libc calls on our own pid. Where kill cannot
            // end us, something else does at once and without clean-up:
            // a seccomp filter that refuses kill kills us itself (SIGSYS);
            // PID 1 of a namespace ignores its own SIGKILL, so abort(),
            // whose last resort is a fault the kernel always delivers.
            unsafe {
                kill(getpid(), 9);
            }
            std::process::abort();
        }
    }

    extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
        fn getpid() -> i32;
    }
}
