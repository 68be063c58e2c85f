//! grove-garden: Cloud Foundry Garden's HTTP API in front of groved, so
//! that Garden's clients (Diego's rep, Concourse workers) drive Grove. An
//! unprivileged client of groved's unix socket; it holds no state beyond
//! the stream ids of run/attach sessions.
//!
//! Modules: `http` (the HTTP/1.1 wire), `routes` (Garden's routes),
//! `server` (a connection's request loop), `api` (JSON routes), `files`
//! (streamIn/streamOut), `process` (run/attach and output streams),
//! `wire` (Garden's JSON), `translate` (Garden ↔ Grove), `errors` (error
//! bodies), `grove` (the connection to groved), `streams`, `sink`,
//! `config`.

// What the three daemons share (systemd, log lines, the API socket):
// crate::systemd and the others below name grove-daemon's.
use grove_daemon::{api_socket, logging, systemd};

mod api;
mod config;
mod errors;
mod files;
mod grove;
mod http;
mod process;
mod routes;
mod server;
mod sink;
mod streams;
mod translate;
mod wire;

use config::Config;
use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;

const USAGE: &str = "usage: grove-garden [--config PATH] [--listen SOCKET] [--listen-tcp IP:PORT] \
                     [--grove-socket SOCKET] [--allow-root]

Serves Cloud Foundry Garden's HTTP API (for Diego, Concourse) and translates
it to groved's API. Without --config it reads /etc/grove/garden.conf, or
uses its embedded defaults when that file does not exist; flags override
both. GROVE_GARDEN_LOG sets what it logs (an EnvFilter). Garden's protocol has no authentication: the unix socket
is group-accessible (mode 0660) and TCP is loopback-only unless the config
sets allow_unauthenticated_remote = true.";

struct Args {
    config: Option<PathBuf>,
    listen: Option<PathBuf>,
    listen_tcp: Option<String>,
    grove_socket: Option<PathBuf>,
    allow_root: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        listen: None,
        listen_tcp: None,
        grove_socket: None,
        allow_root: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| {
            it.next()
                .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--config" => args.config = Some(value("--config")?.into()),
            "--listen" => args.listen = Some(value("--listen")?.into()),
            "--listen-tcp" => args.listen_tcp = Some(value("--listen-tcp")?),
            "--grove-socket" => args.grove_socket = Some(value("--grove-socket")?.into()),
            "--allow-root" => args.allow_root = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    logging::init("GROVE_GARDEN_LOG");
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn load_config(args: &Args) -> Result<Config, String> {
    let (mut config, origin) = config::load(
        args.config.as_deref(),
        std::path::Path::new(config::DEFAULT_PATH),
    )?;
    tracing::info!("{origin}");
    if let Some(p) = &args.listen {
        config.listen = p.clone();
    }
    if let Some(p) = &args.grove_socket {
        config.grove_socket = p.clone();
    }
    if let Some(t) = &args.listen_tcp {
        config.listen_tcp = config::parse_listen_tcp(t)?;
    }
    config.check()?;
    Ok(config)
}

fn run() -> Result<(), String> {
    // Before any thread exists: this edits the environment.
    let mut sd = systemd::capture()?;
    let args = parse_args()?;
    if nix::unistd::geteuid().is_root() && !args.allow_root {
        return Err("refusing to run as root: grove-garden needs no privilege; \
                    start it as the `grove` user (or any member of group grove)"
            .into());
    }
    let config = load_config(&args)?;
    let activated = sd.take_listener(
        "grove-garden",
        "garden",
        nix::sys::socket::SockType::Stream,
        "ListenStream=",
    )?;
    let notifier = systemd::Notifier::connect("grove-garden", &sd);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config, activated, notifier))
}

async fn serve(
    config: Config,
    activated: Option<std::os::fd::OwnedFd>,
    notifier: systemd::Notifier,
) -> Result<(), String> {
    // Before the socket exists: a stop as soon as a client can connect
    // must reach the loop below (which removes the socket it made), not
    // the default action that kills grove-garden and leaves its socket.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("SIGINT handler: {e}"))?;
    let ctx = Rc::new(server::Ctx {
        grove: grove::Grove::new(config.grove_socket.clone()),
        streams: RefCell::new(streams::Streams::default()),
    });
    // A socket systemd passed is systemd's (it makes and removes it; under
    // systemd /run/grove is not ours to write).
    let api_socket::ApiSocket {
        listener: unix,
        path: listen,
        ours: remove_on_exit,
    } = api_socket::ApiSocket::open(activated, &config.listen)?;
    let tcp = match config.listen_tcp {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("binding {addr}: {e}"))?,
        ),
        None => None,
    };
    tracing::info!(
        listen = %listen.display(),
        listen_tcp = ?config.listen_tcp,
        grove_socket = %config.grove_socket.display(),
        "serving Garden's API"
    );
    if config.listen_tcp.is_some_and(|a| !a.ip().is_loopback()) {
        tracing::warn!(
            "listening off loopback without authentication (allow_unauthenticated_remote)"
        );
    }
    notifier.notify(&[
        systemd::NotifyState::Ready,
        systemd::NotifyState::Status("serving"),
    ]);
    let open = Rc::new(Cell::new(0usize));
    let max = config.max_connections;
    let accept_unix = {
        let (ctx, open) = (ctx.clone(), open.clone());
        async move {
            loop {
                match unix.accept().await {
                    Ok((stream, _)) => {
                        let (r, w) = stream.into_split();
                        spawn_conn(&ctx, &open, max, Box::new(r), Box::new(w));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    };
    let accept_tcp = {
        let (ctx, open) = (ctx.clone(), open.clone());
        async move {
            let Some(tcp) = tcp else {
                return std::future::pending::<()>().await;
            };
            loop {
                match tcp.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        let (r, w) = stream.into_split();
                        spawn_conn(&ctx, &open, max, Box::new(r), Box::new(w));
                    }
                    Err(e) => accept_failed(e).await,
                }
            }
        }
    };
    tokio::select! {
        _ = accept_unix => {}
        _ = accept_tcp => {}
        _ = term.recv() => tracing::info!("SIGTERM: stopping"),
        _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
    }
    notifier.notify(&[systemd::NotifyState::Stopping]);
    if remove_on_exit {
        let _ = std::fs::remove_file(&listen);
    }
    Ok(())
}

/// Out of fds and the like: pause instead of spinning.
async fn accept_failed(e: std::io::Error) {
    tracing::warn!(error = %e, "accept");
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
}

fn spawn_conn(
    ctx: &Rc<server::Ctx>,
    open: &Rc<Cell<usize>>,
    max: usize,
    r: http::BoxRead,
    w: http::BoxWrite,
) {
    if open.get() >= max {
        tracing::warn!(max, "too many connections; refusing a new one");
        // Answered, not dropped: a Garden client then reports why.
        tokio::task::spawn_local(async move {
            let mut w = w;
            let e = errors::GardenError::unavailable(format!(
                "grove-garden serves at most {max} connections at once (max_connections)"
            ));
            let _ = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                http::write_json(&mut w, e.status, &e.body(), false),
            )
            .await;
            drop(r);
        });
        return;
    }
    open.set(open.get() + 1);
    let (ctx, open) = (ctx.clone(), open.clone());
    tokio::task::spawn_local(async move {
        server::serve(ctx, r, w).await;
        open.set(open.get() - 1);
    });
}
