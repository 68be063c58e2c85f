//! What grove-helper, groved and grove-garden share as daemons: running
//! under systemd (`systemd`: socket activation and sd_notify), their log
//! lines (`logline`: styles for a terminal, a file or journald, and the
//! helper's log macros), and, for the two unprivileged ones, their tracing
//! set-up (`logging`) and their API socket (`api_socket`). It was three
//! files included with `#[path]`; a crate of its own says what depends on
//! what. grove-helper links it without features: no tokio, no tracing.

#[macro_use]
pub mod logline;
pub mod systemd;

#[cfg(feature = "tokio")]
pub mod api_socket;
#[cfg(feature = "tracing")]
pub mod logging;
