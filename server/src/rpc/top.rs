//! `Container.top`: the container's processes, as its wshd reads them from
//! the container's /proc.

use crate::containers::Container;
use crate::error::{ApiError, ApiResult, Code};
use crate::wshd_client;
use grove_schema::api_capnp::process_status;
use grove_schema::wshd::{ErrorKind, ProcessStatus, Request, Response};

/// Ask the container's wshd for its processes; `true`: the list was cut.
pub async fn top(container: &Container) -> ApiResult<(Vec<ProcessStatus>, bool)> {
    match wshd_client::call_answer(&container.wshd_socket, &Request::Top).await? {
        Ok((
            Response::Top {
                processes,
                truncated,
            },
            _,
        )) => Ok((processes, truncated)),
        Ok((other, _)) => Err(ApiError::internal(format!(
            "unexpected answer to top: {other:?}"
        ))),
        // A wshd from before `Top` cannot decode the request.
        Err(e) if e.kind == ErrorKind::Malformed => Err(ApiError::new(
            Code::NotImplemented,
            format!(
                "container {}: its wshd predates top (recreate the container to use it)",
                container.handle
            ),
        )),
        Err(e) => Err(ApiError::new(
            Code::Internal,
            format!("container {}: {}", container.handle, e.message),
        )),
    }
}

pub fn fill(p: &ProcessStatus, mut out: process_status::Builder<'_>) {
    out.set_pid(p.pid);
    out.set_parent_pid(p.ppid);
    out.set_uid(p.uid);
    out.set_user(p.user.as_deref().unwrap_or(""));
    let mut state = [0u8; 4];
    out.set_state(&*p.state.encode_utf8(&mut state));
    out.set_cpu_millis(p.cpu_millis);
    out.set_elapsed_millis(p.elapsed_millis);
    out.set_rss_bytes(p.rss_bytes);
    out.set_command(p.command.as_str());
    out.set_process_id(p.process_id.as_deref().unwrap_or(""));
}
