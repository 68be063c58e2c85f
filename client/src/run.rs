//! `grove run` (alias `exec`), `attach` and `logs`: a process's output on
//! this command's stdout and stderr, our stdin on its stdin, our terminal
//! as its terminal, and the signals we receive passed on to it (podman's
//! `--sig-proxy`).

use crate::stdin::Stdin;
use crate::{cli_json, terminal};
use grove_client::{api, shell_exit_code, writer_sink, Client, Command, Error, ErrorCode};
use std::cell::RefCell;
use std::rc::Rc;
use tokio::signal::unix::{signal, Signal as SignalStream, SignalKind};

/// What `run` and `exec` take.
#[derive(clap::Args)]
pub struct RunArgs {
    /// Pass this command's stdin to the process (its end closes the
    /// process's stdin). Example: echo hi | grove run -i web cat
    #[arg(short, long)]
    pub interactive: bool,
    /// Run on a terminal (implies -i): the local terminal goes raw, its
    /// size follows, and TERM=xterm is set unless -e gives TERM.
    /// Example: grove run -it web /bin/sh
    #[arg(short, long)]
    pub tty: bool,
    /// Start the process and print its id, without waiting: its output
    /// waits for `grove logs` or `grove attach`. Example: grove run -d web sleep 600
    #[arg(short, long, conflicts_with = "interactive")]
    pub detach: bool,
    /// User name or uid[:gid] inside the container (default: root, or the
    /// image's user). Example: -u 1000:1000
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory (default: the user's home, or the image's).
    /// Example: -w /srv/app
    #[arg(
        short = 'w',
        long = "workdir",
        visible_alias = "dir",
        value_name = "DIR"
    )]
    pub dir: Option<String>,
    /// NAME=VALUE added to the environment, after the container's; a bare
    /// NAME takes this command's value of it (left out when unset)
    /// (repeatable). Example: -e DEBUG=1 -e LANG
    #[arg(short, long = "env", value_name = "NAME[=VALUE]")]
    pub env: Vec<String>,
    /// A resource limit, soft = hard (repeatable; as, core, cpu, data,
    /// fsize, locks, memlock, msgqueue, nice, nofile, nproc, rss, rtprio,
    /// sigpending, stack). Example: --rlimit nofile=1024
    #[arg(long = "rlimit", value_name = "NAME=VALUE", value_parser = parse_rlimit)]
    pub rlimits: Vec<(String, u64)>,
    /// A process id of your choosing, for attach, logs and signal (default:
    /// generated). Example: --id build-42
    #[arg(long)]
    pub id: Option<String>,
    #[command(flatten)]
    pub signals: SigProxy,
    /// The container to run in.
    #[arg(add = crate::completion::handles())]
    pub handle: String,
    /// The command and its arguments (`--` before them is optional).
    /// Example: sh -c 'echo $HOME'
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// `--sig-proxy`, for `run` and `attach`.
#[derive(clap::Args)]
pub struct SigProxy {
    /// Pass INT, TERM, HUP, QUIT, USR1 and USR2 on to the process (true);
    /// false: INT, TERM, HUP and QUIT end this command instead and leave
    /// the process running (its id is printed for attach).
    /// Example: --sig-proxy=false
    #[arg(
        long = "sig-proxy",
        value_name = "BOOL",
        default_value_t = true,
        num_args = 0..=1,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub proxy: bool,
}

fn parse_rlimit(s: &str) -> Result<(String, u64), String> {
    let (name, value) = crate::parse_pair(s)?;
    if !grove_client::RLIMIT_NAMES.contains(&name.as_str()) {
        return Err(format!(
            "unknown limit {name:?} (known: {})",
            grove_client::RLIMIT_NAMES.join(", ")
        ));
    }
    let value = value
        .parse()
        .map_err(|_| format!("{value:?} is not a number"))?;
    Ok((name, value))
}

/// The process's environment: `NAME` alone takes our value; on a terminal,
/// TERM=xterm unless given (as podman does).
pub fn environment(
    given: &[String],
    tty: bool,
    ours: impl Fn(&str) -> Option<String>,
) -> Vec<String> {
    let mut env: Vec<String> = given
        .iter()
        .filter_map(|entry| {
            if entry.contains('=') {
                Some(entry.clone())
            } else {
                ours(entry).map(|value| format!("{entry}={value}"))
            }
        })
        .collect();
    if tty && !env.iter().any(|e| e.starts_with("TERM=")) {
        env.push("TERM=xterm".into());
    }
    env
}

pub async fn run(client: &Client, args: RunArgs, json: bool) -> Result<i32, Error> {
    let container = client.lookup(&args.handle).await?;
    let (path, argv) = args.command.split_first().expect("clap requires a command");
    let cmd = Command {
        path: path.clone(),
        args: argv.to_vec(),
        env: environment(&args.env, args.tty, |name| std::env::var(name).ok()),
        dir: args.dir.unwrap_or_default(),
        user: args.user.unwrap_or_default(),
        id: args.id.clone().unwrap_or_default(),
        rlimits: args.rlimits,
        tty: args.tty.then(terminal::size),
    };
    let mut request = container.run_request();
    cmd.fill(request.get().init_spec()).map_err(|m| Error {
        code: ErrorCode::InvalidSpec.as_str().into(),
        message: m,
    })?;
    if args.detach {
        // No streams: the output waits in the process's pipes.
        request.get().init_io();
        let process = request.send().pipeline.get_process();
        let response = process.id_request().send().promise.await?;
        let id = response
            .get()?
            .get_id()?
            .to_str()
            .map_err(capnp::Error::from)?;
        if json {
            cli_json::print(&serde_json::json!({ "process_id": id }));
        } else {
            println!("{id}");
        }
        return Ok(0);
    }
    let (stdout, stdout_done) = writer_sink(std::io::stdout());
    let (stderr, stderr_done) = writer_sink(std::io::stderr());
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    let interactive = args.interactive || args.tty;
    io.set_open_stdin(interactive);
    let process = request.send().pipeline.get_process();
    let id = ProcessId::learn(&process, &args.handle, args.id.is_none());
    // Raw mode while the remote terminal runs; restored when this ends.
    let raw = if args.tty {
        terminal::RawMode::enter()
    } else {
        None
    };
    let mut tasks = Tasks::default();
    if args.tty {
        tasks.spawn(forward_window_changes(process.clone()));
    }
    if interactive {
        let stdin = Stdin::start().map_err(|e| crate::cli_stream::local(format!("stdin: {e}")))?;
        let stream = process.stdin_request().send().pipeline.get_stream();
        tasks.spawn(forward_stdin(stdin, stream));
    }
    let ended = follow(&process, args.signals.proxy).await;
    drop(tasks);
    drop(raw);
    finish(ended, &id, (stdout_done, stderr_done)).await
}

pub async fn attach(
    client: &Client,
    handle: &str,
    process_id: &str,
    signals: SigProxy,
) -> Result<i32, Error> {
    let container = client.lookup(handle).await?;
    let (request, done) = attach_to_stdio(&container, process_id, false);
    let process = request.send().pipeline.get_process();
    let id = ProcessId::known(handle, process_id);
    let ended = follow(&process, signals.proxy).await;
    finish(ended, &id, done).await
}

/// Both ends of reading a process's output to this process's stdout and
/// stderr: an attach request (of the waiting output only, with
/// `backlog_only`), and the signals that each stream has been written out.
type OutputDone = (
    tokio::sync::oneshot::Receiver<()>,
    tokio::sync::oneshot::Receiver<()>,
);
fn attach_to_stdio(
    container: &api::container::Client,
    process_id: &str,
    backlog_only: bool,
) -> (
    capnp::capability::Request<
        api::container::attach_params::Owned,
        api::container::attach_results::Owned,
    >,
    OutputDone,
) {
    let (stdout, stdout_done) = writer_sink(std::io::stdout());
    let (stderr, stderr_done) = writer_sink(std::io::stderr());
    let mut request = container.attach_request();
    request.get().set_process_id(process_id);
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    io.set_backlog_only(backlog_only);
    (request, (stdout_done, stderr_done))
}

/// `grove logs`: the output waiting for a reader; with `follow`, then
/// everything that follows until the process ends. Exits 0 either way
/// (`attach` gives the process's status).
pub async fn logs(
    client: &Client,
    handle: &str,
    process_id: &str,
    follow: bool,
) -> Result<i32, Error> {
    let container = client.lookup(handle).await?;
    let (request, (stdout_done, stderr_done)) = attach_to_stdio(&container, process_id, !follow);
    if follow {
        let process = request.send().pipeline.get_process();
        process.wait_request().send().promise.await?;
        finish_output(stdout_done, stderr_done).await;
    } else {
        // A bad handle or process id fails the attach; otherwise groved
        // ends both streams once the waiting output is through.
        request.send().promise.await?;
        let _ = stdout_done.await;
        let _ = stderr_done.await;
    }
    Ok(0)
}

/// How following a process ended.
enum Ended {
    /// Its `wait` answered (its status, or the error).
    Waited(Result<i32, Error>),
    /// Without --sig-proxy, this signal (its number) ends the command.
    Left(i32),
}

/// Wait for the process, passing the signals we receive on to it (or,
/// without the proxy, leaving at the first of INT, TERM, HUP or QUIT).
async fn follow(process: &api::process::Client, proxy: bool) -> Ended {
    let mut signals = match Signals::watch(proxy) {
        Ok(s) => s,
        Err(e) => {
            return Ended::Waited(Err(crate::cli_stream::local(format!(
                "watching signals: {e}"
            ))))
        }
    };
    let wait = process.wait_request().send().promise;
    tokio::pin!(wait);
    loop {
        tokio::select! {
            response = &mut wait => {
                let status = response
                    .map_err(Error::from)
                    .and_then(|r| Ok(r.get().map_err(Error::from)?.get_exit_status()));
                return Ended::Waited(status);
            }
            (number, signal) = signals.next() => {
                if !proxy {
                    return Ended::Left(number);
                }
                let mut request = process.signal_request();
                request.get().set_signal(signal);
                // Not awaited: the process may have gone meanwhile, which
                // its wait reports.
                tokio::task::spawn_local(request.send().promise);
            }
        }
    }
}

/// The exit status of a followed process, once its output has landed; when
/// this command leaves it running, how to find it again.
async fn finish(
    ended: Ended,
    id: &ProcessId,
    (stdout_done, stderr_done): (
        tokio::sync::oneshot::Receiver<()>,
        tokio::sync::oneshot::Receiver<()>,
    ),
) -> Result<i32, Error> {
    match ended {
        Ended::Waited(Ok(status)) => {
            finish_output(stdout_done, stderr_done).await;
            Ok(shell_exit_code(status))
        }
        Ended::Waited(Err(e)) => {
            if e.kind() == ErrorCode::Disconnected {
                id.tell("the connection to groved was lost; the process may still run");
            }
            Err(e)
        }
        Ended::Left(number) => {
            id.tell("left the process running");
            Ok(128 + number)
        }
    }
}

/// The id of the process followed, for the note that says how to re-attach
/// when this command leaves it running. A generated id is asked for at
/// once (pipelined with the run), while the connection is there.
struct ProcessId {
    handle: String,
    id: Rc<RefCell<Option<String>>>,
}

impl ProcessId {
    fn learn(process: &api::process::Client, handle: &str, generated: bool) -> ProcessId {
        let id = Rc::new(RefCell::new(None));
        if generated {
            let slot = id.clone();
            let request = process.id_request().send().promise;
            tokio::task::spawn_local(async move {
                if let Ok(response) = request.await {
                    if let Ok(text) = response.get().and_then(|r| r.get_id()) {
                        *slot.borrow_mut() = text.to_string().ok();
                    }
                }
            });
        }
        ProcessId {
            handle: handle.to_string(),
            id,
        }
    }

    fn known(handle: &str, id: &str) -> ProcessId {
        ProcessId {
            handle: handle.to_string(),
            id: Rc::new(RefCell::new(Some(id.to_string()))),
        }
    }

    /// One line on stderr: what happened, and the attach command, when the
    /// id is one the user may not know.
    fn tell(&self, what: &str) {
        match self.id.borrow().as_deref() {
            Some(id) => eprintln!(
                "grove: {what}: process {id} (grove attach {} {id})",
                self.handle
            ),
            None => eprintln!("grove: {what}"),
        }
    }
}

/// The signals `follow` watches, as (number, the API's signal).
struct Signals {
    watched: Vec<(i32, api::Signal, SignalStream)>,
}

impl Signals {
    fn watch(proxy: bool) -> std::io::Result<Signals> {
        let mut kinds = vec![
            (libc::SIGINT, api::Signal::Interrupt),
            (libc::SIGTERM, api::Signal::Terminate),
            (libc::SIGHUP, api::Signal::Hangup),
            (libc::SIGQUIT, api::Signal::Quit),
        ];
        if proxy {
            kinds.push((libc::SIGUSR1, api::Signal::User1));
            kinds.push((libc::SIGUSR2, api::Signal::User2));
        }
        let watched = kinds
            .into_iter()
            .map(|(number, api)| Ok((number, api, signal(SignalKind::from_raw(number))?)))
            .collect::<std::io::Result<_>>()?;
        Ok(Signals { watched })
    }

    /// The next signal received.
    async fn next(&mut self) -> (i32, api::Signal) {
        let receivers = self.watched.iter_mut().map(|(number, api, stream)| {
            let (number, api) = (*number, *api);
            Box::pin(async move {
                stream.recv().await;
                (number, api)
            })
        });
        futures::future::select_all(receivers).await.0
    }
}

/// Tasks that end with the command (dropping them aborts them).
#[derive(Default)]
struct Tasks(Vec<tokio::task::JoinHandle<()>>);

impl Tasks {
    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + 'static) {
        self.0.push(tokio::task::spawn_local(task));
    }
}

impl Drop for Tasks {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

/// Let the last output land before exiting. When the output reached end of
/// file, groved told the streams `done` before answering wait, so this
/// returns at once; when a process left behind keeps the pipes open, the
/// command still ends shortly after the process.
async fn finish_output(
    stdout: tokio::sync::oneshot::Receiver<()>,
    stderr: tokio::sync::oneshot::Receiver<()>,
) {
    let both = async {
        let _ = stdout.await;
        let _ = stderr.await;
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(500), both).await;
}

/// Tell the process about every resize of the local terminal.
async fn forward_window_changes(process: api::process::Client) {
    let Ok(mut changes) = signal(SignalKind::window_change()) else {
        return;
    };
    while changes.recv().await.is_some() {
        let (columns, rows) = terminal::size();
        let mut request = process.set_tty_request();
        let mut size = request.get().init_window_size();
        size.set_columns(columns);
        size.set_rows(rows);
        if request.send().promise.await.is_err() {
            return;
        }
    }
}

/// Copy this command's stdin to the process, then close it.
async fn forward_stdin(mut stdin: Stdin, stream: api::byte_stream::Client) {
    // A read error ends the input as its end would.
    while let Some(Ok(chunk)) = stdin.next().await {
        let mut request = stream.write_request();
        request.get().set_data(&chunk);
        if request.send().await.is_err() {
            return;
        }
    }
    let _ = stream.done_request().send().promise.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_takes_bare_names_from_ours_and_sets_term_on_a_tty() {
        let ours = |name: &str| (name == "LANG").then(|| "C.UTF-8".to_string());
        let given = ["A=1".to_string(), "LANG".into(), "UNSET".into()];
        assert_eq!(environment(&given, false, ours), ["A=1", "LANG=C.UTF-8"]);
        assert_eq!(
            environment(&given, true, ours),
            ["A=1", "LANG=C.UTF-8", "TERM=xterm"]
        );
        let term = ["TERM=dumb".to_string()];
        assert_eq!(environment(&term, true, ours), ["TERM=dumb"]);
    }
}
