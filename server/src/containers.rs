//! The containers groved knows: their records, their lifecycle, and the
//! multi-step operations on them (create, destroy, stop, run), each of which
//! completes or is rolled back.

use crate::config::Config;
use crate::error::{ApiError, ApiResult, Code};
use crate::helper_client::HelperClient;
use crate::images::service::Pull;
use crate::metrics::{self, Metrics, Outcome};
use crate::process::{ProcessEntry, ProcessFds, Sinks};
use crate::store::{Record, Store};
use crate::wshd_client;
use grove_schema::fault::crash_point;
use grove_schema::helper::{self, HostPath, RootfsSource};
use grove_schema::net::{NetOutRule, NetworkInfo, PortMapping};
use grove_schema::wshd::{self, Rlimit, SpawnSpec, WindowSize};
use grove_schema::Handle;
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::Notify;
use tokio::time::Instant;

/// The event an OOM kill adds to a container's info (Garden's wording).
pub const OUT_OF_MEMORY: &str = "Out of memory";
/// The event of a container whose kernel objects were found gone when
/// groved started (see `Grove::reconcile`).
pub const LOST: &str = "Lost: its kernel objects are gone (the host restarted?)";
/// The event of a container whose PID 1, wshd, exited (killed from the
/// host): every process in it went with it, and nothing can run in it.
pub const WSHD_EXITED: &str = "Stopped: its init process (wshd) exited";
/// The same, when the kernel's OOM killer chose wshd.
pub const WSHD_OOM_KILLED: &str = "Stopped: its init process (wshd) was killed: out of memory";

/// An OOM kill counted in a container this long before its wshd's exit is
/// taken as the cause. (The kernel counts a kill before its victim dies,
/// and no interface names the victim: a kill of another process just
/// before a kill of wshd from the host would be taken for wshd's.)
const OOM_CAUSE_WINDOW: Duration = Duration::from_secs(2);

/// How long stop(kill=false) waits after SIGTERM before SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// After a grace-time destroy fails, the first wait before it is tried
/// again; each further failure doubles it, up to `EXPIRY_RETRY_MAX`.
const EXPIRY_RETRY: Duration = Duration::from_secs(1);
const EXPIRY_RETRY_MAX: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Creating,
    Active,
    Stopping,
    Stopped,
    Destroying,
}

pub struct Container {
    pub handle: Handle,
    pub(crate) record: RefCell<Record>,
    phase: Cell<Phase>,
    processes: RefCell<BTreeMap<String, Rc<ProcessEntry>>>,
    pub wshd_socket: PathBuf,
    idle: Idle,
    /// A task waits on wshd's pidfd (see `Grove::watch_exit`).
    exit_watched: Cell<bool>,
    /// When the OOM watch last recorded new kills.
    last_oom: Cell<Option<Instant>>,
}

/// A container's grace-time countdown (Garden's semantics): it runs while
/// no request is about the container and pauses while any is, a run or
/// attach session (a client attached to a process's output) included. When
/// the last one ends it starts again from the whole grace time.
struct Idle {
    /// Requests and sessions under way (`Busy` guards).
    busy: Cell<u32>,
    /// When the countdown last (re)started: the last request's end, the
    /// create, setGraceTime, or groved's start.
    since: Cell<Instant>,
    /// After a failed expiry: not before then.
    retry_at: Cell<Option<Instant>>,
    /// The timer task is running (one per container).
    armed: Cell<bool>,
    /// Wakes the timer task: a request began or ended, the grace time
    /// changed, the container went.
    changed: Notify,
}

impl Idle {
    fn new() -> Idle {
        Idle {
            busy: Cell::new(0),
            since: Cell::new(Instant::now()),
            retry_at: Cell::new(None),
            armed: Cell::new(false),
            changed: Notify::new(),
        }
    }

    fn restart(&self) {
        self.since.set(Instant::now());
        self.retry_at.set(None);
        self.changed.notify_one();
    }
}

/// A request or session about a container, under way: the grace-time
/// countdown is paused while one exists, and restarts when the last ends.
pub struct Busy {
    container: Rc<Container>,
}

impl Deref for Busy {
    type Target = Rc<Container>;
    fn deref(&self) -> &Rc<Container> {
        &self.container
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let idle = &self.container.idle;
        idle.busy.set(idle.busy.get().saturating_sub(1));
        if idle.busy.get() == 0 {
            idle.since.set(Instant::now());
        }
        idle.changed.notify_one();
    }
}

pub struct CreateSpec {
    /// Empty: generate one.
    pub handle: String,
    pub rootfs: String,
    /// An image URI (spec.image.uri); at most one of rootfs and image.
    pub image: String,
    /// For registry pulls (spec.image.username/password).
    pub login: Option<grove_schema::auth_file::Login>,
    pub env: Vec<String>,
    pub properties: BTreeMap<String, String>,
    /// In force before the first process runs.
    pub limits: helper::Limits,
    /// Told how a registry pull advances.
    pub pull_progress: Option<grove_schema::api_capnp::pull_progress::Client>,
    pub network: NetSpec,
    pub isolation: Isolation,
    /// 0: groved's `default_grace_time`.
    pub grace_time_seconds: u64,
}

/// How a new container is set apart, beyond what every container gets.
#[derive(Debug, Clone, Default)]
pub struct Isolation {
    /// No user namespace (the helper's policy must allow it).
    pub privileged: bool,
    /// spec.bindMounts.
    pub binds: Vec<helper::BindMount>,
}

/// A new container's network as its spec asks for it.
#[derive(Debug, Clone, Default)]
pub struct NetSpec {
    /// `None`: the helper picks a free address from its pool.
    pub ip: Option<Ipv4Addr>,
    /// Mapped one by one once the container exists (spec.netIn).
    pub net_in: Vec<PortMapping>,
    /// Added in one request once the container exists (spec.netOut).
    pub net_out: Vec<NetOutRule>,
}

pub struct RunSpec {
    pub id: String,
    pub path: String,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub dir: String,
    pub user: String,
    pub open_stdin: bool,
    pub tty: Option<WindowSize>,
    pub rlimits: Vec<(Rlimit, u64)>,
    pub sinks: Sinks,
}

pub struct Grove {
    pub config: Config,
    pub(crate) helper: HelperClient,
    /// The image cache (images/).
    pub images: Rc<crate::images::Images>,
    store: Store,
    containers: RefCell<BTreeMap<String, Rc<Container>>>,
    /// One reconcile at a time: two, each with its own view of which
    /// containers are orphans, could destroy a container re-created
    /// between them.
    reconciling: tokio::sync::Mutex<()>,
    /// What `metrics_listen` serves (counted here, at the code paths).
    pub metrics: Metrics,
}

impl Grove {
    /// Load the records kept on disk. Their processes are not restored (the
    /// restart issue does that); the containers themselves are listed again.
    pub fn open(config: Config) -> std::io::Result<Rc<Grove>> {
        let store = Store::open(&config.state_dir)?;
        clean_downloads(&config.state_dir.join("downloads"));
        let images = crate::images::Images::open(&config).map_err(std::io::Error::other)?;
        let (mut records, problems) = store.load_all()?;
        for problem in problems {
            tracing::warn!(%problem, "unreadable container record skipped");
        }
        // Records of an earlier boot name containers that did not survive
        // it: each is destroyed (by the first reconcile, as an interrupted
        // destroy: the helper destroys its own at start-up too).
        if let Some(then) = store.earlier_boot()? {
            for record in &mut records {
                tracing::warn!(handle = %record.handle, boot = %then, "container of an earlier boot: destroying it");
                record.destroying = true;
                record.state = "stopped".into();
                store.save(record)?;
            }
        }
        store.note_boot()?;
        let mut containers = BTreeMap::new();
        for record in records {
            let Ok(handle) = Handle::new(record.handle.clone()) else {
                tracing::warn!(handle = %record.handle, "record with an invalid handle skipped");
                continue;
            };
            let phase = if record.state == "stopped" {
                Phase::Stopped
            } else {
                Phase::Active
            };
            let container = Container::new(handle, record, phase, &config);
            containers.insert(container.handle.to_string(), Rc::new(container));
        }
        tracing::info!(containers = containers.len(), "container records loaded");
        Ok(Rc::new(Grove {
            helper: HelperClient::new(config.helper_socket.clone(), config.helper_queue_limit),
            images: Rc::new(images),
            config,
            store,
            containers: RefCell::new(containers),
            reconciling: tokio::sync::Mutex::new(()),
            metrics: Metrics::new(),
        }))
    }

    pub async fn ping_helper(&self) -> ApiResult<()> {
        match self.helper.call(&helper::Request::Ping).await? {
            helper::Response::Pong { .. } => Ok(()),
            other => Err(ApiError::internal(format!(
                "unexpected answer to ping: {other:?}"
            ))),
        }
    }

    /// A container as the API sees it: one being created or destroyed is
    /// not there (yet, or any more), so that no call meets it half-made.
    pub fn get(&self, handle: &str) -> ApiResult<Rc<Container>> {
        let container = self.containers.borrow().get(handle).cloned();
        match container {
            Some(c) if !matches!(c.phase(), Phase::Creating | Phase::Destroying) => Ok(c),
            _ => Err(ApiError::not_found(handle)),
        }
    }

    /// Every container groved holds, being created or destroyed too.
    pub fn all_containers(&self) -> Vec<Rc<Container>> {
        self.containers.borrow().values().cloned().collect()
    }

    /// Every container the API sees (see `get`).
    pub fn handles(&self) -> Vec<Rc<Container>> {
        self.containers
            .borrow()
            .values()
            .filter(|c| !matches!(c.phase(), Phase::Creating | Phase::Destroying))
            .cloned()
            .collect()
    }

    /// Create a container. Runs to completion (or rollback) even if the
    /// client goes away meanwhile.
    pub async fn create(self: &Rc<Self>, spec: CreateSpec) -> ApiResult<Rc<Container>> {
        let this = self.clone();
        let started = std::time::Instant::now();
        let created = tokio::task::spawn_local(async move { this.create_inner(spec).await })
            .await
            .map_err(ApiError::internal)
            .and_then(|created| created);
        self.metrics
            .creates
            .observe(outcome_of(&created), started.elapsed());
        created
    }

    async fn create_inner(self: Rc<Self>, spec: CreateSpec) -> ApiResult<Rc<Container>> {
        let handle = if spec.handle.is_empty() {
            generate_handle()
        } else {
            Handle::new(spec.handle).map_err(|e| ApiError::invalid("spec.handle", e))?
        };
        if !spec.rootfs.is_empty() && !spec.image.is_empty() {
            return Err(ApiError::invalid(
                "spec.image",
                "give either rootfs or image.uri, not both",
            ));
        }
        let (field, source) = if spec.image.is_empty() {
            ("spec.rootfs", spec.rootfs.clone())
        } else {
            ("spec.image.uri", spec.image.clone())
        };
        let rootfs = if let Some(rest) = source.strip_prefix("docker:") {
            let reference =
                grove_schema::image_ref::parse(rest).map_err(|e| ApiError::invalid(field, e))?;
            Source::Pull(reference)
        } else {
            if spec.login.is_some() {
                return Err(ApiError::invalid(
                    "spec.image.username",
                    "credentials apply only to docker:// images",
                ));
            }
            Source::Ready(parse_rootfs(field, &source)?)
        };
        for (i, entry) in spec.env.iter().enumerate() {
            check_env_entry(entry).map_err(|e| ApiError::invalid(&format!("spec.env[{i}]"), e))?;
        }
        check_net_out_size("spec.netOut", &handle, &spec.network.net_out)?;
        let record = Record {
            handle: handle.to_string(),
            rootfs: source.clone(),
            env: spec.env,
            properties: spec.properties,
            created_at: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
            state: "active".into(),
            wshd_pid: 0,
            events: Vec::new(),
            oom_kills_seen: 0,
            image_env: Vec::new(),
            image_dir: String::new(),
            image_user: String::new(),
            network: None,
            grace_time_seconds: if spec.grace_time_seconds == 0 {
                self.config.default_grace_time
            } else {
                spec.grace_time_seconds
            },
            destroying: false,
            image_digest: String::new(),
        };
        // Reserve the handle first, so that a concurrent create of the same
        // handle fails at once.
        let container = {
            let mut containers = self.containers.borrow_mut();
            if containers.contains_key(handle.as_str()) {
                return Err(ApiError::new(
                    Code::HandleTaken,
                    format!("handle already exists: {handle}"),
                ));
            }
            if containers.len() as u64 >= self.config.max_containers {
                return Err(ApiError::new(
                    Code::LimitExceeded,
                    format!(
                        "the server holds its maximum of {} containers",
                        self.config.max_containers
                    ),
                ));
            }
            let container = Rc::new(Container::new(
                handle.clone(),
                record,
                Phase::Creating,
                &self.config,
            ));
            containers.insert(handle.to_string(), container.clone());
            container
        };
        crash_point("groved.create.reserved");
        let built = match rootfs {
            Source::Ready(rootfs) => {
                self.build(
                    &container,
                    rootfs,
                    spec.limits,
                    &spec.network,
                    &spec.isolation,
                )
                .await
            }
            Source::Pull(reference) => {
                let pull = Pull {
                    uri: &source,
                    reference,
                    login: spec.login,
                    progress: spec.pull_progress,
                };
                self.pull_and_build(
                    &container,
                    pull,
                    spec.limits,
                    &spec.network,
                    &spec.isolation,
                )
                .await
            }
        };
        match built {
            Ok(()) => {
                container.phase.set(Phase::Active);
                tracing::info!(%handle, "container created");
                self.arm_grace_timer(&container);
                self.watch_exit(&container).await;
                self.watch_oom(&container).await;
                Ok(container)
            }
            Err(e) => {
                self.containers.borrow_mut().remove(handle.as_str());
                tracing::warn!(%handle, error = %e, "create failed");
                Err(e)
            }
        }
    }

    pub(crate) async fn build(
        &self,
        container: &Container,
        rootfs: RootfsSource,
        limits: helper::Limits,
        net: &NetSpec,
        isolation: &Isolation,
    ) -> ApiResult<()> {
        let request = helper::Request::CreateContainer {
            handle: container.handle.clone(),
            rootfs,
            limits,
            ip: net.ip,
            privileged: isolation.privileged,
            binds: isolation.binds.clone(),
        };
        let (wshd_pid, defaults, network) = match self.helper.call(&request).await {
            Ok(helper::Response::Created {
                wshd_pid,
                defaults,
                network,
            }) => (wshd_pid, defaults, network),
            Ok(other) => {
                self.rollback(&container.handle).await;
                return Err(ApiError::internal(format!(
                    "unexpected answer to create: {other:?}"
                )));
            }
            // The request may have reached the helper before the connection
            // broke: make sure no container is left that groved does not know.
            Err(e)
                if matches!(e.code, Code::ServiceUnavailable | Code::Internal)
                    && !crate::helper_client::never_sent(&e) =>
            {
                self.rollback(&container.handle).await;
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        crash_point("groved.create.helper");
        {
            let mut record = container.record.borrow_mut();
            record.wshd_pid = wshd_pid;
            record.image_env = defaults.env;
            record.image_dir = defaults.working_dir;
            record.image_user = defaults.user;
            record.network = Some(network);
        }
        // Nothing half-made: a container whose network set-up failed goes.
        if let Err(e) = self.set_up_network(container, network, net).await {
            self.rollback(&container.handle).await;
            return Err(e);
        }
        let saved = self.store.save(&container.record.borrow());
        if let Err(e) = saved {
            self.rollback(&container.handle).await;
            return Err(ApiError::internal(format!(
                "saving the container record: {e}"
            )));
        }
        crash_point("groved.create.saved");
        Ok(())
    }

    /// Create a container from a registry image, through the image cache
    /// (images/service.rs): pulled only when the cache lacks it.
    async fn pull_and_build(
        self: &Rc<Self>,
        container: &Container,
        pull: Pull<'_>,
        limits: helper::Limits,
        net: &NetSpec,
        isolation: &Isolation,
    ) -> ApiResult<()> {
        tracing::info!(handle = %container.handle, image = pull.uri, "creating from a registry image");
        self.create_from_registry(container, pull, limits, net, isolation)
            .await
    }

    /// What follows the helper's create: /etc/hosts and /etc/resolv.conf
    /// written into the container (as root, through wshd), then the spec's
    /// NetIn mappings and NetOut rules.
    async fn set_up_network(
        &self,
        container: &Container,
        network: NetworkInfo,
        net: &NetSpec,
    ) -> ApiResult<()> {
        let archive = etc_files(
            container.handle.as_str(),
            network.ip,
            &self.config.dns_servers(),
        )
        .map_err(|e| ApiError::internal(format!("building /etc/hosts and resolv.conf: {e}")))?;
        crate::stream::put_archive(container, "/etc", &archive)
            .await
            .map_err(|e| {
                ApiError::new(
                    e.code,
                    format!("writing /etc/hosts and /etc/resolv.conf: {}", e.message),
                )
            })?;
        for (i, mapping) in net.net_in.iter().enumerate() {
            self.helper_net_in(&container.handle, *mapping)
                .await
                .map_err(|e| ApiError::new(e.code, format!("spec.netIn[{i}]: {}", e.message)))?;
        }
        if !net.net_out.is_empty() {
            self.helper_net_out(&container.handle, net.net_out.clone())
                .await
                .map_err(|e| ApiError::new(e.code, format!("spec.netOut: {}", e.message)))?;
        }
        Ok(())
    }

    /// Map a host port to a container port; 0s are chosen by the helper.
    /// Answers the ports used.
    pub async fn net_in(
        &self,
        container: &Container,
        host_port: u16,
        container_port: u16,
    ) -> ApiResult<PortMapping> {
        self.require_running(container)?;
        let mapping = PortMapping {
            host_port,
            container_port,
        };
        self.helper_net_in(&container.handle, mapping).await
    }

    /// Allow egress: every rule or none.
    pub async fn net_out(&self, container: &Container, rules: Vec<NetOutRule>) -> ApiResult<()> {
        self.require_running(container)?;
        if rules.is_empty() {
            return Ok(());
        }
        check_net_out_size("rules", &container.handle, &rules)?;
        self.helper_net_out(&container.handle, rules).await
    }

    /// The container's network as the helper holds it, and its NetIn
    /// mappings.
    pub async fn network(
        &self,
        container: &Container,
    ) -> ApiResult<(NetworkInfo, Vec<PortMapping>)> {
        let request = helper::Request::GetNetwork {
            handle: container.handle.clone(),
        };
        let answer = self.helper.call(&request).await;
        // A destroy that began meanwhile: what the caller would report of
        // the container (its state, mappings) is already half gone.
        if container.phase() == Phase::Destroying {
            return Err(ApiError::not_found(container.handle.as_str()));
        }
        let answer = match answer {
            // A lost container (see `reconcile`): what the record says, no
            // mappings (its rules went with it).
            Err(e) if e.code == Code::ContainerNotFound => {
                return container.network().map(|n| (n, Vec::new())).ok_or(e);
            }
            other => other?,
        };
        match answer {
            helper::Response::Network { info, net_in, .. } => {
                Ok((container.network().unwrap_or(info), net_in))
            }
            other => Err(ApiError::internal(format!(
                "unexpected answer to get network: {other:?}"
            ))),
        }
    }

    async fn helper_net_in(&self, handle: &Handle, mapping: PortMapping) -> ApiResult<PortMapping> {
        let request = helper::Request::NetIn {
            handle: handle.clone(),
            host_port: mapping.host_port,
            container_port: mapping.container_port,
        };
        match self.helper.call(&request).await? {
            helper::Response::NetIn(used) => {
                tracing::info!(%handle, host_port = used.host_port, container_port = used.container_port, "net in");
                Ok(used)
            }
            other => Err(ApiError::internal(format!(
                "unexpected answer to net in: {other:?}"
            ))),
        }
    }

    async fn helper_net_out(&self, handle: &Handle, rules: Vec<NetOutRule>) -> ApiResult<()> {
        let count = rules.len();
        let request = helper::Request::NetOut {
            handle: handle.clone(),
            rules,
        };
        match self.helper.call(&request).await? {
            helper::Response::NetOutAdded => {
                tracing::info!(%handle, rules = count, "net out");
                Ok(())
            }
            other => Err(ApiError::internal(format!(
                "unexpected answer to net out: {other:?}"
            ))),
        }
    }

    async fn rollback(&self, handle: &Handle) {
        let request = helper::Request::DestroyContainer {
            handle: handle.clone(),
        };
        if let Err(e) = self.helper.call(&request).await {
            tracing::error!(%handle, error = %e, "rollback of a failed create failed");
        }
    }

    pub async fn destroy(self: &Rc<Self>, handle: &str) -> ApiResult<()> {
        let this = self.clone();
        let handle = handle.to_string();
        let started = std::time::Instant::now();
        let destroyed = tokio::task::spawn_local(async move { this.destroy_inner(&handle).await })
            .await
            .map_err(ApiError::internal)
            .and_then(|destroyed| destroyed);
        self.metrics
            .destroys
            .observe(outcome_of(&destroyed), started.elapsed());
        destroyed
    }

    async fn destroy_inner(&self, handle: &str) -> ApiResult<()> {
        let container = self
            .containers
            .borrow()
            .get(handle)
            .filter(|c| c.phase() != Phase::Creating)
            .cloned()
            .ok_or_else(|| ApiError::not_found(handle))?;
        let before = container.phase();
        if before == Phase::Destroying {
            return Err(ApiError::new(
                Code::AlreadyDestroying,
                format!("container {handle} is already being destroyed"),
            ));
        }
        container.phase.set(Phase::Destroying);
        // The intent first: a destroy cut short from here on (groved
        // killed, the helper gone) is finished by the next reconcile. Not
        // a condition: a full disk must not stop a destroy, which frees.
        if !container.record.borrow().destroying {
            container.record.borrow_mut().destroying = true;
            if let Err(e) = self.save(&container) {
                tracing::warn!(%handle, error = %e, "could not record the destroy's intent; destroying anyway");
            }
        }
        crash_point("groved.destroy.marked");
        let request = helper::Request::DestroyContainer {
            handle: container.handle.clone(),
        };
        match self.helper.call(&request).await {
            Ok(_) => crash_point("groved.destroy.helper"),
            // The helper has no such container: its kernel objects are gone.
            Err(e) if e.code == Code::ContainerNotFound => {
                tracing::warn!(%handle, "the helper did not know the container; dropping the record")
            }
            Err(e) => {
                // The helper answered that it could not: the client hears
                // so and decides. Only a destroy cut short (no answer) is
                // left for a reconcile to finish.
                if e.code != Code::ServiceUnavailable {
                    container.record.borrow_mut().destroying = false;
                    if let Err(e) = self.save(&container) {
                        tracing::warn!(%handle, error = %e, "clearing the destroy's intent");
                    }
                }
                // A stop that was under way has been overtaken: its processes
                // are at least as dead as a finished stop would leave them.
                container.phase.set(if before == Phase::Stopping {
                    Phase::Stopped
                } else {
                    before
                });
                container.idle.changed.notify_one(); // its timer resumes
                return Err(e);
            }
        }
        self.forget(&container)
    }

    /// Stop every process of the container. Runs to completion even if the
    /// client goes away meanwhile.
    pub async fn stop(self: &Rc<Self>, container: &Rc<Container>, kill: bool) -> ApiResult<()> {
        let (this, target) = (self.clone(), container.clone());
        tokio::task::spawn_local(async move { this.stop_inner(&target, kill).await })
            .await
            .map_err(ApiError::internal)?
            .map_err(|e| container.overtaken(e))
    }

    async fn stop_inner(&self, container: &Rc<Container>, kill: bool) -> ApiResult<()> {
        match container.phase() {
            Phase::Active | Phase::Stopped => {}
            Phase::Stopping => {
                return Err(ApiError::new(
                    Code::InvalidState,
                    format!("container {} is stopping", container.handle),
                ))
            }
            _ => return Err(ApiError::not_found(container.handle.as_str())),
        }
        container.phase.set(Phase::Stopping);
        let result = self.stop_processes(container, kill).await;
        if container.phase() != Phase::Stopping {
            // A destroy took over meanwhile; it decides what is left.
            return result;
        }
        container.phase.set(if result.is_ok() {
            Phase::Stopped
        } else {
            Phase::Active
        });
        if result.is_ok() {
            container.record.borrow_mut().state = "stopped".into();
            self.store
                .save(&container.record.borrow())
                .map_err(|e| ApiError::internal(format!("saving the record: {e}")))?;
        }
        result
    }

    async fn stop_processes(&self, container: &Container, kill: bool) -> ApiResult<()> {
        let signal_all = |signal: i32| async move {
            wshd_client::call(&container.wshd_socket, &wshd::Request::SignalAll { signal }).await
        };
        if !kill {
            signal_all(libc::SIGTERM).await?;
            let deadline = tokio::time::Instant::now() + STOP_GRACE;
            while container.has_running_processes() && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        signal_all(libc::SIGKILL).await?;
        Ok(())
    }

    /// Start a process. Runs to completion even if the client goes away
    /// meanwhile, so a spawned process is never left untracked.
    pub async fn run(
        self: &Rc<Self>,
        container: &Rc<Container>,
        spec: RunSpec,
    ) -> ApiResult<Rc<ProcessEntry>> {
        let (this, container) = (self.clone(), container.clone());
        tokio::task::spawn_local(async move { this.run_inner(&container, spec).await })
            .await
            .map_err(ApiError::internal)?
    }

    async fn run_inner(
        &self,
        container: &Rc<Container>,
        spec: RunSpec,
    ) -> ApiResult<Rc<ProcessEntry>> {
        match container.phase() {
            Phase::Active => {}
            Phase::Stopped | Phase::Stopping => {
                return Err(ApiError::new(
                    Code::InvalidState,
                    format!("container {} is stopped", container.handle),
                ))
            }
            _ => return Err(ApiError::not_found(container.handle.as_str())),
        }
        if spec.path.is_empty() {
            return Err(ApiError::invalid("spec.path", "empty"));
        }
        let id = if spec.id.is_empty() {
            generate_process_id()
        } else {
            spec.id
        };
        if id.len() > wshd::MAX_PROCESS_ID || id.contains('/') || id.chars().any(|c| c.is_control())
        {
            return Err(ApiError::invalid(
                "spec.id",
                format!("{id:?} must be 1 to 128 characters, without '/' or control characters"),
            ));
        }
        if container.processes.borrow().contains_key(&id) {
            return Err(ApiError::invalid(
                "spec.id",
                format!("process id {id} is already in use"),
            ));
        }
        // The image's Env, then the container's env, then the process's:
        // a later entry for a name replaces an earlier one.
        let (mut env, image_dir, image_user) = {
            let r = container.record.borrow();
            let mut env = r.image_env.clone();
            env.extend(r.env.iter().cloned());
            (env, r.image_dir.clone(), r.image_user.clone())
        };
        for (i, entry) in spec.env.iter().enumerate() {
            check_env_entry(entry).map_err(|e| ApiError::invalid(&format!("spec.env[{i}]"), e))?;
        }
        env.extend(spec.env);
        let env = merge_env(env);
        let tty = spec.tty.is_some();
        let request = wshd::Request::Spawn(SpawnSpec {
            id: id.clone(),
            path: spec.path,
            args: spec.args,
            env,
            dir: Some(spec.dir)
                .filter(|d| !d.is_empty())
                .or(Some(image_dir).filter(|d| !d.is_empty())),
            user: Some(spec.user)
                .filter(|u| !u.is_empty())
                .or(Some(image_user).filter(|u| !u.is_empty())),
            open_stdin: spec.open_stdin,
            tty: spec.tty,
            rlimits: spec.rlimits,
        });
        let (response, fds) = match wshd_client::call(&container.wshd_socket, &request).await {
            Ok(answer) => answer,
            Err(e) => {
                let e = container.overtaken(e);
                if e.code == Code::ServiceUnavailable && self.wshd_exited(container).await {
                    let why = container.init_death().unwrap_or(WSHD_EXITED);
                    return Err(ApiError::new(
                        Code::InvalidState,
                        format!("container {} is stopped: {why}", container.handle),
                    ));
                }
                // A destroy may have begun while the helper was asked (the
                // soak saw wshd's reset reach a run just before the phase
                // changed): then it overtook the run too.
                return Err(container.overtaken(e));
            }
        };
        crash_point("groved.run.spawned");
        let wshd::Response::Spawned { pid } = response else {
            return Err(ApiError::internal(format!(
                "unexpected answer to spawn: {response:?}"
            )));
        };
        let started = ProcessFds::from_wshd(fds, tty, spec.open_stdin).and_then(|fds| {
            ProcessEntry::start(
                id.clone(),
                container.wshd_socket.clone(),
                tty,
                fds,
                None,
                spec.sinks,
            )
        });
        let entry = match started {
            Ok(entry) => entry,
            Err(e) => {
                // Do not leave a process nobody tracks.
                let kill = wshd::Request::Signal {
                    id: id.clone(),
                    signal: libc::SIGKILL,
                };
                let _ = wshd_client::call(&container.wshd_socket, &kill).await;
                return Err(e);
            }
        };
        tracing::info!(handle = %container.handle, process = %id, pid, tty, "process started");
        self.metrics.process_started();
        container.adopt(entry.clone());
        crash_point("groved.run.adopted");
        Ok(entry)
    }

    /// Attach a client's streams to a process, running or finished.
    pub fn attach(
        &self,
        container: &Container,
        id: &str,
        sinks: Sinks,
    ) -> ApiResult<Rc<ProcessEntry>> {
        let process = container.process(id)?;
        process.attach(sinks);
        Ok(process)
    }

    /// After a restart: take over again, from wshd, the processes of every
    /// container (running ones and finished ones not yet released), with the
    /// output they wrote meanwhile still in their pipes; then re-arm every
    /// container's grace-time countdown, from now.
    pub async fn restore_processes(self: &Rc<Self>) {
        for container in self.handles() {
            if let Err(e) = self.restore_container_processes(&container).await {
                tracing::warn!(handle = %container.handle, error = %e, "processes not restored");
            }
        }
        self.arm_grace_timers();
    }

    /// Start the grace-time countdown of every container groved holds, from
    /// now: a deadline that passed while groved was down does not destroy a
    /// container at once. (Idempotent: a container's timer starts once.)
    pub fn arm_grace_timers(self: &Rc<Self>) {
        for container in self.handles() {
            self.arm_grace_timer(&container);
        }
    }

    /// The container's grace-time timer: a task that destroys it, the way
    /// a client's destroy does, once no request has touched it for its
    /// grace time; a destroy that fails is tried again later. It ends when
    /// the container goes.
    fn arm_grace_timer(self: &Rc<Self>, container: &Rc<Container>) {
        if container.idle.armed.replace(true) {
            return;
        }
        container.idle.restart();
        let (grove, container) = (Rc::downgrade(self), container.clone());
        tokio::task::spawn_local(async move {
            let mut backoff = EXPIRY_RETRY;
            loop {
                let changed = container.idle.changed.notified();
                tokio::pin!(changed);
                changed.as_mut().enable();
                let held = grove.upgrade().is_some_and(|g| g.holds(&container));
                if !held {
                    return;
                }
                let Some(deadline) = container.idle_deadline() else {
                    changed.await; // paused, or no grace time
                    continue;
                };
                tokio::select! {
                    _ = &mut changed => continue,
                    _ = tokio::time::sleep_until(deadline) => {}
                }
                let Some(this) = grove.upgrade() else {
                    return;
                };
                if !this.holds(&container)
                    || container.idle_deadline().is_none_or(|d| d > Instant::now())
                {
                    continue;
                }
                let handle = container.handle.to_string();
                let grace = container.grace_time_seconds();
                tracing::info!(%handle, grace_time_seconds = grace, "grace time expired: destroying the container");
                match this.destroy(&handle).await {
                    Ok(()) => return,
                    Err(e) if e.code == Code::ContainerNotFound => return,
                    Err(e) => {
                        tracing::error!(%handle, error = %e, retry_in_seconds = backoff.as_secs(), "destroying an expired container failed; will retry");
                        container.idle.retry_at.set(Some(Instant::now() + backoff));
                        backoff = (backoff * 2).min(EXPIRY_RETRY_MAX);
                    }
                }
            }
        });
    }

    /// After a start: compare groved's records with the containers the
    /// helper holds. A record whose container the helper does not know
    /// (its kernel objects are gone; records of an earlier boot are destroyed
    /// instead, see `open`) is kept, marked
    /// with a `LOST` event and logged, so clients see it and can destroy
    /// it; a container the helper holds that no record names (a create a
    /// previous groved did not finish) is destroyed and logged.
    pub async fn reconcile(self: &Rc<Self>) -> ApiResult<()> {
        let _one_at_a_time = self.reconciling.lock().await;
        let listed = match self.helper.call(&helper::Request::ListContainers).await? {
            helper::Response::Containers(list) => list,
            other => {
                return Err(ApiError::internal(format!(
                    "unexpected answer to list containers: {other:?}"
                )))
            }
        };
        let known: BTreeMap<String, helper::ContainerState> = listed
            .iter()
            .map(|c| (c.handle.to_string(), c.state.clone()))
            .collect();
        for container in self.handles() {
            let destroying = container.record.borrow().destroying;
            if let Some(state) = known.get(container.handle.as_str()) {
                // (A destroy cut short is finished below.)
                if *state == helper::ContainerState::Stopped && !destroying {
                    self.mark_wshd_exited(&container, false);
                }
                continue;
            }
            if destroying {
                // A destroy cut short after the helper had finished it.
                tracing::info!(handle = %container.handle, "finishing an interrupted destroy: the helper has no such container");
                if let Err(e) = self.forget(&container) {
                    tracing::error!(handle = %container.handle, error = %e, "finishing an interrupted destroy");
                }
                continue;
            }
            tracing::warn!(handle = %container.handle, "grove-helper has no such container: its kernel objects are gone; record kept and marked");
            let marked = {
                let mut record = container.record.borrow_mut();
                let new = !record.events.iter().any(|e| e == LOST);
                if new {
                    record.events.push(LOST.to_string());
                }
                new
            };
            if marked {
                if let Err(e) = self.save(&container) {
                    tracing::error!(handle = %container.handle, error = %e, "saving the lost mark");
                }
            }
        }
        // Every handle groved holds, those being created included: a
        // reconcile that runs once a late helper answers may meet a create
        // already under way, whose container is not an orphan.
        let recorded: std::collections::BTreeSet<String> =
            self.containers.borrow().keys().cloned().collect();
        for orphan in listed
            .iter()
            .filter(|c| !recorded.contains(c.handle.as_str()))
        {
            // A create of the same handle may have begun meanwhile (after
            // an earlier orphan's destroy): that one is no orphan.
            if self
                .containers
                .borrow()
                .contains_key(orphan.handle.as_str())
            {
                continue;
            }
            tracing::warn!(handle = %orphan.handle, "grove-helper holds a container groved has no record of: destroying it");
            let request = helper::Request::DestroyContainer {
                handle: orphan.handle.clone(),
            };
            if let Err(e) = self.helper.call(&request).await {
                tracing::error!(handle = %orphan.handle, error = %e, "destroying an unrecorded container");
            }
        }
        // Destroys cut short before the helper finished them.
        for container in self.handles() {
            if container.record.borrow().destroying {
                tracing::info!(handle = %container.handle, "finishing an interrupted destroy");
                if let Err(e) = self.destroy_inner(container.handle.as_str()).await {
                    tracing::error!(handle = %container.handle, error = %e, "finishing an interrupted destroy");
                }
            }
        }
        // Exit watches the helper could not give while it was away (or
        // before it first answered).
        for container in self.handles() {
            self.watch_exit(&container).await;
        }
        Ok(())
    }

    /// After the helper's connection broke: once it answers again (a
    /// restarted helper has recovered its containers from its depot),
    /// reconcile, so that a create it was cut off in is rolled back and a
    /// destroy it was cut off in is finished, without waiting for a client.
    pub async fn watch_helper(self: Rc<Self>) {
        loop {
            self.helper.lost.notified().await;
            let mut pause = Duration::from_millis(50);
            while self.ping_helper().await.is_err() {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
            tracing::info!("grove-helper answers again: reconciling");
            while let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciling with grove-helper; trying again");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(2));
            }
        }
    }

    /// Whether the helper says this container's wshd has exited (then it is
    /// marked so, see `mark_wshd_exited`): asked when wshd does not answer.
    async fn wshd_exited(&self, container: &Container) -> bool {
        let Ok(helper::Response::Containers(list)) =
            self.helper.call(&helper::Request::ListContainers).await
        else {
            return false;
        };
        let exited = list
            .iter()
            .any(|c| c.handle == container.handle && c.state == helper::ContainerState::Stopped);
        if exited {
            self.mark_wshd_exited(container, false);
        }
        exited
    }

    /// Learn of wshd's death the moment it happens (pushed, not polled):
    /// the helper hands over a pidfd of wshd, which polls readable once
    /// wshd has exited; then the container is marked stopped and every
    /// wait on its processes ends with the reason. Armed once per container:
    /// at create, at start-up, and by each reconcile (the helper answers
    /// again).
    pub async fn watch_exit(self: &Rc<Self>, container: &Rc<Container>) {
        if container.exit_watched.replace(true) || container.phase() == Phase::Destroying {
            return;
        }
        let request = helper::Request::WatchExit {
            handle: container.handle.clone(),
        };
        let fd = match self.helper.call_with_fds(&request).await {
            Ok((helper::Response::ExitWatch, mut fds)) if fds.len() == 1 => fds.remove(0),
            // Not running in the helper's eyes: wshd is gone already.
            Err(e) if e.code == Code::InvalidState => {
                self.wshd_exited(container).await;
                return;
            }
            other => {
                let error = match other {
                    Ok((answer, _)) => format!("unexpected answer: {answer:?}"),
                    Err(e) => e.to_string(),
                };
                tracing::warn!(handle = %container.handle, %error, "no exit watch (armed again when the helper answers again)");
                container.exit_watched.set(false);
                return;
            }
        };
        let (this, weak) = (Rc::downgrade(self), Rc::downgrade(container));
        tokio::task::spawn_local(async move {
            // SAFETY: the AsyncFd owns the pidfd for as long as it is registered.
            let interest = tokio::io::Interest::READABLE;
            let Ok(pidfd) =
                (unsafe { tokio::io::unix::AsyncFd::register_with_interest(fd, interest) })
            else {
                return;
            };
            let _ = pidfd.readable().await;
            let (Some(this), Some(container)) = (this.upgrade(), weak.upgrade()) else {
                return;
            };
            // A destroy killed it: nothing to tell.
            if container.phase() == Phase::Destroying || !this.holds(&container) {
                return;
            }
            // The kernel counts an OOM kill before its victim dies: one look
            // now sees a kill of wshd the OOM watch has not recorded yet.
            this.record_oom_kills(&container, 1).await;
            let oom = container
                .last_oom
                .get()
                .is_some_and(|at| at.elapsed() <= OOM_CAUSE_WINDOW);
            this.mark_wshd_exited(&container, oom);
        });
    }

    /// The container's wshd (its PID 1) exited, and every process with it
    /// (`oom`: killed by the OOM killer): it is stopped for good, with an
    /// event that says why, and every wait on its processes ends with the
    /// reason; destroy is all that is left to do with it.
    fn mark_wshd_exited(&self, container: &Container, oom: bool) {
        if matches!(container.phase(), Phase::Active | Phase::Stopping) {
            container.phase.set(Phase::Stopped);
        }
        let (event, why) = if oom {
            (
                WSHD_OOM_KILLED,
                "the container's init process (wshd) was killed: out of memory; the container is stopped",
            )
        } else {
            (
                WSHD_EXITED,
                "the container's init process (wshd) exited or was killed; the container is stopped",
            )
        };
        for process in container.processes.borrow().values() {
            process.mark_init_died(why);
        }
        let changed = {
            let mut record = container.record.borrow_mut();
            let new = !record
                .events
                .iter()
                .any(|e| e == WSHD_EXITED || e == WSHD_OOM_KILLED);
            if new {
                record.events.push(event.to_string());
                record.state = "stopped".into();
                tracing::warn!(handle = %container.handle, oom, "its wshd exited: container stopped");
            }
            new
        };
        if changed {
            if let Err(e) = self.save(container) {
                tracing::error!(handle = %container.handle, error = %e, "saving the stopped state");
            }
        }
    }

    /// Drop a container whose kernel objects are gone: its record, its
    /// entry, its processes.
    fn forget(&self, container: &Rc<Container>) -> ApiResult<()> {
        let handle = container.handle.as_str();
        // Whatever still holds it (a stop under way) sees it destroyed: a
        // container leaves groved's table only in this phase, which is
        // what `Container::overtaken` relies on.
        container.phase.set(Phase::Destroying);
        for process in container.processes.borrow().values() {
            process.mark_lost("the container was destroyed");
        }
        self.containers.borrow_mut().remove(handle);
        container.idle.changed.notify_one(); // its timer ends
        let image = container.record.borrow().image_digest.clone();
        self.store
            .remove(handle)
            .map_err(|e| ApiError::internal(format!("removing the record of {handle}: {e}")))?;
        tracing::info!(%handle, "container destroyed");
        self.image_released(&image);
        Ok(())
    }

    /// Whether this very container is one groved holds (not destroyed).
    fn holds(&self, container: &Container) -> bool {
        self.containers
            .borrow()
            .get(container.handle.as_str())
            .is_some_and(|c| std::ptr::eq(c.as_ref(), container))
    }

    /// Set a container's grace time (0 = never) and restart its countdown.
    pub fn set_grace_time(&self, container: &Container, seconds: u64) -> ApiResult<()> {
        let previous = std::mem::replace(
            &mut container.record.borrow_mut().grace_time_seconds,
            seconds,
        );
        if let Err(e) = self.save(container) {
            container.record.borrow_mut().grace_time_seconds = previous;
            return Err(e);
        }
        tracing::info!(handle = %container.handle, grace_time_seconds = seconds, "grace time set");
        container.idle.restart();
        Ok(())
    }

    async fn restore_container_processes(&self, container: &Rc<Container>) -> ApiResult<()> {
        let (response, _) = wshd_client::call(&container.wshd_socket, &wshd::Request::List).await?;
        let wshd::Response::Processes(summaries) = response else {
            return Err(ApiError::internal(format!(
                "unexpected answer to list: {response:?}"
            )));
        };
        for summary in summaries {
            // One process that cannot be taken over must not cost the others.
            match self.restore_process(container, &summary.id).await {
                Ok(entry) => container.adopt(entry),
                Err(e) => {
                    tracing::warn!(handle = %container.handle, process = %summary.id, error = %e, "not restored")
                }
            }
        }
        Ok(())
    }

    async fn restore_process(
        &self,
        container: &Container,
        id: &str,
    ) -> ApiResult<Rc<ProcessEntry>> {
        let request = wshd::Request::Reattach { id: id.to_string() };
        let (response, fds) = wshd_client::call(&container.wshd_socket, &request).await?;
        let wshd::Response::Attached {
            tty, stdin, exit, ..
        } = response
        else {
            return Err(ApiError::internal(format!(
                "unexpected answer to reattach: {response:?}"
            )));
        };
        let fds = ProcessFds::from_wshd(fds, tty, stdin)?;
        let sinks = Sinks {
            stdout: None,
            stderr: None,
            backlog_only: false,
        };
        let entry = ProcessEntry::start(
            id.to_string(),
            container.wshd_socket.clone(),
            tty,
            fds,
            exit,
            sinks,
        )?;
        tracing::info!(handle = %container.handle, process = %id, ?exit, "process restored");
        Ok(entry)
    }

    /// Change some limits of a running container (all or nothing: the
    /// helper restores what it changed if any write fails).
    pub async fn set_limits(&self, container: &Container, limits: helper::Limits) -> ApiResult<()> {
        self.require_running(container)?;
        let request = helper::Request::SetLimits {
            handle: container.handle.clone(),
            limits,
        };
        match self.helper.call(&request).await? {
            helper::Response::LimitsSet => Ok(()),
            other => Err(ApiError::internal(format!(
                "unexpected answer to set limits: {other:?}"
            ))),
        }
    }

    /// The limits in force, read back from the kernel.
    pub async fn limits(&self, container: &Container) -> ApiResult<helper::Limits> {
        let request = helper::Request::GetLimits {
            handle: container.handle.clone(),
        };
        match self.helper.call(&request).await? {
            helper::Response::Limits(limits) => Ok(limits),
            other => Err(ApiError::internal(format!(
                "unexpected answer to get limits: {other:?}"
            ))),
        }
    }

    pub async fn stats(&self, container: &Container) -> ApiResult<helper::Stats> {
        let request = helper::Request::GetStats {
            handle: container.handle.clone(),
        };
        match self.helper.call(&request).await? {
            helper::Response::Stats(stats) => Ok(stats),
            other => Err(ApiError::internal(format!(
                "unexpected answer to get stats: {other:?}"
            ))),
        }
    }

    fn require_running(&self, container: &Container) -> ApiResult<()> {
        match container.phase() {
            Phase::Active | Phase::Stopped | Phase::Stopping => Ok(()),
            _ => Err(ApiError::not_found(container.handle.as_str())),
        }
    }

    /// Watch every container for its wshd's exit and for OOM kills (at
    /// start-up).
    pub async fn watch_all(self: &Rc<Self>) {
        for container in self.handles() {
            self.watch_exit(&container).await;
            self.watch_oom(&container).await;
        }
    }

    /// Turn the kernel's OOM kills in the container into the event "Out of
    /// memory", persisted with the container. The helper hands over an fd
    /// that wakes on an OOM kill; the count in the stats says how many.
    pub async fn watch_oom(self: &Rc<Self>, container: &Rc<Container>) {
        let request = helper::Request::WatchOom {
            handle: container.handle.clone(),
        };
        let fd = match self.helper.call_with_fds(&request).await {
            Ok((helper::Response::OomWatch, mut fds)) if fds.len() == 1 => fds.remove(0),
            Ok((other, _)) => {
                tracing::warn!(handle = %container.handle, ?other, "no OOM watch");
                return;
            }
            Err(e) => {
                tracing::warn!(handle = %container.handle, error = %e, "no OOM watch");
                return;
            }
        };
        // Never block the runtime on a spurious wake-up.
        if let Ok(flags) = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFL) {
            let flags =
                nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
            let _ = nix::fcntl::fcntl(fd.as_raw_fd(), nix::fcntl::FcntlArg::F_SETFL(flags));
        }
        let (this, weak) = (Rc::downgrade(self), Rc::downgrade(container));
        tokio::task::spawn_local(async move {
            // SAFETY: the AsyncFd owns the fd for as long as it is registered.
            let Ok(watch) = (unsafe { tokio::io::unix::AsyncFd::register(fd) }) else {
                return;
            };
            // First catch up on kills that happened while nobody watched
            // (one look), then look after every wake-up (patiently).
            let mut looks = 1;
            loop {
                {
                    let (Some(this), Some(container)) = (this.upgrade(), weak.upgrade()) else {
                        return;
                    };
                    if container.phase() == Phase::Destroying {
                        return;
                    }
                    this.record_oom_kills(&container, looks).await;
                }
                let Ok(mut guard) = watch.readable().await else {
                    return;
                };
                // Drain an eventfd's counter (v1); a memory.events file (v2)
                // is re-read through the stats instead.
                let mut counter = [0u8; 8];
                let _ = nix::unistd::read(guard.get_inner().as_raw_fd(), &mut counter);
                guard.clear_ready();
                looks = 20;
            }
        });
    }

    /// Turn new OOM kills into the event. The notification comes when the
    /// cgroup runs out of memory, a moment before the kernel has chosen and
    /// counted its victim: look again briefly before concluding nothing died.
    async fn record_oom_kills(&self, container: &Container, looks: u32) {
        for look in 0..looks {
            if look > 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            let Ok(stats) = self.stats(container).await else {
                return;
            };
            if stats.oom_kills > container.record.borrow().oom_kills_seen {
                self.add_oom_event(container, stats.oom_kills);
                return;
            }
        }
    }

    fn add_oom_event(&self, container: &Container, kills: u64) {
        {
            let mut record = container.record.borrow_mut();
            self.metrics
                .oom_killed(kills.saturating_sub(record.oom_kills_seen));
            record.oom_kills_seen = kills;
            container.last_oom.set(Some(Instant::now()));
            if !record.events.iter().any(|e| e == OUT_OF_MEMORY) {
                record.events.push(OUT_OF_MEMORY.to_string());
            }
        }
        tracing::warn!(handle = %container.handle, kills, "out of memory");
        if let Err(e) = self.save(container) {
            tracing::error!(handle = %container.handle, error = %e, "saving the OOM event");
        }
    }

    /// The text a metrics scrape answers (metrics.rs).
    pub fn metrics_text(&self) -> String {
        let containers = self.containers.borrow();
        let mut by_phase = [
            ("creating", 0u64),
            ("active", 0),
            ("stopping", 0),
            ("stopped", 0),
            ("destroying", 0),
        ];
        let (mut running, mut exited) = (0u64, 0u64);
        for container in containers.values() {
            let index = match container.phase() {
                Phase::Creating => 0,
                Phase::Active => 1,
                Phase::Stopping => 2,
                Phase::Stopped => 3,
                Phase::Destroying => 4,
            };
            by_phase[index].1 += 1;
            for process in container.processes.borrow().values() {
                if process.is_running() {
                    running += 1;
                } else {
                    exited += 1;
                }
            }
        }
        let gauges = metrics::Gauges {
            containers: by_phase.to_vec(),
            processes_running: running,
            processes_exited: exited,
            helper_in_flight: self.helper.in_flight() as u64,
            helper_queue_limit: self.config.helper_queue_limit as u64,
            pull_bytes: crate::registry::pulled_bytes(),
        };
        metrics::render(&self.metrics, &gauges)
    }

    pub fn save(&self, container: &Container) -> ApiResult<()> {
        // A container destroyed meanwhile (by another task) has no record
        // to bring back.
        if !self.holds(container) {
            return Ok(());
        }
        self.store.save(&container.record.borrow()).map_err(|e| {
            ApiError::internal(format!("saving the record of {}: {e}", container.handle))
        })
    }
}

impl Container {
    /// `e` from this container's wshd, as the client should hear it: a
    /// destroy that overtook the call (it killed wshd under it) makes it
    /// containerNotFound. A destroyed container stays `Destroying` (see
    /// `Grove::forget`), so the phase alone tells.
    pub fn overtaken(&self, e: ApiError) -> ApiError {
        if e.code == Code::ServiceUnavailable && self.phase() == Phase::Destroying {
            ApiError::not_found(self.handle.as_str())
        } else {
            e
        }
    }

    fn new(handle: Handle, record: Record, phase: Phase, config: &Config) -> Container {
        let wshd_socket = config.wshd_socket_dir.join(format!("{handle}.sock"));
        Container {
            handle,
            record: RefCell::new(record),
            phase: Cell::new(phase),
            processes: RefCell::new(BTreeMap::new()),
            wshd_socket,
            idle: Idle::new(),
            exit_watched: Cell::new(false),
            last_oom: Cell::new(None),
        }
    }

    /// A request or session about the container begins: its grace-time
    /// countdown pauses until the returned guard (and every other) drops.
    pub fn touch(self: &Rc<Self>) -> Busy {
        self.idle.busy.set(self.idle.busy.get() + 1);
        self.idle.changed.notify_one();
        Busy {
            container: self.clone(),
        }
    }

    /// Seconds without a request before groved destroys it (0 = never).
    pub fn grace_time_seconds(&self) -> u64 {
        self.record.borrow().grace_time_seconds
    }

    /// When the countdown runs out, unless a request comes first: `None`
    /// while a request is under way, with no grace time, or while the
    /// container is being destroyed.
    fn idle_deadline(&self) -> Option<Instant> {
        let grace = self.grace_time_seconds();
        if grace == 0
            || self.idle.busy.get() > 0
            || matches!(self.phase(), Phase::Creating | Phase::Destroying)
        {
            return None;
        }
        // A grace time too long for the clock never runs out.
        let deadline = self
            .idle
            .since
            .get()
            .checked_add(Duration::from_secs(grace))?;
        Some(match self.idle.retry_at.get() {
            Some(retry) if retry > deadline => retry,
            _ => deadline,
        })
    }

    pub fn phase(&self) -> Phase {
        self.phase.get()
    }

    /// The API's state name.
    pub fn state_name(&self) -> &'static str {
        match self.phase() {
            Phase::Stopped | Phase::Stopping => "stopped",
            _ => "active",
        }
    }

    /// Track a process, and forget it once it is released.
    fn adopt(self: &Rc<Self>, entry: Rc<ProcessEntry>) {
        let id = entry.id.clone();
        self.processes
            .borrow_mut()
            .insert(id.clone(), entry.clone());
        let weak = Rc::downgrade(self);
        tokio::task::spawn_local(async move {
            entry.released().await;
            if let Some(container) = weak.upgrade() {
                let mut processes = container.processes.borrow_mut();
                if processes.get(&id).is_some_and(|p| Rc::ptr_eq(p, &entry)) {
                    processes.remove(&id);
                }
            }
        });
    }

    pub fn process(&self, id: &str) -> ApiResult<Rc<ProcessEntry>> {
        self.processes
            .borrow()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::new(Code::ProcessNotFound, format!("unknown process: {id}")))
    }

    pub fn running_process_ids(&self) -> Vec<String> {
        self.processes
            .borrow()
            .values()
            .filter(|p| p.is_running())
            .map(|p| p.id.clone())
            .collect()
    }

    fn has_running_processes(&self) -> bool {
        self.processes.borrow().values().any(|p| p.is_running())
    }

    pub fn events(&self) -> Vec<String> {
        self.record.borrow().events.clone()
    }

    /// Why its wshd is gone, if it is (the event that says so).
    fn init_death(&self) -> Option<&'static str> {
        let record = self.record.borrow();
        [WSHD_OOM_KILLED, WSHD_EXITED]
            .into_iter()
            .find(|d| record.events.iter().any(|e| e == d))
    }

    /// Seconds since the container was created.
    pub fn age_seconds(&self) -> f64 {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        (now - self.record.borrow().created_at as f64).max(0.0)
    }

    pub fn properties(&self) -> BTreeMap<String, String> {
        self.record.borrow().properties.clone()
    }

    /// The address the helper gave the container (`None` for a record from
    /// before networking).
    pub fn network(&self) -> Option<NetworkInfo> {
        self.record.borrow().network
    }

    pub fn set_property(&self, name: String, value: String) {
        self.record.borrow_mut().properties.insert(name, value);
    }

    pub fn remove_property(&self, name: &str) -> Option<String> {
        self.record.borrow_mut().properties.remove(name)
    }
}

/// Keep one entry per name: the last one given, at the first one's place.
fn merge_env(entries: Vec<String>) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(entries.len());
    let mut at: BTreeMap<String, usize> = BTreeMap::new();
    for e in entries {
        let name = e.split_once('=').map_or(e.as_str(), |(n, _)| n).to_string();
        match at.get(&name) {
            Some(&i) => out[i] = e,
            None => {
                at.insert(name, out.len());
                out.push(e);
            }
        }
    }
    out
}

/// What a create starts from: a source the helper takes as it is, or a
/// registry image to pull first.
enum Source {
    Ready(RootfsSource),
    Pull(grove_schema::image_ref::Reference),
}

/// A rootfs or image source: "" (the default rootfs), an absolute host
/// directory, `oci:PATH[:TAG]` (tag "latest" when absent), or
/// `docker-archive:PATH`. (`docker://` is handled by `registry`.)
fn parse_rootfs(field: &str, source: &str) -> ApiResult<RootfsSource> {
    if source.is_empty() {
        return Ok(RootfsSource::Default);
    }
    let path = |p: &str| HostPath::new(p).map_err(|e| ApiError::invalid(field, e));
    if source.starts_with('/') {
        return Ok(RootfsSource::HostDir(path(source)?));
    }
    let Some((scheme, rest)) = source.split_once(':') else {
        return Err(ApiError::invalid(
            field,
            format!("{source:?} is neither an absolute path nor SCHEME:... (oci:, docker-archive:, docker://)"),
        ));
    };
    match scheme {
        "oci" => {
            // The tag follows the last ':' when what follows has no '/'.
            let (dir, tag) = match rest.rsplit_once(':') {
                Some((d, t)) if !t.contains('/') => (d, t),
                _ => (rest, "latest"),
            };
            let tag = helper::ImageTag::new(tag).map_err(|e| ApiError::invalid(field, e))?;
            Ok(RootfsSource::OciLayout {
                dir: path(dir)?,
                tag,
            })
        }
        "docker-archive" => Ok(RootfsSource::DockerArchive { path: path(rest)? }),
        other => Err(ApiError::invalid(
            field,
            format!(
                "unknown scheme {other:?} (known: oci:PATH[:TAG], docker-archive:PATH, docker://)"
            ),
        )),
    }
}

/// NetOut rules travel in one helper datagram (all or nothing): refuse,
/// before anything happens, rules too large to fit in one.
fn check_net_out_size(field: &str, handle: &Handle, rules: &[NetOutRule]) -> ApiResult<()> {
    if rules.is_empty() {
        return Ok(());
    }
    let request = helper::Request::NetOut {
        handle: handle.clone(),
        rules: rules.to_vec(),
    };
    let size = helper::encode_request(&request).len();
    if size > helper::MAX_DATAGRAM {
        return Err(ApiError::invalid(
            field,
            format!(
                "these {} rules take {size} bytes, more than the {} one request may hold; add them in smaller groups",
                rules.len(),
                helper::MAX_DATAGRAM
            ),
        ));
    }
    Ok(())
}

/// A tar of `hosts` and `resolv.conf` (root's, mode 0644) for the
/// container's /etc: the handle resolves to the container's address; the
/// nameservers are groved's `dns_servers`.
fn etc_files(handle: &str, ip: Ipv4Addr, dns: &[Ipv4Addr]) -> std::io::Result<Vec<u8>> {
    let hosts = format!("127.0.0.1 localhost\n::1 localhost\n{ip} {handle}\n");
    let resolv: String = dns.iter().map(|s| format!("nameserver {s}\n")).collect();
    let mtime = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut builder = tar::Builder::new(Vec::new());
    for (name, content) in [("hosts", hosts), ("resolv.conf", resolv)] {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(content.len() as u64);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(mtime);
        builder.append_data(&mut header, name, content.as_bytes())?;
    }
    builder.into_inner()
}

/// An answer's `result` label in the metrics.
fn outcome_of<T>(answer: &ApiResult<T>) -> Outcome {
    match answer {
        Ok(_) => Outcome::Ok,
        Err(_) => Outcome::Error,
    }
}

fn check_env_entry(entry: &str) -> Result<(), String> {
    match entry.split_once('=') {
        Some((name, _)) if !name.is_empty() && !entry.contains('\0') => Ok(()),
        _ => Err(format!("{entry:?} is not NAME=value")),
    }
}

fn random_hex() -> String {
    format!("{:016x}", rand::random::<u64>())
}

fn generate_handle() -> Handle {
    Handle::new(random_hex()).expect("hex digits form a valid handle")
}

fn generate_process_id() -> String {
    random_hex()
}

/// Remove the image layouts an earlier groved left in the downloads dir.
fn clean_downloads(downloads: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(downloads) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = std::fs::remove_dir_all(&path) {
            tracing::warn!(path = %path.display(), error = %e, "removing a stale download");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oversized_rule_sets_are_refused_before_the_helper_sees_them() {
        use grove_schema::net::{IpRange, PortRange, Protocol};
        let handle = Handle::new("h").unwrap();
        let rule = |n: usize| {
            let ip = Ipv4Addr::new(10, 0, 0, 1);
            NetOutRule::new(
                Protocol::Tcp,
                vec![IpRange::new(ip, ip).unwrap(); n],
                vec![PortRange::new(1000, 2000).unwrap(); n],
                None,
                false,
            )
            .unwrap()
        };
        assert!(check_net_out_size("rules", &handle, &[rule(1), rule(2)]).is_ok());
        let e = check_net_out_size("rules", &handle, &vec![rule(32); 64]).unwrap_err();
        assert!(e.message.starts_with("rules: these 64 rules take"), "{e}");
    }

    #[test]
    fn etc_files_name_the_container_and_the_nameservers() {
        let dns = [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 1)];
        let archive = etc_files("web-1", Ipv4Addr::new(10, 254, 0, 6), &dns).unwrap();
        let mut files = BTreeMap::new();
        for entry in tar::Archive::new(&archive[..]).entries().unwrap() {
            let mut entry = entry.unwrap();
            let header = entry.header().clone();
            assert_eq!(header.mode().unwrap(), 0o644);
            assert_eq!((header.uid().unwrap(), header.gid().unwrap()), (0, 0));
            let name = entry.path().unwrap().to_string_lossy().into_owned();
            let mut text = String::new();
            std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
            files.insert(name, text);
        }
        assert_eq!(
            files["hosts"],
            "127.0.0.1 localhost\n::1 localhost\n10.254.0.6 web-1\n"
        );
        assert_eq!(
            files["resolv.conf"],
            "nameserver 10.0.2.3\nnameserver 192.0.2.1\n"
        );
        assert_eq!(files.len(), 2);
    }
}
