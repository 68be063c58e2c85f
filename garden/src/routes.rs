//! Garden's routes (cloudfoundry/garden routes/routes.go): method and path
//! to a typed route with its path parameters.

use crate::errors::GardenError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Ping,
    Capacity,
    List,
    Create,
    BulkInfo,
    BulkMetrics,
    Info(String),
    Destroy(String),
    Stop(String),
    StreamIn(String),
    StreamOut(String),
    BandwidthLimits(String),
    CpuLimits(String),
    DiskLimits(String),
    MemoryLimits(String),
    NetIn(String),
    NetOut(String),
    BulkNetOut(String),
    Run(String),
    Attach(String, String),
    /// handle, process id, stream id, stderr?
    Output(String, String, String, bool),
    GraceTime(String),
    Properties(String),
    Property(String, String),
    SetProperty(String, String),
    RemoveProperty(String, String),
    Metrics(String),
}

/// The route of a request, or Garden's answer for none: 404 for an
/// unknown path, 405 for a known path with another method.
pub fn route(method: &str, segments: &[String]) -> Result<Route, GardenError> {
    if let Some(r) = find(method, segments) {
        return Ok(r);
    }
    let path = segments.join("/");
    // A path some other method has?
    let known = ["GET", "POST", "PUT", "DELETE"]
        .iter()
        .any(|m| *m != method && find(m, segments).is_some());
    if known {
        Err(GardenError::no_route(
            405,
            format!("method {method} not allowed on /{path}"),
        ))
    } else {
        Err(GardenError::no_route(404, format!("no route /{path}")))
    }
}

fn find(method: &str, segments: &[String]) -> Option<Route> {
    use Route::*;
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let h = |i: usize| s[i].to_string();
    match (method, s.as_slice()) {
        ("GET", ["ping"]) => Some(Ping),
        ("GET", ["capacity"]) => Some(Capacity),
        ("GET", ["containers"]) => Some(List),
        ("POST", ["containers"]) => Some(Create),
        // Before /containers/:handle: rata matches these literal paths first.
        ("GET", ["containers", "bulk_info"]) => Some(BulkInfo),
        ("GET", ["containers", "bulk_metrics"]) => Some(BulkMetrics),
        ("GET", ["containers", _, "info"]) => Some(Info(h(1))),
        ("DELETE", ["containers", _]) => Some(Destroy(h(1))),
        ("PUT", ["containers", _, "stop"]) => Some(Stop(h(1))),
        ("PUT", ["containers", _, "files"]) => Some(StreamIn(h(1))),
        ("GET", ["containers", _, "files"]) => Some(StreamOut(h(1))),
        ("GET", ["containers", _, "limits", "bandwidth"]) => Some(BandwidthLimits(h(1))),
        ("GET", ["containers", _, "limits", "cpu"]) => Some(CpuLimits(h(1))),
        ("GET", ["containers", _, "limits", "disk"]) => Some(DiskLimits(h(1))),
        ("GET", ["containers", _, "limits", "memory"]) => Some(MemoryLimits(h(1))),
        ("POST", ["containers", _, "net", "in"]) => Some(NetIn(h(1))),
        ("POST", ["containers", _, "net", "out"]) => Some(NetOut(h(1))),
        ("POST", ["containers", _, "net", "out", "bulk"]) => Some(BulkNetOut(h(1))),
        ("GET", ["containers", _, "processes", _, "attaches", _, "stdout"]) => {
            Some(Output(h(1), h(3), h(5), false))
        }
        ("GET", ["containers", _, "processes", _, "attaches", _, "stderr"]) => {
            Some(Output(h(1), h(3), h(5), true))
        }
        ("POST", ["containers", _, "processes"]) => Some(Run(h(1))),
        ("GET", ["containers", _, "processes", _]) => Some(Attach(h(1), h(3))),
        ("PUT", ["containers", _, "grace_time"]) => Some(GraceTime(h(1))),
        ("GET", ["containers", _, "properties"]) => Some(Properties(h(1))),
        ("GET", ["containers", _, "properties", _]) => Some(Property(h(1), h(3))),
        ("PUT", ["containers", _, "properties", _]) => Some(SetProperty(h(1), h(3))),
        ("DELETE", ["containers", _, "properties", _]) => Some(RemoveProperty(h(1), h(3))),
        ("GET", ["containers", _, "metrics"]) => Some(Metrics(h(1))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(method: &str, path: &str) -> Result<Route, GardenError> {
        let segs: Vec<String> = path
            .split('/')
            .filter(|s| !s.is_empty())
            .map(String::from)
            .collect();
        route(method, &segs)
    }

    #[test]
    fn every_route() {
        assert_eq!(r("GET", "/ping").unwrap(), Route::Ping);
        assert_eq!(r("GET", "/containers/bulk_info").unwrap(), Route::BulkInfo);
        assert_eq!(
            r("DELETE", "/containers/x").unwrap(),
            Route::Destroy("x".into())
        );
        assert_eq!(
            r("GET", "/containers/x/processes/p/attaches/7/stderr").unwrap(),
            Route::Output("x".into(), "p".into(), "7".into(), true)
        );
        assert_eq!(
            r("GET", "/containers/x/processes/p").unwrap(),
            Route::Attach("x".into(), "p".into())
        );
        assert_eq!(
            r("POST", "/containers/x/net/out/bulk").unwrap(),
            Route::BulkNetOut("x".into())
        );
        assert_eq!(r("GET", "/nope").unwrap_err().status, 404);
        assert_eq!(r("POST", "/ping").unwrap_err().status, 405);
    }
}
