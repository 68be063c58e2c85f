//! The `Container` interface. A capability names its container by handle, so
//! a call on a destroyed container fails with "unknown handle".

use super::{set_properties, text, text_list};
use crate::containers::{Container, Grove, RunSpec};
use crate::error::{ApiError, ApiResult};
use crate::rpc::process::ProcessServer;
use grove_schema::api_capnp::{container as api, container_info};
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

    fn container(&self) -> ApiResult<Rc<Container>> {
        self.grove.get(&self.handle)
    }
}

pub fn fill_info(container: &Container, mut info: container_info::Builder<'_>) {
    info.set_state(container.state_name());
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
    info.init_events(0);
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
        fill_info(&*self.container()?, results.get().init_info());
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
        if spec.get_has_tty() {
            return Err(ApiError::not_implemented("spec.tty", "the processes issue").into());
        }
        if rlimits_requested(spec.get_rlimits()?) {
            return Err(ApiError::not_implemented("spec.rlimits", "the processes issue").into());
        }
        let io = params.get_io()?;
        let sink = |s: capnp::Result<grove_schema::api_capnp::byte_stream::Client>| s.ok();
        let run = RunSpec {
            id: text("spec.id", spec.get_id())?,
            path: text("spec.path", spec.get_path())?,
            args: text_list("spec.args", spec.get_args())?,
            env: text_list("spec.env", spec.get_env())?,
            dir: text("spec.dir", spec.get_dir())?,
            user: text("spec.user", spec.get_user())?,
            open_stdin: io.get_open_stdin(),
            stdout: if io.has_stdout() {
                sink(io.get_stdout())
            } else {
                None
            },
            stderr: if io.has_stderr() {
                sink(io.get_stderr())
            } else {
                None
            },
        };
        let process = self.grove.run(&container, run).await?;
        results
            .get()
            .set_process(capnp_rpc::new_client(ProcessServer::new(process)));
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
        let container = self.container()?;
        let previous = container.properties().get(&name).cloned();
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

    crate::not_implemented! {
        attach: AttachParams, AttachResults => "attach", "the processes issue";
        stream_in: StreamInParams, StreamInResults => "streamIn", "the images and streaming issue";
        stream_out: StreamOutParams, StreamOutResults => "streamOut", "the images and streaming issue";
        limit_bandwidth: LimitBandwidthParams, LimitBandwidthResults => "limitBandwidth", "the networking issue";
        current_bandwidth_limits: CurrentBandwidthLimitsParams, CurrentBandwidthLimitsResults => "currentBandwidthLimits", "the networking issue";
        limit_cpu: LimitCpuParams, LimitCpuResults => "limitCpu", "the limits issue";
        current_cpu_limits: CurrentCpuLimitsParams, CurrentCpuLimitsResults => "currentCpuLimits", "the limits issue";
        limit_disk: LimitDiskParams, LimitDiskResults => "limitDisk", "the images issue";
        current_disk_limits: CurrentDiskLimitsParams, CurrentDiskLimitsResults => "currentDiskLimits", "the images issue";
        limit_memory: LimitMemoryParams, LimitMemoryResults => "limitMemory", "the limits issue";
        current_memory_limits: CurrentMemoryLimitsParams, CurrentMemoryLimitsResults => "currentMemoryLimits", "the limits issue";
        limit_pids: LimitPidsParams, LimitPidsResults => "limitPids", "the limits issue";
        current_pid_limits: CurrentPidLimitsParams, CurrentPidLimitsResults => "currentPidLimits", "the limits issue";
        net_in: NetInParams, NetInResults => "netIn", "the networking issue";
        net_out: NetOutParams, NetOutResults => "netOut", "the networking issue";
        bulk_net_out: BulkNetOutParams, BulkNetOutResults => "bulkNetOut", "the networking issue";
        metrics: MetricsParams, MetricsResults => "metrics", "the limits and metrics issue";
        set_grace_time: SetGraceTimeParams, SetGraceTimeResults => "setGraceTime", "the systemd and restart issue";
    }
}

fn rlimits_requested(r: grove_schema::api_capnp::resource_limits::Reader<'_>) -> bool {
    [
        r.get_has_as(),
        r.get_has_core(),
        r.get_has_cpu(),
        r.get_has_data(),
        r.get_has_fsize(),
        r.get_has_locks(),
        r.get_has_memlock(),
        r.get_has_msgqueue(),
        r.get_has_nice(),
        r.get_has_nofile(),
        r.get_has_nproc(),
        r.get_has_rss(),
        r.get_has_rtprio(),
        r.get_has_sigpending(),
        r.get_has_stack(),
    ]
    .contains(&true)
}
