//! The unix socket a daemon serves its API on: the one systemd passed
//! (socket activation), or one bound here, group-accessible (0660) so that
//! members of the daemon's group may connect. groved and grove-garden both
//! serve this way.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

pub struct ApiSocket {
    pub listener: tokio::net::UnixListener,
    /// Where it is bound.
    pub path: PathBuf,
    /// Bound here, so removed on exit; a socket systemd passed is systemd's
    /// to make and remove.
    pub ours: bool,
}

impl ApiSocket {
    /// The socket systemd passed, if any, else a new one bound at `path`
    /// (replacing a stale socket file left there).
    pub fn open(activated: Option<OwnedFd>, path: &Path) -> Result<ApiSocket, String> {
        match activated {
            Some(fd) => {
                let std_listener = std::os::unix::net::UnixListener::from(fd);
                std_listener
                    .set_nonblocking(true)
                    .map_err(|e| format!("socket activation: {e}"))?;
                let listener = tokio::net::UnixListener::from_std(std_listener)
                    .map_err(|e| format!("socket activation: {e}"))?;
                let path = PathBuf::from(crate::systemd::bound_path(listener.as_fd()));
                Ok(ApiSocket {
                    listener,
                    path,
                    ours: false,
                })
            }
            None => Ok(ApiSocket {
                listener: bind(path)?,
                path: path.to_path_buf(),
                ours: true,
            }),
        }
    }
}

fn bind(path: &Path) -> Result<tokio::net::UnixListener, String> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(format!("removing the stale socket {}: {e}", path.display()))
        }
        _ => {}
    }
    let listener = tokio::net::UnixListener::bind(path)
        .map_err(|e| format!("binding {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .map_err(|e| format!("chmod {}: {e}", path.display()))?;
    Ok(listener)
}
