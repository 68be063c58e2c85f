//! Where groved and grove-garden find their configuration file: the one
//! `--config` names, else their default path under /etc/grove when it
//! exists, else the embedded defaults. (Not the helper's: its policy file
//! is always named.)

use std::fmt::Display;
use std::path::Path;

/// The configuration in `explicit`, else in `default` when that exists,
/// else `C::default()`; with a line for the log saying which. Errors name
/// the file.
pub fn load<C: Default, E: Display>(
    explicit: Option<&Path>,
    default: &Path,
    parse: impl Fn(&str) -> Result<C, E>,
) -> Result<(C, String), String> {
    let path = explicit.unwrap_or(default);
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text)
            .map(|config| (config, format!("configuration from {}", path.display())))
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && explicit.is_none() => Ok((
            C::default(),
            format!("no {}: the embedded defaults", path.display()),
        )),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}
