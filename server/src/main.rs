//! groved: Grove's API server. It runs as the unprivileged `grove` user,
//! serves Cap'n Proto RPC on a unix socket (and, with `listen_tcp`, on TCP
//! with mutual TLS; see remote.rs), asks grove-helper for every
//! privileged step and wshd for every process, and keeps container records
//! on disk. It never makes a privileged system call itself.

// What the three daemons share (systemd, log lines, the API socket):
// crate::systemd and the others below name grove-daemon's.
use grove_daemon::{api_socket, logging, systemd};

mod config;
mod connection;
mod containers;
mod error;
mod helper_client;
mod image_config;
mod images;
mod metrics;
mod metrics_http;
mod process;
mod registry;
mod remote;
mod rpc;
mod sandbox;
mod seqpacket;
mod store;
mod stream;

mod wshd_client;

use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use config::Config;
use futures::AsyncReadExt;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Duration;
use systemd::{Notifier, NotifyState};
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Flow-control window of each ByteStream groved writes to.
const STREAM_WINDOW: usize = 4 << 20;

const USAGE: &str = "usage: groved [--config PATH] [--allow-root]

Serves Grove's Cap'n Proto API. Without --config it reads
/etc/grove/groved.conf, or uses its embedded defaults when that file does
not exist (API socket /run/grove/grove.sock, helper /run/grove/helper.sock,
state in /var/lib/grove/server). Run it as the unprivileged `grove` user.
GROVED_LOG sets what it logs (an EnvFilter: error, warn, info, debug).";

struct Args {
    config: Option<PathBuf>,
    allow_root: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        config: None,
        allow_root: false,
    };
    let mut argv = std::env::args().skip(1);
    while let Some(arg) = argv.next() {
        match arg.as_str() {
            "--config" => args.config = Some(argv.next().ok_or("--config needs a path")?.into()),
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
    logging::init("GROVED_LOG");
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), String> {
    // Before any thread exists: this edits the environment.
    let mut systemd = systemd::capture()?;
    let args = parse_args()?;
    if nix::unistd::geteuid().is_root() && !args.allow_root {
        return Err(
            "refusing to run as root: start groved as the unprivileged `grove` user \
                    (privileged steps belong to grove-helper)"
                .into(),
        );
    }
    let (config, origin) = config::load(
        args.config.as_deref(),
        std::path::Path::new(config::DEFAULT_PATH),
    )?;
    tracing::info!("{origin}");
    // groved holds no capabilities (as root, with --allow-root, it does).
    if !nix::unistd::geteuid().is_root() {
        let status = std::fs::read_to_string("/proc/self/status")
            .map_err(|e| format!("/proc/self/status: {e}"))?;
        sandbox::check_no_capabilities(&status)?;
    }
    let passed = systemd.passed_fds();
    let activated = systemd.take_listener(
        "groved",
        "api",
        nix::sys::socket::SockType::Stream,
        "ListenStream=",
    )?;
    if let Some(fd) = &activated {
        tracing::info!(
            socket = %systemd::bound_path(fd.as_fd()),
            passed,
            "socket-activated"
        );
    }
    // The TCP listener's certificates and key are read now: bad ones stop
    // start-up, and a confined groved could not read them.
    let tls = match &config.tls {
        Some(files) => Some(remote::server_config(files)?),
        None => None,
    };
    // Connected now, before groved confines itself (see systemd.rs).
    let notifier = Notifier::connect("groved", &systemd);
    raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, serve(config, tls, activated, notifier))
}

/// Each process groved relays holds two or three pipe ends until its output
/// ends: raise the soft fd limit to the hard one.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(error = %e, "raising RLIMIT_NOFILE");
            }
        }
    }
}

/// The STATUS= line systemd shows for groved.
fn status(grove: &containers::Grove) -> String {
    let n = grove.handles().len();
    format!("serving, {n} container{}", if n == 1 { "" } else { "s" })
}

async fn reconcile(grove: &Rc<containers::Grove>) {
    if let Err(e) = grove.reconcile().await {
        tracing::warn!(error = %e, "reconciling with grove-helper");
    }
}

/// Once the helper answers (at once when it did at start-up; otherwise
/// reconcile with it first), tell systemd groved is ready, then keep its
/// STATUS= line current. Notifications are no-ops outside systemd.
async fn notify_ready(grove: Rc<containers::Grove>, notifier: Rc<Notifier>, helper_up: bool) {
    if !helper_up {
        while grove.ping_helper().await.is_err() {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        tracing::info!("grove-helper answers");
        reconcile(&grove).await;
    }
    let mut last = status(&grove);
    notifier.notify(&[NotifyState::Ready, NotifyState::Status(&last)]);
    if !notifier.enabled() {
        return;
    }
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let current = status(&grove);
        if current != last {
            notifier.notify(&[NotifyState::Status(&current)]);
            last = current;
        }
    }
}

/// WATCHDOG=1 every `interval` (half of WATCHDOG_USEC), from the event
/// loop itself: a stuck loop misses it and systemd restarts groved.
async fn feed_watchdog(notifier: Rc<Notifier>, interval: Duration) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        notifier.notify(&[NotifyState::Watchdog]);
    }
}

/// The most a client's message may hold, in 8-byte words: 16 MiB (a
/// ByteStream write of a few MiB fits; the capnp default is 64 MiB). A
/// message claiming more ends its connection before groved reads it.
const MAX_MESSAGE_WORDS: usize = 2 * 1024 * 1024;
/// How deeply a client's message may nest (the API's deepest is ~10).
const MAX_NESTING: i32 = 32;

fn client_reader_options() -> capnp::message::ReaderOptions {
    let mut options = capnp::message::ReaderOptions::new();
    options
        .traversal_limit_in_words(Some(MAX_MESSAGE_WORDS))
        .nesting_limit(MAX_NESTING);
    options
}

/// Serve the API to one client connection until it ends, within the
/// per-connection limits of connection.rs; closed at once when
/// `max_connections` are open.
fn serve_rpc<S>(
    stream: S,
    bootstrap: &grove_schema::api_capnp::grove::Client,
    connections: &Rc<connection::Connections>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + 'static,
{
    let Some(slot) = connections.admit() else {
        return;
    };
    let (stream, shared) = connection::meter(stream, connections.max_calls_in_flight());
    let (reader, writer) = stream.compat().split();
    let mut network = twoparty::VatNetwork::new(
        reader,
        writer,
        rpc_twoparty_capnp::Side::Server,
        client_reader_options(),
    );
    // Bytes of process output in flight to one client stream before groved
    // waits for it: enough to keep the socket busy across round trips,
    // small enough to bound memory.
    network.set_window_size(STREAM_WINDOW);
    let network = connection::Guarded::new(network, shared);
    let system = RpcSystem::new(Box::new(network), Some(bootstrap.clone().client));
    tokio::task::spawn_local(async move {
        if let Err(e) = system.await {
            tracing::debug!(error = %e, "client connection ended");
        }
        drop(slot);
    });
}

/// The next connection on the TCP listener; never, without one.
async fn accept_tcp(
    tcp: Option<&remote::Remote>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match tcp {
        Some(tcp) => tcp.accept().await,
        None => std::future::pending().await,
    }
}

async fn serve(
    config: Config,
    tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    activated: Option<OwnedFd>,
    notifier: Notifier,
) -> Result<(), String> {
    // First: a SIGTERM from here on waits for the serve loop, which
    // removes the socket it made. Installed after the bind, a stop right
    // after a client could first connect killed groved there and left its
    // socket behind.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| format!("SIGTERM handler: {e}"))?;
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| format!("SIGINT handler: {e}"))?;
    let listen = config.listen.clone();
    let listen_tcp = config.listen_tcp;
    let connections =
        connection::Connections::new(config.max_connections, config.max_calls_in_flight);
    let grove =
        containers::Grove::open(config).map_err(|e| format!("opening the state dir: {e}"))?;
    let helper_up = match grove.ping_helper().await {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(error = %e, "grove-helper does not answer yet; requests will retry it");
            false
        }
    };
    // Records and the helper's containers must agree before anything else
    // (when the helper is down, `notify_ready` reconciles once it answers).
    if helper_up {
        reconcile(&grove).await;
    }
    // The processes and their unread output outlive groved: take them over.
    grove.restore_processes().await;
    grove.watch_all().await;
    // The TCP listener, like the unix socket, only now (it is never
    // socket-activated), and before the unix socket: once that one
    // answers, both do.
    let tcp = match listen_tcp {
        Some(address) => {
            let tcp = remote::Remote::bind(address, tls)?;
            let bound = tcp.local_addr().unwrap_or(address);
            if tcp.tls() {
                tracing::info!("groved listening on TCP at {bound}, mutual TLS");
            } else {
                tracing::warn!(
                    "groved listening on TCP at {bound} without TLS (loopback): \
                     every local user can use the API"
                );
            }
            Some(tcp)
        }
        None => None,
    };
    // The metrics endpoint, off unless configured, bound now as well
    // (no bind once confined).
    let metrics = match &grove.config.metrics_listen {
        Some(at) => {
            let listener = metrics_http::Listener::bind(at)?;
            tracing::info!("metrics on {}", listener.describe());
            Some(listener)
        }
        None => None,
    };
    let metrics_socket = metrics
        .as_ref()
        .and_then(|m| m.socket_path())
        .map(|p| p.to_path_buf());
    // A socket systemd passed is systemd's to make and remove (clients
    // queue on it meanwhile). One groved makes itself is bound only now, so
    // that a client able to connect meets a reconciled groved.
    let api_socket::ApiSocket {
        listener,
        path: listen,
        ours: remove_on_exit,
    } = api_socket::ApiSocket::open(activated, &listen)?;
    tracing::info!(socket = %listen.display(), "groved listening");
    let bootstrap: grove_schema::api_capnp::grove::Client =
        capnp_rpc::new_client(rpc::grove::GroveServer {
            grove: grove.clone(),
        });

    // Up: from here on groved only serves. Confine it to what serving needs.
    if grove.config.confine {
        let report = sandbox::Sandbox::for_config(&grove.config)
            .apply()
            .map_err(|e| format!("confining groved: {e}"))?;
        if report.landlock_full {
            tracing::info!(%report, "groved confined");
        } else {
            tracing::warn!(%report, "groved confined, Landlock only in part");
        }
    } else {
        tracing::warn!("confine = off: groved runs without Landlock and seccomp");
    }
    let notifier = Rc::new(notifier);
    // Always: it also reconciles once a helper that was down answers.
    tokio::task::spawn_local(notify_ready(grove.clone(), notifier.clone(), helper_up));
    // A helper that restarts later is reconciled with once it answers.
    tokio::task::spawn_local(grove.clone().watch_helper());
    if let Some(listener) = metrics {
        let grove = grove.clone();
        tokio::task::spawn_local(metrics_http::serve(listener, move || grove.metrics_text()));
    }
    tokio::task::spawn_local(grove.clone().image_gc_loop());
    if notifier.enabled() {
        if let Some(interval) = notifier.watchdog_interval() {
            tokio::task::spawn_local(feed_watchdog(notifier.clone(), interval));
        }
    }
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _)) => serve_rpc(stream, &bootstrap, &connections),
                    Err(e) => {
                        tracing::warn!(error = %e, "accept");
                        // Out of fds, say: not a busy loop meanwhile.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            accepted = accept_tcp(tcp.as_ref()) => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept on TCP");
                        // Out of fds, say: not a busy loop meanwhile.
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let bootstrap = bootstrap.clone();
                let connections = connections.clone();
                tcp.as_ref().expect("accepted on it").establish(stream, peer, move |connection| {
                    match connection {
                        remote::Connection::Tls(tls) => serve_rpc(tls, &bootstrap, &connections),
                        remote::Connection::Plain(plain) => {
                            serve_rpc(plain, &bootstrap, &connections)
                        }
                    }
                });
            }
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        }
    }
    notifier.notify(&[NotifyState::Stopping]);
    if remove_on_exit {
        let _ = std::fs::remove_file(&listen);
    }
    if let Some(path) = metrics_socket {
        let _ = std::fs::remove_file(path);
    }
    tracing::info!("groved stopped; containers keep running");
    Ok(())
}
