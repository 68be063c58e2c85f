//! The Grove operations the harness times, over the Rust client library.

use grove_client::{api, Client, Command};

pub type Result<T> = std::result::Result<T, String>;

fn e(err: impl std::fmt::Display) -> String {
    err.to_string()
}

/// What a lifecycle round's container asks for: the default rootfs and
/// network, and cgroup limits (the same as the peers' bundle).
#[derive(Clone, Copy)]
pub struct Spec {
    pub limits: bool,
}

fn fill_spec(mut spec: api::container_spec::Builder<'_>, handle: &str, s: Spec) {
    spec.set_handle(handle);
    if s.limits {
        let mut limits = spec.init_limits();
        limits
            .reborrow()
            .init_memory()
            .set_limit_in_bytes(crate::MEMORY_LIMIT);
        limits.reborrow().init_pid().set_max(crate::PIDS_MAX);
        limits.reborrow().init_cpu().set_weight(crate::CPU_WEIGHT);
    }
}

pub async fn create(client: &Client, handle: &str, s: Spec) -> Result<api::container::Client> {
    let mut request = client.grove.create_request();
    fill_spec(request.get().init_spec(), handle, s);
    let response = request.send().promise.await.map_err(e)?;
    response.get().map_err(e)?.get_container().map_err(e)
}

fn run_request(
    container: &api::container::Client,
    path: &str,
) -> Result<
    capnp::capability::Request<
        api::container::run_params::Owned,
        api::container::run_results::Owned,
    >,
> {
    let mut run = container.run_request();
    Command::new(path, &[])
        .fill(run.get().init_spec())
        .map_err(e)?;
    Ok(run)
}

/// Run `path` (no arguments, output discarded) and wait for its exit:
/// `wait` is sent on the promise of `run`'s process, in the same round
/// trip, as a Cap'n Proto client would.
pub async fn run_and_wait(container: &api::container::Client, path: &str) -> Result<i32> {
    let run = run_request(container, path)?;
    let process = run.send().pipeline.get_process();
    wait(&process).await
}

async fn wait(process: &api::process::Client) -> Result<i32> {
    let response = process.wait_request().send().promise.await.map_err(e)?;
    Ok(response.get().map_err(e)?.get_exit_status())
}

/// create → run `path` → wait, each call sent on the promise of the one
/// before (one round trip).
pub async fn pipelined(client: &Client, handle: &str, s: Spec, path: &str) -> Result<i32> {
    let mut request = client.grove.create_request();
    fill_spec(request.get().init_spec(), handle, s);
    let container = request.send().pipeline.get_container();
    let run = run_request(&container, path)?;
    let process = run.send().pipeline.get_process();
    wait(&process).await
}

/// The same three calls, each awaited before the next is sent.
pub async fn awaited(client: &Client, handle: &str, s: Spec, path: &str) -> Result<i32> {
    let container = create(client, handle, s).await?;
    let run = run_request(&container, path)?;
    let process = run
        .send()
        .promise
        .await
        .map_err(e)?
        .get()
        .map_err(e)?
        .get_process()
        .map_err(e)?;
    wait(&process).await
}

pub async fn destroy(client: &Client, handle: &str) -> Result<()> {
    client.destroy(handle).await.map_err(e)
}

/// Expect exit status 0 from a round's process.
pub fn ok(status: i32, what: &str) -> Result<()> {
    if status != 0 {
        return Err(format!("{what}: /bin/true exited {status}"));
    }
    Ok(())
}
