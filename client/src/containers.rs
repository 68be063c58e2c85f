//! Containers and processes without Cap'n Proto: plain Rust types in, plain
//! Rust types out. Every call is one request to groved (or a few, said
//! where so); errors are [`Error`]s whose [`ErrorCode`] mirrors the API's.
//!
//! ```no_run
//! use grove_client::{Client, Command, ContainerSpec};
//!
//! # async fn demo() -> grove_client::Result<()> {
//! let client = Client::connect("/run/grove/grove.sock".as_ref()).await?;
//! let spec = ContainerSpec {
//!     handle: "web-1".into(),
//!     memory_limit_bytes: Some(256 << 20),
//!     ..ContainerSpec::default()
//! };
//! let container = client.create(&spec).await?;
//! let output = container.exec(&Command::new("echo", &["hello"])).await?;
//! assert_eq!(output.stdout, b"hello\n");
//! client.destroy(container.handle()).await?;
//! # Ok(())
//! # }
//! ```

use crate::{api, channel_sink, fill_text_list, Chunk, Client, Command, Error, NetOutRule, Result};

/// What a new container is made of. Empty and `None` fields take the
/// server's defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's handle; empty: the server makes one up.
    pub handle: String,
    /// A host directory beneath the helper's `rootfs_allow`; empty: the
    /// server's default rootfs (or `image`).
    pub rootfs: String,
    /// An image instead of a rootfs directory: `oci:PATH[:TAG]`,
    /// `docker-archive:PATH` or `docker://HOST/REPO[:TAG]`.
    pub image: String,
    /// `NAME=value` entries every process of the container starts with.
    pub env: Vec<String>,
    /// `(name, value)` properties (see [`Client::list`]).
    pub properties: Vec<(String, String)>,
    /// The container's IPv4 address (`a.b.c.d`), from the server's pool;
    /// empty: a free one.
    pub network: String,
    /// Seconds without a request after which the server destroys the
    /// container; `None`: the server's default.
    pub grace_time_seconds: Option<u64>,
    /// No user namespace (only where the helper's policy allows it).
    pub privileged: bool,
    /// Memory limit in bytes.
    pub memory_limit_bytes: Option<u64>,
    /// Most processes and threads.
    pub pids_max: Option<u64>,
    /// Relative CPU weight (cgroup v1 shares, 2..=262144).
    pub cpu_weight: Option<u64>,
    /// NetOut rules in force from the start (all of them or no container).
    pub net_out: Vec<NetOutRule>,
}

impl ContainerSpec {
    /// Write this spec into the API's `ContainerSpec`.
    pub fn fill(&self, mut spec: api::container_spec::Builder<'_>) {
        spec.set_handle(self.handle.as_str());
        spec.set_rootfs(self.rootfs.as_str());
        if !self.image.is_empty() {
            spec.reborrow().init_image().set_uri(self.image.as_str());
        }
        fill_text_list(spec.reborrow().init_env(self.env.len() as u32), &self.env);
        let mut props = spec
            .reborrow()
            .init_properties(self.properties.len() as u32);
        for (i, (name, value)) in self.properties.iter().enumerate() {
            let mut p = props.reborrow().get(i as u32);
            p.set_name(name.as_str());
            p.set_value(value.as_str());
        }
        spec.set_network(self.network.as_str());
        spec.set_grace_time_seconds(self.grace_time_seconds.unwrap_or(0));
        spec.set_privileged(self.privileged);
        let mut limits = spec.reborrow().init_limits();
        if let Some(bytes) = self.memory_limit_bytes {
            limits.reborrow().init_memory().set_limit_in_bytes(bytes);
        }
        if let Some(max) = self.pids_max {
            limits.reborrow().init_pid().set_max(max);
        }
        if let Some(weight) = self.cpu_weight {
            limits.reborrow().init_cpu().set_weight(weight);
        }
        let mut rules = spec.init_net_out(self.net_out.len() as u32);
        for (i, rule) in self.net_out.iter().enumerate() {
            rule.fill(rules.reborrow().get(i as u32));
        }
    }
}

/// How much the host has for containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capacity {
    /// The host's memory.
    pub memory_bytes: u64,
    /// The depot's size.
    pub disk_bytes: u64,
    /// How many containers the server takes.
    pub max_containers: u64,
}

/// What `info` tells about a container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// "active" or "stopped".
    pub state: String,
    /// Events such as "Out of memory", oldest first.
    pub events: Vec<String>,
    /// The container's address.
    pub container_ip: String,
    /// Its gateway: the host's side of its network.
    pub host_ip: String,
    /// Ids of the processes still running.
    pub process_ids: Vec<String>,
    /// Its properties, as (name, value).
    pub properties: Vec<(String, String)>,
    /// NetIn mappings in force: (host port, container port).
    pub mapped_ports: Vec<(u32, u32)>,
}

/// A finished process's exit status and everything it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The API's exit status: the code (0..=255), or minus the signal
    /// that killed the process (see [`crate::shell_exit_code`]).
    pub status: i32,
    /// Everything it wrote to stdout.
    pub stdout: Vec<u8>,
    /// Everything it wrote to stderr.
    pub stderr: Vec<u8>,
}

/// A signal for [`Process::signal`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// SIGTERM.
    Terminate,
    /// SIGKILL.
    Kill,
    /// SIGINT.
    Interrupt,
    /// SIGHUP.
    Hangup,
    /// SIGQUIT.
    Quit,
    /// SIGUSR1.
    User1,
    /// SIGUSR2.
    User2,
}

impl From<Signal> for api::Signal {
    fn from(s: Signal) -> api::Signal {
        match s {
            Signal::Terminate => api::Signal::Terminate,
            Signal::Kill => api::Signal::Kill,
            Signal::Interrupt => api::Signal::Interrupt,
            Signal::Hangup => api::Signal::Hangup,
            Signal::Quit => api::Signal::Quit,
            Signal::User1 => api::Signal::User1,
            Signal::User2 => api::Signal::User2,
        }
    }
}

/// A command the client could not even encode (an unknown rlimit name).
fn invalid_command(message: String) -> Error {
    Error {
        code: crate::ErrorCode::InvalidSpec.as_str().to_string(),
        message,
    }
}

fn text(t: capnp::Result<capnp::text::Reader<'_>>) -> Result<String> {
    Ok(t?.to_string().map_err(capnp::Error::from)?)
}

fn texts(list: capnp::Result<capnp::text_list::Reader<'_>>) -> Result<Vec<String>> {
    list?.iter().map(text).collect()
}

impl Client {
    /// Create a container.
    pub async fn create(&self, spec: &ContainerSpec) -> Result<Container> {
        let mut request = self.grove.create_request();
        spec.fill(request.get().init_spec());
        let response = request.send().promise.await?;
        let raw = response.get()?.get_container()?;
        Container::from_raw(raw).await
    }

    /// The container with this handle (`containerNotFound` if none).
    pub async fn container(&self, handle: &str) -> Result<Container> {
        let raw = self.lookup(handle).await?;
        Container::from_raw(raw).await
    }

    /// How much the host has for containers.
    pub async fn capacity(&self) -> Result<Capacity> {
        let response = self.grove.capacity_request().send().promise.await?;
        let c = response.get()?.get_capacity()?;
        Ok(Capacity {
            memory_bytes: c.get_memory_in_bytes(),
            disk_bytes: c.get_disk_in_bytes(),
            max_containers: c.get_max_containers(),
        })
    }
}

/// A container on the server. Cheap to clone; it does not keep the
/// container alive (its grace time does, see [`ContainerSpec`]).
#[derive(Clone)]
pub struct Container {
    handle: String,
    raw: api::container::Client,
}

impl Container {
    async fn from_raw(raw: api::container::Client) -> Result<Container> {
        let response = raw.handle_request().send().promise.await?;
        let handle = text(response.get()?.get_handle())?;
        Ok(Container { handle, raw })
    }

    /// The container's handle.
    pub fn handle(&self) -> &str {
        &self.handle
    }

    /// The Cap'n Proto capability, for calls this type does not wrap.
    pub fn raw(&self) -> &api::container::Client {
        &self.raw
    }

    /// The container's state, addresses, processes and properties.
    pub async fn info(&self) -> Result<ContainerInfo> {
        let response = self.raw.info_request().send().promise.await?;
        let i = response.get()?.get_info()?;
        let mut properties = Vec::new();
        for p in i.get_properties()? {
            properties.push((text(p.get_name())?, text(p.get_value())?));
        }
        let mapped_ports = i
            .get_mapped_ports()?
            .iter()
            .map(|m| (m.get_host_port(), m.get_container_port()))
            .collect();
        Ok(ContainerInfo {
            state: text(i.get_state())?,
            events: texts(i.get_events())?,
            container_ip: text(i.get_container_ip())?,
            host_ip: text(i.get_host_ip())?,
            process_ids: texts(i.get_process_ids())?,
            properties,
            mapped_ports,
        })
    }

    /// Start `command` with its output kept for a later attach (none is
    /// streamed here); see [`Container::exec`] to collect it.
    pub async fn run(&self, command: &Command) -> Result<Process> {
        let mut request = self.raw.run_request();
        command
            .fill(request.get().init_spec())
            .map_err(invalid_command)?;
        let raw = request.send().pipeline.get_process();
        Process::from_raw(raw).await
    }

    /// Run `command` to its end and collect its status and output. The
    /// run and the wait travel together (one round trip).
    pub async fn exec(&self, command: &Command) -> Result<Output> {
        let (stdout_sink, mut stdout) = channel_sink();
        let (stderr_sink, mut stderr) = channel_sink();
        let mut request = self.raw.run_request();
        command
            .fill(request.get().init_spec())
            .map_err(invalid_command)?;
        let mut io = request.get().init_io();
        io.set_stdout(stdout_sink);
        io.set_stderr(stderr_sink);
        let process = request.send().pipeline.get_process();
        let status = process
            .wait_request()
            .send()
            .promise
            .await?
            .get()?
            .get_exit_status();
        // groved tells the streams `done` before it answers wait.
        let collect = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Chunk>| {
            let mut data = Vec::new();
            while let Ok(chunk) = rx.try_recv() {
                if let Chunk::Data(d) = chunk {
                    data.extend(d);
                }
            }
            data
        };
        Ok(Output {
            status,
            stdout: collect(&mut stdout),
            stderr: collect(&mut stderr),
        })
    }

    /// Stop every process: SIGTERM, then SIGKILL after 10 s (`kill`: at
    /// once). The container stays; only destroy removes it.
    pub async fn stop(&self, kill: bool) -> Result<()> {
        let mut request = self.raw.stop_request();
        request.get().set_kill(kill);
        request.send().promise.await?;
        Ok(())
    }

    /// Every property, as (name, value).
    pub async fn properties(&self) -> Result<Vec<(String, String)>> {
        let response = self.raw.properties_request().send().promise.await?;
        let mut out = Vec::new();
        for p in response.get()?.get_properties()? {
            out.push((text(p.get_name())?, text(p.get_value())?));
        }
        Ok(out)
    }

    /// One property's value (an error if it is not set).
    pub async fn property(&self, name: &str) -> Result<String> {
        let mut request = self.raw.property_request();
        request.get().set_name(name);
        let response = request.send().promise.await?;
        text(response.get()?.get_value())
    }

    /// Set (or replace) a property.
    pub async fn set_property(&self, name: &str, value: &str) -> Result<()> {
        let mut request = self.raw.set_property_request();
        request.get().set_name(name);
        request.get().set_value(value);
        request.send().promise.await?;
        Ok(())
    }

    /// Remove a property.
    pub async fn remove_property(&self, name: &str) -> Result<()> {
        let mut request = self.raw.remove_property_request();
        request.get().set_name(name);
        request.send().promise.await?;
        Ok(())
    }

    /// Set the grace time (0 = never) and restart its countdown.
    pub async fn set_grace_time(&self, seconds: u64) -> Result<()> {
        let mut request = self.raw.set_grace_time_request();
        request.get().set_grace_time_seconds(seconds);
        request.send().promise.await?;
        Ok(())
    }

    /// Map a host port to a container port (TCP): 0 for the host port
    /// takes one from the server's range, 0 for the container port means
    /// the same as the host port. Answers the (host, container) ports.
    pub async fn net_in(&self, host_port: u32, container_port: u32) -> Result<(u32, u32)> {
        crate::net_in(&self.raw, host_port, container_port).await
    }

    /// Allow traffic out of the container by these rules (all or none).
    pub async fn net_out(&self, rules: &[NetOutRule]) -> Result<()> {
        crate::net_out(&self.raw, rules).await
    }

    /// Extract a tar archive into `path` (created if missing) inside the
    /// container, as `user` (empty: root).
    pub async fn stream_in(&self, path: &str, user: &str, tar: &[u8]) -> Result<()> {
        let mut request = self.raw.stream_in_request();
        request.get().set_path(path);
        request.get().set_user(user);
        let sink = request.send().pipeline.get_sink();
        for chunk in tar.chunks(64 * 1024) {
            let mut write = sink.write_request();
            write.get().set_data(chunk);
            write.send().await?;
        }
        sink.done_request().send().promise.await?;
        Ok(())
    }

    /// A tar archive of `path` inside the container, read as `user`.
    pub async fn stream_out(&self, path: &str, user: &str) -> Result<Vec<u8>> {
        let (sink, mut chunks) = channel_sink();
        let mut request = self.raw.stream_out_request();
        request.get().set_path(path);
        request.get().set_user(user);
        request.get().set_sink(sink);
        request.send().promise.await?;
        let mut tar = Vec::new();
        while let Some(chunk) = chunks.recv().await {
            match chunk {
                Chunk::Data(d) => tar.extend(d),
                Chunk::Done => break,
            }
        }
        Ok(tar)
    }
}

/// A process in a container.
#[derive(Clone)]
pub struct Process {
    id: String,
    raw: api::process::Client,
}

impl Process {
    async fn from_raw(raw: api::process::Client) -> Result<Process> {
        let response = raw.id_request().send().promise.await?;
        let id = text(response.get()?.get_id())?;
        Ok(Process { id, raw })
    }

    /// The process's id (for attach).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The Cap'n Proto capability, for calls this type does not wrap.
    pub fn raw(&self) -> &api::process::Client {
        &self.raw
    }

    /// Wait for the process to end: its exit code, or minus the signal
    /// that killed it.
    pub async fn wait(&self) -> Result<i32> {
        let response = self.raw.wait_request().send().promise.await?;
        Ok(response.get()?.get_exit_status())
    }

    /// Send a signal to the process.
    pub async fn signal(&self, signal: Signal) -> Result<()> {
        let mut request = self.raw.signal_request();
        request.get().set_signal(signal.into());
        request.send().promise.await?;
        Ok(())
    }
}

// Errors from a capnp::NotInSchema (an enum value this client does not
// know) become internal errors.
impl From<capnp::NotInSchema> for Error {
    fn from(e: capnp::NotInSchema) -> Error {
        Error::from(capnp::Error::from(e))
    }
}
