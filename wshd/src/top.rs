//! `Top`: the container's processes, as /proc shows them to its PID 1.
//!
//! The scan runs in a forked child, not in wshd: reading a process's
//! command line takes that process's memory-map lock, which a process stuck
//! in a page fault (a dead NFS bind mount, say) can hold indefinitely — as
//! it can hang `ps`. Only the child waits then; wshd goes on serving and
//! kills it after SCAN_TIMEOUT. The child writes one encoded `Response` to
//! a pipe and exits; the reaper collects it like any other child.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

use grove_schema::wshd::{
    decode, encode, ErrorKind, ProcessStatus, Response, WshdError, MAX_DATAGRAM, TOP_BUDGET,
    TOP_COMMAND_MAX,
};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use crate::users;

/// How long the scan may take before the child is killed.
const SCAN_TIMEOUT: Duration = Duration::from_secs(10);

/// What one row costs in the answer beyond its strings (postcard varints
/// and the fixed fields, generously).
const ROW_OVERHEAD: usize = 64;

/// A scan child, killed if its answer is not awaited to the end.
pub struct Scan {
    pub pid: i32,
    /// Signals go through a pidfd: the reaper may have collected the child
    /// (and its pid be reused) by the time this is dropped.
    pidfd: Option<OwnedFd>,
    output: AsyncFd<OwnedFd>,
    done: bool,
}

impl Drop for Scan {
    fn drop(&mut self) {
        if let (false, Some(pidfd)) = (self.done, &self.pidfd) {
            // SAFETY: pidfd_send_signal on a pidfd we own, no siginfo.
            unsafe {
                libc::syscall(
                    libc::SYS_pidfd_send_signal,
                    pidfd.as_raw_fd(),
                    libc::SIGKILL,
                    std::ptr::null::<libc::siginfo_t>(),
                    0,
                )
            };
        }
    }
}

/// Fork the scan child. `spawned`: the running processes wshd started, by
/// pid, for the `process_id` of each row. Must run on wshd's only thread
/// (see `stream::start`: the child is a copy of a single-threaded process).
pub fn start(spawned: HashMap<i32, String>) -> Result<Scan, WshdError> {
    let system = |what: &str, e: &dyn std::fmt::Display| {
        WshdError::new(ErrorKind::System, format!("top: {what}: {e}"))
    };
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| system("pipe2", &e))?;
    // SAFETY: wshd has no other threads, so the child may allocate; it
    // never returns into wshd's code (it ends in _exit) nor touches the
    // runtime.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(system("fork", &std::io::Error::last_os_error()));
    }
    if pid == 0 {
        // SAFETY: see above; this never returns.
        unsafe { child(write.as_raw_fd(), &spawned) }
    }
    drop(write);
    // SAFETY: pidfd_open on our own child, not yet reaped (the reaper runs
    // on this thread, after this function returns).
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a fresh fd, owned from here on.
    let pidfd = (pidfd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(pidfd as i32) });
    crate::wire::set_nonblocking(&read).map_err(|e| system("O_NONBLOCK", &e))?;
    // SAFETY: the OwnedFd stays open and keeps its number until dropped,
    // which is when its AsyncFd is dropped.
    let output = unsafe { AsyncFd::register_with_interest(read, Interest::READABLE) }
        .map_err(|e| system("registering the pipe", &e))?;
    Ok(Scan {
        pid,
        pidfd,
        output,
        done: false,
    })
}

impl Scan {
    /// The child's answer, or an error once SCAN_TIMEOUT has passed.
    pub async fn answer(mut self) -> Response {
        let result = tokio::time::timeout(SCAN_TIMEOUT, self.read_all()).await;
        let bytes = match result {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return system_error(format!("top: reading the scan: {e}")),
            Err(_) => {
                return system_error(format!(
                    "top: reading /proc took over {} s (a process may be stuck)",
                    SCAN_TIMEOUT.as_secs()
                ))
            }
        };
        self.done = true;
        match decode::<Response>(&bytes) {
            Ok(answer @ Response::Top { .. }) => answer,
            Ok(_) => system_error("top: the scan answered something else".into()),
            Err(e) => system_error(format!("top: the scan ended early: {}", e.message)),
        }
    }

    async fn read_all(&mut self) -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let mut guard = self.output.readable().await?;
            let read = guard.try_io(|fd| {
                nix::unistd::read(fd.get_ref().as_raw_fd(), &mut buffer)
                    .map_err(std::io::Error::from)
            });
            match read {
                Ok(Ok(0)) => return Ok(bytes),
                Ok(Ok(n)) => {
                    bytes.extend_from_slice(&buffer[..n]);
                    if bytes.len() > MAX_DATAGRAM {
                        return Err(std::io::Error::other("the scan wrote too much"));
                    }
                }
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => {}
            }
        }
    }
}

/// The scan child: keep nothing of wshd's but the pipe (a copy of a
/// process's stdin pipe would hold off its end of file), scan, write the
/// answer, exit.
///
/// # Safety
/// Only in the child of `start`'s fork.
unsafe fn child(pipe: i32, spawned: &HashMap<i32, String>) -> ! {
    const OUT: i32 = 3;
    if pipe != OUT && libc::dup2(pipe, OUT) != OUT {
        libc::_exit(1);
    }
    libc::syscall(libc::SYS_close_range, OUT + 1, u32::MAX, 0);
    let answer = encode(&scan(spawned));
    let mut rest = &answer[..];
    while !rest.is_empty() {
        let n = libc::write(OUT, rest.as_ptr().cast(), rest.len());
        if n > 0 {
            rest = &rest[n as usize..];
        } else if n == 0
            || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            break;
        }
    }
    libc::_exit(0)
}

fn system_error(message: String) -> Response {
    Response::Error(WshdError::new(ErrorKind::System, message))
}

/// /proc/PID/stat's fields that `Top` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub name: String,
    pub state: char,
    pub ppid: i32,
    /// utime + stime, in clock ticks.
    pub cpu_ticks: u64,
    /// Since boot, in clock ticks.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// Parse /proc/PID/stat. The name (in parentheses) may hold anything,
/// spaces and parentheses included: the fields resume after the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let name = text.get(open + 1..close)?.to_string();
    // Fields from the 3rd (state) on; the numbering below is proc(5)'s.
    let fields: Vec<&str> = text.get(close + 1..)?.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).copied();
    let number = |n: usize| field(n)?.parse::<u64>().ok();
    Some(Stat {
        name,
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        cpu_ticks: number(14)?.saturating_add(number(15)?),
        start_ticks: number(22)?,
        rss_pages: field(24)?.parse::<i64>().ok()?.max(0) as u64,
    })
}

/// The real uid from /proc/PID/status.
fn real_uid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A command line as NUL-separated arguments, joined by spaces, at most
/// TOP_COMMAND_MAX bytes (cut on a character boundary).
pub fn command_line(raw: &[u8]) -> String {
    let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
    let joined: Vec<u8> = raw.iter().map(|&b| if b == 0 { b' ' } else { b }).collect();
    let mut text = String::from_utf8_lossy(&joined).into_owned();
    if text.len() > TOP_COMMAND_MAX {
        let mut end = TOP_COMMAND_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// Read at most `limit` bytes of a /proc file.
fn read_limited(path: &str, limit: usize) -> Option<Vec<u8>> {
    use std::io::Read;
    let file = std::fs::File::open(path).ok()?;
    let mut bytes = Vec::new();
    file.take(limit as u64).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

fn read_text(path: &str) -> Option<String> {
    String::from_utf8(read_limited(path, 16 * 1024)?).ok()
}

/// The API process a pid is, or descends from: up the parent chain to a
/// pid wshd spawned.
fn owner(pid: i32, parents: &HashMap<i32, i32>, spawned: &HashMap<i32, String>) -> Option<String> {
    let mut current = pid;
    // The chain ends at wshd (1) or a parent that has gone; the bound
    // only guards against a cycle that a pid reused mid-scan might make.
    for _ in 0..64 {
        if let Some(id) = spawned.get(&current) {
            return Some(id.clone());
        }
        match parents.get(&current) {
            Some(&parent) if parent > 1 => current = parent,
            _ => return None,
        }
    }
    None
}

/// Scan /proc (in the child).
fn scan(spawned: &HashMap<i32, String>) -> Response {
    // SAFETY: sysconf and getpid have no memory effects.
    let (ticks, page, me) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as u64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
            libc::getpid(),
        )
    };
    let uptime_ms = read_text("/proc/uptime")
        .and_then(|t| t.split_whitespace().next()?.parse::<f64>().ok())
        .map(|s| (s * 1000.0) as u64)
        .unwrap_or(0);
    let mut pids: Vec<i32> = std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .filter(|&pid| pid != me)
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    let stats: Vec<(i32, Stat)> = pids
        .into_iter()
        .filter_map(|pid| Some((pid, parse_stat(&read_text(&format!("/proc/{pid}/stat"))?)?)))
        .collect();
    let parents: HashMap<i32, i32> = stats.iter().map(|(pid, s)| (*pid, s.ppid)).collect();
    let (passwd, _) = users::load();
    let mut processes = Vec::new();
    let mut used = 0;
    let mut truncated = false;
    for (pid, stat) in stats {
        let uid = read_text(&format!("/proc/{pid}/status"))
            .as_deref()
            .and_then(real_uid)
            .unwrap_or(u32::MAX);
        let raw =
            read_limited(&format!("/proc/{pid}/cmdline"), TOP_COMMAND_MAX + 1).unwrap_or_default();
        let mut command = command_line(&raw);
        if command.is_empty() {
            command = format!("[{}]", stat.name);
        }
        let row = ProcessStatus {
            pid,
            ppid: stat.ppid,
            uid,
            user: passwd.iter().find(|p| p.uid == uid).map(|p| p.name.clone()),
            state: stat.state,
            cpu_millis: stat.cpu_ticks.saturating_mul(1000) / ticks,
            elapsed_millis: uptime_ms.saturating_sub(stat.start_ticks.saturating_mul(1000) / ticks),
            rss_bytes: stat.rss_pages.saturating_mul(page),
            command,
            process_id: owner(pid, &parents, spawned),
        };
        let size = ROW_OVERHEAD
            + row.command.len()
            + row.user.as_ref().map_or(0, String::len)
            + row.process_id.as_ref().map_or(0, String::len);
        if used + size > TOP_BUDGET {
            truncated = true;
            break;
        }
        used += size;
        processes.push(row);
    }
    Response::Top {
        processes,
        truncated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parses_names_with_spaces_and_parentheses() {
        let text = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 0 0 20 0 1 0 \
                    5000 1234567 89 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(text),
            Some(Stat {
                name: "a (b) c".into(),
                state: 'S',
                ppid: 1,
                cpu_ticks: 10,
                start_ticks: 5000,
                rss_pages: 89,
            })
        );
        assert_eq!(parse_stat("42 (x"), None);
        assert_eq!(parse_stat("42 (x) S"), None);
    }

    #[test]
    fn command_lines_join_and_cut() {
        assert_eq!(command_line(b"sleep\x00300\x00"), "sleep 300");
        assert_eq!(command_line(b""), "");
        let long = vec![b'x'; TOP_COMMAND_MAX + 1];
        assert_eq!(command_line(&long).len(), TOP_COMMAND_MAX);
        let mut accented = vec![b'x'; TOP_COMMAND_MAX - 1];
        accented.extend("é".as_bytes());
        assert_eq!(command_line(&accented).len(), TOP_COMMAND_MAX - 1);
    }

    #[test]
    fn processes_belong_to_the_spawned_ancestor() {
        let parents = HashMap::from([(5, 1), (6, 5), (7, 6), (9, 1)]);
        let spawned = HashMap::from([(5, "web".to_string())]);
        assert_eq!(owner(7, &parents, &spawned).as_deref(), Some("web"));
        assert_eq!(owner(5, &parents, &spawned).as_deref(), Some("web"));
        assert_eq!(owner(9, &parents, &spawned), None);
        assert_eq!(owner(1, &parents, &spawned), None);
        let cycle = HashMap::from([(3, 4), (4, 3)]);
        assert_eq!(owner(3, &cycle, &spawned), None);
    }

    #[test]
    fn uid_is_the_real_one() {
        assert_eq!(real_uid("Name:\tx\nUid:\t1000\t0\t0\t0\n"), Some(1000));
        assert_eq!(real_uid("Name:\tx\n"), None);
    }
}
