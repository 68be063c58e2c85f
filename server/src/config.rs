//! groved's configuration: an embedded default, optionally overridden by a
//! `key = value` file (`groved --config PATH`).

use grove_schema::conf;
use std::path::PathBuf;

#[derive(Debug, Clone)]
pub struct Config {
    /// The API's unix socket (group-accessible).
    pub listen: PathBuf,
    /// grove-helper's SOCK_SEQPACKET socket.
    pub helper_socket: PathBuf,
    /// Where grove-helper binds each container's wshd socket, `<handle>.sock`.
    pub wshd_socket_dir: PathBuf,
    /// Container records, owned by the grove user.
    pub state_dir: PathBuf,
    /// Reported by capacity; the helper's policy enforces its own maximum.
    pub max_containers: u64,
    /// Registries (`host[:port]`) pulled from over plain HTTP; every other
    /// registry is HTTPS only.
    pub insecure_registries: Vec<String>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "/run/grove/grove.sock".into(),
            helper_socket: "/run/grove/helper.sock".into(),
            wshd_socket_dir: "/run/grove/wshd".into(),
            state_dir: "/var/lib/grove/server".into(),
            max_containers: 1024,
            insecure_registries: Vec::new(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        for entry in conf::parse(text).map_err(|e| e.to_string())? {
            let at = |msg: String| format!("line {}: {}", entry.line, msg);
            let path = || -> Result<PathBuf, String> {
                if entry.value.starts_with('/') {
                    Ok(PathBuf::from(&entry.value))
                } else {
                    Err(at(format!(
                        "{} must be an absolute path, not {:?}",
                        entry.key, entry.value
                    )))
                }
            };
            match entry.key.as_str() {
                "listen" => config.listen = path()?,
                "helper_socket" => config.helper_socket = path()?,
                "wshd_socket_dir" => config.wshd_socket_dir = path()?,
                "state_dir" => config.state_dir = path()?,
                "max_containers" => {
                    config.max_containers = entry
                        .value
                        .parse()
                        .map_err(|_| at(format!("max_containers must be a number, not {:?}", entry.value)))?
                }
                "insecure_registries" => {
                    config.insecure_registries = entry
                        .value
                        .split(',')
                        .map(str::trim)
                        .filter(|h| !h.is_empty())
                        .map(str::to_string)
                        .collect()
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (known: listen, helper_socket, wshd_socket_dir, state_dir, max_containers, insecure_registries)"
                    )))
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("listen = /tmp/g.sock\nmax_containers = 5\n").unwrap();
        assert!(c.insecure_registries.is_empty());
        let c2 = Config::parse("insecure_registries = 127.0.0.1:5000, reg:1 ,\n").unwrap();
        assert_eq!(c2.insecure_registries, ["127.0.0.1:5000", "reg:1"]);
        assert_eq!(c.listen, PathBuf::from("/tmp/g.sock"));
        assert_eq!(c.max_containers, 5);
        assert_eq!(c.helper_socket, PathBuf::from("/run/grove/helper.sock"));
    }

    #[test]
    fn refuses_unknown_keys_and_relative_paths() {
        assert!(Config::parse("colour = red")
            .unwrap_err()
            .contains("unknown key"));
        assert!(Config::parse("state_dir = var/x")
            .unwrap_err()
            .contains("absolute"));
        assert!(Config::parse("max_containers = lots")
            .unwrap_err()
            .contains("number"));
    }
}
