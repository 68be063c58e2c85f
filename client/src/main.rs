//! `grove`: the command-line client for groved.

use clap::{Parser, Subcommand};
use grove_client::{api, shell_exit_code, socket_path, writer_sink, Client, Command, Error};
use std::path::PathBuf;

mod terminal;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "grove",
    version,
    about = "Command-line client for the Grove container server"
)]
struct Cli {
    /// groved's socket [default: $GROVE_SOCKET, else /run/grove/grove.sock]
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Check that groved (and grove-helper behind it) answer.
    Ping,
    /// Show the host's capacity for containers.
    Capacity,
    /// Create a container and print its handle.
    Create {
        /// The handle (default: generated).
        #[arg(long)]
        handle: Option<String>,
        /// A host directory to use as the rootfs (default: the server's).
        #[arg(long)]
        rootfs: Option<String>,
        /// NAME=value for every process's environment (repeatable).
        #[arg(long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// NAME=value property (repeatable).
        #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
    },
    /// List container handles, optionally only those with all given properties.
    List {
        #[arg(long = "property", value_name = "NAME=VALUE", value_parser = parse_pair)]
        properties: Vec<(String, String)>,
    },
    /// Show a container's state, processes and properties.
    Info { handle: String },
    /// Run a command in a container, streaming its output; exits with its status.
    Run(RunArgs),
    /// Re-attach to a running or finished process: its unread output, then
    /// everything that follows; exits with its status.
    Attach { handle: String, process_id: String },
    /// Stop every process in a container: SIGTERM, then SIGKILL after 10 s.
    Stop {
        /// SIGKILL at once.
        #[arg(long)]
        kill: bool,
        handle: String,
    },
    /// Destroy a container and everything it owns.
    Destroy { handle: String },
}

#[derive(clap::Args)]
struct RunArgs {
    /// Pass this command's stdin to the process.
    #[arg(short, long)]
    interactive: bool,
    /// Run on a terminal (implies -i); the local terminal goes raw.
    #[arg(short, long)]
    tty: bool,
    /// User name or uid[:gid] inside the container (default: root).
    #[arg(long)]
    user: Option<String>,
    /// Working directory (default: the user's home).
    #[arg(long)]
    dir: Option<String>,
    /// NAME=value added to the environment (repeatable).
    #[arg(long = "env", value_name = "NAME=VALUE")]
    env: Vec<String>,
    /// A resource limit, e.g. nofile=1024 (repeatable).
    #[arg(long = "rlimit", value_name = "NAME=VALUE", value_parser = parse_rlimit)]
    rlimits: Vec<(String, u64)>,
    /// A process id of your choosing (default: generated).
    #[arg(long)]
    id: Option<String>,
    handle: String,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

fn parse_rlimit(s: &str) -> Result<(String, u64), String> {
    let (name, value) = parse_pair(s)?;
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

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("{s:?} is not NAME=VALUE"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("grove: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = tokio::task::LocalSet::new();
    match local.block_on(&runtime, execute(cli)) {
        Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            eprintln!("grove: {}", e.message);
            ExitCode::FAILURE
        }
    }
}

async fn execute(cli: Cli) -> Result<i32, Error> {
    let client = Client::connect(&socket_path(cli.socket)).await?;
    match cli.command {
        Cmd::Ping => {
            client.ping().await?;
            println!("ok");
        }
        Cmd::Capacity => {
            let response = client.grove.capacity_request().send().promise.await?;
            let c = response.get()?.get_capacity()?;
            println!("memory_in_bytes: {}", c.get_memory_in_bytes());
            println!("disk_in_bytes: {}", c.get_disk_in_bytes());
            println!("max_containers: {}", c.get_max_containers());
        }
        Cmd::Create {
            handle,
            rootfs,
            env,
            properties,
        } => {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(handle.as_deref().unwrap_or(""));
            spec.set_rootfs(rootfs.as_deref().unwrap_or(""));
            grove_client::fill_text_list(spec.reborrow().init_env(env.len() as u32), &env);
            let mut list = spec.init_properties(properties.len() as u32);
            for (i, (k, v)) in properties.iter().enumerate() {
                let mut p = list.reborrow().get(i as u32);
                p.set_name(k);
                p.set_value(v);
            }
            let container = request.send().pipeline.get_container();
            let response = container.handle_request().send().promise.await?;
            println!(
                "{}",
                response
                    .get()?
                    .get_handle()?
                    .to_str()
                    .map_err(capnp::Error::from)?
            );
        }
        Cmd::List { properties } => {
            for handle in client.list(&properties).await? {
                println!("{handle}");
            }
        }
        Cmd::Info { handle } => {
            let container = client.lookup(&handle).await?;
            let response = container.info_request().send().promise.await?;
            print_info(&handle, response.get()?.get_info()?)?;
        }
        Cmd::Run(args) => return run(&client, args).await,
        Cmd::Attach { handle, process_id } => return attach(&client, &handle, &process_id).await,
        Cmd::Stop { kill, handle } => {
            let container = client.lookup(&handle).await?;
            let mut request = container.stop_request();
            request.get().set_kill(kill);
            request.send().promise.await?;
        }
        Cmd::Destroy { handle } => client.destroy(&handle).await?,
    }
    Ok(0)
}

fn print_info(handle: &str, info: api::container_info::Reader<'_>) -> Result<(), Error> {
    println!("handle: {handle}");
    println!(
        "state: {}",
        info.get_state()?.to_str().map_err(capnp::Error::from)?
    );
    let ids: Vec<String> = info
        .get_process_ids()?
        .iter()
        .map(|id| id?.to_string().map_err(capnp::Error::from))
        .collect::<Result<_, capnp::Error>>()?;
    println!("processes: {}", ids.join(" "));
    for p in info.get_properties()? {
        let name = p.get_name()?.to_str().map_err(capnp::Error::from)?;
        let value = p.get_value()?.to_str().map_err(capnp::Error::from)?;
        println!("property: {name}={value}");
    }
    for event in info.get_events()? {
        println!("event: {}", event?.to_str().map_err(capnp::Error::from)?);
    }
    Ok(())
}

async fn run(client: &Client, args: RunArgs) -> Result<i32, Error> {
    let container = client.lookup(&args.handle).await?;
    let (path, argv) = args.command.split_first().expect("clap requires a command");
    let terminal = if args.tty {
        Some(terminal::size())
    } else {
        None
    };
    let cmd = Command {
        path: path.clone(),
        args: argv.to_vec(),
        env: args.env,
        dir: args.dir.unwrap_or_default(),
        user: args.user.unwrap_or_default(),
        id: args.id.unwrap_or_default(),
        rlimits: args.rlimits,
        tty: terminal,
    };
    let (stdout, stdout_done) = writer_sink(std::io::stdout());
    let (stderr, stderr_done) = writer_sink(std::io::stderr());
    let interactive = args.interactive || args.tty;
    let mut request = container.run_request();
    cmd.fill(request.get().init_spec()).map_err(|m| Error {
        code: "invalidSpec".into(),
        message: m,
    })?;
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    io.set_open_stdin(interactive);
    let process = request.send().pipeline.get_process();
    // Raw mode while the remote terminal runs; restored when this ends.
    let _raw = if args.tty {
        terminal::RawMode::enter()
    } else {
        None
    };
    if args.tty {
        tokio::task::spawn_local(forward_window_changes(process.clone()));
    }
    if interactive {
        let stdin = process.stdin_request().send().pipeline.get_stream();
        tokio::task::spawn_local(forward_stdin(stdin));
    }
    let response = process.wait_request().send().promise.await?;
    let status = response.get()?.get_exit_status();
    // No need to await `done`: when the output reached end of file, groved
    // had it delivered before answering wait; when a process left behind
    // keeps the pipes open, the command still ends with the process.
    drop((stdout_done, stderr_done));
    Ok(shell_exit_code(status))
}

async fn attach(client: &Client, handle: &str, process_id: &str) -> Result<i32, Error> {
    let container = client.lookup(handle).await?;
    let (stdout, _stdout_done) = writer_sink(std::io::stdout());
    let (stderr, _stderr_done) = writer_sink(std::io::stderr());
    let mut request = container.attach_request();
    request.get().set_process_id(process_id);
    let mut io = request.get().init_io();
    io.set_stdout(stdout);
    io.set_stderr(stderr);
    let process = request.send().pipeline.get_process();
    let response = process.wait_request().send().promise.await?;
    Ok(shell_exit_code(response.get()?.get_exit_status()))
}

/// Tell the process about every resize of the local terminal.
async fn forward_window_changes(process: api::process::Client) {
    let Ok(mut changes) =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
    else {
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
async fn forward_stdin(stream: api::byte_stream::Client) {
    use tokio::io::AsyncReadExt;
    let mut stdin = tokio::io::stdin();
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        match stdin.read(&mut buffer).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut request = stream.write_request();
                request.get().set_data(&buffer[..n]);
                if request.send().await.is_err() {
                    return;
                }
            }
        }
    }
    let _ = stream.done_request().send().promise.await;
}
