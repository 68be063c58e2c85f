//! The API's typed errors. On the wire each is a Cap'n Proto exception whose
//! reason is "[code] message" (codes: `ErrorCode` in schema/api.capnp);
//! `NotImplemented` also uses the exception type `unimplemented`.

use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Internal,
    ContainerNotFound,
    HandleTaken,
    ProcessNotFound,
    ExecutableNotFound,
    InvalidSpec,
    LimitExceeded,
    PolicyRefused,
    ServiceUnavailable,
    NotImplemented,
    AlreadyDestroying,
    InvalidState,
}

impl Code {
    /// The name of the code in schema/api.capnp's `ErrorCode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::Internal => "internal",
            Code::ContainerNotFound => "containerNotFound",
            Code::HandleTaken => "handleTaken",
            Code::ProcessNotFound => "processNotFound",
            Code::ExecutableNotFound => "executableNotFound",
            Code::InvalidSpec => "invalidSpec",
            Code::LimitExceeded => "limitExceeded",
            Code::PolicyRefused => "policyRefused",
            Code::ServiceUnavailable => "serviceUnavailable",
            Code::NotImplemented => "notImplemented",
            Code::AlreadyDestroying => "alreadyDestroying",
            Code::InvalidState => "invalidState",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }

    pub fn not_found(handle: &str) -> ApiError {
        ApiError::new(Code::ContainerNotFound, format!("unknown handle: {handle}"))
    }

    pub fn invalid(field: &str, why: impl fmt::Display) -> ApiError {
        ApiError::new(Code::InvalidSpec, format!("{field}: {why}"))
    }

    pub fn internal(message: impl fmt::Display) -> ApiError {
        ApiError::new(Code::Internal, message.to_string())
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.code.as_str(), self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ApiError> for capnp::Error {
    fn from(e: ApiError) -> capnp::Error {
        if e.code == Code::NotImplemented {
            capnp::Error::unimplemented(e.to_string())
        } else {
            capnp::Error::failed(e.to_string())
        }
    }
}

impl From<capnp::Error> for ApiError {
    fn from(e: capnp::Error) -> ApiError {
        ApiError::new(Code::InvalidSpec, format!("malformed request: {}", e.extra))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
