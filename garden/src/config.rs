//! grove-garden's configuration: defaults, overridden by a TOML file of
//! top-level keys (`grove-garden --config PATH`, else
//! /etc/grove/garden.conf when it exists; the syntax of groved's config,
//! see grove_schema::conf), then by flags.

use grove_schema::conf;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// The file grove-garden reads when no `--config` names one (`./dev
/// install` writes it).
pub const DEFAULT_PATH: &str = "/etc/grove/garden.conf";

/// The configuration in `explicit`, else in `default` when that exists,
/// else the embedded defaults; with a line for the log saying which.
pub fn load(explicit: Option<&Path>, default: &Path) -> Result<(Config, String), String> {
    grove_schema::conf_file::load(explicit, default, Config::parse)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Garden's API on this unix socket (group-accessible, mode 0660).
    pub listen: PathBuf,
    /// Garden's API on TCP as well (`listen_tcp = "HOST:PORT"`, an IP
    /// literal; default "" = off). Garden's protocol has no authentication:
    /// an address off loopback needs `allow_unauthenticated_remote = true`.
    pub listen_tcp: Option<SocketAddr>,
    pub allow_unauthenticated_remote: bool,
    /// groved's API socket.
    pub grove_socket: PathBuf,
    /// Client connections open at once; a further one is closed at once.
    pub max_connections: usize,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "/run/grove/garden.sock".into(),
            listen_tcp: None,
            allow_unauthenticated_remote: false,
            grove_socket: grove_client::DEFAULT_SOCKET.into(),
            max_connections: 16384,
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        for entry in conf::parse(text).map_err(|e| e.to_string())? {
            let at = |msg: String| format!("line {}: {}", entry.line, msg);
            let path = || entry.absolute_path().map_err(at);
            match entry.key.as_str() {
                "listen" => config.listen = path()?,
                "grove_socket" => config.grove_socket = path()?,
                "listen_tcp" => config.listen_tcp = parse_listen_tcp(&entry.value).map_err(at)?,
                "allow_unauthenticated_remote" => {
                    config.allow_unauthenticated_remote = entry.flag().ok_or_else(|| {
                        at(format!(
                            "allow_unauthenticated_remote must be true or false, not {:?}",
                            entry.value
                        ))
                    })?
                }
                "max_connections" => {
                    config.max_connections = entry
                        .value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1 << 20).contains(n))
                        .ok_or_else(|| {
                            at(format!(
                                "max_connections must be a number from 1 to 1048576, not {:?}",
                                entry.value
                            ))
                        })?
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (known: listen, listen_tcp, \
                         allow_unauthenticated_remote, grove_socket, max_connections)"
                    )))
                }
            }
        }
        Ok(config)
    }

    /// Refuse a TCP listener off loopback unless explicitly allowed: Garden
    /// has no authentication, so anyone who reaches it owns the containers.
    pub fn check(&self) -> Result<(), String> {
        if let Some(addr) = self.listen_tcp {
            if !addr.ip().is_loopback() && !self.allow_unauthenticated_remote {
                return Err(format!(
                    "listen_tcp = \"{addr}\" is not a loopback address, and Garden's protocol has \
                     no authentication: anyone who can reach it can run anything in any container. \
                     Set allow_unauthenticated_remote = true to do it anyway (behind a firewall)"
                ));
            }
        }
        Ok(())
    }
}

pub fn parse_listen_tcp(value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!("listen_tcp must be IP:PORT (an IP literal, e.g. 127.0.0.1:7777), not {value:?}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_read_when_present_and_optional() {
        let dir = std::env::temp_dir().join(format!("garden-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("garden.conf");
        let missing = dir.join("missing.conf");
        let (config, origin) = load(None, &missing).unwrap();
        assert_eq!(config, Config::default());
        assert!(origin.contains("embedded defaults") && origin.contains("missing.conf"));
        std::fs::write(&file, "max_connections = 7\n").unwrap();
        let (config, origin) = load(None, &file).unwrap();
        assert_eq!(config.max_connections, 7);
        assert!(origin.contains(file.to_str().unwrap()), "{origin}");
        std::fs::write(&file, "max_connections = \"many\"\n").unwrap();
        let e = load(None, &file).unwrap_err();
        assert!(e.starts_with(&format!("{}: line 1", file.display())), "{e}");
        // A file named by --config must exist.
        let e = load(Some(&missing), &file).unwrap_err();
        assert!(e.contains("missing.conf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_keys_and_refusals() {
        assert_eq!(Config::parse("").unwrap(), Config::default());
        let c = Config::parse(
            "listen = \"/x.sock\"\ngrove_socket = \"/g.sock\"\nlisten_tcp = \"127.0.0.1:7777\"\n",
        )
        .unwrap();
        assert_eq!(c.listen, PathBuf::from("/x.sock"));
        assert_eq!(c.listen_tcp, Some("127.0.0.1:7777".parse().unwrap()));
        c.check().unwrap();
        assert!(Config::parse("listen = \"rel\"").is_err());
        assert!(Config::parse("nope = 1")
            .unwrap_err()
            .contains("unknown key"));
        let remote = Config::parse("listen_tcp = \"0.0.0.0:7777\"").unwrap();
        assert!(remote
            .check()
            .unwrap_err()
            .contains("allow_unauthenticated_remote"));
        let allowed =
            Config::parse("listen_tcp = \"0.0.0.0:7777\"\nallow_unauthenticated_remote = true")
                .unwrap();
        allowed.check().unwrap();
    }
}
