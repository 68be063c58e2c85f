//! Grove's wire formats, with no I/O and no syscalls (but for the debug-build
//! crash points of `fault`):
//! - `api_capnp`: the public Cap'n Proto API (schema/api.capnp);
//! - `helper`: the closed request enum that groved sends to grove-helper;
//! - `wshd`: the protocol between groved and wshd, PID 1 of each container;
//! - `net`: network values of the helper protocol (rules, mappings, bandwidth);
//! - `handle`: the one definition of a valid container handle;
//! - `image_ref`: the grammar of registry image references (`docker://`),
//!   and the host's platform;
//! - `auth_file`: registry logins from an `auth.json` (parsing only);
//! - `bpf`: a seccomp-program interpreter, for tests of the filters;
//! - `fault`: crash points for the fault-injection tests (debug builds).
//!
//! The helper and wshd protocols are postcard-encoded serde enums: a small,
//! well-fuzzed parser on the root side instead of a general-purpose one.

capnp::generated_code!(pub mod api_capnp);

pub mod auth_file;
pub mod bpf;
pub mod conf;
pub mod conf_file;
pub mod envelope;
pub mod fault;
pub mod handle;
pub mod helper;
pub mod image_ref;
pub mod net;
pub mod wshd;

pub use handle::{Handle, HandleError};
