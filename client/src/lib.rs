//! Grove's Rust client library.
//!
//! [`Client`] connects to groved (its unix socket, or TCP with
//! [`remote`]); [`Client::create`] and [`Client::container`] give
//! [`Container`]s, which run [`Command`]s as [`Process`]es, stream files
//! in and out, and set limits, ports, firewall rules and properties — all
//! with plain Rust types and typed errors ([`Error`], [`ErrorCode`]), no
//! Cap'n Proto needed. The generated API is re-exported as [`api`] for
//! what the wrappers do not cover (every wrapper has a `raw()` escape
//! hatch), and [`channel_sink`] / [`writer_sink`] implement the API's
//! `ByteStream` for streaming output.
//!
//! capnp-rpc objects are not `Send`: use the client inside a tokio
//! `LocalSet` (or a current-thread runtime with `LocalSet::block_on`):
//!
//! ```no_run
//! use grove_client::{Client, Command, ContainerSpec, ErrorCode};
//!
//! fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//!     let local = tokio::task::LocalSet::new();
//!     local.block_on(&runtime, async {
//!         let client = Client::connect("/run/grove/grove.sock".as_ref()).await?;
//!         let container = client.create(&ContainerSpec::default()).await?;
//!         let out = container.exec(&Command::new("uname", &["-n"])).await?;
//!         println!("{} says {}", container.handle(), String::from_utf8_lossy(&out.stdout));
//!         match client.container("no-such-handle").await {
//!             Err(e) if e.kind() == ErrorCode::ContainerNotFound => {}
//!             other => panic!("{:?}", other.map(|c| c.handle().to_string())),
//!         }
//!         client.destroy(container.handle()).await?;
//!         Ok(())
//!     })
//! }
//! ```
#![warn(missing_docs)]

/// The API as generated from schema/api.capnp.
pub use grove_schema::api_capnp as api;
pub mod remote;

mod containers;
pub use containers::{Capacity, Container, ContainerInfo, ContainerSpec, Output, Process, Signal};

use capnp_rpc::{rpc_twoparty_capnp, twoparty, RpcSystem};
use futures::AsyncReadExt;
use std::cell::RefCell;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tokio::sync::mpsc;
use tokio_util::compat::TokioAsyncReadCompatExt;

/// Where groved listens unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/grove/grove.sock";

/// The socket to use: the explicit one, else $GROVE_SOCKET, else the default.
pub fn socket_path(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| {
            std::env::var_os("GROVE_SOCKET")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET))
}

/// An error from groved, split into its code (schema/api.capnp `ErrorCode`)
/// and message. Transport failures have the code "disconnected".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// The API's error code as it travelled ("containerNotFound", …); see
    /// [`Error::kind`] for it as a type.
    pub code: String,
    /// What went wrong, naming the field or object concerned.
    pub message: String,
}

/// The API's error codes (schema/api.capnp `ErrorCode`), plus what only a
/// client sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// A bug or an unexpected host failure.
    Internal,
    /// No container has that handle.
    ContainerNotFound,
    /// create: the handle is in use.
    HandleTaken,
    /// No process has that id.
    ProcessNotFound,
    /// run: the path does not name an executable.
    ExecutableNotFound,
    /// A field is malformed; the message names it.
    InvalidSpec,
    /// Max containers, an exhausted address pool or port range, …
    LimitExceeded,
    /// grove-helper's policy forbids the request.
    PolicyRefused,
    /// grove-helper or wshd cannot be reached.
    ServiceUnavailable,
    /// An operation this server does not build.
    NotImplemented,
    /// destroy while a destroy of that handle runs.
    AlreadyDestroying,
    /// The container's state forbids the operation.
    InvalidState,
    /// The connection to groved is gone (client side).
    Disconnected,
    /// A code this client does not know (a newer server).
    Unknown,
}

impl ErrorCode {
    /// The code as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Internal => "internal",
            ErrorCode::ContainerNotFound => "containerNotFound",
            ErrorCode::HandleTaken => "handleTaken",
            ErrorCode::ProcessNotFound => "processNotFound",
            ErrorCode::ExecutableNotFound => "executableNotFound",
            ErrorCode::InvalidSpec => "invalidSpec",
            ErrorCode::LimitExceeded => "limitExceeded",
            ErrorCode::PolicyRefused => "policyRefused",
            ErrorCode::ServiceUnavailable => "serviceUnavailable",
            ErrorCode::NotImplemented => "notImplemented",
            ErrorCode::AlreadyDestroying => "alreadyDestroying",
            ErrorCode::InvalidState => "invalidState",
            ErrorCode::Disconnected => "disconnected",
            ErrorCode::Unknown => "unknown",
        }
    }

    const ALL: [ErrorCode; 13] = [
        ErrorCode::Internal,
        ErrorCode::ContainerNotFound,
        ErrorCode::HandleTaken,
        ErrorCode::ProcessNotFound,
        ErrorCode::ExecutableNotFound,
        ErrorCode::InvalidSpec,
        ErrorCode::LimitExceeded,
        ErrorCode::PolicyRefused,
        ErrorCode::ServiceUnavailable,
        ErrorCode::NotImplemented,
        ErrorCode::AlreadyDestroying,
        ErrorCode::InvalidState,
        ErrorCode::Disconnected,
    ];
}

impl Error {
    /// Whether the error has this code (as the API spells it).
    pub fn is(&self, code: &str) -> bool {
        self.code == code
    }

    /// The code as a type.
    pub fn kind(&self) -> ErrorCode {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.as_str() == self.code)
            .unwrap_or(ErrorCode::Unknown)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.code)
    }
}

impl std::error::Error for Error {}

impl From<capnp::Error> for Error {
    fn from(e: capnp::Error) -> Error {
        let reason = e
            .extra
            .strip_prefix("remote exception: ")
            .unwrap_or(&e.extra);
        if let Some((code, message)) = reason.strip_prefix('[').and_then(|r| r.split_once("] ")) {
            return Error {
                code: code.to_string(),
                message: message.to_string(),
            };
        }
        let code = match e.kind {
            capnp::ErrorKind::Disconnected => "disconnected",
            capnp::ErrorKind::Unimplemented => "notImplemented",
            _ => "internal",
        };
        Error {
            code: code.to_string(),
            message: reason.to_string(),
        }
    }
}

/// A result whose error is groved's (or the connection's).
pub type Result<T> = std::result::Result<T, Error>;

/// A connection to groved. Dropping it closes the connection.
pub struct Client {
    /// The server's bootstrap capability, for calls the wrappers do not
    /// cover.
    pub grove: api::grove::Client,
    disconnector: Option<capnp_rpc::Disconnector<rpc_twoparty_capnp::Side>>,
}

impl Client {
    /// Connect to groved's unix socket. Must be called inside a `LocalSet`.
    pub async fn connect(path: &Path) -> Result<Client> {
        let stream = tokio::net::UnixStream::connect(path)
            .await
            .map_err(|e| Error {
                code: "serviceUnavailable".into(),
                message: format!("cannot connect to groved at {}: {e}", path.display()),
            })?;
        let (reader, writer) = stream.compat().split();
        Ok(Client::over(reader, writer))
    }

    /// Speak the API over any byte stream (a proxy, a test recorder, ...).
    /// Must be called inside a `LocalSet`.
    pub fn over(
        reader: impl futures::AsyncRead + Unpin + 'static,
        writer: impl futures::AsyncWrite + Unpin + 'static,
    ) -> Client {
        let network = twoparty::VatNetwork::new(
            reader,
            writer,
            rpc_twoparty_capnp::Side::Client,
            Default::default(),
        );
        let mut system = RpcSystem::new(Box::new(network), None);
        let grove: api::grove::Client = system.bootstrap(rpc_twoparty_capnp::Side::Server);
        let disconnector = system.get_disconnector();
        tokio::task::spawn_local(system);
        Client {
            grove,
            disconnector: Some(disconnector),
        }
    }

    /// Close the connection and wait until it is closed.
    pub async fn close(mut self) {
        if let Some(d) = self.disconnector.take() {
            let _ = d.await;
        }
    }

    /// Check that groved (and grove-helper behind it) answer.
    pub async fn ping(&self) -> Result<()> {
        self.grove.ping_request().send().promise.await?;
        Ok(())
    }

    /// The raw capability of the container with this handle (see
    /// [`Client::container`] for the wrapped one).
    pub async fn lookup(&self, handle: &str) -> Result<api::container::Client> {
        let mut request = self.grove.lookup_request();
        request.get().set_handle(handle);
        Ok(request.send().promise.await?.get()?.get_container()?)
    }

    /// Destroy a container and everything it owns.
    pub async fn destroy(&self, handle: &str) -> Result<()> {
        let mut request = self.grove.destroy_request();
        request.get().set_handle(handle);
        request.send().promise.await?;
        Ok(())
    }

    /// Handles whose properties include all of `filter`.
    pub async fn list(&self, filter: &[(String, String)]) -> Result<Vec<String>> {
        let mut request = self.grove.list_request();
        let mut list = request.get().init_properties(filter.len() as u32);
        for (i, (k, v)) in filter.iter().enumerate() {
            let mut p = list.reborrow().get(i as u32);
            p.set_name(k);
            p.set_value(v);
        }
        let response = request.send().promise.await?;
        let handles = response.get()?.get_handles()?;
        handles
            .iter()
            .map(|h| Ok(h?.to_string().map_err(capnp::Error::from)?))
            .collect()
    }
}

/// What a process's command looks like, for `Command::fill`.
#[derive(Debug, Clone, Default)]
pub struct Command {
    /// The executable: absolute, or looked up in the process's PATH.
    pub path: String,
    /// argv[1..].
    pub args: Vec<String>,
    /// `NAME=value` entries, after the container's.
    pub env: Vec<String>,
    /// Working directory; empty: the user's home.
    pub dir: String,
    /// A name or `uid[:gid]` inside the container; empty: root.
    pub user: String,
    /// A process id of your choosing; empty: the server makes one up.
    pub id: String,
    /// (name, value), names as in `RLIMIT_NAMES`.
    pub rlimits: Vec<(String, u64)>,
    /// Run on a terminal of (columns, rows).
    pub tty: Option<(u16, u16)>,
}

/// The resource limits a process may be given, by name.
pub const RLIMIT_NAMES: &[&str] = &[
    "as",
    "core",
    "cpu",
    "data",
    "fsize",
    "locks",
    "memlock",
    "msgqueue",
    "nice",
    "nofile",
    "nproc",
    "rss",
    "rtprio",
    "sigpending",
    "stack",
];

/// Set one resource limit by name; an unknown name is an error naming the
/// known ones.
pub fn set_rlimit(
    mut r: api::resource_limits::Builder<'_>,
    name: &str,
    value: u64,
) -> std::result::Result<(), String> {
    match name {
        "as" => (r.set_as(value), r.set_has_as(true)),
        "core" => (r.set_core(value), r.set_has_core(true)),
        "cpu" => (r.set_cpu(value), r.set_has_cpu(true)),
        "data" => (r.set_data(value), r.set_has_data(true)),
        "fsize" => (r.set_fsize(value), r.set_has_fsize(true)),
        "locks" => (r.set_locks(value), r.set_has_locks(true)),
        "memlock" => (r.set_memlock(value), r.set_has_memlock(true)),
        "msgqueue" => (r.set_msgqueue(value), r.set_has_msgqueue(true)),
        "nice" => (r.set_nice(value), r.set_has_nice(true)),
        "nofile" => (r.set_nofile(value), r.set_has_nofile(true)),
        "nproc" => (r.set_nproc(value), r.set_has_nproc(true)),
        "rss" => (r.set_rss(value), r.set_has_rss(true)),
        "rtprio" => (r.set_rtprio(value), r.set_has_rtprio(true)),
        "sigpending" => (r.set_sigpending(value), r.set_has_sigpending(true)),
        "stack" => (r.set_stack(value), r.set_has_stack(true)),
        other => {
            return Err(format!(
                "unknown resource limit {other:?} (known: {})",
                RLIMIT_NAMES.join(", ")
            ))
        }
    };
    Ok(())
}

impl Command {
    /// `path` with `args`; every other field at its default.
    pub fn new(path: &str, args: &[&str]) -> Command {
        Command {
            path: path.into(),
            args: args.iter().map(|a| a.to_string()).collect(),
            ..Command::default()
        }
    }

    /// Write this command into a ProcessSpec; an unknown rlimit name is an
    /// error.
    pub fn fill(
        &self,
        mut spec: api::process_spec::Builder<'_>,
    ) -> std::result::Result<(), String> {
        spec.set_path(&self.path);
        fill_text_list(
            spec.reborrow().init_args(self.args.len() as u32),
            &self.args,
        );
        fill_text_list(spec.reborrow().init_env(self.env.len() as u32), &self.env);
        spec.set_dir(&self.dir);
        spec.set_user(&self.user);
        spec.set_id(&self.id);
        for (name, value) in &self.rlimits {
            let rlimits = spec.reborrow().get_rlimits().map_err(|e| e.to_string())?;
            set_rlimit(rlimits, name, *value)?;
        }
        if let Some((columns, rows)) = self.tty {
            spec.set_has_tty(true);
            let mut size = spec.init_tty().init_window_size();
            size.set_columns(columns);
            size.set_rows(rows);
        }
        Ok(())
    }
}

/// Copy `items` into a Cap'n Proto text list of the same length.
pub fn fill_text_list(mut list: capnp::text_list::Builder<'_>, items: &[String]) {
    for (i, item) in items.iter().enumerate() {
        list.set(i as u32, item);
    }
}

/// Map a host port to a port of the container (TCP). `host_port` 0: the
/// server picks one from its range; `container_port` 0: the same as the
/// host port. Answers the (host, container) ports used.
pub async fn net_in(
    container: &api::container::Client,
    host_port: u32,
    container_port: u32,
) -> Result<(u32, u32)> {
    let mut request = container.net_in_request();
    request.get().set_host_port(host_port);
    request.get().set_container_port(container_port);
    let response = request.send().promise.await?;
    let ports = response.get()?;
    Ok((ports.get_host_port(), ports.get_container_port()))
}

/// What a NetOut rule allows, for `NetOutRule::fill`: traffic of
/// `protocol` to `networks` (empty: every address) on `ports` (empty: every
/// port; tcp and udp only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOutRule {
    /// all, tcp, udp or icmp.
    pub protocol: api::net_out_rule::Protocol,
    /// (start, end) IPv4 addresses; end "" = start alone.
    pub networks: Vec<(String, String)>,
    /// (start, end) ports, inclusive; end 0 = start alone.
    pub ports: Vec<(u16, u16)>,
    /// ICMP (type, code); code `None` = every code. icmp rules only.
    pub icmp: Option<(u8, Option<u8>)>,
    /// Log new connections (tcp and all only).
    pub log: bool,
}

impl NetOutRule {
    /// A rule allowing every address and port of `protocol`.
    pub fn new(protocol: api::net_out_rule::Protocol) -> NetOutRule {
        NetOutRule {
            protocol,
            networks: Vec::new(),
            ports: Vec::new(),
            icmp: None,
            log: false,
        }
    }

    /// Write this rule into the API's `NetOutRule`.
    pub fn fill(&self, mut rule: api::net_out_rule::Builder<'_>) {
        rule.set_protocol(self.protocol);
        let mut networks = rule.reborrow().init_networks(self.networks.len() as u32);
        for (i, (start, end)) in self.networks.iter().enumerate() {
            let mut range = networks.reborrow().get(i as u32);
            range.set_start(start);
            range.set_end(end);
        }
        let mut ports = rule.reborrow().init_ports(self.ports.len() as u32);
        for (i, (start, end)) in self.ports.iter().enumerate() {
            let mut range = ports.reborrow().get(i as u32);
            range.set_start(*start);
            range.set_end(*end);
        }
        if let Some((icmp_type, code)) = self.icmp {
            rule.set_has_icmps(true);
            let mut icmps = rule.reborrow().init_icmps();
            icmps.set_type(icmp_type);
            if let Some(code) = code {
                icmps.set_code(code);
                icmps.set_has_code(true);
            }
        }
        rule.set_log(self.log);
    }
}

/// Allow the container's egress by these rules: all of them or none.
pub async fn net_out(container: &api::container::Client, rules: &[NetOutRule]) -> Result<()> {
    let mut request = container.bulk_net_out_request();
    let mut list = request.get().init_rules(rules.len() as u32);
    for (i, rule) in rules.iter().enumerate() {
        rule.fill(list.reborrow().get(i as u32));
    }
    request.send().promise.await?;
    Ok(())
}

/// What a channel sink reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// Bytes written to the stream.
    Data(Vec<u8>),
    /// The stream ended.
    Done,
}

/// A ByteStream that forwards what it receives to a channel.
pub struct ChannelSink {
    sender: mpsc::UnboundedSender<Chunk>,
}

/// A ByteStream capability and the receiving end of its channel.
pub fn channel_sink() -> (api::byte_stream::Client, mpsc::UnboundedReceiver<Chunk>) {
    let (sender, receiver) = mpsc::unbounded_channel();
    (capnp_rpc::new_client(ChannelSink { sender }), receiver)
}

impl api::byte_stream::Server for ChannelSink {
    async fn write(
        self: Rc<Self>,
        params: api::byte_stream::WriteParams,
    ) -> std::result::Result<(), capnp::Error> {
        let data = params.get()?.get_data()?.to_vec();
        let _ = self.sender.send(Chunk::Data(data));
        Ok(())
    }

    async fn done(
        self: Rc<Self>,
        _: api::byte_stream::DoneParams,
        _: api::byte_stream::DoneResults,
    ) -> std::result::Result<(), capnp::Error> {
        let _ = self.sender.send(Chunk::Done);
        Ok(())
    }
}

/// A ByteStream that copies what it receives to a writer (stdout, stderr)
/// as it arrives, and reports `done` through a oneshot.
pub struct WriterSink<W: Write> {
    writer: RefCell<W>,
    done: RefCell<Option<tokio::sync::oneshot::Sender<()>>>,
}

/// A ByteStream capability copying to `writer`, and a receiver that
/// fires once the stream has ended.
pub fn writer_sink<W: Write + 'static>(
    writer: W,
) -> (api::byte_stream::Client, tokio::sync::oneshot::Receiver<()>) {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let sink = WriterSink {
        writer: RefCell::new(writer),
        done: RefCell::new(Some(sender)),
    };
    (capnp_rpc::new_client(sink), receiver)
}

impl<W: Write + 'static> api::byte_stream::Server for WriterSink<W> {
    async fn write(
        self: Rc<Self>,
        params: api::byte_stream::WriteParams,
    ) -> std::result::Result<(), capnp::Error> {
        let data = params.get()?.get_data()?;
        let mut writer = self.writer.borrow_mut();
        writer
            .write_all(data)
            .and_then(|_| writer.flush())
            .map_err(|e| capnp::Error::failed(format!("writing output: {e}")))
    }

    async fn done(
        self: Rc<Self>,
        _: api::byte_stream::DoneParams,
        _: api::byte_stream::DoneResults,
    ) -> std::result::Result<(), capnp::Error> {
        if let Some(sender) = self.done.borrow_mut().take() {
            let _ = sender.send(());
        }
        Ok(())
    }
}

/// A process's exit status (the API's encoding) as a shell would report it:
/// the exit code, or 128 + the signal that killed it.
pub fn shell_exit_code(status: i32) -> i32 {
    if status >= 0 {
        status
    } else {
        128 + (-status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_split_into_code_and_message() {
        let e = Error::from(capnp::Error::failed(
            "remote exception: [containerNotFound] unknown handle: x".into(),
        ));
        assert_eq!(
            e,
            Error {
                code: "containerNotFound".into(),
                message: "unknown handle: x".into()
            }
        );
        let e = Error::from(capnp::Error::disconnected("Peer disconnected.".into()));
        assert_eq!(e.code, "disconnected");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(shell_exit_code(3), 3);
        assert_eq!(shell_exit_code(-9), 137);
    }

    #[test]
    fn socket_path_prefers_the_flag() {
        assert_eq!(
            socket_path(Some("/x.sock".into())),
            PathBuf::from("/x.sock")
        );
    }
}

#[cfg(test)]
mod error_code_tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_unknown_ones_are_unknown() {
        for code in ErrorCode::ALL {
            let e = Error {
                code: code.as_str().into(),
                message: String::new(),
            };
            assert_eq!(e.kind(), code);
        }
        let e = Error {
            code: "somethingNew".into(),
            message: String::new(),
        };
        assert_eq!(e.kind(), ErrorCode::Unknown);
    }
}
