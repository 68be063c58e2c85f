//! Creating, destroying, listing and recovering containers. Each request is
//! already decoded and syntactically valid; policy checks happen here, before
//! anything is changed on the host.

use crate::cgroup::Cgroups;
use crate::disk::{Disk, ImageSize};
use crate::fs;
use crate::image;
use crate::limits;
use crate::policy::Policy;
use crate::spawn::{self, Spawn};
use crate::state::{transition, Container, Event};
use grove_schema::fault::crash_point;
use grove_schema::helper::PROTOCOL_VERSION;
use grove_schema::helper::{
    ContainerState, ContainerSummary, ErrorKind, HelperError, HostPath, ImageDefaults, Limits,
    Request, Response, RootfsSource,
};
use grove_schema::Handle;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::epoll::{EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use nix::sys::stat::{umask, Mode};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{Gid, Pid, Uid, UnlinkatFlags};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

pub struct Helper {
    pub policy: Policy,
    pub cgroups: Box<dyn Cgroups>,
    /// The depot and runtime dirs, opened once at start-up.
    pub depot: OwnedFd,
    pub runtime: OwnedFd,
    /// Whether the depot can limit disk use (btrfs qgroups, ext4/XFS
    /// project quotas).
    pub disk: Disk,
    /// The sealed wshd image.
    pub wshd: OwnedFd,
    pub containers: BTreeMap<Handle, Container>,
    /// Sizes of images measured so far (`image_size`): an unpacked layer
    /// or a host rootfs dir does not change while it is in use.
    pub image_sizes: HashMap<String, ImageSize>,
    /// The bridge, IP and port allocations, firewall and shaping.
    pub net: crate::net::Network,
    /// Starts containers (forked before the helper confined itself).
    pub spawner: crate::spawner::Spawner,
    /// The pidfds of running containers' wshd, each registered with its
    /// pid as data: readable once that wshd has exited. Polled with the
    /// serve loop, so noticing an exit costs nothing per container (a scan
    /// of every pidfd on each loop made requests slower as containers
    /// accumulated).
    pub exits: nix::sys::epoll::Epoll,
    /// Image unpacks under way (at most image::MAX_UNPACKS).
    pub unpacking: usize,
    /// A layer GC pass waits for them to finish.
    pub gc_deferred: bool,
    /// Where removed trees go, to be removed off the serve loop.
    pub trash: crate::trash::Trash,
}

fn system(what: &str, e: impl std::fmt::Display) -> HelperError {
    HelperError::new(ErrorKind::System, format!("{what}: {e}"))
}

/// The list of image layers a container uses, in its depot dir.
const LAYERS_FILE: &str = "layers";
/// The cpu_shares last set, in its depot dir: v2 keeps only a weight.
const SHARES_FILE: &str = "cpu.shares";

/// Watch a running wshd's pidfd for its exit (see `Helper::exits`). One
/// shot: a pidfd stays readable once its process has exited, so a
/// level-triggered entry would wake the loop forever if it outlived the
/// container's Running state (a destroy that failed halfway).
pub fn watch_exit(exits: &nix::sys::epoll::Epoll, pidfd: &OwnedFd, pid: i32) {
    let event = EpollEvent::new(EpollFlags::EPOLLIN | EpollFlags::EPOLLONESHOT, pid as u64);
    if let Err(e) = exits.add(pidfd, event) {
        log_warn!("grove-helper: watching wshd {pid}: {e}");
    }
}

fn sock_name(handle: &Handle) -> String {
    format!("{handle}.sock")
}

/// A response and the fds attached to its datagram (SCM_RIGHTS).
pub struct Reply {
    pub response: Response,
    pub fds: Vec<OwnedFd>,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Reply {
        Reply {
            response,
            fds: Vec::new(),
        }
    }
}

/// What a create builds, decided before any step runs.
struct Plan<'a> {
    /// The rootfs dir or the image layers below the writable layer.
    lower: spawn::Lower<'a>,
    layers: &'a [String],
    /// The image's size (for total-scope disk limits).
    image: ImageSize,
    limits: &'a Limits,
    /// No user namespace.
    privileged: bool,
    binds: &'a [grove_schema::helper::BindMount],
}

/// What a container's rootfs is made of.
struct Rootfs {
    /// A host directory (its policy path and an fd), or None: image layers.
    base: Option<(HostPath, OwnedFd)>,
    /// Image layer ids, bottom to top.
    layers: Vec<String>,
    defaults: ImageDefaults,
}

/// The answer to a request, or a create waiting for its image's unpack.
pub enum Handled {
    Reply(Reply),
    Unpacking(Box<PendingCreate>),
}

/// A create whose image is being unpacked: the serve loop polls
/// `unpack` and hands its outcome to `Helper::finish_create`.
pub struct PendingCreate {
    pub unpack: image::Unpack,
    handle: Handle,
    limits: Limits,
    /// The address the request asked for, and the one checked for it.
    ip: Option<std::net::Ipv4Addr>,
    picked: std::net::Ipv4Addr,
    isolation: Isolation,
}

impl PendingCreate {
    pub fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// How a container is set apart beyond the default (from the request).
struct Isolation {
    privileged: bool,
    binds: Vec<grove_schema::helper::BindMount>,
}

/// Undo steps of a create, run in reverse on failure.
enum Undo {
    DepotDir,
    Cgroups,
    Socket,
    /// wshd, by pidfd.
    Child(OwnedFd),
}

impl Helper {
    pub fn handle(&mut self, request: Request) -> Result<Handled, HelperError> {
        let reply = match request {
            Request::Ping => Ok(Response::Pong {
                version: PROTOCOL_VERSION,
            }
            .into()),
            Request::ListContainers => Ok(Response::Containers(self.list()).into()),
            Request::CreateContainer {
                handle,
                rootfs,
                limits,
                ip,
                privileged,
                binds,
            } => return self.create(handle, rootfs, limits, ip, Isolation { privileged, binds }),
            Request::DestroyContainer { handle } => self.destroy(handle).map(Reply::from),
            Request::SetLimits { handle, limits } => {
                self.check(&handle, Event::SetLimits)?;
                self.set_limits(&handle, &limits)?;
                Ok(Response::LimitsSet.into())
            }
            Request::GetLimits { handle } => {
                self.check(&handle, Event::GetLimits)?;
                let recorded =
                    fs::read_file_at(self.depot.as_fd(), &format!("{handle}/{SHARES_FILE}"))
                        .ok()
                        .and_then(|s| s.trim().parse().ok());
                let mut l = self
                    .cgroups
                    .get_limits(&handle, recorded)
                    .map_err(|e| system("reading limits", e))?;
                l.disk = self.disk.limit(self.depot.as_fd(), handle.as_str())?;
                l.bandwidth = self.net.bandwidth(&handle)?;
                Ok(Response::Limits(l).into())
            }
            Request::GetStats { handle } => {
                self.check(&handle, Event::GetStats)?;
                let mut s = self
                    .cgroups
                    .stats(&handle)
                    .map_err(|e| system("reading stats", e))?;
                s.disk = self.disk.usage(self.depot.as_fd(), handle.as_str())?;
                s.net = self.net.stats(&handle)?;
                Ok(Response::Stats(s).into())
            }
            Request::WatchOom { handle } => {
                self.check(&handle, Event::Watch)?;
                let fd = self
                    .cgroups
                    .oom_watch(&handle)
                    .map_err(|e| system("OOM watch", e))?;
                Ok(Reply {
                    response: Response::OomWatch,
                    fds: vec![fd],
                })
            }
            Request::WatchExit { handle } => {
                self.check(&handle, Event::Watch)?;
                // Why safe: the pidfd only tells its holder when wshd exits.
                // groved (another uid) cannot signal wshd through it or take
                // its fds: the kernel checks kill and ptrace permission.
                let pidfd = self.containers.get(&handle).and_then(|c| c.pidfd.as_ref());
                let fd = pidfd
                    .ok_or_else(|| system("exit watch", "no pidfd of wshd"))?
                    .try_clone()
                    .map_err(|e| system("dup pidfd", e))?;
                Ok(Reply {
                    response: Response::ExitWatch,
                    fds: vec![fd],
                })
            }
            Request::NetIn {
                handle,
                host_port,
                container_port,
            } => {
                self.check(&handle, Event::Network)?;
                let dir = self.depot_dir(&handle)?;
                let m = self
                    .net
                    .net_in(&handle, dir.as_fd(), host_port, container_port)?;
                Ok(Response::NetIn(m).into())
            }
            Request::NetOut { handle, rules } => {
                self.check(&handle, Event::Network)?;
                let dir = self.depot_dir(&handle)?;
                self.net.net_out(&handle, dir.as_fd(), rules)?;
                Ok(Response::NetOutAdded.into())
            }
            Request::GetNetwork { handle } => {
                self.check(&handle, Event::GetStats)?;
                let (info, net_in) = self.net.network(&handle)?;
                Ok(Response::Network { info, net_in }.into())
            }
            Request::ListLayers { after } => {
                let users = self.layer_users();
                let sizes = &self.image_sizes;
                let measured = |id: &str| sizes.get(&format!("layer:{id}")).copied();
                let (layers, more) =
                    crate::layers::page(self.depot.as_fd(), after.as_ref(), &users, &measured)?;
                Ok(Response::Layers { layers, more }.into())
            }
            Request::RemoveLayer { id } => self.remove_layer(&id).map(Reply::from),
        }?;
        Ok(Handled::Reply(reply))
    }

    fn depot_dir(&self, handle: &Handle) -> Result<OwnedFd, HelperError> {
        fs::open_dir(self.depot.as_fd(), handle.as_str()).map_err(|e| system("depot dir", e))
    }

    /// Change limits, all or nothing: the disk limit first (one ioctl,
    /// whose old value is put back if the cgroup writes then fail), then
    /// the cgroup limits (all or nothing themselves).
    fn set_limits(&mut self, handle: &Handle, limits: &Limits) -> Result<(), HelperError> {
        limits::validate(limits, limits::host_ram())?;
        // Bandwidth first: if the rest then fails, the old shaping goes back.
        let Some(bandwidth) = limits.bandwidth else {
            return self.set_host_limits(handle, limits);
        };
        let dir = self.depot_dir(handle)?;
        let old = self.net.set_bandwidth(handle, dir.as_fd(), bandwidth)?;
        let result = self.set_host_limits(handle, limits);
        if result.is_err() {
            self.net.restore_bandwidth(handle, dir.as_fd(), old);
        }
        result
    }

    /// The cgroup limits, and the shares asked for (see SHARES_FILE).
    fn set_cgroup_limits(&self, handle: &Handle, limits: &Limits) -> Result<(), HelperError> {
        self.cgroups.set_limits(handle, limits)?;
        if let Some(s) = limits.cpu_shares {
            // Only a record for read-back: without it, GetLimits reports
            // the shares value of the weight in force.
            let written = self.depot_dir(handle).and_then(|d| {
                fs::write_file_at(d.as_fd(), SHARES_FILE, s.to_string().as_bytes(), 0o600)
                    .map_err(|e| system("record cpu_shares", e))
            });
            if let Err(e) = written {
                log_warn!("grove-helper: {handle}: {}", e.message);
            }
        }
        Ok(())
    }

    /// The disk and cgroup part of `set_limits`.
    fn set_host_limits(&self, handle: &Handle, limits: &Limits) -> Result<(), HelperError> {
        let Some(disk) = limits.disk else {
            return self.set_cgroup_limits(handle, limits);
        };
        let old = self
            .disk
            .set_limit(self.depot.as_fd(), handle.as_str(), disk)?;
        if let Err(e) = self.set_cgroup_limits(handle, limits) {
            if let Err(r) = self
                .disk
                .restore_limit(self.depot.as_fd(), handle.as_str(), old)
            {
                log_error!("grove-helper: {handle}: {}", r.message);
                return Err(HelperError::new(
                    e.kind,
                    format!(
                        "{}; restoring the disk limit failed too: {}",
                        e.message, r.message
                    ),
                ));
            }
            return Err(e);
        }
        Ok(())
    }

    /// The container must be one the helper created (in its own table) and
    /// in a state that allows `event`, which leaves the state unchanged.
    fn check(&self, handle: &Handle, event: Event) -> Result<(), HelperError> {
        transition(self.containers.get(handle).map(|c| &c.state), event).map(|_| ())
    }

    fn list(&self) -> Vec<ContainerSummary> {
        self.containers
            .iter()
            .map(|(h, c)| ContainerSummary {
                handle: h.clone(),
                state: c.state.clone(),
                wshd_pid: if c.state == ContainerState::Running {
                    c.wshd_pid
                } else {
                    0
                },
            })
            .collect()
    }

    fn create(
        &mut self,
        handle: Handle,
        rootfs: RootfsSource,
        limits: Limits,
        ip: Option<std::net::Ipv4Addr>,
        isolation: Isolation,
    ) -> Result<Handled, HelperError> {
        let Isolation { privileged, binds } = isolation;
        self.policy.check_binds(&binds)?;
        // A host source must exist and be reachable without a symlink (the
        // container's setup opens it the same way again).
        for (i, b) in binds.iter().enumerate() {
            if b.origin == grove_schema::helper::BindOrigin::Host {
                fs::open_path_no_symlinks(b.src.as_str()).map_err(|e| {
                    let why = match e {
                        Errno::ELOOP => "a component is a symlink".to_string(),
                        e => e.desc().to_string(),
                    };
                    HelperError::new(
                        ErrorKind::InvalidValue,
                        format!("binds[{i}]: source {}: {why}", b.src.as_str()),
                    )
                })?;
            }
        }
        if privileged && !self.policy.conf.allow_privileged {
            return Err(HelperError::new(
                ErrorKind::PolicyRefused,
                "privileged containers (no user namespace) are not allowed by the helper's \
                 policy (allow_privileged = off)",
            ));
        }
        let next = transition(
            self.containers.get(&handle).map(|c| &c.state),
            Event::Create,
        )?;
        if self.containers.len() >= self.policy.conf.max_containers {
            return Err(HelperError::new(
                ErrorKind::LimitExceeded,
                format!(
                    "{} containers exist; max_containers is {}",
                    self.containers.len(),
                    self.policy.conf.max_containers
                ),
            ));
        }
        // Every limit's value is checked before anything is touched; what
        // depends on the cgroup is checked again when they are written.
        limits::validate(&limits, limits::host_ram())?;
        if let Some(disk) = &limits.disk {
            self.disk.check_limit(disk)?;
        }
        if let Some(b) = &limits.bandwidth {
            self.net.validate_bandwidth(b)?;
        }
        // The address, chosen (or checked) before anything is made (and
        // again after an unpack: another create may have taken it).
        let picked = self.net.allocate(ip)?;
        // 1. The rootfs: a policy-approved path, opened without following any
        // symlink, so the directory used is the one the policy approved; or
        // an image from a policy-approved path, unpacked (by a confined
        // child) into the layer store.
        let open_err = |path: &HostPath, what: &str, e: Errno| {
            let why = match e {
                Errno::ELOOP => {
                    format!("a component is a symlink, which {what} path may not contain")
                }
                e => e.desc().to_string(),
            };
            HelperError::new(
                ErrorKind::InvalidValue,
                format!("{} {}: {why}", what, path.as_str()),
            )
        };
        let image = match &rootfs {
            RootfsSource::Default | RootfsSource::HostDir(_) => None,
            RootfsSource::OciLayout { dir, tag } => {
                self.policy.check_image(dir)?;
                let fd = fs::open_dir_no_symlinks(dir.as_str())
                    .map_err(|e| open_err(dir, "image", e))?;
                let name = format!("oci:{}:{}", dir.as_str(), tag.as_str());
                let source = image::Source::Oci {
                    tag: tag.as_str().to_string(),
                };
                Some((fd, source, name))
            }
            RootfsSource::DockerArchive { path } => {
                self.policy.check_image(path)?;
                let fd = fs::open_file_no_symlinks(path.as_str())
                    .map_err(|e| open_err(path, "image", e))?;
                let name = format!("docker-archive:{}", path.as_str());
                Some((fd, image::Source::DockerArchive, name))
            }
        };
        let creating = Container {
            state: next.unwrap_or(ContainerState::Creating),
            wshd_pid: 0,
            pidfd: None,
            layers: Vec::new(),
            owner_slot: (!privileged).then(|| self.free_owner_slot()),
        };
        if let Some((fd, source, name)) = image {
            // The unpack runs in a child while the serve loop goes on; the
            // Creating entry holds the handle (and counts against
            // max_containers) meanwhile.
            if self.unpacking >= image::MAX_UNPACKS {
                return Err(HelperError::new(
                    ErrorKind::LimitExceeded,
                    format!(
                        "{} images are being unpacked, the most at once; try again",
                        self.unpacking
                    ),
                ));
            }
            let unpack = image::start(
                self.depot.as_fd(),
                fd,
                source,
                &name,
                self.policy.conf.image,
                &self.trash,
            )?;
            self.unpacking += 1;
            self.containers.insert(handle.clone(), creating);
            return Ok(Handled::Unpacking(Box::new(PendingCreate {
                unpack,
                handle,
                limits,
                ip,
                picked,
                isolation: Isolation { privileged, binds },
            })));
        }
        let path = match &rootfs {
            RootfsSource::HostDir(p) => {
                self.policy.check_rootfs(p)?;
                p.clone()
            }
            _ => self.policy.conf.default_rootfs.clone(),
        };
        let lower = fs::open_dir_no_symlinks(path.as_str()).map_err(|e| {
            let mut err = open_err(&path, "rootfs", e);
            // A rootfs the request named is the request's fault; a
            // broken default rootfs is the host's.
            if matches!(rootfs, RootfsSource::Default) {
                err.kind = ErrorKind::System;
            }
            err
        })?;
        self.containers.insert(handle.clone(), creating);
        let rootfs = Rootfs {
            base: Some((path, lower)),
            layers: Vec::new(),
            defaults: ImageDefaults::default(),
        };
        let isolation = Isolation { privileged, binds };
        self.build(&handle, rootfs, limits, picked, isolation)
            .map(|r| Handled::Reply(r.into()))
    }

    /// Complete a create whose unpack is done (`prepared` is its outcome).
    pub fn finish_create(
        &mut self,
        p: PendingCreate,
        prepared: Result<image::Prepared, HelperError>,
    ) -> Result<Reply, HelperError> {
        self.unpacking = self.unpacking.saturating_sub(1);
        let PendingCreate {
            unpack,
            handle,
            limits,
            ip,
            picked,
            isolation,
        } = p;
        drop(unpack);
        let ready = prepared.and_then(|prepared| {
            let ip = match self.net.allocate(Some(picked)) {
                Ok(ip) => ip,
                Err(_) if ip.is_none() => self.net.allocate(None)?,
                Err(e) => return Err(e),
            };
            Ok((prepared, ip))
        });
        let result = match ready {
            Ok((prepared, ip)) => {
                let rootfs = Rootfs {
                    base: None,
                    layers: prepared.layers,
                    defaults: prepared.defaults,
                };
                self.build(&handle, rootfs, limits, ip, isolation)
            }
            Err(e) => {
                self.forget_create(&handle);
                // Nothing of a failed unpack is kept.
                self.collect_layers();
                Err(e)
            }
        };
        if self.unpacking == 0 && self.gc_deferred {
            self.collect_layers();
        }
        result.map(Reply::from)
    }

    /// Drop the Creating entry of a create that failed.
    fn forget_create(&mut self, handle: &Handle) {
        let state = self.containers.get(handle).map(|c| &c.state);
        if let Ok(None) = transition(state, Event::CreateFailed) {
            self.containers.remove(handle);
        }
    }

    /// Build a container whose Creating entry exists, from its rootfs.
    fn build(
        &mut self,
        handle: &Handle,
        rootfs: Rootfs,
        limits: Limits,
        ip: std::net::Ipv4Addr,
        isolation: Isolation,
    ) -> Result<Response, HelperError> {
        let Rootfs {
            base,
            layers,
            defaults,
        } = rootfs;
        let Isolation { privileged, binds } = isolation;
        let image = match &base {
            Some((_, fd)) => self.dir_size(fd.as_fd()),
            None => self.layers_size(&layers),
        };
        let image = match image {
            Ok(n) => n,
            Err(e) => {
                self.forget_create(handle);
                if !layers.is_empty() {
                    self.collect_layers();
                }
                return Err(e);
            }
        };
        if let Some(c) = self.containers.get_mut(handle) {
            c.layers = layers.clone();
        }
        let top_down: Vec<String> = layers.iter().rev().cloned().collect();
        let lower = match &base {
            Some((path, fd)) => spawn::Lower::Dir {
                path: path.as_str(),
                fd: fd.as_fd(),
            },
            None => spawn::Lower::Layers(&top_down),
        };
        let mut undo = Vec::new();
        let plan = Plan {
            lower,
            layers: &layers,
            image,
            limits: &limits,
            privileged,
            binds: &binds,
        };
        let result = self
            .create_steps(handle, plan, &mut undo)
            .and_then(|child| {
                // 8. The network, last: it needs wshd's netns.
                let dir = self.depot_dir(handle)?;
                let info = self
                    .net
                    .attach(handle, dir.as_fd(), child.pid, ip, limits.bandwidth)?;
                Ok((child, info))
            });
        match result {
            Ok((child, network)) => {
                let c = self
                    .containers
                    .get_mut(handle)
                    .ok_or_else(|| system("state", "entry vanished"))?;
                c.state =
                    transition(Some(&c.state), Event::Created)?.unwrap_or(ContainerState::Running);
                c.wshd_pid = child.pid;
                watch_exit(&self.exits, &child.pidfd, child.pid);
                c.pidfd = Some(child.pidfd);
                self.stamp_layers(&layers);
                crash_point("helper.create.done");
                Ok(Response::Created {
                    wshd_pid: child.pid,
                    defaults,
                    network,
                })
            }
            Err(e) => {
                for step in undo.into_iter().rev() {
                    if let Err(u) = self.undo(handle, step) {
                        log_error!("grove-helper: rollback of {handle}: {u}");
                    }
                }
                self.forget_create(handle);
                if !layers.is_empty() {
                    self.collect_layers();
                }
                Err(e)
            }
        }
    }

    fn create_steps(
        &self,
        handle: &Handle,
        plan: Plan,
        undo: &mut Vec<Undo>,
    ) -> Result<spawn::Child, HelperError> {
        let Plan {
            lower,
            layers,
            image,
            limits,
            privileged,
            binds,
        } = plan;
        let h = handle.as_str();
        // 2. The container's depot dir: root-only, created beneath the depot
        // dirfd with the validated handle as its single component.
        fs::mkdir_at(self.depot.as_fd(), h, 0o700, false)
            .map_err(|e| system("mkdir depot dir", e))?;
        undo.push(Undo::DepotDir);
        let dir = fs::open_dir(self.depot.as_fd(), h).map_err(|e| system("open depot dir", e))?;
        fs::mkdir_at(dir.as_fd(), "rootfs", 0o755, false).map_err(|e| system("mkdir rootfs", e))?;
        // 2b. The writable layer: on btrfs a subvolume of its own, whose
        // qgroup counts exactly the container's writes (removing the depot
        // dir removes it: rmdir of an empty subvolume deletes it; the
        // kernel drops its qgroup once the subvolume is cleaned up); on
        // ext4/XFS a dir with a project of its own, which upper and work
        // inherit from it.
        self.disk.make_layer(dir.as_fd())?;
        let layer = fs::open_dir(dir.as_fd(), crate::disk::LAYER)
            .map_err(|e| system("open the writable layer", e))?;
        for (name, mode) in [("upper", 0o755), ("work", 0o700)] {
            fs::mkdir_at(layer.as_fd(), name, mode, false)
                .map_err(|e| system(&format!("mkdir {name}"), e))?;
        }
        // The root of the container's writes belongs to its root: host id
        // userns_base (work stays the kernel's, root-only); host root for a
        // privileged container.
        let base = self.policy.conf.userns_base;
        if !privileged {
            nix::unistd::fchownat(
                Some(layer.as_raw_fd()),
                "upper",
                Some(Uid::from_raw(base)),
                Some(Gid::from_raw(base)),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .map_err(|e| system("chown upper", e))?;
        }
        drop(layer);
        // 2c. The image's size, which a total-scope disk limit includes, and
        // the disk limit, in force before anything runs in the container.
        crash_point("helper.create.layer");
        crate::disk::record_image_size(dir.as_fd(), image)
            .map_err(|e| system("write the image size", e))?;
        if let Some(disk) = limits.disk {
            self.disk.set_limit(self.depot.as_fd(), h, disk)?;
        }

        // 3. Cgroups, beneath our parent cgroup in each controller.
        self.cgroups
            .create(handle)
            .map_err(|e| system("cgroups", e))?;
        undo.push(Undo::Cgroups);
        // 3b. The device allowlist and the limits, in force before wshd's
        // process enters the cgroups (removing the cgroups undoes both).
        self.cgroups
            .apply_device_allowlist(handle)
            .map_err(|e| system("device allowlist", e))?;
        // Without a pids limit of its own, the policy's default: one
        // container may not take all of the parent's (the host's) pids.
        let limits = Limits {
            pids_max: limits
                .pids_max
                .or(Some(self.policy.conf.default_pids_limit)),
            ..limits.clone()
        };
        self.set_cgroup_limits(handle, &limits)?;
        crash_point("helper.create.cgroups");

        // 4. wshd's listening socket, in the root-owned runtime dir, 0600 and
        // owned by the server uid: only groved (and root) can connect.
        let sock = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|e| system("wshd socket", e))?;
        let name = sock_name(handle);
        match nix::unistd::unlinkat(
            Some(self.runtime.as_raw_fd()),
            name.as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(system("unlink stale wshd socket", e)),
        }
        // Bind through the runtime dirfd; the umask makes the node 0600 from birth.
        let addr =
            UnixAddr::new(format!("/proc/self/fd/{}/{name}", self.runtime.as_raw_fd()).as_str())
                .map_err(|e| system("wshd socket address", e))?;
        let old = umask(Mode::from_bits_truncate(0o177));
        let bound = bind(sock.as_raw_fd(), &addr);
        umask(old);
        bound.map_err(|e| system("bind wshd socket", e))?;
        undo.push(Undo::Socket);
        listen(&sock, Backlog::new(64).map_err(|e| system("listen", e))?)
            .map_err(|e| system("listen", e))?;
        nix::unistd::fchownat(
            Some(self.runtime.as_raw_fd()),
            name.as_str(),
            Some(Uid::from_raw(self.policy.server_uid)),
            Some(Gid::from_raw(self.policy.server_gid)),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(|e| system("chown wshd socket", e))?;
        crash_point("helper.create.socket");

        // 5. wshd's log, in the root-only depot dir.
        let log = fs::openat(
            Some(dir.as_fd()),
            "wshd.log",
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_APPEND | OFlag::O_NOFOLLOW,
            0o600,
        )
        .map_err(|e| system("open wshd.log", e))?;

        // 5b. The image layers it uses, for the layer GC of a restarted helper.
        let mut list = String::new();
        for id in layers {
            list.push_str(id);
            list.push('\n');
        }
        fs::write_file_at(dir.as_fd(), LAYERS_FILE, list.as_bytes(), 0o600)
            .map_err(|e| system("write the layer list", e))?;

        // 6. The container's first process, in a user namespace of its own
        // (and a network namespace that belongs to it).

        // Its owner: the uid of the slot the create took (see
        // userns::act_as_owner); a privileged container has no namespace.
        let owner_slot = self.containers.get(handle).and_then(|c| c.owner_slot);
        if !privileged && owner_slot.is_none() {
            return Err(system("owner of the user namespace", "no owner slot taken"));
        }
        let spec = Spawn {
            handle,
            depot_path: self.policy.conf.depot.as_str(),
            container_dir: dir.as_fd(),
            lower,
            log: log.as_fd(),
            socket: sock.as_fd(),
            wshd: self.wshd.as_fd(),
            server_uid: self.policy.server_uid,
            userns: None,
            userns_base: (!privileged).then_some(base),
            userns_owner: crate::userns::owner_uid(base, owner_slot.unwrap_or(0)),
            binds,
            volatile: self.policy.conf.volatile_layers,
        };
        let child = self
            .spawner
            .spawn(&spec)
            .map_err(|e| system("start wshd", e))?;
        let pidfd = child
            .pidfd
            .try_clone()
            .map_err(|e| system("dup pidfd", e))?;
        undo.push(Undo::Child(pidfd));
        crash_point("helper.create.wshd");

        // 7. Remember wshd's pid for a restarted helper.
        fs::write_file_at(
            dir.as_fd(),
            "wshd.pid",
            format!("{}\n", child.pid).as_bytes(),
            0o600,
        )
        .map_err(|e| system("write wshd.pid", e))?;
        crash_point("helper.create.pidfile");
        Ok(child)
    }

    fn undo(&self, handle: &Handle, step: Undo) -> Result<(), String> {
        match step {
            Undo::Child(pidfd) => {
                // The pidfd names exactly the wshd just started (the
                // spawner, its parent, reaps it).
                let _ = spawn::pidfd_kill(pidfd.as_fd());
                self.empty_cgroup(handle, Some(pidfd.as_fd()))
            }
            Undo::Socket => nix::unistd::unlinkat(
                Some(self.runtime.as_raw_fd()),
                sock_name(handle).as_str(),
                UnlinkatFlags::NoRemoveDir,
            )
            .map_err(|e| format!("unlink wshd socket: {e}")),
            Undo::Cgroups => self.cgroups.remove(handle),
            Undo::DepotDir => self.remove_depot_dir(handle),
        }
    }

    fn destroy(&mut self, handle: Handle) -> Result<Response, HelperError> {
        let c = self.containers.get_mut(&handle);
        let next = transition(c.as_ref().map(|c| &c.state), Event::Destroy)?;
        let c =
            c.ok_or_else(|| HelperError::new(ErrorKind::NotFound, "no container has that handle"))?;
        c.state = next.unwrap_or(ContainerState::Destroying);
        // Killing PID 1 of the container's PID namespace kills all of it.
        // The pidfd names exactly our wshd, even after a pid wrap.
        if let Some(pidfd) = &c.pidfd {
            match spawn::pidfd_kill(pidfd.as_fd()) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(e) => log_warn!("grove-helper: {handle}: pidfd kill: {e}"),
            }
        }
        let pidfd = c.pidfd.take();
        // Destroy watches the exit itself; no stale event may outlive it
        // (its pid could be a new container's later).
        if let Some(fd) = &pidfd {
            let _ = self.exits.delete(fd);
        }
        crash_point("helper.destroy.killed");
        let result = self.destroy_steps(&handle, pidfd.as_ref().map(|p| p.as_fd()));
        let c = self
            .containers
            .get_mut(&handle)
            .ok_or_else(|| system("state", "entry vanished"))?;
        match result {
            Ok(()) => {
                transition(Some(&c.state), Event::Destroyed)?;
                let layers = std::mem::take(&mut c.layers);
                self.containers.remove(&handle);
                crash_point("helper.destroy.depot");
                self.net.detach(&handle);
                crash_point("helper.destroy.done");
                // The layers stay (groved's image GC removes them); their
                // last use is now.
                self.stamp_layers(&layers);
                Ok(Response::Destroyed)
            }
            Err(e) => {
                c.state = transition(Some(&c.state), Event::DestroyFailed)?
                    .unwrap_or(ContainerState::Stopped);
                c.pidfd = pidfd;
                Err(e)
            }
        }
    }

    fn destroy_steps(
        &self,
        handle: &Handle,
        wshd: Option<std::os::fd::BorrowedFd>,
    ) -> Result<(), HelperError> {
        self.empty_cgroup(handle, wshd)
            .map_err(|e| system("kill processes", e))?;
        self.cgroups
            .remove(handle)
            .map_err(|e| system("remove cgroups", e))?;
        crash_point("helper.destroy.cgroups");
        match nix::unistd::unlinkat(
            Some(self.runtime.as_raw_fd()),
            sock_name(handle).as_str(),
            UnlinkatFlags::NoRemoveDir,
        ) {
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(e) => return Err(system("unlink wshd socket", e)),
        }
        self.remove_depot_dir(handle)
            .map_err(|e| system("remove depot dir", e))
    }

    /// Kill until no process is left in the container's cgroup. (wshd is
    /// the spawner's child: the spawner reaps it.) wshd, already sent
    /// SIGKILL, is PID 1 of the container's PID namespace: once it has
    /// exited, the kernel has killed everything in the namespace, so its
    /// pidfd's readiness usually ends the wait. Processes still listed
    /// after that (or without a pidfd) are killed through the cgroup,
    /// checking again after 1, 2, 4 … 64 ms, for up to 10 s.
    fn empty_cgroup(
        &self,
        handle: &Handle,
        wshd: Option<std::os::fd::BorrowedFd>,
    ) -> Result<(), String> {
        if let Some(pidfd) = wshd {
            spawn::pidfd_wait_exit(pidfd, Duration::from_secs(2));
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut pause = Duration::from_millis(1);
        loop {
            let procs = self.cgroups.procs(handle)?;
            if procs.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("processes {procs:?} still alive after 10 s"));
            }
            self.cgroups.kill_all(handle)?;
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(64));
        }
    }

    /// Remove depot/<handle> (off the serve loop: see trash.rs), its disk
    /// limits cleared first (a failure there is logged: the container goes
    /// anyway, and a limit on a project no container has holds nothing).
    fn remove_depot_dir(&self, handle: &Handle) -> Result<(), String> {
        if let Err(e) = self.disk.release(self.depot.as_fd(), handle.as_str()) {
            log_warn!("grove-helper: {handle}: {}", e.message);
        }
        self.trash
            .discard(self.depot.as_fd(), handle.as_str(), crate::trash::WAIT)
            .map_err(|e| format!("depot/{handle}: {e}"))
    }

    /// The size of a host rootfs dir (an O_PATH fd), measured once per
    /// helper run; keyed by device and inode, which name the directory the
    /// policy approved whatever path led to it.
    fn dir_size(&mut self, dir: std::os::fd::BorrowedFd) -> Result<ImageSize, HelperError> {
        let st = nix::sys::stat::fstat(dir.as_raw_fd()).map_err(|e| system("stat rootfs", e))?;
        let key = format!("dir:{}:{}", st.st_dev, st.st_ino);
        if let Some(n) = self.image_sizes.get(&key) {
            return Ok(*n);
        }
        let (bytes, inodes) = fs::tree_size(dir).map_err(|e| system("measuring the rootfs", e))?;
        let n = ImageSize { bytes, inodes };
        self.image_sizes.insert(key, n);
        Ok(n)
    }

    /// The size of an image: the sum of its unpacked layers' sizes, each
    /// measured once (kept in the layer's stamp, and in memory until the
    /// layer goes). A file a layer replaces is counted in both, so this is
    /// at most a little above what the container sees.
    fn layers_size(&mut self, layers: &[String]) -> Result<ImageSize, HelperError> {
        let mut total = ImageSize::default();
        for id in layers {
            let key = format!("layer:{id}");
            let known = self.image_sizes.get(&key).copied().or_else(|| {
                self.stamped_size(id)
                    .filter(|n| n.bytes > 0 || n.inodes > 0)
            });
            let n = match known {
                Some(n) => {
                    self.image_sizes.insert(key, n);
                    n
                }
                None => {
                    let store = image::open_store(self.depot.as_fd())?;
                    let dir = fs::open_dir(store.as_fd(), id.as_str())
                        .map_err(|e| system(&format!("open layer {id}"), e))?;
                    let (bytes, inodes) = fs::tree_size(dir.as_fd())
                        .map_err(|e| system(&format!("measuring layer {id}"), e))?;
                    let n = ImageSize { bytes, inodes };
                    self.image_sizes.insert(key, n);
                    n
                }
            };
            total.bytes = total.bytes.saturating_add(n.bytes);
            total.inodes = total.inodes.saturating_add(n.inodes);
        }
        Ok(total)
    }

    /// What failed creates and interrupted unpacks leave, when the policy
    /// has `layer_gc` on: every unpacked layer no container (in any state)
    /// uses and none has used (no stamp), and every temp dir. A layer a
    /// container has used stays until groved's image GC removes it
    /// (`RemoveLayer`). Errors are logged; a later pass removes what is left.
    pub fn collect_layers(&mut self) {
        if !self.policy.conf.layer_gc {
            return;
        }
        // An unpack under way has temp dirs and layers no container lists
        // yet: the pass waits until the last unpack is done.
        if self.unpacking > 0 {
            self.gc_deferred = true;
            return;
        }
        self.gc_deferred = false;
        let stamped = match crate::layers::stamps(self.depot.as_fd()) {
            Ok(stamps) => stamps,
            Err(e) => {
                log_warn!("grove-helper: layer GC: {}", e.message);
                return;
            }
        };
        let keep: BTreeSet<String> = self
            .containers
            .values()
            .flat_map(|c| c.layers.iter().cloned())
            .chain(stamped.into_keys())
            .collect();
        self.image_sizes
            .retain(|key, _| match key.strip_prefix("layer:") {
                Some(id) => keep.contains(id),
                None => true,
            });
        match image::collect(self.depot.as_fd(), &keep, &self.trash) {
            Ok(0) => {}
            Ok(n) => log_info!("grove-helper: layer GC removed {n} layers no container used"),
            Err(e) => log_warn!("grove-helper: layer GC: {}", e.message),
        }
        crate::layers::forget_orphans(self.depot.as_fd());
    }

    /// The lowest owner slot no container holds. There is always one: no
    /// more than max_containers containers exist, and max_containers slots.
    fn free_owner_slot(&self) -> u32 {
        let taken: std::collections::HashSet<u32> = self
            .containers
            .values()
            .filter_map(|c| c.owner_slot)
            .collect();
        (0..).find(|s| !taken.contains(s)).unwrap_or(0)
    }

    /// The owner slot of a running container found at start-up, from the
    /// kernel's record of its user namespace's owner (None for a privileged
    /// container, or a namespace an older helper made, owned by root).
    fn recovered_owner_slot(&self, handle: &Handle, wshd: i32) -> Option<u32> {
        let first = crate::userns::owner_uid(self.policy.conf.userns_base, 0);
        match crate::userns::namespace_owner(wshd) {
            Ok(uid) if uid >= first => Some(uid - first),
            Ok(_) => None,
            Err(e) => {
                log_warn!("grove-helper: {handle}: the owner of its user namespace: {e}");
                None
            }
        }
    }

    /// How many containers (in any state) use each layer.
    fn layer_users(&self) -> BTreeMap<String, u32> {
        let mut users = BTreeMap::new();
        for c in self.containers.values() {
            for id in &c.layers {
                *users.entry(id.clone()).or_insert(0) += 1;
            }
        }
        users
    }

    /// Note that `layers` were used now (a container using them was
    /// created or destroyed), with their sizes. Logged on failure: a
    /// missing stamp only makes a layer look unused since its unpack.
    fn stamp_layers(&mut self, layers: &[String]) {
        for id in layers {
            let size = match self.image_sizes.get(&format!("layer:{id}")) {
                Some(n) => *n,
                None => self.stamped_size(id).unwrap_or_default(),
            };
            if let Err(e) = crate::layers::stamp(self.depot.as_fd(), id, size) {
                log_warn!("grove-helper: {}", e.message);
            }
        }
    }

    fn stamped_size(&self, id: &str) -> Option<ImageSize> {
        crate::layers::stamps(self.depot.as_fd())
            .ok()?
            .remove(id)
            .map(|s| s.size)
    }

    /// `RemoveLayer`: only a layer no container uses, and not while an
    /// unpack (which may have found it in the store) is under way.
    fn remove_layer(
        &mut self,
        id: &grove_schema::helper::LayerId,
    ) -> Result<Response, HelperError> {
        if !self.policy.conf.layer_gc {
            return Err(HelperError::new(
                ErrorKind::PolicyRefused,
                "the helper's policy has layer_gc off: layers are removed by hand",
            ));
        }
        if self.unpacking > 0 {
            return Err(HelperError::new(
                ErrorKind::InvalidState,
                format!("layer {id}: an image is being unpacked; try again when it is done"),
            ));
        }
        let users: Vec<&str> = self
            .containers
            .iter()
            .filter(|(_, c)| c.layers.iter().any(|l| l == id.as_str()))
            .map(|(h, _)| h.as_str())
            .collect();
        if !users.is_empty() {
            return Err(HelperError::new(
                ErrorKind::InvalidState,
                format!("layer {id} is in use by {}", users.join(", ")),
            ));
        }
        let bytes = crate::layers::remove(self.depot.as_fd(), id, &self.trash)?;
        self.image_sizes.remove(&format!("layer:{id}"));
        Ok(Response::LayerRemoved { bytes })
    }

    /// Rebuild the state from the depot after a start-up: a container whose
    /// recorded wshd pid is alive and in its cgroup is Running.
    pub fn recover(&mut self) -> Result<(), String> {
        for name in
            fs::list_dir(self.depot.as_fd()).map_err(|e| format!("reading the depot: {e}"))?
        {
            let name = name.to_string_lossy().into_owned();
            if name == image::LAYERS_DIR
                || name == crate::trash::TRASH_DIR
                || name.starts_with(crate::boot::BOOT_ID_FILE)
            {
                continue;
            }
            let Ok(handle) = Handle::new(name.clone()) else {
                log_warn!("grove-helper: depot entry {name:?} is not a container handle; ignored");
                continue;
            };
            let pid = fs::read_file_at(self.depot.as_fd(), &format!("{handle}/wshd.pid"))
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
                .filter(|p| *p > 0);
            // Open the pidfd first, then check the cgroup: if the pid is in
            // the container's cgroup now, the pidfd names that process.
            let pidfd = pid.and_then(|p| spawn::pidfd_open(p).ok());
            let running = match (pid, &pidfd) {
                (Some(p), Some(_)) => self
                    .cgroups
                    .procs(&handle)
                    .map(|v| v.contains(&p))
                    .unwrap_or(false),
                _ => false,
            };
            let state = if running {
                ContainerState::Running
            } else {
                ContainerState::Stopped
            };
            log_info!(
                "grove-helper: recovered {handle}: {state:?} (wshd pid {})",
                pid.unwrap_or(0)
            );
            let layers = fs::read_file_at(self.depot.as_fd(), &format!("{handle}/{LAYERS_FILE}"))
                .map(|s| {
                    s.lines()
                        .filter(|l| image::is_layer_id(l))
                        .map(str::to_string)
                        .collect()
                })
                .unwrap_or_default();
            if let (true, Some(fd), Some(p)) = (running, &pidfd, pid) {
                watch_exit(&self.exits, fd, p);
            }
            match fs::open_dir(self.depot.as_fd(), handle.as_str()) {
                Ok(dir) => self.net.recover(&handle, dir.as_fd()),
                Err(e) => log_warn!("grove-helper: {handle}: depot dir: {e}"),
            }
            let owner_slot = match (running, pid) {
                (true, Some(p)) => self.recovered_owner_slot(&handle, p),
                _ => None,
            };
            self.containers.insert(
                handle,
                Container {
                    state,
                    wshd_pid: if running { pid.unwrap_or(0) } else { 0 },
                    pidfd: if running { pidfd } else { None },
                    layers,
                    owner_slot,
                },
            );
        }
        Ok(())
    }

    /// Reap exited children (the helper waits for its own tools; this
    /// catches anything else, such as a spawner that died) and mark
    /// containers whose wshd exited Stopped.
    pub fn reap(&mut self) {
        while let Ok(status) = waitpid(None::<Pid>, Some(WaitPidFlag::WNOHANG)) {
            if status == WaitStatus::StillAlive {
                break;
            }
        }
        self.trash.tick();
        let mut events = [EpollEvent::empty(); 64];
        loop {
            let n = match self.exits.wait(&mut events, EpollTimeout::ZERO) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(e) => {
                    log_error!("grove-helper: epoll_wait: {e}");
                    return;
                }
            };
            for event in &events[..n] {
                let pid = event.data() as i32;
                self.wshd_exited(pid);
            }
            if n < events.len() {
                return;
            }
        }
    }

    /// The wshd with this pid exited: its container is Stopped, and its
    /// pidfd no longer watched (it stays readable).
    fn wshd_exited(&mut self, pid: i32) {
        let Some((handle, c)) = self
            .containers
            .iter_mut()
            .find(|(_, c)| c.wshd_pid == pid && c.state == ContainerState::Running)
        else {
            return;
        };
        if let Some(fd) = &c.pidfd {
            let _ = self.exits.delete(fd);
        }
        if let Ok(Some(s)) = transition(Some(&c.state), Event::WshdExited) {
            log_warn!("grove-helper: {handle}: wshd (pid {pid}) exited; container stopped");
            c.state = s;
        }
    }
}
