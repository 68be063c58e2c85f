//! groved's configuration: an embedded default, overridden by a TOML file
//! of top-level keys (`groved --config PATH`, else /etc/grove/groved.conf
//! when it exists; see grove_schema::conf).

use grove_schema::conf;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

/// The file groved reads when no `--config` names one (`./dev install`
/// writes it).
pub const DEFAULT_PATH: &str = "/etc/grove/groved.conf";

/// The configuration in `explicit`, else in `default` when that exists,
/// else the embedded defaults; with a line for the log saying which.
pub fn load(explicit: Option<&Path>, default: &Path) -> Result<(Config, String), String> {
    grove_schema::conf_file::load(explicit, default, Config::parse)
}

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
    /// Requests that may wait for grove-helper at once (it answers one at a
    /// time); past this a request is refused as busy at once instead of
    /// queueing without bound (`helper_queue_limit`, default 256). Destroys
    /// are never refused: they free what the others wait for.
    pub helper_queue_limit: usize,
    /// Registries (`host[:port]`) pulled from over plain HTTP; every other
    /// registry is HTTPS only.
    pub insecure_registries: Vec<String>,
    /// The nameservers written to each container's /etc/resolv.conf.
    /// `None`: the host's own (`host_dns_servers`), read at each create.
    pub dns_servers: Option<Vec<Ipv4Addr>>,
    /// Reported as every container's externalIp ("" = none).
    pub external_ip: String,
    /// Confine groved with Landlock and seccomp once it is up (`confine =
    /// true|false`, default true; off only for debugging). See sandbox.rs.
    pub confine: bool,
    /// The grace time of a container whose spec gives none (0): destroyed
    /// after this many seconds without a request (`default_grace_time`,
    /// default 0 = never).
    pub default_grace_time: u64,
    /// The API on TCP as well (`listen_tcp = "HOST:PORT"`, an IP literal;
    /// default "" = off). Off loopback it needs the three `tls_*` keys.
    pub listen_tcp: Option<SocketAddr>,
    /// Mutual TLS on `listen_tcp`: all three or none (see `Tls`).
    pub tls: Option<Tls>,
    /// Client connections open at once (unix and TCP together); a further
    /// one is closed at once (`max_connections`, default 4096).
    pub max_connections: usize,
    /// A connection's calls being served at once; a further one fails at
    /// once with `limitExceeded` (`max_calls_in_flight`, default 1024: a
    /// `wait` lasts as long as its process, and a client may wait on
    /// hundreds at once).
    pub max_calls_in_flight: usize,
    /// Where Prometheus metrics are served (`metrics_listen`, default "" =
    /// nowhere): a loopback TCP address or a unix socket (metrics_http.rs).
    pub metrics_listen: Option<MetricsListen>,
    /// Registries and the image cache (image_config.rs).
    pub images: crate::image_config::ImageConfig,
}

/// `metrics_listen`: the metrics carry no secrets but have no
/// authentication either, so TCP stays on loopback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetricsListen {
    /// A loopback IP literal and port (0: one the kernel picks, logged).
    Tcp(SocketAddr),
    /// A unix socket groved binds, mode 0660 like the API's.
    Unix(PathBuf),
}

/// The PEM files of `listen_tcp`'s mutual TLS (read at start-up, before
/// groved confines itself; see remote.rs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tls {
    /// `tls_cert`: groved's certificate chain, its own certificate first.
    pub cert: PathBuf,
    /// `tls_key`: the certificate's private key.
    pub key: PathBuf,
    /// `tls_client_ca`: the CA certificates a client's certificate must
    /// chain to (a client without one is refused).
    pub client_ca: PathBuf,
}

/// The keys of `Tls`, in the order errors name them.
const TLS_KEYS: [&str; 3] = ["tls_cert", "tls_key", "tls_client_ca"];

impl Default for Config {
    fn default() -> Config {
        Config {
            listen: "/run/grove/grove.sock".into(),
            helper_socket: "/run/grove/helper.sock".into(),
            wshd_socket_dir: "/run/grove/wshd".into(),
            state_dir: "/var/lib/grove/server".into(),
            max_containers: 1024,
            helper_queue_limit: 256,
            insecure_registries: Vec::new(),
            dns_servers: None,
            external_ip: String::new(),
            confine: true,
            default_grace_time: 0,
            listen_tcp: None,
            tls: None,
            max_connections: 4096,
            max_calls_in_flight: 1024,
            metrics_listen: None,
            images: Default::default(),
        }
    }
}

impl Config {
    pub fn parse(text: &str) -> Result<Config, String> {
        let mut config = Config::default();
        // listen_tcp's line, and each tls_* key's (line, path): checked
        // together once every key is read.
        let mut listen_tcp_line = 0;
        let mut tls: [Option<(usize, PathBuf)>; 3] = Default::default();
        for entry in conf::parse(text).map_err(|e| e.to_string())? {
            let at = |msg: String| format!("line {}: {}", entry.line, msg);
            let path = || entry.absolute_path().map_err(at);
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
                key @ ("max_connections" | "max_calls_in_flight" | "helper_queue_limit") => {
                    let n = entry
                        .value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=1 << 20).contains(n))
                        .ok_or_else(|| {
                            at(format!(
                                "{key} must be a number from 1 to 1048576, not {:?}",
                                entry.value
                            ))
                        })?;
                    match key {
                        "max_connections" => config.max_connections = n,
                        "max_calls_in_flight" => config.max_calls_in_flight = n,
                        _ => config.helper_queue_limit = n,
                    }
                }
                "default_grace_time" => {
                    config.default_grace_time = entry.value.parse().map_err(|_| {
                        at(format!(
                            "default_grace_time must be a number of seconds, not {:?}",
                            entry.value
                        ))
                    })?
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
                "dns_servers" => {
                    config.dns_servers = Some(
                        entry
                            .value
                            .split(',')
                            .map(str::trim)
                            .filter(|a| !a.is_empty())
                            .map(|a| {
                                a.parse::<Ipv4Addr>().map_err(|_| {
                                    at(format!("dns_servers: {a:?} is not an IPv4 address"))
                                })
                            })
                            .collect::<Result<_, _>>()?,
                    )
                }
                "external_ip" => {
                    if !entry.value.is_empty() && entry.value.parse::<Ipv4Addr>().is_err() {
                        return Err(at(format!(
                            "external_ip must be an IPv4 address, not {:?}",
                            entry.value
                        )));
                    }
                    config.external_ip = entry.value.clone();
                }
                "confine" => {
                    config.confine = entry.flag().ok_or_else(|| {
                        at(format!("confine must be true or false, not {:?}", entry.value))
                    })?
                }
                "metrics_listen" => {
                    config.metrics_listen = parse_metrics_listen(&entry.value).map_err(at)?
                }
                "listen_tcp" => {
                    listen_tcp_line = entry.line;
                    config.listen_tcp = parse_listen_tcp(&entry.value).map_err(at)?;
                }
                key @ ("tls_cert" | "tls_key" | "tls_client_ca") => {
                    // "" is the default: none.
                    let index = TLS_KEYS.iter().position(|k| *k == key).unwrap_or(0);
                    tls[index] = if entry.value.is_empty() {
                        None
                    } else {
                        Some((entry.line, path()?))
                    };
                }
                key if crate::image_config::KEYS.contains(&key) => {
                    config.images.set(&entry).map_err(at)?
                }
                other => {
                    return Err(at(format!(
                        "unknown key {other:?} (known: {}, listen, helper_socket, wshd_socket_dir, state_dir, max_containers, insecure_registries, dns_servers, external_ip, confine, default_grace_time, listen_tcp, tls_cert, tls_key, tls_client_ca, max_connections, max_calls_in_flight, helper_queue_limit, metrics_listen)",
                        crate::image_config::KEYS.join(", ")
                    )))
                }
            }
        }
        config.tls = check_tls(config.listen_tcp, listen_tcp_line, tls)?;
        Ok(config)
    }
}

/// `listen_tcp`: "" (off) or an IP literal and port, `127.0.0.1:7070` or
/// `[::1]:7070` (port 0: one the kernel picks, logged at start-up).
fn parse_listen_tcp(value: &str) -> Result<Option<SocketAddr>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    value.parse::<SocketAddr>().map(Some).map_err(|_| {
        format!(
            "listen_tcp must be \"\" (off) or HOST:PORT with an IP address as HOST \
             (\"127.0.0.1:7070\", \"[::1]:7070\", \"0.0.0.0:7070\"), not {value:?}"
        )
    })
}

/// `metrics_listen`: "" (off), an absolute unix socket path, or a loopback
/// IP literal and port.
fn parse_metrics_listen(value: &str) -> Result<Option<MetricsListen>, String> {
    if value.is_empty() {
        return Ok(None);
    }
    if value.starts_with('/') {
        return Ok(Some(MetricsListen::Unix(PathBuf::from(value))));
    }
    match value.parse::<SocketAddr>() {
        Ok(address) if address.ip().is_loopback() => Ok(Some(MetricsListen::Tcp(address))),
        Ok(_) => Err(format!(
            "metrics_listen = {value:?} is not a loopback address: the metrics endpoint has \
             no authentication, so it serves on loopback (\"127.0.0.1:9464\") or a unix \
             socket (\"/run/grove/metrics.sock\") only"
        )),
        Err(_) => Err(format!(
            "metrics_listen must be \"\" (off), a loopback HOST:PORT with an IP address as \
             HOST (\"127.0.0.1:9464\", \"[::1]:9464\") or an absolute unix socket path, \
             not {value:?}"
        )),
    }
}

/// The rules binding `listen_tcp` and the `tls_*` keys: the three TLS keys
/// come together (mutual TLS or none), only with `listen_tcp`, and a
/// `listen_tcp` off loopback needs them.
fn check_tls(
    listen_tcp: Option<SocketAddr>,
    listen_tcp_line: usize,
    tls: [Option<(usize, PathBuf)>; 3],
) -> Result<Option<Tls>, String> {
    let names = |given: bool| -> Vec<&str> {
        (0..3)
            .filter(|&i| tls[i].is_some() == given)
            .map(|i| TLS_KEYS[i])
            .collect()
    };
    let missing = names(false);
    let are = if missing.len() == 1 { "is" } else { "are" };
    if let Some(line) = tls.iter().flatten().map(|(line, _)| *line).min() {
        if !missing.is_empty() {
            return Err(format!(
                "line {line}: tls_cert, tls_key and tls_client_ca go together (mutual TLS: \
                 clients must present a certificate), and {} {are} missing",
                missing.join(", ")
            ));
        }
        if listen_tcp.is_none() {
            return Err(format!(
                "line {line}: {} without listen_tcp: TLS is for the TCP listener, which is off",
                names(true).join(", ")
            ));
        }
    }
    if let Some(address) = listen_tcp {
        if !address.ip().is_loopback() && !missing.is_empty() {
            return Err(format!(
                "line {listen_tcp_line}: listen_tcp = {:?} is not a loopback address, so it \
                 needs mutual TLS, and {} {are} missing (tls_cert and tls_key: groved's \
                 certificate and key; tls_client_ca: the CA clients' certificates must chain to)",
                address.to_string(),
                missing.join(", ")
            ));
        }
    }
    Ok(match tls {
        [Some((_, cert)), Some((_, key)), Some((_, client_ca))] => Some(Tls {
            cert,
            key,
            client_ca,
        }),
        _ => None,
    })
}

impl Config {
    /// The nameservers for a container's /etc/resolv.conf: the configured
    /// ones, else the host's.
    pub fn dns_servers(&self) -> Vec<Ipv4Addr> {
        match &self.dns_servers {
            Some(servers) => servers.clone(),
            None => {
                host_dns_servers(&std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default())
            }
        }
    }
}

/// The IPv4 `nameserver` lines of a resolv.conf, without loopback
/// addresses (a container cannot reach the host's 127.0.0.53) and without
/// IPv6 ones (containers have no IPv6).
pub fn host_dns_servers(resolv_conf: &str) -> Vec<Ipv4Addr> {
    resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            match (words.next(), words.next()) {
                (Some("nameserver"), Some(address)) => address.parse::<IpAddr>().ok(),
                _ => None,
            }
        })
        .filter_map(|address| match address {
            IpAddr::V4(v4) if !v4.is_loopback() && !v4.is_unspecified() => Some(v4),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_read_when_present_and_optional() {
        let dir = std::env::temp_dir().join(format!("groved-conf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("groved.conf");
        let missing = dir.join("missing.conf");
        let (config, origin) = load(None, &missing).unwrap();
        assert_eq!(config.listen, Config::default().listen);
        assert!(origin.contains("embedded defaults") && origin.contains("missing.conf"));
        std::fs::write(&file, "max_containers = 7\n").unwrap();
        let (config, origin) = load(None, &file).unwrap();
        assert_eq!(config.max_containers, 7);
        assert!(origin.contains(file.to_str().unwrap()), "{origin}");
        std::fs::write(&file, "max_containers = \"lots\"\n").unwrap();
        let e = load(None, &file).unwrap_err();
        assert!(e.starts_with(&format!("{}: line 1", file.display())), "{e}");
        // A file named by --config must exist.
        let e = load(Some(&missing), &file).unwrap_err();
        assert!(e.contains("missing.conf"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn defaults_and_overrides() {
        let c = Config::parse("listen = \"/tmp/g.sock\"\nmax_containers = 5\n").unwrap();
        assert!(c.insecure_registries.is_empty());
        let c2 = Config::parse("insecure_registries = \"127.0.0.1:5000, reg:1 ,\"\n").unwrap();
        assert_eq!(c2.insecure_registries, ["127.0.0.1:5000", "reg:1"]);
        assert_eq!(c.listen, PathBuf::from("/tmp/g.sock"));
        assert_eq!(c.max_containers, 5);
        assert_eq!(c.helper_socket, PathBuf::from("/run/grove/helper.sock"));
        assert!(c.confine);
        assert!(!Config::parse("confine = false\n").unwrap().confine);
        assert!(Config::parse("confine = true\n").unwrap().confine);
        assert_eq!(c.default_grace_time, 0, "never, by default");
        assert_eq!(
            Config::parse("default_grace_time = 300\n")
                .unwrap()
                .default_grace_time,
            300
        );
        assert!(Config::parse("default_grace_time = \"5m\"\n")
            .unwrap_err()
            .contains("seconds"));
        assert_eq!(c.max_connections, 4096);
        assert_eq!(c.max_calls_in_flight, 1024);
        let limits = Config::parse("max_connections = 10\nmax_calls_in_flight = 4\n").unwrap();
        assert_eq!(
            (limits.max_connections, limits.max_calls_in_flight),
            (10, 4)
        );
        for bad in ["max_connections = 0", "max_calls_in_flight = \"many\""] {
            let err = Config::parse(bad).unwrap_err();
            assert!(err.contains("1 to 1048576"), "{err}");
        }
        assert!(Config::parse("confine = \"maybe\"\n")
            .unwrap_err()
            .contains("true or false"));
    }

    #[test]
    fn refuses_unknown_keys_and_relative_paths() {
        assert!(Config::parse("colour = \"red\"")
            .unwrap_err()
            .contains("unknown key"));
        assert!(Config::parse("state_dir = \"var/x\"")
            .unwrap_err()
            .contains("absolute"));
        assert!(Config::parse("max_containers = \"lots\"")
            .unwrap_err()
            .contains("number"));
        assert!(
            Config::parse("dns_servers = [\"8.8.8.8\", \"dns.example\"]")
                .unwrap_err()
                .contains("dns.example")
        );
        assert!(Config::parse("external_ip = \"10.0.0.300\"")
            .unwrap_err()
            .contains("external_ip"));
        assert!(Config::parse("listen = /tmp/g.sock")
            .unwrap_err()
            .contains("listen"));
        assert!(Config::parse("[server]\nlisten = \"/x\"")
            .unwrap_err()
            .contains("server"));
    }

    #[test]
    fn network_keys() {
        let c = Config::parse(
            "dns_servers = [\"8.8.8.8\", \"1.1.1.1\"]\nexternal_ip = \"203.0.113.7\"\n",
        )
        .unwrap();
        assert_eq!(
            c.dns_servers(),
            [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)]
        );
        assert_eq!(c.external_ip, "203.0.113.7");
        let none = Config::parse("dns_servers = []\n").unwrap();
        assert!(none.dns_servers().is_empty());
        assert!(Config::default().dns_servers.is_none());
        assert_eq!(Config::default().external_ip, "");
    }

    #[test]
    fn listen_tcp_and_tls() {
        assert_eq!(Config::default().listen_tcp, None);
        assert_eq!(
            Config::parse("listen_tcp = \"\"\n").unwrap().listen_tcp,
            None
        );
        // Loopback without TLS: plain TCP.
        let plain = Config::parse("listen_tcp = \"127.0.0.1:7070\"\n").unwrap();
        assert_eq!(plain.listen_tcp, Some("127.0.0.1:7070".parse().unwrap()));
        assert_eq!(plain.tls, None);
        let v6 = Config::parse("listen_tcp = \"[::1]:7070\"\n").unwrap();
        assert_eq!(v6.listen_tcp, Some("[::1]:7070".parse().unwrap()));
        // Off loopback: all three TLS keys, each named when missing.
        let tls = "tls_cert = \"/etc/grove/tls/groved.pem\"\n\
                   tls_key = \"/etc/grove/tls/groved.key\"\n\
                   tls_client_ca = \"/etc/grove/tls/clients.pem\"\n";
        let c = Config::parse(&format!("listen_tcp = \"0.0.0.0:7070\"\n{tls}")).unwrap();
        assert_eq!(c.listen_tcp, Some("0.0.0.0:7070".parse().unwrap()));
        assert_eq!(
            c.tls,
            Some(Tls {
                cert: "/etc/grove/tls/groved.pem".into(),
                key: "/etc/grove/tls/groved.key".into(),
                client_ca: "/etc/grove/tls/clients.pem".into(),
            })
        );
        for address in [
            "0.0.0.0:7070",
            "192.0.2.1:7070",
            "[::]:7070",
            "[2001:db8::1]:1",
        ] {
            let err = Config::parse(&format!("max_containers = 1\nlisten_tcp = {address:?}\n"))
                .unwrap_err();
            assert!(err.starts_with("line 2: "), "{err}");
            for key in ["loopback", "tls_cert", "tls_key", "tls_client_ca"] {
                assert!(err.contains(key), "{err}");
            }
        }
        let err = Config::parse(
            "listen_tcp = \"0.0.0.0:7070\"\ntls_key = \"/k\"\ntls_client_ca = \"/ca\"\n",
        )
        .unwrap_err();
        assert!(err.contains("tls_cert is missing"), "{err}");
        // Together or not at all, even on loopback.
        let err =
            Config::parse("listen_tcp = \"127.0.0.1:7070\"\ntls_cert = \"/c\"\n").unwrap_err();
        assert!(err.contains("tls_key, tls_client_ca are missing"), "{err}");
        assert!(err.contains("together"), "{err}");
        // "" is none.
        let none = "tls_cert = \"\"\ntls_key = \"\"\ntls_client_ca = \"\"\n";
        assert_eq!(Config::parse(none).unwrap().tls, None);
        // TLS with the TCP listener off.
        let err = Config::parse(tls).unwrap_err();
        assert!(err.contains("without listen_tcp"), "{err}");
        // Malformed values.
        for bad in [
            "localhost:7070",
            "127.0.0.1",
            "7070",
            "[::1]",
            "127.0.0.1:70000",
        ] {
            let err = Config::parse(&format!("listen_tcp = {bad:?}\n")).unwrap_err();
            assert!(err.contains("listen_tcp"), "{err}");
        }
        assert!(
            Config::parse("listen_tcp = \"127.0.0.1:1\"\ntls_cert = \"c.pem\"\n")
                .unwrap_err()
                .contains("absolute")
        );
    }

    #[test]
    fn metrics_listen_is_off_loopback_or_a_socket() {
        assert_eq!(Config::default().metrics_listen, None);
        assert_eq!(
            Config::parse("metrics_listen = \"\"\n")
                .unwrap()
                .metrics_listen,
            None
        );
        assert_eq!(
            Config::parse("metrics_listen = \"127.0.0.1:9464\"\n")
                .unwrap()
                .metrics_listen,
            Some(MetricsListen::Tcp("127.0.0.1:9464".parse().unwrap()))
        );
        assert_eq!(
            Config::parse("metrics_listen = \"[::1]:0\"\n")
                .unwrap()
                .metrics_listen,
            Some(MetricsListen::Tcp("[::1]:0".parse().unwrap()))
        );
        assert_eq!(
            Config::parse("metrics_listen = \"/run/grove/metrics.sock\"\n")
                .unwrap()
                .metrics_listen,
            Some(MetricsListen::Unix("/run/grove/metrics.sock".into()))
        );
        for bad in ["0.0.0.0:9464", "192.0.2.1:9464", "[::]:9464"] {
            let err = Config::parse(&format!("metrics_listen = {bad:?}\n")).unwrap_err();
            assert!(
                err.starts_with("line 1: ") && err.contains("not a loopback address"),
                "{err}"
            );
        }
        for bad in ["localhost:9464", "9464", "metrics.sock"] {
            let err = Config::parse(&format!("metrics_listen = {bad:?}\n")).unwrap_err();
            assert!(err.contains("metrics_listen must be"), "{err}");
        }
    }

    #[test]
    fn host_nameservers_skip_loopback_and_ipv6() {
        let text = "# generated\nnameserver 127.0.0.53\nnameserver 10.0.2.3\n\
                    nameserver ::1\nnameserver 2001:db8::1\nsearch example\n\
                    nameserver 192.0.2.1 # second\nnameserver junk\n";
        assert_eq!(
            host_dns_servers(text),
            [Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(192, 0, 2, 1)]
        );
    }
}
