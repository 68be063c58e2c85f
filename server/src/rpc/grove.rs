//! The root interface, `Grove`.

use super::{properties, text, text_list};
use crate::containers::{CreateSpec, Grove, Isolation, NetSpec};
use crate::error::{ApiError, ApiResult};
use crate::rpc::container::{fill_info, ContainerServer};
use crate::rpc::net;
use grove_schema::api_capnp::grove as api;
use grove_schema::helper;
use std::rc::Rc;

pub struct GroveServer {
    pub grove: Rc<Grove>,
}

impl api::Server for GroveServer {
    async fn ping(
        self: Rc<Self>,
        _: api::PingParams,
        _: api::PingResults,
    ) -> Result<(), capnp::Error> {
        // The server answers only when the helper behind it does.
        self.grove.ping_helper().await?;
        Ok(())
    }

    async fn capacity(
        self: Rc<Self>,
        _: api::CapacityParams,
        mut results: api::CapacityResults,
    ) -> Result<(), capnp::Error> {
        let memory = host_memory_bytes().map_err(ApiError::internal)?;
        let stat = nix::sys::statvfs::statvfs(&self.grove.config.state_dir)
            .map_err(|e| ApiError::internal(format!("statvfs of the state dir: {e}")))?;
        let disk = stat.blocks() * stat.fragment_size();
        let mut capacity = results.get().init_capacity();
        capacity.set_memory_in_bytes(memory);
        capacity.set_disk_in_bytes(disk);
        capacity.set_schedulable_disk_in_bytes(disk);
        capacity.set_max_containers(self.grove.config.max_containers);
        Ok(())
    }

    async fn create(
        self: Rc<Self>,
        params: api::CreateParams,
        mut results: api::CreateResults,
    ) -> Result<(), capnp::Error> {
        let spec = create_spec(params.get()?.get_spec()?)?;
        let container = self.grove.create(spec).await?;
        results.get().set_container(ContainerServer::client(
            &self.grove,
            container.handle.as_str(),
        ));
        Ok(())
    }

    async fn lookup(
        self: Rc<Self>,
        params: api::LookupParams,
        mut results: api::LookupResults,
    ) -> Result<(), capnp::Error> {
        let handle = text("handle", params.get()?.get_handle())?;
        // A request about the container: it restarts its grace time.
        let container = self.grove.get(&handle)?.touch();
        results.get().set_container(ContainerServer::client(
            &self.grove,
            container.handle.as_str(),
        ));
        Ok(())
    }

    async fn list(
        self: Rc<Self>,
        params: api::ListParams,
        mut results: api::ListResults,
    ) -> Result<(), capnp::Error> {
        let filter = properties("properties", params.get()?.get_properties())?;
        let handles: Vec<String> = self
            .grove
            .handles()
            .into_iter()
            .filter(|c| {
                let props = c.properties();
                filter.iter().all(|(k, v)| props.get(k) == Some(v))
            })
            .map(|c| c.handle.to_string())
            .collect();
        let mut list = results.get().init_handles(handles.len() as u32);
        for (i, h) in handles.iter().enumerate() {
            list.set(i as u32, h);
        }
        Ok(())
    }

    async fn destroy(
        self: Rc<Self>,
        params: api::DestroyParams,
        _: api::DestroyResults,
    ) -> Result<(), capnp::Error> {
        let handle = text("handle", params.get()?.get_handle())?;
        self.grove.destroy(&handle).await?;
        Ok(())
    }

    async fn bulk_info(
        self: Rc<Self>,
        params: api::BulkInfoParams,
        mut results: api::BulkInfoResults,
    ) -> Result<(), capnp::Error> {
        let handles = text_list("handles", params.get()?.get_handles())?;
        let mut answers = Vec::with_capacity(handles.len());
        for handle in &handles {
            let answer = match self.grove.get(handle) {
                Ok(container) => self
                    .grove
                    .network(&container)
                    .await
                    .map(|network| (container, network)),
                Err(e) => Err(e),
            };
            answers.push(answer);
        }
        let external_ip = &self.grove.config.external_ip;
        let mut list = results.get().init_results(handles.len() as u32);
        for (i, (handle, answer)) in handles.iter().zip(answers).enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_handle(handle);
            match answer {
                Ok((container, network)) => {
                    fill_info(&container, &network, external_ip, entry.init_info())
                }
                Err(e) => entry.set_error(e.to_string()),
            }
        }
        Ok(())
    }

    async fn images(
        self: Rc<Self>,
        _: api::ImagesParams,
        mut results: api::ImagesResults,
    ) -> Result<(), capnp::Error> {
        results
            .get()
            .set_images(capnp_rpc::new_client(super::images::ImagesServer {
                grove: self.grove.clone(),
            }));
        Ok(())
    }

    async fn bulk_metrics(
        self: Rc<Self>,
        params: api::BulkMetricsParams,
        mut results: api::BulkMetricsResults,
    ) -> Result<(), capnp::Error> {
        let handles = text_list("handles", params.get()?.get_handles())?;
        let mut answers = Vec::with_capacity(handles.len());
        for handle in &handles {
            let answer = match self.grove.get(handle) {
                Ok(container) => self
                    .grove
                    .stats(&container)
                    .await
                    .map(|s| (s, container.age_seconds())),
                Err(e) => Err(e),
            };
            answers.push(answer);
        }
        let mut list = results.get().init_results(handles.len() as u32);
        for (i, (handle, answer)) in handles.iter().zip(answers).enumerate() {
            let mut entry = list.reborrow().get(i as u32);
            entry.set_handle(handle);
            match answer {
                Ok((stats, age)) => {
                    crate::rpc::limits::fill_metrics(&stats, age, entry.init_metrics())
                }
                Err(e) => entry.set_error(e.to_string()),
            }
        }
        Ok(())
    }
}

fn create_spec(spec: grove_schema::api_capnp::container_spec::Reader<'_>) -> ApiResult<CreateSpec> {
    let image = spec.get_image()?;
    let image_uri = text("spec.image.uri", image.get_uri())?;
    let login = super::images::login(
        text("spec.image.username", image.get_username())?,
        text("spec.image.password", image.get_password())?,
    );
    let network = NetSpec {
        ip: net::network_spec("spec.network", &text("spec.network", spec.get_network())?)?,
        net_in: net::port_mappings("spec.netIn", spec.get_net_in()?)?,
        net_out: net::net_out_rules("spec.netOut", spec.get_net_out()?)?,
    };
    Ok(CreateSpec {
        handle: text("spec.handle", spec.get_handle())?,
        isolation: Isolation {
            privileged: spec.get_privileged(),
            binds: bind_mounts(spec.get_bind_mounts()?)?,
        },
        rootfs: text("spec.rootfs", spec.get_rootfs())?,
        image: image_uri,
        login,
        env: text_list("spec.env", spec.get_env())?,
        properties: {
            let props = properties("spec.properties", spec.get_properties())?;
            for (name, value) in &props {
                // The value's field names its property (the first 64 chars).
                let short: String = name.chars().take(64).collect();
                let value_field = format!("spec.properties[{short:?}].value");
                super::check_property("spec.properties", &value_field, name, value)?;
            }
            super::check_property_set("spec.properties", &props)?;
            props
        },
        limits: if spec.has_limits() {
            crate::rpc::limits::from_spec(spec.get_limits()?)?
        } else {
            Default::default()
        },
        pull_progress: if spec.has_pull_progress() {
            spec.get_pull_progress().ok()
        } else {
            None
        },
        network,
        grace_time_seconds: spec.get_grace_time_seconds(),
    })
}

fn host_memory_bytes() -> Result<u64, String> {
    let meminfo =
        std::fs::read_to_string("/proc/meminfo").map_err(|e| format!("/proc/meminfo: {e}"))?;
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| "no MemTotal in /proc/meminfo".to_string())
}

/// spec.bindMounts as the helper takes them: absolute paths (no `.`, `..`
/// or empty components), at most `MAX_BINDS`; every error names the entry.
fn bind_mounts(
    list: capnp::struct_list::Reader<'_, grove_schema::api_capnp::bind_mount::Owned>,
) -> ApiResult<Vec<helper::BindMount>> {
    use grove_schema::api_capnp::bind_mount::{Mode, Origin};
    if list.len() as usize > helper::MAX_BINDS {
        return Err(ApiError::invalid(
            "spec.bindMounts",
            format!(
                "at most {} bind mounts, not {}",
                helper::MAX_BINDS,
                list.len()
            ),
        ));
    }
    let mut binds = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let field = |f: &str| format!("spec.bindMounts[{i}].{f}");
        let path =
            |f: &str, t: capnp::Result<capnp::text::Reader<'_>>| -> ApiResult<helper::HostPath> {
                let v = text(&field(f), t)?;
                helper::HostPath::new(v).map_err(|e| ApiError::invalid(&field(f), e))
            };
        let origin = match b.get_origin() {
            Ok(Origin::Host) => helper::BindOrigin::Host,
            Ok(Origin::Container) => helper::BindOrigin::Container,
            Err(_) => return Err(ApiError::invalid(&field("origin"), "unknown origin")),
        };
        let read_only = match b.get_mode() {
            Ok(Mode::Ro) => true,
            Ok(Mode::Rw) => false,
            Err(_) => return Err(ApiError::invalid(&field("mode"), "unknown mode")),
        };
        binds.push(helper::BindMount {
            src: path("srcPath", b.get_src_path())?,
            origin,
            dst: path("dstPath", b.get_dst_path())?,
            read_only,
        });
    }
    Ok(binds)
}
