//! Garden's error bodies and the one table that maps Grove's error codes to
//! them. Garden encodes an error as `{"Type", "Message", "Handle",
//! "ProcessID", "Binary"}` (errors.go, marshalledError) with status 404 for
//! ContainerNotFoundError and ProcessNotFoundError and 500 for everything
//! else (Error.StatusCode). Its clients rebuild the typed error from `Type`
//! and treat any other Type as a plain error carrying `Message`.

use grove_client::ErrorCode;
use serde_json::json;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GardenError {
    pub status: u16,
    /// Garden's Type name; "" for a plain error.
    pub kind: &'static str,
    pub message: String,
    pub handle: String,
    pub process_id: String,
    /// The message may quote the request — a process's argv or env, an
    /// image's credentials, a JSON body — so the client gets it and the
    /// log does not (`for_log`).
    pub quotes_request: bool,
}

pub const CONTAINER_NOT_FOUND: &str = "ContainerNotFoundError";
pub const PROCESS_NOT_FOUND: &str = "ProcessNotFoundError";
pub const EXECUTABLE_NOT_FOUND: &str = "ExecutableNotFoundError";
pub const SERVICE_UNAVAILABLE: &str = "ServiceUnavailableError";
/// Not one of Garden's types: Garden's clients read it as a plain error
/// with its message; a Grove-aware client can tell it apart.
pub const NOT_IMPLEMENTED: &str = "NotImplementedError";

impl GardenError {
    fn plain(status: u16, kind: &'static str, message: String) -> GardenError {
        GardenError {
            status,
            kind,
            message,
            handle: String::new(),
            process_id: String::new(),
            quotes_request: false,
        }
    }

    /// The same error, whose message the log must not carry.
    fn quoting(self) -> GardenError {
        GardenError {
            quotes_request: true,
            ..self
        }
    }

    /// What the log may say of the message.
    pub fn for_log(&self) -> &str {
        if self.quotes_request {
            "(not logged: it may quote the request)"
        } else {
            &self.message
        }
    }

    /// Grove's error, as Garden would have answered it. `handle` and
    /// `process` name what the request was about (for the 404 bodies).
    ///
    /// | Grove code | Garden Type | status |
    /// |---|---|---|
    /// | containerNotFound | ContainerNotFoundError (Handle) | 404 |
    /// | processNotFound | ProcessNotFoundError (ProcessID) | 404 |
    /// | executableNotFound | ExecutableNotFoundError | 500 |
    /// | serviceUnavailable, disconnected | ServiceUnavailableError | 500 |
    /// | notImplemented | NotImplementedError | 500 |
    /// | any other | "" (plain error, "[code] message") | 500 |
    pub fn from_grove(e: &grove_client::Error, handle: &str, process: &str) -> GardenError {
        match e.kind() {
            ErrorCode::ContainerNotFound => GardenError::container_not_found(handle),
            ErrorCode::ProcessNotFound => GardenError::process_not_found(process),
            // It names the executable and PATH: argv and env.
            ErrorCode::ExecutableNotFound => {
                GardenError::plain(500, EXECUTABLE_NOT_FOUND, e.message.clone()).quoting()
            }
            ErrorCode::ServiceUnavailable | ErrorCode::Disconnected => {
                GardenError::plain(500, SERVICE_UNAVAILABLE, format!("groved: {}", e.message))
            }
            ErrorCode::NotImplemented => GardenError::plain(
                500,
                NOT_IMPLEMENTED,
                format!("[notImplemented] {}", e.message),
            ),
            // groved's refusals quote what they refuse (an env entry, a
            // path).
            _ => GardenError::plain(500, "", format!("[{}] {}", e.code, e.message)).quoting(),
        }
    }

    pub fn container_not_found(handle: &str) -> GardenError {
        GardenError {
            handle: handle.to_string(),
            ..GardenError::plain(
                404,
                CONTAINER_NOT_FOUND,
                format!("unknown handle: {handle}"),
            )
        }
    }

    pub fn process_not_found(process: &str) -> GardenError {
        GardenError {
            process_id: process.to_string(),
            ..GardenError::plain(
                404,
                PROCESS_NOT_FOUND,
                format!("unknown process: {process}"),
            )
        }
    }

    /// A request Garden's server would fail to decode (it answers 500 with
    /// a plain error; grove-garden says 400, which is what it is).
    /// Its message may quote the body (a JSON decoder names the value it
    /// could not read).
    pub fn bad_request(message: impl Into<String>) -> GardenError {
        GardenError::plain(400, "", message.into()).quoting()
    }

    pub fn too_large(status: u16, message: impl Into<String>) -> GardenError {
        GardenError::plain(status, "", message.into())
    }

    pub fn no_route(status: u16, message: impl Into<String>) -> GardenError {
        GardenError::plain(status, "", message.into())
    }

    /// Something Grove cannot do for a Garden client: never a fake success.
    pub fn not_implemented(what: impl AsRef<str>) -> GardenError {
        GardenError::plain(
            500,
            NOT_IMPLEMENTED,
            format!(
                "[notImplemented] grove-garden: {} (see README \"Garden wire compatibility\")",
                what.as_ref()
            ),
        )
    }

    /// Any other failure, as a plain error.
    /// grove-garden itself cannot take the request now (too many
    /// connections): Garden's ServiceUnavailableError, 503.
    pub fn unavailable(message: impl Into<String>) -> GardenError {
        GardenError::plain(503, SERVICE_UNAVAILABLE, message.into())
    }

    pub fn internal(message: impl Into<String>) -> GardenError {
        GardenError::plain(500, "", message.into())
    }

    pub fn body(&self) -> serde_json::Value {
        json!({
            "Type": self.kind,
            "Message": self.message,
            "Handle": self.handle,
            "ProcessID": self.process_id,
            "Binary": "",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grove(code: &str) -> grove_client::Error {
        grove_client::Error {
            code: code.into(),
            message: "m".into(),
        }
    }

    #[test]
    fn the_table() {
        let e = GardenError::from_grove(&grove("containerNotFound"), "h", "p");
        assert_eq!(
            (e.status, e.kind, e.handle.as_str()),
            (404, CONTAINER_NOT_FOUND, "h")
        );
        assert_eq!(e.message, "unknown handle: h");
        let e = GardenError::from_grove(&grove("processNotFound"), "h", "p");
        assert_eq!(
            (e.status, e.kind, e.process_id.as_str()),
            (404, PROCESS_NOT_FOUND, "p")
        );
        let e = GardenError::from_grove(&grove("disconnected"), "h", "p");
        assert_eq!((e.status, e.kind), (500, SERVICE_UNAVAILABLE));
        let e = GardenError::from_grove(&grove("handleTaken"), "h", "p");
        assert_eq!(
            (e.status, e.kind, e.message.as_str()),
            (500, "", "[handleTaken] m")
        );
        assert_eq!(e.body()["Type"], "");
        assert!(e.quotes_request && !e.for_log().contains(&e.message));
        let e = GardenError::from_grove(&grove("executableNotFound"), "h", "p");
        assert!(e.quotes_request, "argv and PATH");
        let e = GardenError::from_grove(&grove("serviceUnavailable"), "h", "p");
        assert_eq!(e.for_log(), "groved: m");
        assert!(GardenError::bad_request("x").quotes_request);
    }
}
