//! Arguments shared by several subcommands: a NetOut rule (`grove net-out`'s
//! flags, and `grove create --net-out` which takes the same flags in one
//! word) and signal names (`grove signal`).

use crate::{parse_ip_range, parse_port_range};
use clap::Parser;
use grove_client::{api, NetOutRule};

/// What a NetOut rule allows, as `grove net-out` takes it.
#[derive(clap::Args, Debug, Clone)]
pub struct NetOutArgs {
    /// The traffic it allows: all, tcp, udp or icmp.
    /// Example: --protocol tcp
    #[arg(long, value_parser = ["all", "tcp", "udp", "icmp"])]
    pub protocol: String,
    /// Destination addresses, one or an inclusive range (repeatable;
    /// default: every address). Example: --network 10.0.0.1-10.0.0.9
    #[arg(long = "network", value_name = "A.B.C.D[-E.F.G.H]", value_parser = parse_ip_range)]
    pub networks: Vec<(String, String)>,
    /// Destination ports, one or an inclusive range; tcp and udp only
    /// (repeatable; default: every port). Example: --port 8000-8080
    #[arg(long = "port", value_name = "N[-M]", value_parser = parse_port_range)]
    pub ports: Vec<(u16, u16)>,
    /// The ICMP type it allows; icmp only (default: every type).
    /// Example: --icmp-type 8 (echo request)
    #[arg(long, value_name = "TYPE")]
    pub icmp_type: Option<u8>,
    /// The ICMP code it allows, with --icmp-type (default: every code of
    /// the type). Example: --icmp-code 0
    #[arg(long, value_name = "CODE", requires = "icmp_type")]
    pub icmp_code: Option<u8>,
    /// Log the rule's new connections (tcp and all only).
    #[arg(long)]
    pub log: bool,
}

impl NetOutArgs {
    pub fn rule(&self) -> NetOutRule {
        let protocol = match self.protocol.as_str() {
            "tcp" => api::net_out_rule::Protocol::Tcp,
            "udp" => api::net_out_rule::Protocol::Udp,
            "icmp" => api::net_out_rule::Protocol::Icmp,
            _ => api::net_out_rule::Protocol::All,
        };
        NetOutRule {
            networks: self.networks.clone(),
            ports: self.ports.clone(),
            icmp: self.icmp_type.map(|t| (t, self.icmp_code)),
            log: self.log,
            ..NetOutRule::new(protocol)
        }
    }
}

/// `grove net-out`'s flags, parsed from a `--net-out` word.
#[derive(Parser)]
#[command(no_binary_name = true)]
struct NetOutWords {
    #[command(flatten)]
    rule: NetOutArgs,
}

/// A `--net-out` rule: `grove net-out`'s flags as comma-separated
/// `NAME=VALUE` items (`log` alone), the protocol's name allowed bare
/// first: `tcp,network=10.0.0.0-10.0.0.255,port=443` is
/// `--protocol tcp --network 10.0.0.0-10.0.0.255 --port 443`.
pub fn parse_net_out_rule(s: &str) -> Result<NetOutArgs, String> {
    let mut words = Vec::new();
    for (i, item) in s.split(',').enumerate() {
        let item = item.trim();
        let (name, value) = match item.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None if i == 0 && item != "log" => ("protocol", Some(item)),
            None => (item, None),
        };
        if name.is_empty() || name.starts_with('-') {
            return Err(format!(
                "{item:?} is not NAME=VALUE (e.g. tcp,network=10.0.0.1,port=443)"
            ));
        }
        words.push(format!("--{name}"));
        words.extend(value.map(str::to_string));
    }
    NetOutWords::try_parse_from(words)
        .map(|w| w.rule)
        .map_err(|e| {
            // clap's message on one line, without its usage and tips.
            let rendered = e.to_string();
            let lines: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .map(|l| l.trim().trim_start_matches("error: "))
                .filter(|l| !l.is_empty() && !l.starts_with("tip:"))
                .collect();
            lines.join(" ")
        })
}

/// The signals the API can send, by every name `grove signal` takes.
const SIGNALS: &[(api::Signal, &[&str], i32)] = &[
    (
        api::Signal::Terminate,
        &["TERM", "TERMINATE"],
        libc::SIGTERM,
    ),
    (api::Signal::Kill, &["KILL"], libc::SIGKILL),
    (api::Signal::Interrupt, &["INT", "INTERRUPT"], libc::SIGINT),
    (api::Signal::Hangup, &["HUP", "HANGUP"], libc::SIGHUP),
    (api::Signal::Quit, &["QUIT"], libc::SIGQUIT),
    (api::Signal::User1, &["USR1", "USER1"], libc::SIGUSR1),
    (api::Signal::User2, &["USR2", "USER2"], libc::SIGUSR2),
    (
        api::Signal::WindowChange,
        &["WINCH", "WINDOWCHANGE"],
        libc::SIGWINCH,
    ),
];

/// A signal by name (TERM, SIGTERM, term, terminate, ...) or number (15).
pub fn parse_signal(s: &str) -> Result<api::Signal, String> {
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let number: Option<i32> = s.parse().ok();
    SIGNALS
        .iter()
        .find(|(_, names, n)| names.contains(&name) || number == Some(*n))
        .map(|(signal, _, _)| *signal)
        .ok_or_else(|| {
            let known: Vec<String> = SIGNALS
                .iter()
                .map(|(_, names, n)| format!("{} ({n})", names[0]))
                .collect();
            format!(
                "{s:?} is not a signal the API sends (known: {})",
                known.join(", ")
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_by_name_and_number() {
        for s in ["TERM", "SIGTERM", "term", "terminate", "15"] {
            assert_eq!(parse_signal(s).unwrap(), api::Signal::Terminate, "{s}");
        }
        assert_eq!(parse_signal("9").unwrap(), api::Signal::Kill);
        assert_eq!(parse_signal("USR2").unwrap(), api::Signal::User2);
        assert_eq!(parse_signal("winch").unwrap(), api::Signal::WindowChange);
        assert!(parse_signal("STOP").unwrap_err().contains("TERM (15)"));
        assert!(parse_signal("19").is_err());
    }

    #[test]
    fn net_out_words_are_the_net_out_flags() {
        let r = parse_net_out_rule("tcp,network=10.0.0.1-10.0.0.9,port=443,port=8000-8080,log")
            .unwrap()
            .rule();
        assert_eq!(r.protocol, api::net_out_rule::Protocol::Tcp);
        assert_eq!(
            r.networks,
            [("10.0.0.1".to_string(), "10.0.0.9".to_string())]
        );
        assert_eq!(r.ports, [(443, 443), (8000, 8080)]);
        assert!(r.log);
        let r = parse_net_out_rule("protocol=icmp,icmp-type=8,icmp-code=0")
            .unwrap()
            .rule();
        assert_eq!(r.icmp, Some((8, Some(0))));
        assert_eq!(
            parse_net_out_rule("all").unwrap().rule().protocol,
            api::net_out_rule::Protocol::All
        );
        for bad in [
            "sctp",
            "tcp,port=0-x",
            "tcp,network=10.0.0.0/8",
            "icmp,icmp-code=0",
            "tcp,bogus=1",
            "port=80",
            "tcp,,log",
        ] {
            let e = parse_net_out_rule(bad).unwrap_err();
            assert!(!e.is_empty() && e.lines().count() == 1, "{bad}: {e}");
        }
    }
}
