//! The `Container` interface. A capability names its container by handle, so
//! a call on a destroyed container fails with "unknown handle".

use super::{set_properties, text, text_list};
use crate::containers::{Busy, Container, Grove, RunSpec};
use crate::error::{ApiError, ApiResult};
use crate::process::Sinks;
use crate::rpc::limits;
use crate::rpc::net;
use crate::rpc::process::ProcessServer;
use grove_schema::api_capnp::{byte_stream, container as api, container_info};
use grove_schema::net::{NetworkInfo, PortMapping};
use grove_schema::wshd::{Rlimit, WindowSize};
use std::rc::Rc;

pub struct ContainerServer {
    grove: Rc<Grove>,
    handle: String,
}

impl ContainerServer {
    pub fn client(grove: &Rc<Grove>, handle: &str) -> api::Client {
        capnp_rpc::new_client(ContainerServer {
            grove: grove.clone(),
            handle: handle.to_string(),
        })
    }

    /// The container, touched: every request about it pauses its
    /// grace-time countdown while it lasts, and restarts it when it ends.
    fn container(&self) -> ApiResult<Busy> {
        Ok(self.grove.get(&self.handle)?.touch())
    }
}

/// A container's info; `network` is its address and NetIn mappings as the
/// helper holds them (`Grove::network`).
pub fn fill_info(
    container: &Container,
    network: &(NetworkInfo, Vec<PortMapping>),
    external_ip: &str,
    mut info: container_info::Builder<'_>,
) {
    info.set_state(container.state_name());
    let (address, mappings) = network;
    info.set_container_ip(address.ip.to_string());
    info.set_host_ip(address.gateway.to_string());
    info.set_external_ip(external_ip);
    net::fill_port_mappings(
        info.reborrow().init_mapped_ports(mappings.len() as u32),
        mappings,
    );
    let ids = container.running_process_ids();
    let mut list = info.reborrow().init_process_ids(ids.len() as u32);
    for (i, id) in ids.iter().enumerate() {
        list.set(i as u32, id);
    }
    let properties = container.properties();
    set_properties(
        info.reborrow().init_properties(properties.len() as u32),
        &properties,
    );
    let events = container.events();
    let mut list = info.reborrow().init_events(events.len() as u32);
    for (i, event) in events.iter().enumerate() {
        list.set(i as u32, event);
    }
}

use api::*;

impl api::Server for ContainerServer {
    async fn handle(
        self: Rc<Self>,
        _: HandleParams,
        mut results: HandleResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        results.get().set_handle(container.handle.as_str());
        Ok(())
    }

    async fn info(
        self: Rc<Self>,
        _: InfoParams,
        mut results: InfoResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let network = self.grove.network(&container).await?;
        fill_info(
            &container,
            &network,
            &self.grove.config.external_ip,
            results.get().init_info(),
        );
        Ok(())
    }

    async fn run(
        self: Rc<Self>,
        params: RunParams,
        mut results: RunResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let params = params.get()?;
        let spec = params.get_spec()?;
        let io = params.get_io()?;
        if io.get_backlog_only() {
            return Err(ApiError::invalid(
                "io.backlogOnly",
                "is for attach (a new process has no output waiting)",
            )
            .into());
        }
        let tty = if spec.get_has_tty() {
            let size = spec.get_tty()?.get_window_size()?;
            Some(window_size("spec.tty.windowSize", size)?)
        } else {
            None
        };
        let run = RunSpec {
            id: text("spec.id", spec.get_id())?,
            path: text("spec.path", spec.get_path())?,
            args: text_list("spec.args", spec.get_args())?,
            env: text_list("spec.env", spec.get_env())?,
            dir: text("spec.dir", spec.get_dir())?,
            user: text("spec.user", spec.get_user())?,
            open_stdin: io.get_open_stdin(),
            tty,
            rlimits: rlimits(spec.get_rlimits()?),
            sinks: sinks(&container, io),
        };
        let process = self.grove.run(&container, run).await?;
        results
            .get()
            .set_process(capnp_rpc::new_client(ProcessServer::new(
                process,
                (*container).clone(),
            )));
        Ok(())
    }

    async fn attach(
        self: Rc<Self>,
        params: AttachParams,
        mut results: AttachResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let params = params.get()?;
        let id = text("processId", params.get_process_id())?;
        let process = self
            .grove
            .attach(&container, &id, sinks(&container, params.get_io()?))?;
        results
            .get()
            .set_process(capnp_rpc::new_client(ProcessServer::new(
                process,
                (*container).clone(),
            )));
        Ok(())
    }

    async fn stop(self: Rc<Self>, params: StopParams, _: StopResults) -> Result<(), capnp::Error> {
        let container = self.container()?;
        self.grove
            .stop(&container, params.get()?.get_kill())
            .await?;
        Ok(())
    }

    async fn properties(
        self: Rc<Self>,
        _: PropertiesParams,
        mut results: PropertiesResults,
    ) -> Result<(), capnp::Error> {
        let properties = self.container()?.properties();
        set_properties(
            results.get().init_properties(properties.len() as u32),
            &properties,
        );
        Ok(())
    }

    async fn property(
        self: Rc<Self>,
        params: PropertyParams,
        mut results: PropertyResults,
    ) -> Result<(), capnp::Error> {
        let name = text("name", params.get()?.get_name())?;
        let value = self
            .container()?
            .properties()
            .get(&name)
            .cloned()
            .ok_or_else(|| {
                ApiError::invalid(
                    "name",
                    format!("no property {name:?} on container {}", self.handle),
                )
            })?;
        results.get().set_value(value);
        Ok(())
    }

    async fn set_property(
        self: Rc<Self>,
        params: SetPropertyParams,
        _: SetPropertyResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let name = text("name", params.get_name())?;
        let value = text("value", params.get_value())?;
        if name.is_empty() {
            return Err(ApiError::invalid("name", "empty").into());
        }
        super::check_property("name", "value", &name, &value)?;
        let container = self.container()?;
        let mut after = container.properties();
        let previous = after.insert(name.clone(), value.clone());
        super::check_property_set("properties", &after)?;
        container.set_property(name.clone(), value);
        if let Err(e) = self.grove.save(&container) {
            // Nothing half-done: the property is as it was.
            match previous {
                Some(v) => container.set_property(name, v),
                None => drop(container.remove_property(&name)),
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn remove_property(
        self: Rc<Self>,
        params: RemovePropertyParams,
        _: RemovePropertyResults,
    ) -> Result<(), capnp::Error> {
        let name = text("name", params.get()?.get_name())?;
        let container = self.container()?;
        let Some(previous) = container.remove_property(&name) else {
            return Err(ApiError::invalid(
                "name",
                format!("no property {name:?} on container {}", self.handle),
            )
            .into());
        };
        if let Err(e) = self.grove.save(&container) {
            container.set_property(name, previous);
            return Err(e.into());
        }
        Ok(())
    }

    async fn limit_memory(
        self: Rc<Self>,
        params: LimitMemoryParams,
        _: LimitMemoryResults,
    ) -> Result<(), capnp::Error> {
        let limits = limits::require_some("limits", limits::memory(params.get()?.get_limits()?))?;
        self.grove.set_limits(&*self.container()?, limits).await?;
        Ok(())
    }

    async fn current_memory_limits(
        self: Rc<Self>,
        _: CurrentMemoryLimitsParams,
        mut results: CurrentMemoryLimitsResults,
    ) -> Result<(), capnp::Error> {
        let limits = self.grove.limits(&*self.container()?).await?;
        limits::fill_memory(&limits, results.get().init_limits());
        Ok(())
    }

    async fn limit_cpu(
        self: Rc<Self>,
        params: LimitCpuParams,
        _: LimitCpuResults,
    ) -> Result<(), capnp::Error> {
        let limits = limits::require_some(
            "limits",
            limits::cpu("limits", params.get()?.get_limits()?)?,
        )?;
        self.grove.set_limits(&*self.container()?, limits).await?;
        Ok(())
    }

    async fn current_cpu_limits(
        self: Rc<Self>,
        _: CurrentCpuLimitsParams,
        mut results: CurrentCpuLimitsResults,
    ) -> Result<(), capnp::Error> {
        let limits = self.grove.limits(&*self.container()?).await?;
        limits::fill_cpu(&limits, results.get().init_limits());
        Ok(())
    }

    async fn limit_pids(
        self: Rc<Self>,
        params: LimitPidsParams,
        _: LimitPidsResults,
    ) -> Result<(), capnp::Error> {
        let limits = limits::require_some("limits", limits::pids(params.get()?.get_limits()?))?;
        self.grove.set_limits(&*self.container()?, limits).await?;
        Ok(())
    }

    async fn current_pid_limits(
        self: Rc<Self>,
        _: CurrentPidLimitsParams,
        mut results: CurrentPidLimitsResults,
    ) -> Result<(), capnp::Error> {
        let limits = self.grove.limits(&*self.container()?).await?;
        limits::fill_pids(&limits, results.get().init_limits());
        Ok(())
    }

    async fn limit_disk(
        self: Rc<Self>,
        params: LimitDiskParams,
        _: LimitDiskResults,
    ) -> Result<(), capnp::Error> {
        let limits = limits::require_some(
            "limits",
            limits::disk("limits", params.get()?.get_limits()?)?,
        )?;
        self.grove.set_limits(&*self.container()?, limits).await?;
        Ok(())
    }

    async fn current_disk_limits(
        self: Rc<Self>,
        _: CurrentDiskLimitsParams,
        mut results: CurrentDiskLimitsResults,
    ) -> Result<(), capnp::Error> {
        let limits = self.grove.limits(&*self.container()?).await?;
        limits::fill_disk(&limits, results.get().init_limits());
        Ok(())
    }

    async fn metrics(
        self: Rc<Self>,
        _: MetricsParams,
        mut results: MetricsResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let stats = self.grove.stats(&container).await?;
        limits::fill_metrics(
            &stats,
            container.age_seconds(),
            results.get().init_metrics(),
        );
        Ok(())
    }

    async fn stream_in(
        self: Rc<Self>,
        params: StreamInParams,
        mut results: StreamInResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let params = params.get()?;
        let path = text("path", params.get_path())?;
        let user = text("user", params.get_user())?;
        let sink = crate::stream::stream_in(&container, path, user)
            .await
            .map_err(|e| container.overtaken(e))?;
        // The session lasts while the client holds the sink.
        results
            .get()
            .set_sink(touching(&container, capnp_rpc::new_client(sink)));
        Ok(())
    }

    async fn stream_out(
        self: Rc<Self>,
        params: StreamOutParams,
        _: StreamOutResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let params = params.get()?;
        let path = text("path", params.get_path())?;
        let user = text("user", params.get_user())?;
        let sink = params
            .get_sink()
            .map_err(|e| ApiError::invalid("sink", e.extra))?;
        crate::stream::stream_out(&container, path, user, sink)
            .await
            .map_err(|e| container.overtaken(e))?;
        Ok(())
    }

    async fn limit_bandwidth(
        self: Rc<Self>,
        params: LimitBandwidthParams,
        _: LimitBandwidthResults,
    ) -> Result<(), capnp::Error> {
        let limits = limits::limit_bandwidth("limits", params.get()?.get_limits()?)?;
        self.grove.set_limits(&*self.container()?, limits).await?;
        Ok(())
    }

    async fn current_bandwidth_limits(
        self: Rc<Self>,
        _: CurrentBandwidthLimitsParams,
        mut results: CurrentBandwidthLimitsResults,
    ) -> Result<(), capnp::Error> {
        let limits = self.grove.limits(&*self.container()?).await?;
        limits::fill_bandwidth(&limits, results.get().init_limits());
        Ok(())
    }

    async fn net_in(
        self: Rc<Self>,
        params: NetInParams,
        mut results: NetInResults,
    ) -> Result<(), capnp::Error> {
        let params = params.get()?;
        let host_port = net::port("hostPort", params.get_host_port())?;
        let container_port = net::port("containerPort", params.get_container_port())?;
        let used = self
            .grove
            .net_in(&*self.container()?, host_port, container_port)
            .await?;
        let mut results = results.get();
        results.set_host_port(used.host_port.into());
        results.set_container_port(used.container_port.into());
        Ok(())
    }

    async fn net_out(
        self: Rc<Self>,
        params: NetOutParams,
        _: NetOutResults,
    ) -> Result<(), capnp::Error> {
        let rule = net::net_out_rule("rule", params.get()?.get_rule()?)?;
        self.grove.net_out(&*self.container()?, vec![rule]).await?;
        Ok(())
    }

    async fn bulk_net_out(
        self: Rc<Self>,
        params: BulkNetOutParams,
        _: BulkNetOutResults,
    ) -> Result<(), capnp::Error> {
        let rules = net::net_out_rules("rules", params.get()?.get_rules()?)?;
        self.grove.net_out(&*self.container()?, rules).await?;
        Ok(())
    }

    async fn set_grace_time(
        self: Rc<Self>,
        params: SetGraceTimeParams,
        _: SetGraceTimeResults,
    ) -> Result<(), capnp::Error> {
        let seconds = params.get()?.get_grace_time_seconds();
        let container = self.container()?;
        self.grove.set_grace_time(&container, seconds)?;
        Ok(())
    }

    async fn top(
        self: Rc<Self>,
        _: TopParams,
        mut results: TopResults,
    ) -> Result<(), capnp::Error> {
        let container = self.container()?;
        let (processes, truncated) = crate::rpc::top::top(&container)
            .await
            .map_err(|e| container.overtaken(e))?;
        let mut list = results.get().init_processes(processes.len() as u32);
        for (i, p) in processes.iter().enumerate() {
            crate::rpc::top::fill(p, list.reborrow().get(i as u32));
        }
        results.get().set_truncated(truncated);
        Ok(())
    }
}

/// The client's streams from a ProcessIO (either may be null), each made a
/// session that pauses the container's grace-time countdown for as long as
/// the process's output is streamed to it.
fn sinks(container: &Rc<Container>, io: grove_schema::api_capnp::process_i_o::Reader<'_>) -> Sinks {
    Sinks {
        stdout: if io.has_stdout() {
            io.get_stdout().ok().map(|s| touching(container, s))
        } else {
            None
        },
        stderr: if io.has_stderr() {
            io.get_stderr().ok().map(|s| touching(container, s))
        } else {
            None
        },
        backlog_only: io.get_backlog_only(),
    }
}

/// A ByteStream that passes everything on to `inner` and keeps the
/// container touched (its grace time paused) for as long as it exists:
/// while groved streams a process's output to a client, or a client holds a
/// streamIn sink.
fn touching(container: &Rc<Container>, inner: byte_stream::Client) -> byte_stream::Client {
    capnp_rpc::new_client(TouchingStream {
        inner,
        _busy: container.touch(),
    })
}

struct TouchingStream {
    inner: byte_stream::Client,
    _busy: Busy,
}

impl byte_stream::Server for TouchingStream {
    async fn write(self: Rc<Self>, params: byte_stream::WriteParams) -> Result<(), capnp::Error> {
        let mut request = self.inner.write_request();
        request.get().set_data(params.get()?.get_data()?);
        request.send().await
    }

    async fn done(
        self: Rc<Self>,
        _: byte_stream::DoneParams,
        _: byte_stream::DoneResults,
    ) -> Result<(), capnp::Error> {
        self.inner.done_request().send().promise.await?;
        Ok(())
    }
}

pub fn window_size(
    field: &str,
    size: grove_schema::api_capnp::window_size::Reader<'_>,
) -> ApiResult<WindowSize> {
    let (columns, rows) = (size.get_columns(), size.get_rows());
    if columns == 0 || rows == 0 {
        return Err(ApiError::invalid(
            field,
            format!("{columns}x{rows}: columns and rows must be at least 1"),
        ));
    }
    Ok(WindowSize { columns, rows })
}

/// The limits whose `has*` bit is set.
fn rlimits(r: grove_schema::api_capnp::resource_limits::Reader<'_>) -> Vec<(Rlimit, u64)> {
    [
        (r.get_has_as(), Rlimit::As, r.get_as()),
        (r.get_has_core(), Rlimit::Core, r.get_core()),
        (r.get_has_cpu(), Rlimit::Cpu, r.get_cpu()),
        (r.get_has_data(), Rlimit::Data, r.get_data()),
        (r.get_has_fsize(), Rlimit::Fsize, r.get_fsize()),
        (r.get_has_locks(), Rlimit::Locks, r.get_locks()),
        (r.get_has_memlock(), Rlimit::Memlock, r.get_memlock()),
        (r.get_has_msgqueue(), Rlimit::Msgqueue, r.get_msgqueue()),
        (r.get_has_nice(), Rlimit::Nice, r.get_nice()),
        (r.get_has_nofile(), Rlimit::Nofile, r.get_nofile()),
        (r.get_has_nproc(), Rlimit::Nproc, r.get_nproc()),
        (r.get_has_rss(), Rlimit::Rss, r.get_rss()),
        (r.get_has_rtprio(), Rlimit::Rtprio, r.get_rtprio()),
        (
            r.get_has_sigpending(),
            Rlimit::Sigpending,
            r.get_sigpending(),
        ),
        (r.get_has_stack(), Rlimit::Stack, r.get_stack()),
    ]
    .into_iter()
    .filter(|(has, _, _)| *has)
    .map(|(_, limit, value)| (limit, value))
    .collect()
}
