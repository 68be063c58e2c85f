//! Container networking on the real kernel: addresses from the pool, NetIn
//! (DNAT from the host's own addresses), NetOut (default deny, allow rules),
//! masquerading, bandwidth shaping, traffic counters, clean teardown, pool
//! and port exhaustion, policy checks at start-up, and the CLI.
//!
//! Each test has its own env, so its own bridge, nft table, /24 pool and
//! ports (see tests/src/lib.rs). Traffic only ever goes to loopback, the
//! host's own addresses, the containers, the env's bridge and, in the NAT
//! test, a network namespace the test makes and removes itself.

use grove_client::{api, Client, Command};
use grove_tests::*;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// API helpers

#[derive(Clone, Debug)]
struct Rule {
    protocol: api::net_out_rule::Protocol,
    networks: Vec<(String, String)>,
    ports: Vec<(u16, u16)>,
    /// (type, code)
    icmp: Option<(u8, Option<u8>)>,
    log: bool,
}

impl Rule {
    fn tcp(ip: Ipv4Addr, port: u16) -> Rule {
        Rule {
            protocol: api::net_out_rule::Protocol::Tcp,
            networks: vec![(ip.to_string(), ip.to_string())],
            ports: vec![(port, port)],
            icmp: None,
            log: false,
        }
    }
    fn udp(ip: Ipv4Addr, port: u16) -> Rule {
        Rule {
            protocol: api::net_out_rule::Protocol::Udp,
            ..Rule::tcp(ip, port)
        }
    }
    fn icmp(ip: Ipv4Addr, icmp: Option<(u8, Option<u8>)>) -> Rule {
        Rule {
            protocol: api::net_out_rule::Protocol::Icmp,
            networks: vec![(ip.to_string(), ip.to_string())],
            ports: vec![],
            icmp,
            log: false,
        }
    }
}

fn fill_rule(rule: &Rule, mut b: api::net_out_rule::Builder<'_>) {
    b.set_protocol(rule.protocol);
    b.set_log(rule.log);
    let mut networks = b.reborrow().init_networks(rule.networks.len() as u32);
    for (i, (start, end)) in rule.networks.iter().enumerate() {
        let mut n = networks.reborrow().get(i as u32);
        n.set_start(start.as_str());
        n.set_end(end.as_str());
    }
    let mut ports = b.reborrow().init_ports(rule.ports.len() as u32);
    for (i, (start, end)) in rule.ports.iter().enumerate() {
        let mut p = ports.reborrow().get(i as u32);
        p.set_start(*start);
        p.set_end(*end);
    }
    if let Some((icmp_type, code)) = rule.icmp {
        b.set_has_icmps(true);
        let mut icmps = b.init_icmps();
        icmps.set_type(icmp_type);
        icmps.set_code(code.unwrap_or(0));
        icmps.set_has_code(code.is_some());
    }
}

#[derive(Default)]
struct Spec<'a> {
    handle: &'a str,
    network: &'a str,
    net_in: &'a [(u32, u32)],
    net_out: &'a [Rule],
    /// (rate, burst)
    bandwidth: Option<(u64, u64)>,
}

async fn create_net(
    client: &Client,
    s: Spec<'_>,
) -> Result<api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(s.handle);
    spec.set_network(s.network);
    let mut net_in = spec.reborrow().init_net_in(s.net_in.len() as u32);
    for (i, (host, container)) in s.net_in.iter().enumerate() {
        let mut m = net_in.reborrow().get(i as u32);
        m.set_host_port(*host);
        m.set_container_port(*container);
    }
    let mut net_out = spec.reborrow().init_net_out(s.net_out.len() as u32);
    for (i, rule) in s.net_out.iter().enumerate() {
        fill_rule(rule, net_out.reborrow().get(i as u32));
    }
    if let Some((rate, burst)) = s.bandwidth {
        let mut b = spec.init_limits().init_bandwidth();
        b.set_rate_in_bytes_per_second(rate);
        b.set_burst_rate_in_bytes_per_second(burst);
    }
    Ok(request.send().promise.await?.get()?.get_container()?)
}

/// A container whose spec carries these NetOut rules.
async fn create_with_net_out(
    client: &Client,
    handle: &str,
    net_out: &[Rule],
) -> api::container::Client {
    create_net(
        client,
        Spec {
            handle,
            net_out,
            ..Spec::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("creating {handle}: {e}"))
}

async fn create_plain(client: &Client, handle: &str) -> api::container::Client {
    create_net(
        client,
        Spec {
            handle,
            ..Spec::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("creating {handle}: {e}"))
}

struct Info {
    container_ip: String,
    host_ip: String,
    external_ip: String,
    mapped: Vec<(u32, u32)>,
}

async fn info(c: &api::container::Client) -> Info {
    let r = c.info_request().send().promise.await.unwrap();
    let i = r.get().unwrap().get_info().unwrap();
    let text = |t: capnp::Result<capnp::text::Reader<'_>>| t.unwrap().to_string().unwrap();
    Info {
        container_ip: text(i.get_container_ip()),
        host_ip: text(i.get_host_ip()),
        external_ip: text(i.get_external_ip()),
        mapped: i
            .get_mapped_ports()
            .unwrap()
            .iter()
            .map(|m| (m.get_host_port(), m.get_container_port()))
            .collect(),
    }
}

async fn ip_of(c: &api::container::Client) -> Ipv4Addr {
    let ip = info(c).await.container_ip;
    ip.parse()
        .unwrap_or_else(|_| panic!("containerIp {ip:?} is not an IPv4 address"))
}

async fn net_in(
    c: &api::container::Client,
    host_port: u32,
    container_port: u32,
) -> Result<(u32, u32), grove_client::Error> {
    let mut request = c.net_in_request();
    request.get().set_host_port(host_port);
    request.get().set_container_port(container_port);
    let response = request.send().promise.await?;
    let r = response.get()?;
    Ok((r.get_host_port(), r.get_container_port()))
}

async fn net_out(c: &api::container::Client, rule: &Rule) -> Result<(), grove_client::Error> {
    let mut request = c.net_out_request();
    fill_rule(rule, request.get().init_rule());
    request.send().promise.await?;
    Ok(())
}

async fn bulk_net_out(
    c: &api::container::Client,
    rules: &[Rule],
) -> Result<(), grove_client::Error> {
    let mut request = c.bulk_net_out_request();
    let mut list = request.get().init_rules(rules.len() as u32);
    for (i, rule) in rules.iter().enumerate() {
        fill_rule(rule, list.reborrow().get(i as u32));
    }
    request.send().promise.await?;
    Ok(())
}

async fn limit_bandwidth(
    c: &api::container::Client,
    rate: u64,
    burst: u64,
) -> Result<(), grove_client::Error> {
    let mut request = c.limit_bandwidth_request();
    let mut l = request.get().init_limits();
    l.set_rate_in_bytes_per_second(rate);
    l.set_burst_rate_in_bytes_per_second(burst);
    request.send().promise.await?;
    Ok(())
}

async fn bandwidth(c: &api::container::Client) -> (u64, u64) {
    let r = c
        .current_bandwidth_limits_request()
        .send()
        .promise
        .await
        .unwrap();
    let l = r.get().unwrap().get_limits().unwrap();
    (
        l.get_rate_in_bytes_per_second(),
        l.get_burst_rate_in_bytes_per_second(),
    )
}

/// (rxBytes, txBytes, rxPackets, txPackets)
async fn net_metrics(c: &api::container::Client) -> (u64, u64, u64, u64) {
    let r = c.metrics_request().send().promise.await.unwrap();
    let n = r
        .get()
        .unwrap()
        .get_metrics()
        .unwrap()
        .get_network()
        .unwrap();
    (
        n.get_rx_bytes(),
        n.get_tx_bytes(),
        n.get_rx_packets(),
        n.get_tx_packets(),
    )
}

/// The error must carry one of `codes` and name every one of `needles`.
#[track_caller]
fn assert_refused<T>(result: Result<T, grove_client::Error>, codes: &[&str], needles: &[&str]) {
    let Err(e) = result else {
        panic!("expected an error {codes:?} naming {needles:?}, got success");
    };
    assert!(
        codes.iter().any(|c| e.is(c)),
        "expected one of {codes:?}, got {e}"
    );
    for needle in needles {
        assert!(e.message.contains(needle), "{e} does not name {needle:?}");
    }
}

async fn sh(c: &api::container::Client, script: &str) -> (i32, String, String) {
    exec(c, "sh", &["-c", script]).await
}

/// Start a long-running command in a container (kept running until the
/// container goes).
async fn spawn(c: &api::container::Client, script: &str) -> Started {
    start(c, &Command::new("sh", &["-c", script]))
        .await
        .expect("run")
}

/// Serve `body` over HTTP on `port` from the container (busybox httpd);
/// returns once the port listens.
async fn serve_http(
    env: &TestEnv,
    c: &api::container::Client,
    handle: &str,
    port: u16,
    body: &str,
) -> Started {
    let dir = format!("/www{port}");
    let (status, _, err) = sh(
        c,
        &format!("mkdir -p {dir} && echo {body} > {dir}/index.html"),
    )
    .await;
    assert_eq!(status, 0, "{err}");
    let server = spawn(c, &format!("exec httpd -f -p {port} -h {dir}")).await;
    wait_listening(env, handle, port).await;
    server
}

/// Wait until a TCP socket listens on `port` in the container's netns
/// (read from /proc/<pid>/net/tcp of a process in it: no connection is
/// made, so a one-shot server is not used up).
async fn wait_listening(env: &TestEnv, handle: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let needle = format!(":{port:04X}");
    loop {
        let pids = env.container_pids(handle);
        // busybox servers listen on :: (dual stack): tcp6 as well.
        let listening = pids.first().is_some_and(|pid| {
            ["tcp", "tcp6"].iter().any(|file| {
                std::fs::read_to_string(format!("/proc/{pid}/net/{file}"))
                    .unwrap_or_default()
                    .lines()
                    .skip(1)
                    .any(|line| {
                        let f: Vec<&str> = line.split_whitespace().collect();
                        f.len() > 3 && f[1].ends_with(&needle) && f[3] == "0A"
                    })
            })
        });
        if listening {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "nothing listens on port {port} in {handle}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// GET / from the host; the body, or the error.
fn http_get(addr: SocketAddr) -> Result<String, String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")
        .map_err(|e| format!("write {addr}: {e}"))?;
    let mut reply = String::new();
    s.read_to_string(&mut reply)
        .map_err(|e| format!("read {addr}: {e}"))?;
    Ok(reply)
}

#[track_caller]
fn assert_serves(addr: SocketAddr, body: &str) {
    match http_get(addr) {
        Ok(reply) => assert!(
            reply.starts_with("HTTP/1.") && reply.contains(body),
            "{addr} answered {reply:?}, not {body:?}"
        ),
        Err(e) => panic!("{addr} is not reachable from the host: {e}"),
    }
}

/// wget from inside a container: (exit status, body + errors).
async fn wget_from(c: &api::container::Client, ip: Ipv4Addr, port: u16) -> (i32, String) {
    let (status, out, err) = sh(
        c,
        &format!("timeout 5 wget -q -O - http://{ip}:{port}/ 2>&1"),
    )
    .await;
    (status, out + &err)
}

/// The host's own address on the interface of its default route (not
/// loopback, not a bridge of ours), with that interface's prefix length.
fn host_address() -> (Ipv4Addr, u8) {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "show", "default"])
        .output()
        .unwrap();
    let route = String::from_utf8_lossy(&out.stdout).into_owned();
    let dev = route
        .split_whitespace()
        .skip_while(|w| *w != "dev")
        .nth(1)
        .map(str::to_string);
    let addrs = host_addresses();
    addrs
        .iter()
        .find(|(iface, _, _)| Some(iface) == dev.as_ref())
        .or_else(|| {
            addrs
                .iter()
                .find(|(iface, a, _)| iface != "lo" && !iface.starts_with("gb") && !a.is_loopback())
        })
        .map(|(_, a, p)| (*a, *p))
        .expect("the host has an IPv4 address besides loopback")
}

fn network_of(ip: Ipv4Addr, prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & (u32::MAX << (32 - prefix as u32)))
}

fn cmd(program: &str, args: &[&str]) {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A host-side TCP server on `ip` (an ephemeral port): each connection is
/// read to its end, answered with `reply` and closed; the peers and bytes
/// received go to the channel.
fn host_server(
    ip: Ipv4Addr,
    reply: &'static str,
) -> (u16, mpsc::Receiver<(SocketAddr, u64, Duration)>) {
    let listener = TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let peer = stream.peer_addr().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(60)))
                .unwrap();
            let mut buf = vec![0u8; 64 << 10];
            let mut total = 0u64;
            let mut first = None;
            loop {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        first.get_or_insert_with(Instant::now);
                        total += n as u64;
                    }
                }
            }
            let took = first.map(|t| t.elapsed()).unwrap_or_default();
            let _ = stream.write_all(reply.as_bytes());
            let _ = stream.shutdown(Shutdown::Both);
            if tx.send((peer, total, took)).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

// ---------------------------------------------------------------------------
// Addresses

#[test]
fn a_container_gets_an_address_from_the_pool_and_a_working_eth0() {
    let env = TestEnv::start_with_options(EnvOptions {
        mtu: Some(1400),
        groved_extra: "external_ip = 203.0.113.7\n".into(),
        ..EnvOptions::default()
    });
    let env = &env;
    env.run(|client| async move {
        assert!(
            link_exists(&env.bridge),
            "the helper made its bridge {}",
            env.bridge
        );
        let c = create_plain(&client, "net-a").await;
        let i = info(&c).await;
        let ip: Ipv4Addr = i.container_ip.parse().expect("containerIp is an address");
        assert!(
            env.in_pool(ip) && ip != env.gateway && ip != env.pool_ip(0) && ip != env.pool_ip(255),
            "{ip} is a usable address of the pool {}",
            env.pool()
        );
        assert_eq!(i.host_ip, env.gateway.to_string(), "hostIp is the gateway");
        assert_eq!(
            i.external_ip, "203.0.113.7",
            "externalIp is groved's external_ip"
        );
        assert!(i.mapped.is_empty());

        let (status, out, err) = sh(&c, "ip -4 addr show dev eth0").await;
        assert_eq!(status, 0, "{err}");
        assert!(out.contains(&format!("inet {ip}/")), "eth0 has {ip}: {out}");
        let (_, out, _) = sh(&c, "ip link show dev eth0").await;
        assert!(out.contains("mtu 1400"), "eth0 has the policy's MTU: {out}");
        assert!(
            out.contains(",UP") || out.contains("<UP"),
            "eth0 is up: {out}"
        );
        let (_, out, _) = sh(&c, "ip link show dev lo").await;
        assert!(out.contains("UP"), "lo is up: {out}");
        let (status, _, err) = sh(&c, "ping -c 1 -W 2 127.0.0.1").await;
        assert_eq!(status, 0, "loopback answers inside: {err}");
        let (_, out, _) = sh(&c, "ip route").await;
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("default via {} ", env.gateway))),
            "the default route is via the gateway {}: {out}",
            env.gateway
        );
        let (status, hosts, _) = sh(&c, "cat /etc/hosts").await;
        assert_eq!(status, 0);
        assert!(
            hosts.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.first() == Some(&ip.to_string().as_str()) && f.contains(&"net-a")
            }),
            "/etc/hosts maps the handle to {ip}: {hosts:?}"
        );
        let (status, _, _) = sh(&c, "test -f /etc/resolv.conf").await;
        assert_eq!(status, 0, "/etc/resolv.conf exists");

        // The host end sits on the env's bridge, with the same MTU.
        let ports = env.bridge_ports();
        assert_eq!(ports.len(), 1, "one veth on {}: {ports:?}", env.bridge);
        let mtu = std::fs::read_to_string(format!("/sys/class/net/{}/mtu", ports[0])).unwrap();
        assert_eq!(mtu.trim(), "1400");
        // The gateway sits on the bridge.
        assert!(
            host_addresses()
                .iter()
                .any(|(iface, a, _)| *iface == env.bridge && *a == env.gateway),
            "{} has {}",
            env.bridge,
            env.gateway
        );

        // A second container gets another address and another port.
        let d = create_plain(&client, "net-b").await;
        let ip_b = ip_of(&d).await;
        assert!(env.in_pool(ip_b) && ip_b != ip && ip_b != env.gateway);
        assert_eq!(env.bridge_ports().len(), 2);
    });
}

#[test]
fn a_requested_address_is_used_and_bad_ones_are_refused_cleanly() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let want = env.pool_ip(50);
        let c = create_net(
            &client,
            Spec {
                handle: "fixed",
                network: &want.to_string(),
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ip_of(&c).await, want);
        let (_, out, _) = sh(&c, "ip -4 addr show dev eth0").await;
        assert!(out.contains(&format!("inet {want}/")), "{out}");

        // "a.b.c.d/n": the address; the pool's prefix applies.
        for (handle, n, prefix) in [("slash-24", 52, 24), ("slash-8", 53, 8)] {
            let c = create_net(
                &client,
                Spec {
                    handle,
                    network: &format!("{}/{prefix}", env.pool_ip(n)),
                    ..Spec::default()
                },
            )
            .await
            .unwrap();
            assert_eq!(ip_of(&c).await, env.pool_ip(n));
            let (_, out, _) = sh(&c, "ip -4 addr show dev eth0").await;
            assert!(out.contains(&format!("inet {}/", env.pool_ip(n))), "{out}");
            client.destroy(handle).await.unwrap();
        }
        // The kernel removes their veths with their namespaces.
        eventually("only the first container's port is on the bridge", || {
            env.bridge_ports().len() == 1
        });

        let table = env.nft_table_text().expect("the helper's nft table");
        let try_create = |handle: &'static str, network: String| {
            let client = &client;
            async move {
                create_net(
                    client,
                    Spec {
                        handle,
                        network: &network,
                        ..Spec::default()
                    },
                )
                .await
            }
        };
        let outside = "10.253.7.9".to_string();
        assert_refused(
            try_create("outside", outside.clone()).await,
            &["invalidSpec", "policyRefused"],
            &[&outside],
        );
        assert_refused(
            try_create("taken", want.to_string()).await,
            &["invalidSpec", "limitExceeded", "policyRefused"],
            &[&want.to_string()],
        );
        for reserved in [env.gateway, env.pool_ip(0), env.pool_ip(255)] {
            assert_refused(
                try_create("reserved", reserved.to_string()).await,
                &["invalidSpec", "policyRefused", "limitExceeded"],
                &[&reserved.to_string()],
            );
        }
        for malformed in [
            format!("{}/33", env.pool_ip(60)),
            "10.254.300.1".to_string(),
            "not-an-address".to_string(),
            format!("{}/", env.pool_ip(61)),
        ] {
            assert_refused(
                try_create("malformed", malformed.clone()).await,
                &["invalidSpec"],
                &["network"],
            );
        }
        // Nothing half-made: no container, no link, no nft element.
        assert_eq!(client.list(&[]).await.unwrap(), vec!["fixed"]);
        assert_eq!(env.bridge_ports().len(), 1, "{:?}", env.bridge_ports());
        assert_eq!(env.nft_table_text().unwrap(), table);
        // The refused address is still the first container's, and a free
        // one still works.
        let d = create_net(
            &client,
            Spec {
                handle: "fixed-2",
                network: &env.pool_ip(51).to_string(),
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(ip_of(&d).await, env.pool_ip(51));
    });
}

// ---------------------------------------------------------------------------
// NetIn

#[test]
fn net_in_maps_host_ports_on_the_hosts_addresses() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_plain(&client, "in-a").await;
        let _web = serve_http(env, &a, "in-a", 8080, "hello-from-a").await;
        let (first, last) = env.ports;

        assert_eq!(
            net_in(&a, first as u32, 8080).await.unwrap(),
            (first as u32, 8080)
        );
        let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, first));
        assert_serves(loopback, "hello-from-a");
        assert_serves(SocketAddr::from((env.gateway, first)), "hello-from-a");
        let (host, _) = host_address();
        assert_serves(SocketAddr::from((host, first)), "hello-from-a");

        // hostPort 0: one from the range.
        let (picked, cport) = net_in(&a, 0, 8080).await.unwrap();
        assert_eq!(cport, 8080);
        assert!(
            (first as u32..=last as u32).contains(&picked) && picked != first as u32,
            "{picked} is a free port of {first}-{last}"
        );
        assert_serves(
            SocketAddr::from((Ipv4Addr::LOCALHOST, picked as u16)),
            "hello-from-a",
        );

        // containerPort 0: the same as the host port.
        let same = first + 7;
        assert_eq!(
            net_in(&a, same as u32, 0).await.unwrap(),
            (same as u32, same as u32)
        );
        let _web2 = serve_http(env, &a, "in-a", same, "same-port").await;
        assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, same)), "same-port");

        let mut mapped = info(&a).await.mapped;
        mapped.sort();
        let mut want = vec![
            (first as u32, 8080),
            (picked, 8080),
            (same as u32, same as u32),
        ];
        want.sort();
        assert_eq!(mapped, want, "info.mappedPorts lists every mapping");

        // Refused: outside the range, or already mapped (here or by another
        // container).
        for port in [last as u32 + 1, first as u32 - 1] {
            assert_refused(
                net_in(&a, port, 8080).await,
                &["invalidSpec", "policyRefused"],
                &[&port.to_string()],
            );
        }
        assert_refused(net_in(&a, 70000, 8080).await, &["invalidSpec"], &["70000"]);
        assert_refused(
            net_in(&a, first as u32, 9999).await,
            &["invalidSpec", "limitExceeded", "policyRefused"],
            &[&first.to_string()],
        );
        let b = create_plain(&client, "in-b").await;
        assert_refused(
            net_in(&b, first as u32, 8080).await,
            &["invalidSpec", "limitExceeded", "policyRefused"],
            &[&first.to_string()],
        );
        assert_refused(
            net_in(&a, first as u32 + 9, 70000).await,
            &["invalidSpec"],
            &["70000"],
        );
        let mut after = info(&a).await.mapped;
        after.sort();
        assert_eq!(
            after, want,
            "refused mappings leave the others as they were"
        );
        assert!(info(&b).await.mapped.is_empty());
        assert_serves(loopback, "hello-from-a");

        // Another container reaching the mapping through the host is
        // egress like any other (issue 23: it used to pass with no NetOut
        // rule at all): refused without a rule, allowed by one that names
        // the host address and port as the container dials them.
        let (status, out) = wget_from(&b, env.gateway, first).await;
        assert_ne!(
            status, 0,
            "in-b, with no NetOut rule, reached in-a through {}:{first}: {out}",
            env.gateway
        );
        net_out(&b, &Rule::tcp(env.gateway, first)).await.unwrap();
        let (status, out) = wget_from(&b, env.gateway, first).await;
        assert_eq!(
            (status, out.trim()),
            (0, "hello-from-a"),
            "in-b, allowed {}:{first}, reaches in-a through it",
            env.gateway
        );
        // ... while in-a's own address stays closed to it (NetOut denies).
        let ip_a = ip_of(&a).await;
        let (status, out) = wget_from(&b, ip_a, 8080).await;
        assert_ne!(status, 0, "in-b reached {ip_a}:8080 directly: {out}");
    });
}

#[test]
fn net_in_and_net_out_from_the_spec_are_in_force_at_create() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let port = env.ports.0 + 3;
        let c = create_net(
            &client,
            Spec {
                handle: "spec-in",
                net_in: &[(port as u32, 8000)],
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(info(&c).await.mapped, vec![(port as u32, 8000)]);
        let _web = serve_http(env, &c, "spec-in", 8000, "from-the-spec").await;
        assert_serves(
            SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            "from-the-spec",
        );

        // A bad mapping in the spec fails the create and leaves nothing.
        let table = env.nft_table_text().unwrap();
        let e = create_net(
            &client,
            Spec {
                handle: "bad-in",
                net_in: &[(env.ports.0 as u32 + 4, 8000), (env.ports.1 as u32 + 1, 80)],
                ..Spec::default()
            },
        )
        .await;
        assert_refused(
            e,
            &["invalidSpec", "policyRefused"],
            &[&(env.ports.1 + 1).to_string()],
        );
        assert_eq!(client.list(&[]).await.unwrap(), vec!["spec-in"]);
        // The rolled-back container's veth goes with its namespace.
        eventually("only spec-in's port is on the bridge", || {
            env.bridge_ports().len() == 1
        });
        assert_eq!(env.nft_table_text().unwrap(), table);
        // Its first (good) port was not kept either.
        let d = create_plain(&client, "again").await;
        assert_eq!(
            net_in(&d, env.ports.0 as u32 + 4, 80).await.unwrap(),
            (env.ports.0 as u32 + 4, 80)
        );

        // NetOut from the spec: in force at create, and a bad rule fails
        // the create, leaving nothing.
        let ip_c = ip_of(&c).await;
        let table = env.nft_table_text().unwrap();
        let mut bad = Rule::icmp(ip_c, None);
        bad.ports = vec![(1, 2)];
        let e = create_net(
            &client,
            Spec {
                handle: "bad-out",
                net_out: &[Rule::tcp(ip_c, 8000), bad],
                ..Spec::default()
            },
        )
        .await;
        assert_refused(e, &["invalidSpec"], &["port"]);
        assert_eq!(client.list(&[]).await.unwrap().len(), 2);
        assert_eq!(env.bridge_ports().len(), 2);
        assert_eq!(env.nft_table_text().unwrap(), table);
        let out = create_with_net_out(&client, "spec-out", &[Rule::tcp(ip_c, 8000)]).await;
        let (status, body) = wget_from(&out, ip_c, 8000).await;
        assert_eq!((status, body.trim()), (0, "from-the-spec"));
        let (status, _) = wget_from(&d, ip_c, 8000).await;
        assert_ne!(status, 0, "a container without the rule is still denied");
    });
}

// ---------------------------------------------------------------------------
// NetOut

#[test]
fn net_out_denies_by_default_and_rules_open_exactly_what_they_name() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_plain(&client, "out-a").await;
        let b = create_plain(&client, "out-b").await;
        let ip_b = ip_of(&b).await;
        let _web = serve_http(env, &b, "out-b", 8080, "hello-from-b").await;
        let _web2 = serve_http(env, &b, "out-b", 8081, "other-port-of-b").await;
        let (host_port, accepted) = host_server(env.gateway, "hello-from-host");

        // The host itself can reach B (only container egress is filtered).
        assert_serves(SocketAddr::from((ip_b, 8080)), "hello-from-b");

        // Default deny: another container, the host, ICMP to the gateway.
        let (status, out) = wget_from(&a, ip_b, 8080).await;
        assert_ne!(status, 0, "out-a reached {ip_b}:8080 with no rule: {out}");
        let (status, out, _) = sh(
            &a,
            &format!("echo hi | timeout 5 nc {} {host_port}", env.gateway),
        )
        .await;
        assert!(
            status != 0 || !out.contains("hello-from-host"),
            "out-a reached the host's {}:{host_port} with no rule",
            env.gateway
        );
        let (status, _, _) = sh(&a, &format!("ping -c 1 -W 2 {}", env.gateway)).await;
        assert_ne!(status, 0, "out-a pinged the gateway with no rule");

        // Allow tcp to B's address and port: A reaches B, nothing else.
        // (An empty end means the start alone, for addresses and ports.)
        let mut to_b = Rule::tcp(ip_b, 8080);
        to_b.networks = vec![(ip_b.to_string(), String::new())];
        to_b.ports = vec![(8080, 0)];
        net_out(&a, &to_b).await.unwrap();
        let (status, out) = wget_from(&a, ip_b, 8080).await;
        assert_eq!((status, out.trim()), (0, "hello-from-b"));
        let (status, out) = wget_from(&a, ip_b, 8081).await;
        assert_ne!(status, 0, "a rule for port 8080 opened 8081: {out}");
        let (status, _, _) = sh(
            &a,
            &format!("echo hi | timeout 5 nc {} {host_port}", env.gateway),
        )
        .await;
        let reached = accepted.try_recv().is_ok();
        assert!(status != 0 && !reached, "a rule for B opened the host too");
        // Rules are the container's own: B still cannot reach A.
        let ip_a = ip_of(&a).await;
        let _web_a = serve_http(env, &a, "out-a", 8080, "hello-from-a").await;
        let (status, out) = wget_from(&b, ip_a, 8080).await;
        assert_ne!(status, 0, "out-b reached {ip_a}:8080 with no rule: {out}");

        // Ports on an ICMP rule are refused, naming them.
        let mut bad = Rule::icmp(env.gateway, None);
        bad.ports = vec![(80, 80)];
        assert_refused(net_out(&a, &bad).await, &["invalidSpec"], &["port"]);

        // bulkNetOut is all or nothing: one bad rule refuses the good one.
        let to_host = Rule::tcp(env.gateway, host_port);
        assert_refused(
            bulk_net_out(&a, &[to_host.clone(), bad.clone()]).await,
            &["invalidSpec"],
            &["port"],
        );
        let (status, _, _) = sh(
            &a,
            &format!("echo hi | timeout 5 nc {} {host_port}", env.gateway),
        )
        .await;
        assert!(
            status != 0 && accepted.try_recv().is_err(),
            "a refused bulkNetOut added its good rule"
        );
        bulk_net_out(&a, &[to_host, Rule::icmp(env.gateway, Some((8, None)))])
            .await
            .unwrap();
        let (status, out, err) = sh(
            &a,
            &format!("echo hi | timeout 5 nc {} {host_port}", env.gateway),
        )
        .await;
        assert_eq!((status, out.as_str()), (0, "hello-from-host"), "{err}");
        let (peer, bytes, _) = accepted.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(peer.ip(), IpAddr::V4(ip_a), "to the host, not masqueraded");
        assert_eq!(bytes, 3);
        // ... and the ICMP echo rule makes ping to the gateway work.
        let (status, out, err) = sh(&a, &format!("ping -c 1 -W 2 {}", env.gateway)).await;
        assert_eq!(status, 0, "ping after the icmp rule: {out}{err}");
    });
}

#[test]
fn an_icmp_rule_allows_ping_where_it_failed() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let c = create_plain(&client, "pinger").await;
        let other = create_plain(&client, "target").await;
        let ip_other = ip_of(&other).await;
        let ping = |ip: Ipv4Addr| {
            let c = &c;
            async move { sh(c, &format!("ping -c 1 -W 2 {ip}")).await.0 }
        };
        assert_ne!(ping(env.gateway).await, 0);
        net_out(&c, &Rule::icmp(env.gateway, None)).await.unwrap();
        assert_eq!(
            ping(env.gateway).await,
            0,
            "ping to the gateway after the rule"
        );
        assert_ne!(ping(ip_other).await, 0, "the rule names the gateway only");
        // A tcp rule opens no ICMP.
        net_out(&c, &Rule::tcp(ip_other, 1)).await.unwrap();
        assert_ne!(ping(ip_other).await, 0);

        // Malformed rules are refused, naming what is wrong, and change
        // nothing.
        let table = env.nft_table_text().unwrap();
        let mut logged = Rule::icmp(ip_other, None);
        logged.log = true;
        assert_refused(net_out(&c, &logged).await, &["invalidSpec"], &["log"]);
        let mut backwards = Rule::tcp(ip_other, 80);
        backwards.networks = vec![("10.0.0.9".into(), "10.0.0.1".into())];
        assert_refused(
            net_out(&c, &backwards).await,
            &["invalidSpec"],
            &["10.0.0.9"],
        );
        let mut malformed = Rule::tcp(ip_other, 80);
        malformed.networks = vec![("10.0.0.300".into(), "10.0.0.300".into())];
        assert_refused(
            net_out(&c, &malformed).await,
            &["invalidSpec"],
            &["10.0.0.300"],
        );
        let mut port_zero = Rule::tcp(ip_other, 80);
        port_zero.ports = vec![(0, 10)];
        assert_refused(net_out(&c, &port_zero).await, &["invalidSpec"], &["port"]);
        let mut icmp_on_tcp = Rule::tcp(ip_other, 80);
        icmp_on_tcp.icmp = Some((8, None));
        assert_refused(net_out(&c, &icmp_on_tcp).await, &["invalidSpec"], &["icmp"]);
        let mut v6 = Rule::icmp(ip_other, None);
        v6.protocol = api::net_out_rule::Protocol::Icmpv6;
        assert_refused(net_out(&c, &v6).await, &["invalidSpec"], &["icmpv6"]);
        assert_eq!(env.nft_table_text().unwrap(), table);
        assert_ne!(ping(ip_other).await, 0);
        // An ICMP rule for echo requests only (type 8) lets ping through.
        net_out(&c, &Rule::icmp(ip_other, Some((8, Some(0)))))
            .await
            .unwrap();
        assert_eq!(ping(ip_other).await, 0, "ping after an echo-request rule");
    });
}

// ---------------------------------------------------------------------------
// Outbound NAT

/// A network namespace with a veth pair to the host, removed on drop.
struct TestNetns {
    ns: String,
    host_veth: String,
    host_ip: Ipv4Addr,
    ns_ip: Ipv4Addr,
}

impl TestNetns {
    fn new(env: &TestEnv) -> TestNetns {
        let id = &env.name[2..];
        // A /30 of TEST-NET-2 per env slot.
        let base = u32::from(Ipv4Addr::new(198, 51, 100, 0)) + 4 * (env.slot as u32 % 64);
        let n = TestNetns {
            ns: format!("gn{id}"),
            host_veth: format!("gh{id}"),
            host_ip: Ipv4Addr::from(base + 1),
            ns_ip: Ipv4Addr::from(base + 2),
        };
        let peer = format!("gp{id}");
        cmd("ip", &["netns", "add", &n.ns]);
        cmd(
            "ip",
            &[
                "link",
                "add",
                &n.host_veth,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
            ],
        );
        cmd("ip", &["link", "set", &peer, "netns", &n.ns]);
        cmd(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/30", n.host_ip),
                "dev",
                &n.host_veth,
            ],
        );
        cmd("ip", &["link", "set", &n.host_veth, "up"]);
        // Replies to masqueraded traffic are routed to the bridge only
        // where the interface they arrive on forwards. The helper switches
        // forwarding on for the uplinks its policy names (test envs name
        // none; see the uplink test); this link is reached by a connected
        // route, so the test switches it on, as an operator would.
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", n.host_veth),
            "1",
        )
        .unwrap();
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &n.ns, "ip"];
            all.extend_from_slice(args);
            cmd("ip", &all);
        };
        inside(&["addr", "add", &format!("{}/30", n.ns_ip), "dev", &peer]);
        inside(&["link", "set", &peer, "up"]);
        inside(&["link", "set", "lo", "up"]);
        // A route back to the pool, so that without masquerading the
        // connection would still work and show the container's address.
        inside(&["route", "add", &env.pool(), "via", &n.host_ip.to_string()]);
        n
    }

    /// A TCP server inside the namespace (a thread that joined it) for one
    /// connection: it reports the peer, reads to the end and answers.
    fn serve_once(&self) -> (u16, mpsc::Receiver<SocketAddr>) {
        let path = format!("/run/netns/{}", self.ns);
        let ns_ip = self.ns_ip;
        let (port_tx, port_rx) = mpsc::channel();
        let (peer_tx, peer_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).unwrap();
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            let listener = TcpListener::bind((ns_ip, 0)).unwrap();
            port_tx.send(listener.local_addr().unwrap().port()).unwrap();
            listener.set_nonblocking(true).unwrap();
            let deadline = Instant::now() + Duration::from_secs(30);
            while Instant::now() < deadline {
                match listener.accept() {
                    Ok((mut stream, peer)) => {
                        stream.set_nonblocking(false).unwrap();
                        stream
                            .set_read_timeout(Some(Duration::from_secs(5)))
                            .unwrap();
                        let _ = peer_tx.send(peer);
                        let mut sink = Vec::new();
                        let _ = stream.read_to_end(&mut sink);
                        let _ = stream.write_all(b"hello-from-netns");
                        return;
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        (port_rx.recv().unwrap(), peer_rx)
    }
}

impl Drop for TestNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_veth])
            .stderr(std::process::Stdio::null())
            .status();
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.ns])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn outbound_traffic_is_masqueraded() {
    let env = TestEnv::start();
    let netns = TestNetns::new(&env);
    let env = &env;
    let netns = &netns;
    env.run(|client| async move {
        let c = create_plain(&client, "nat").await;
        let ip = ip_of(&c).await;
        let (port, peers) = netns.serve_once();
        let connect = format!("echo hi | timeout 5 nc {} {port}", netns.ns_ip);

        // Denied until a rule allows it.
        let (status, _, _) = sh(&c, &connect).await;
        assert!(
            status != 0 && peers.try_recv().is_err(),
            "nat reached {} with no rule",
            netns.ns_ip
        );

        net_out(&c, &Rule::tcp(netns.ns_ip, port)).await.unwrap();
        let (status, out, err) = sh(&c, &connect).await;
        let peer = peers
            .recv_timeout(Duration::from_secs(5))
            .unwrap_or_else(|_| {
                panic!("the server in the netns saw no connection: {status} {out} {err}")
            });
        assert_eq!(
            peer.ip(),
            IpAddr::V4(netns.host_ip),
            "the peer is the host's address on that link ({}), not the container's ({ip})",
            netns.host_ip
        );
        assert_eq!((status, out.as_str()), (0, "hello-from-netns"), "{err}");

        let table = env.nft_table_text().unwrap();
        assert!(table.contains("masquerade"), "{table}");
    });
}

// ---------------------------------------------------------------------------
// Bandwidth and metrics

/// Send `bytes` from the host to `port` of the container, where
/// `nc -l | wc -c` counts them; (bytes counted, seconds from connect until
/// the container's nc saw the end).
async fn send_to_container(
    env: &TestEnv,
    c: &api::container::Client,
    handle: &str,
    port: u16,
    bytes: usize,
) -> (u64, f64) {
    let ip = ip_of(c).await;
    let mut counter = spawn(c, &format!("nc -l -p {port} | wc -c")).await;
    wait_listening(env, handle, port).await;
    let mut stream =
        TcpStream::connect_timeout(&SocketAddr::from((ip, port)), Duration::from_secs(5)).unwrap();
    let began = Instant::now();
    let chunk = vec![0x5au8; 64 << 10];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        stream.write_all(&chunk[..n]).unwrap();
        left -= n;
    }
    stream.shutdown(Shutdown::Write).unwrap();
    let status = wait(&counter.process).await.unwrap();
    let took = began.elapsed().as_secs_f64();
    assert_eq!(status, 0);
    let (out, _) = drain(&mut counter.stdout);
    let counted = String::from_utf8_lossy(&out).trim().parse().unwrap();
    (counted, took)
}

#[test]
fn bandwidth_limits_are_read_back() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let c = create_plain(&client, "bw").await;
        assert_eq!(bandwidth(&c).await, (0, 0), "no limit until one is set");
        // Every read-back is compared; the mismatches are reported together.
        let mut wrong = Vec::new();
        let mut expect = |what: &str, got: (u64, u64), want: (u64, u64)| {
            if got != want {
                wrong.push(format!("{what}: read back {got:?}, set {want:?}"));
            }
        };
        limit_bandwidth(&c, MIB, 64 << 10).await.unwrap();
        expect("limitBandwidth", bandwidth(&c).await, (MIB, 64 << 10));
        limit_bandwidth(&c, 3 * MIB, 256 << 10).await.unwrap();
        expect("a new limit", bandwidth(&c).await, (3 * MIB, 256 << 10));
        let now = bandwidth(&c).await;
        // A rate needs a burst; rate 0 is refused; neither changes the limit.
        assert_refused(
            limit_bandwidth(&c, MIB, 0).await,
            &["invalidSpec"],
            &["burst"],
        );
        assert_refused(
            limit_bandwidth(&c, 0, 64 << 10).await,
            &["invalidSpec"],
            &["rate"],
        );
        assert_refused(limit_bandwidth(&c, 0, 0).await, &["invalidSpec"], &["rate"]);
        assert_eq!(bandwidth(&c).await, now, "a refused limit changes nothing");
        let d = create_net(
            &client,
            Spec {
                handle: "bw-spec",
                bandwidth: Some((2 * MIB, 128 << 10)),
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        expect(
            "spec.limits.bandwidth",
            bandwidth(&d).await,
            (2 * MIB, 128 << 10),
        );
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    });
}

#[test]
fn bandwidth_limits_shape_traffic_both_ways() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let c = create_plain(&client, "bw").await;
        // Unlimited first: well above the limits used below (1 and 2 MiB/s),
        // so that they are what holds the rates (an emulated guest under
        // load moves about 6 MB/s here).
        let (counted, took) = send_to_container(env, &c, "bw", 5001, 4 * MIB as usize).await;
        assert_eq!(counted, 4 * MIB);
        let unlimited = counted as f64 / took;
        eprintln!("host -> container unlimited: {unlimited:.0} B/s");
        assert!(unlimited > 3.0 * MIB as f64, "unlimited: {unlimited:.0} B/s");

        limit_bandwidth(&c, MIB, 64 << 10).await.unwrap();
        // Host -> container: shaped (tbf on the host's veth).
        let (counted, took) = send_to_container(env, &c, "bw", 5002, 4 * MIB as usize).await;
        assert_eq!(counted, 4 * MIB);
        let rate = counted as f64 / took;
        eprintln!("host -> container at 1 MiB/s: {rate:.0} B/s");
        assert!(
            (0.8 * MIB as f64..=1.2 * MIB as f64).contains(&rate),
            "host -> container ran at {rate:.0} B/s ({counted} bytes in {took:.2} s) under a {MIB} B/s limit"
        );

        // Container -> host: policed; it must not exceed the limit (TCP
        // over a policer may run below it, so only the ceiling is checked).
        let (port, received) = host_server(env.gateway, "");
        net_out(&c, &Rule::tcp(env.gateway, port)).await.unwrap();
        let (status, _, err) = sh(
            &c,
            &format!("head -c {} /dev/zero | timeout 40 nc {} {port}", 2 * MIB, env.gateway),
        )
        .await;
        assert_eq!(status, 0, "uploading to the host: {err}");
        let (_, bytes, took) = received.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(bytes, 2 * MIB);
        let rate = bytes as f64 / took.as_secs_f64();
        eprintln!("container -> host at 1 MiB/s: {rate:.0} B/s");
        assert!(
            rate <= 1.2 * MIB as f64,
            "container -> host ran at {rate:.0} B/s under a {MIB} B/s limit"
        );

        // A bandwidth limit in the spec is in force from the start.
        let d = create_net(
            &client,
            Spec {
                handle: "bw-spec",
                bandwidth: Some((2 * MIB, 128 << 10)),
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        let (counted, took) = send_to_container(env, &d, "bw-spec", 5003, 4 * MIB as usize).await;
        assert_eq!(counted, 4 * MIB);
        let rate = counted as f64 / took;
        eprintln!("host -> container at 2 MiB/s (spec): {rate:.0} B/s");
        assert!(
            (1.6 * MIB as f64..=2.4 * MIB as f64).contains(&rate),
            "host -> bw-spec ran at {rate:.0} B/s under a {} B/s limit from the spec",
            2 * MIB
        );
    });
}

#[test]
fn network_metrics_count_the_containers_traffic() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let c = create_plain(&client, "metered").await;
        let before = net_metrics(&c).await;
        let (counted, _) = send_to_container(env, &c, "metered", 6000, 2 * MIB as usize).await;
        assert_eq!(counted, 2 * MIB);
        let after = net_metrics(&c).await;
        assert!(
            after.0 >= before.0 + 2 * MIB,
            "rxBytes grew by the 2 MiB sent to the container: {before:?} -> {after:?}"
        );
        assert!(
            after.1 > before.1,
            "txBytes grew (ACKs): {before:?} -> {after:?}"
        );
        assert!(
            after.2 > before.2 && after.3 > before.3,
            "{before:?} -> {after:?}"
        );
        // And the other way: the container sends 1 MiB to the host.
        let (port, received) = host_server(env.gateway, "");
        net_out(&c, &Rule::tcp(env.gateway, port)).await.unwrap();
        let (status, _, err) = sh(
            &c,
            &format!(
                "head -c {MIB} /dev/zero | timeout 20 nc {} {port}",
                env.gateway
            ),
        )
        .await;
        assert_eq!(status, 0, "{err}");
        assert_eq!(
            received.recv_timeout(Duration::from_secs(5)).unwrap().1,
            MIB
        );
        let last = net_metrics(&c).await;
        assert!(
            last.1 >= after.1 + MIB,
            "txBytes grew by the 1 MiB the container sent: {after:?} -> {last:?}"
        );
    });
}

// ---------------------------------------------------------------------------
// Teardown and exhaustion

/// Cycles of create/destroy. 200 take about 30 s with network set-up.
const CYCLES: usize = 200;

#[test]
fn destroy_removes_the_network_and_many_cycles_leave_nothing() {
    // A /27 pool: 29 addresses, so a leak of one per cycle runs it dry.
    let env = TestEnv::start_with_options(EnvOptions {
        pool_prefix: Some(27),
        ..EnvOptions::default()
    });
    let env = &env;
    env.run(|client| async move {
        let baseline = env.nft_table_text().expect("the helper's nft table");
        assert!(env.bridge_ports().is_empty());
        let first_ip = env.pool_ip(2);
        let port = env.ports.0;

        let full = |handle: &'static str| {
            let client = &client;
            async move {
                let c = create_net(
                    client,
                    Spec {
                        handle,
                        network: &first_ip.to_string(),
                        net_in: &[(port as u32, 80)],
                        net_out: &[Rule::tcp(env.gateway, 9)],
                        bandwidth: Some((MIB, 64 << 10)),
                    },
                )
                .await
                .unwrap_or_else(|e| panic!("creating {handle} with {first_ip}: {e}"));
                assert_eq!(ip_of(&c).await, first_ip);
                c
            }
        };
        let c = full("d1").await;
        let _web = serve_http(env, &c, "d1", 80, "d1").await;
        assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "d1");
        let host_veth = env.bridge_ports();
        assert_eq!(host_veth.len(), 1);
        let with_container = env.nft_table_text().unwrap();
        assert_ne!(with_container, baseline, "the container has nft state");
        client.destroy("d1").await.unwrap();
        // Off the bridge at once; the kernel removes the veth pair with
        // the dead namespace moments later.
        assert!(env.bridge_ports().is_empty(), "{:?}", env.bridge_ports());
        eventually(&format!("{} is gone", host_veth[0]), || {
            !link_exists(&host_veth[0])
        });
        assert_eq!(env.nft_table_text().unwrap(), baseline);
        assert!(
            http_get(SocketAddr::from((Ipv4Addr::LOCALHOST, port))).is_err(),
            "the NetIn port is closed after destroy"
        );
        // The address, the host port and the rules can be had again.
        full("d2").await;
        client.destroy("d2").await.unwrap();

        let began = Instant::now();
        for i in 0..CYCLES {
            let handle = format!("cycle-{i}");
            let c = create_plain(&client, &handle).await;
            if i % 10 == 0 {
                net_in(&c, 0, 80).await.unwrap();
                net_out(&c, &Rule::tcp(env.gateway, 9)).await.unwrap();
            }
            client.destroy(&handle).await.unwrap();
        }
        eprintln!("{CYCLES} create/destroy cycles took {:?}", began.elapsed());
        eventually("no port is left on the bridge", || {
            env.bridge_ports().is_empty()
        });
        assert_eq!(
            env.nft_table_text().unwrap(),
            baseline,
            "no per-container chain or element is left"
        );
        // Every address is free again: the first one, and the whole pool.
        full("last").await;
        for i in 0..28 {
            create_plain(&client, &format!("fill-{i}")).await;
        }
    });
}

#[test]
fn an_exhausted_pool_or_port_range_says_so_and_destroy_frees_it() {
    // A /29 pool: the gateway and 5 containers; 2 host ports.
    let env = TestEnv::start_with_options(EnvOptions {
        pool_prefix: Some(29),
        port_count: Some(2),
        ..EnvOptions::default()
    });
    let env = &env;
    env.run(|client| async move {
        let mut ips = Vec::new();
        for i in 0..5 {
            let c = create_plain(&client, &format!("p{i}")).await;
            let ip = ip_of(&c).await;
            assert!(env.in_pool(ip) && ip != env.gateway, "{ip}");
            ips.push(ip);
        }
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), 5, "five different addresses: {ips:?}");
        let table = env.nft_table_text().unwrap();
        let e = create_net(
            &client,
            Spec {
                handle: "p5",
                ..Spec::default()
            },
        )
        .await;
        assert_refused(e, &["limitExceeded"], &[&env.pool()]);
        assert_eq!(client.list(&[]).await.unwrap().len(), 5);
        assert_eq!(env.bridge_ports().len(), 5);
        assert_eq!(env.nft_table_text().unwrap(), table);
        let freed = ip_of(&client.lookup("p2").await.unwrap()).await;
        client.destroy("p2").await.unwrap();
        let c = create_plain(&client, "p5").await;
        assert_eq!(ip_of(&c).await, freed, "the only free address");

        // Ports: two in the range.
        let a = client.lookup("p0").await.unwrap();
        let b = client.lookup("p1").await.unwrap();
        let pa = net_in(&a, 0, 80).await.unwrap().0;
        let pb = net_in(&b, 0, 80).await.unwrap().0;
        let mut got = vec![pa, pb];
        got.sort();
        assert_eq!(got, vec![env.ports.0 as u32, env.ports.1 as u32]);
        let range = format!("{}-{}", env.ports.0, env.ports.1);
        assert_refused(net_in(&b, 0, 81).await, &["limitExceeded"], &[&range]);
        assert_eq!(info(&b).await.mapped, vec![(pb, 80)]);
        client.destroy("p0").await.unwrap();
        assert_eq!(
            net_in(&b, 0, 81).await.unwrap(),
            (pa, 81),
            "p0's port is free again"
        );
    });
}

// ---------------------------------------------------------------------------
// Policy checks at start-up, and a restart

#[test]
fn the_helper_refuses_a_pool_that_overlaps_a_host_network_or_bad_net_keys() {
    let (host, prefix) = host_address();
    let host_net = format!("{}/{prefix}", network_of(host, prefix));
    let cases = [
        (format!("pool = {host_net}"), host_net.clone()),
        // A smaller pool inside the host's network overlaps too.
        (
            format!("pool = {}/30", network_of(host, 30)),
            format!("{}/30", network_of(host, 30)),
        ),
        ("pool = 10.254.300.0/24".to_string(), "pool".to_string()),
        ("pool = 127.0.0.0/24".to_string(), "pool".to_string()),
        (
            "port_range = 70000-70001".to_string(),
            "port_range".to_string(),
        ),
        ("port_range = 300-200".to_string(), "port_range".to_string()),
        (
            "bridge = a-name-far-too-long".to_string(),
            "bridge".to_string(),
        ),
        ("mtu = 100".to_string(), "mtu".to_string()),
    ];
    let mut wrong = Vec::new();
    for (line, needle) in cases {
        let outcome = TestEnv::try_start(EnvOptions {
            helper_extra: line.clone(),
            ..EnvOptions::default()
        });
        let failure = match outcome {
            Ok(env) => {
                wrong.push(format!("the helper started with {line:?}"));
                drop(env);
                continue;
            }
            Err(f) => f,
        };
        let Some(status) = failure.status else {
            wrong.push(format!(
                "the helper neither listened nor exited with {line:?}\n{}",
                failure.log
            ));
            continue;
        };
        let key = line.split('=').next().unwrap().trim();
        if status.success() || !failure.log.contains(&needle) || !failure.log.contains(key) {
            wrong.push(format!(
                "{line:?}: want a failed exit naming {key} and {needle:?}, got {status}:\n{}",
                failure.log
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// A link of the test's own in the host's netns: one end of a veth pair
/// with no address and no route (this kernel has no dummy links), so it
/// carries no traffic anywhere; deleted by name (with its peer) at the end.
struct SpareLink(String);

impl SpareLink {
    fn new(name: String, forwarding: bool) -> SpareLink {
        let peer = format!("{name}p");
        cmd(
            "ip",
            &["link", "add", &name, "type", "veth", "peer", "name", &peer],
        );
        let link = SpareLink(name);
        std::fs::write(
            format!("/proc/sys/net/ipv4/conf/{}/forwarding", link.0),
            if forwarding { "1" } else { "0" },
        )
        .unwrap();
        link
    }
    fn forwarding(&self) -> String {
        std::fs::read_to_string(format!("/proc/sys/net/ipv4/conf/{}/forwarding", self.0))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for SpareLink {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn the_helper_forwards_on_its_uplinks_for_containers_only() {
    // Two stand-in uplinks: one whose forwarding is off (the helper turns
    // it on and drops what else would be routed from it), one the
    // operator already forwards on (left exactly as it is).
    let pid = std::process::id() % 100_000;
    let off = SpareLink::new(format!("guo{pid}"), false);
    let on = SpareLink::new(format!("gun{pid}"), true);
    let mut env = TestEnv::start_with_policy("", &format!("uplinks = {}, {}", off.0, on.0));
    assert_eq!(off.forwarding(), "1", "{}", env.logs());
    assert_eq!(on.forwarding(), "1");
    let guard = |table: &str, link: &str| table.contains(&format!("iifname \"{link}\" drop"));
    let table = env.nft_table_text().unwrap();
    assert!(guard(&table, &off.0), "{table}");
    assert!(!guard(&table, &on.0), "{table}");
    // A restarted helper knows (from its marker) which one it turned on.
    env.restart_helper();
    let table = env.nft_table_text().unwrap();
    assert!(guard(&table, &off.0) && !guard(&table, &on.0), "{table}");
    drop(env);
}

#[test]
fn a_restarted_helper_rebuilds_its_table_and_mappings_keep_working() {
    let mut env = TestEnv::start();
    let port = env.ports.0;
    let (table, keep_ip) = block_on(async {
        let client = env.connect().await;
        let c = create_net(
            &client,
            Spec {
                handle: "keep",
                net_in: &[(port as u32, 80)],
                net_out: &[Rule::tcp(env.gateway, 9)],
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        // httpd keeps running when this client goes.
        let _web = serve_http(&env, &c, "keep", 80, "still-here").await;
        assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "still-here");
        (env.nft_table_text().unwrap(), ip_of(&c).await)
    });
    // The table is lost while the helper is down (a flush, a reboot of
    // the firewall): the helper rebuilds it from its records.
    env.stop_helper();
    let _ = std::process::Command::new("nft")
        .args(["delete", "table", "inet", &env.nft_table])
        .stderr(std::process::Stdio::null())
        .status();
    assert!(env.nft_table_text().is_none());
    env.restart_helper();
    assert_eq!(
        env.nft_table_text().as_deref(),
        Some(table.as_str()),
        "the table is rebuilt\n{}",
        env.logs()
    );
    assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "still-here");
    // groved, killed and restarted, still knows the container's network.
    env.kill_and_restart_groved();
    let env = &env;
    env.run(|client| async move {
        let c = client.lookup("keep").await.unwrap();
        let i = info(&c).await;
        assert_eq!(i.container_ip, keep_ip.to_string());
        assert_eq!(i.host_ip, env.gateway.to_string());
        assert_eq!(i.mapped, vec![(port as u32, 80)]);
        // The next container does not get keep's address or port.
        let d = create_plain(&client, "next").await;
        assert_ne!(ip_of(&d).await, ip_of(&c).await);
        let picked = net_in(&d, 0, 80).await.unwrap().0;
        assert!(
            picked != port as u32 && (env.ports.0 as u32..=env.ports.1 as u32).contains(&picked),
            "{picked}: keep's port {port} is still taken"
        );
    });
}

// ---------------------------------------------------------------------------
// CLI

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_cli_maps_ports_adds_rules_and_limits_bandwidth() {
    let env = TestEnv::start();
    let ok = |args: &[&str]| run_cli_ok(&env, args);
    let (first, _) = env.ports;
    let ip = env.pool_ip(20);
    let mapping = format!("{}:8080", first + 1);
    assert_eq!(
        ok(&[
            "create",
            "--handle",
            "web",
            "--network",
            &ip.to_string(),
            "--net-in",
            &mapping
        ]),
        "web\n"
    );
    assert_eq!(ok(&["create", "--handle", "cli"]), "cli\n");
    let info_out = ok(&["info", "web"]);
    assert!(
        info_out.lines().any(|l| l == format!("container_ip: {ip}"))
            && info_out
                .lines()
                .any(|l| l == format!("mapped_port: {}:8080", first + 1)),
        "{info_out}"
    );
    assert_eq!(
        ok(&[
            "net-in",
            "web",
            "--host-port",
            &first.to_string(),
            "--container-port",
            "8080"
        ]),
        format!("{first} 8080\n")
    );
    let out = run_cli(
        &env,
        &[
            "net-in",
            "web",
            "--host-port",
            "1",
            "--container-port",
            "80",
        ],
        None,
    );
    assert!(!out.status.success());
    assert_eq!(
        text(&out.stderr).lines().count(),
        1,
        "{}",
        text(&out.stderr)
    );
    let range = format!("{ip}-{ip}");
    ok(&[
        "net-out",
        "cli",
        "--protocol",
        "tcp",
        "--network",
        &range,
        "--port",
        "8080",
    ]);
    let out = run_cli(
        &env,
        &["net-out", "cli", "--protocol", "icmp", "--port", "80"],
        None,
    );
    assert!(!out.status.success(), "ports on icmp are refused");
    ok(&["limit", "cli", "--bandwidth", "1M"]);
    let limits = ok(&["limits", "cli"]);
    assert!(
        limits.lines().any(|l| l == "bandwidth: 1MiB:1MiB"),
        "{limits}"
    );
    let limits = ok(&["--bytes", "limits", "cli"]);
    assert!(
        limits.lines().any(|l| l == "bandwidth: 1048576:1048576"),
        "{limits}"
    );

    // What the CLI did is in force.
    let env = &env;
    env.run(|client| async move {
        let web = client.lookup("web").await.unwrap();
        let cli = client.lookup("cli").await.unwrap();
        assert_eq!(ip_of(&web).await, ip);
        let mut mapped = info(&web).await.mapped;
        mapped.sort();
        assert_eq!(mapped, vec![(first as u32, 8080), (first as u32 + 1, 8080)]);
        assert_eq!(bandwidth(&cli).await.0, MIB);
        let _srv = serve_http(env, &web, "web", 8080, "via-cli").await;
        assert_serves(
            SocketAddr::from((Ipv4Addr::LOCALHOST, first + 1)),
            "via-cli",
        );
        let (status, out) = wget_from(&cli, ip, 8080).await;
        assert_eq!(
            (status, out.trim()),
            (0, "via-cli"),
            "the net-out rule is in force"
        );
    });
}

/// Send one UDP datagram from inside `pid`'s network namespace with
/// source address `source` (which need not be the namespace's own), from a thread of this test that enters
/// the namespace alone.
fn send_udp_from_netns(pid: i32, source: Ipv4Addr, to: SocketAddr, payload: &'static [u8]) {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let socket = std::net::UdpSocket::from(free_bound_udp(source));
        socket.send_to(payload, to).unwrap();
    })
    .join()
    .unwrap();
}

/// A UDP socket bound to `source` (port 0) although no interface has it.
fn free_bound_udp(source: Ipv4Addr) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: socket just returned fd; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // IP_FREEBIND binds an address no interface has; IP_TRANSPARENT lets
    // routing use it as a source.
    for option in [libc::IP_FREEBIND, libc::IP_TRANSPARENT] {
        let on: libc::c_int = 1;
        // SAFETY: setsockopt reads one live c_int.
        let r = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::IPPROTO_IP,
                option,
                &on as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        assert_eq!(r, 0, "option {option}: {}", std::io::Error::last_os_error());
    }
    let addr = sockaddr_in(source);
    // SAFETY: bind reads one live sockaddr_in of the size given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &addr as *const _ as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        )
    };
    assert_eq!(r, 0, "bind {source}: {}", std::io::Error::last_os_error());
    fd
}

/// `recv_from`, again when a signal interrupted it (EINTR; the read timeout
/// starts over): CI once met one mid-wait.
fn recv_from(socket: &std::net::UdpSocket, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    loop {
        match socket.recv_from(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// A container cannot send as another: frames whose source address is not
/// their port's own are dropped on the bridge, before the firewall, which
/// would otherwise apply the other container's NetOut rules to them.
#[test]
fn a_container_cannot_borrow_another_containers_address() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_plain(&client, "spoof-a").await;
        let _b = create_plain(&client, "spoof-b").await;
        let ip_a = ip_of(&a).await;
        let server = std::net::UdpSocket::bind((env.gateway, 0)).unwrap();
        server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let port = server.local_addr().unwrap().port();
        let to_host = Rule::udp(env.gateway, port);
        net_out(&a, &to_host).await.unwrap();
        let to = SocketAddr::from((env.gateway, port));
        let pid_a = env.container_pids("spoof-a")[0];
        let pid_b = env.container_pids("spoof-b")[0];
        let mut buf = [0u8; 64];

        // A's rule lets A's own datagram through.
        send_udp_from_netns(pid_a, ip_a, to, b"from-a");
        let (n, peer) = recv_from(&server, &mut buf).expect("A's datagram arrives");
        assert_eq!((&buf[..n], peer.ip()), (&b"from-a"[..], IpAddr::V4(ip_a)));

        // B, which has no rule, sends as A: nothing arrives.
        send_udp_from_netns(pid_b, ip_a, to, b"b-as-a");
        send_udp_from_netns(pid_b, Ipv4Addr::new(10, 99, 99, 99), to, b"b-as-stranger");
        match recv_from(&server, &mut buf) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Ok((n, peer)) => panic!(
                "a spoofed datagram arrived: {:?} from {peer}",
                String::from_utf8_lossy(&buf[..n])
            ),
            Err(e) => panic!("{e}"),
        }
        // A still can (the check dropped B's frames, not A's address).
        send_udp_from_netns(pid_a, ip_a, to, b"again");
        let (n, _) = recv_from(&server, &mut buf).expect("A's second datagram arrives");
        assert_eq!(&buf[..n], b"again");
    });
}

// ---------------------------------------------------------------------------
// Hand-made frames from inside a container (issue 17): container root has
// CAP_NET_RAW in its netns, so these tests send and capture on its eth0
// with an AF_PACKET socket the test opens in that netns (as the existing
// spoofing test enters it), the same frames a tenant could craft.

/// Run `f` on a thread that has entered `pid`'s network namespace alone.
fn in_netns<T: Send + 'static>(pid: i32, f: impl FnOnce() -> T + Send + 'static) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::spawn(move || {
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        f()
    })
    .join()
    .unwrap()
}

const ETH_P_ALL: u16 = 0x0003;
const ETH_IP: u16 = 0x0800;
const ETH_ARP: u16 = 0x0806;
const ETH_IPV6: u16 = 0x86dd;
const TPID_8021Q: u16 = 0x8100;
const TPID_8021AD: u16 = 0x88a8;
const BROADCAST: [u8; 6] = [0xff; 6];

/// The kernel's address of `ip` (port 0), for bind and sendto.
fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(ip.octets()),
        },
        sin_zero: [0; 8],
    }
}

/// A container's eth0 as an AF_PACKET socket that sends whole frames and
/// sees every frame from the moment it is opened.
struct Eth0 {
    fd: std::os::fd::OwnedFd,
    mac: [u8; 6],
}

impl Eth0 {
    /// The eth0 of container `handle`, as its root would open it.
    fn of(env: &TestEnv, handle: &str) -> Eth0 {
        Eth0::open(env.container_pids(handle)[0])
    }

    fn open(pid: i32) -> Eth0 {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        in_netns(pid, || {
            let proto = (ETH_P_ALL.to_be()) as i32;
            // SAFETY: plain socket(2); the fd is owned at once.
            let fd = unsafe {
                libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, proto)
            };
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            // SAFETY: socket just returned fd.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            let name = std::ffi::CString::new("eth0").unwrap();
            // SAFETY: reads a NUL-terminated name.
            let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
            assert!(ifindex > 0, "no eth0 in the container");
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = ifindex as i32;
            let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: bind reads one live sockaddr_ll of the size given.
            let r = unsafe {
                libc::bind(
                    fd.as_raw_fd(),
                    &sll as *const _ as *const libc::sockaddr,
                    len,
                )
            };
            assert_eq!(r, 0, "bind eth0: {}", std::io::Error::last_os_error());
            // The bound address names the device's MAC.
            let mut len = len;
            // SAFETY: getsockname writes at most `len` bytes into sll.
            let r = unsafe {
                libc::getsockname(
                    fd.as_raw_fd(),
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            assert_eq!(r, 0, "getsockname: {}", std::io::Error::last_os_error());
            let mut mac = [0u8; 6];
            mac.copy_from_slice(&sll.sll_addr[..6]);
            Eth0 { fd, mac }
        })
    }

    fn send(&self, frame: &[u8]) {
        use std::os::fd::AsRawFd;
        // SAFETY: send reads `frame`, a live buffer of that length.
        let n = unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
            )
        };
        assert_eq!(
            n,
            frame.len() as isize,
            "send: {}",
            std::io::Error::last_os_error()
        );
    }

    /// The frames that came in (not the container's own) until `for_`
    /// has passed, those queued since `open` included.
    fn capture(&self, for_: Duration) -> Vec<Vec<u8>> {
        use std::os::fd::AsRawFd;
        let deadline = Instant::now() + for_;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd: self.fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll reads and writes one live pollfd.
            let r = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if r == 0 || (r < 0 && Instant::now() >= deadline) {
                return out;
            }
            if r < 0 {
                continue; // EINTR
            }
            // SAFETY: all-zero is a valid sockaddr_ll.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
            // SAFETY: recvfrom writes at most buf.len() bytes into buf and
            // at most `len` into `from`.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut from as *mut _ as *mut libc::sockaddr,
                    &mut len,
                )
            };
            if n > 0 && from.sll_pkttype != libc::PACKET_OUTGOING {
                out.push(buf[..n as usize].to_vec());
            }
        }
    }
}

fn inet_checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An Ethernet frame; each of `tags` is a VLAN tag (its TPID, VID 0).
fn frame(dst: [u8; 6], src: [u8; 6], tags: &[u16], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = [&dst[..], &src[..]].concat();
    for tpid in tags {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn ipv4_packet(src: Ipv4Addr, dst: Ipv4Addr, protocol: u8, payload: &[u8]) -> Vec<u8> {
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&((20 + payload.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, protocol, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    let sum = inet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(payload);
    h
}

/// A UDP datagram (checksum 0: none, which IPv4 allows).
fn udp_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    ipv4_packet(src, dst, 17, &u)
}

fn tcp_syn_packet(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = [sport.to_be_bytes(), dport.to_be_bytes()].concat();
    t.extend_from_slice(&0x1000_0000u32.to_be_bytes()); // seq
    t.extend_from_slice(&[0, 0, 0, 0, 0x50, 0x02, 0xfa, 0xf0, 0, 0, 0, 0]);
    let mut pseudo = [src.octets(), dst.octets()].concat();
    pseudo.extend_from_slice(&[0, 6, 0, t.len() as u8]);
    pseudo.extend_from_slice(&t);
    let sum = inet_checksum(&pseudo);
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    ipv4_packet(src, dst, 6, &t)
}

fn arp_packet(op: u16, sha: [u8; 6], sip: Ipv4Addr, tha: [u8; 6], tip: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0, 1, 8, 0, 6, 4];
    a.extend_from_slice(&op.to_be_bytes());
    for part in [&sha[..], &sip.octets(), &tha, &tip.octets()] {
        a.extend_from_slice(part);
    }
    a
}

fn mac_of_link(name: &str) -> [u8; 6] {
    let text = std::fs::read_to_string(format!("/sys/class/net/{name}/address")).unwrap();
    parse_mac(text.trim())
}

fn parse_mac(text: &str) -> [u8; 6] {
    let v: Vec<u8> = text
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect();
    v.try_into().unwrap()
}

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// The (ethertype, payload) of a frame, under any VLAN tags.
fn ether_payload(f: &[u8]) -> (u16, &[u8]) {
    let mut at = 12;
    while at + 2 <= f.len() {
        let t = u16::from_be_bytes([f[at], f[at + 1]]);
        if t != TPID_8021Q && t != TPID_8021AD {
            return (t, &f[at + 2..]);
        }
        at += 4;
    }
    (0, &[])
}

/// Nothing arrives on `socket` within its read timeout.
fn assert_nothing_arrives(socket: &std::net::UdpSocket, what: &str) {
    let mut buf = [0u8; 256];
    match recv_from(socket, &mut buf) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) => {}
        Ok((n, peer)) => panic!(
            "{what} arrived: {:?} from {peer}",
            String::from_utf8_lossy(&buf[..n])
        ),
        Err(e) => panic!("{what}: {e}"),
    }
}

fn udp_listener(ip: Ipv4Addr) -> (std::net::UdpSocket, u16) {
    let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(1500)))
        .unwrap();
    let port = s.local_addr().unwrap().port();
    (s, port)
}

fn net_out_all() -> Rule {
    Rule {
        protocol: api::net_out_rule::Protocol::All,
        networks: vec![("0.0.0.0".into(), "255.255.255.255".into())],
        ports: vec![],
        icmp: None,
        log: false,
    }
}

/// Issue 17 #1 (CVE-2020-8558's pattern): the bridge has route_localnet
/// while a NetIn mapping exists (host connections to 127.0.0.1:<port>
/// need it), and a NetOut rule covering 127/8 would accept a packet to
/// the host's loopback. The helper's `loopback` chain drops every packet
/// from the bridge to or from 127/8 before conntrack: neither hand-made
/// frames nor a normal connect (over a route the container made) reach a
/// listener on the host's 127.0.0.1, while the same frames to the gateway
/// do and NetIn on 127.0.0.1 keeps working.
#[test]
fn a_container_cannot_reach_the_hosts_loopback() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_with_net_out(&client, "lo-a", &[net_out_all()]).await;
        let ip_a = ip_of(&a).await;
        let localnet = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", env.bridge);
        assert_eq!(std::fs::read_to_string(&localnet).unwrap().trim(), "0", "off without NetIn");
        let _web = serve_http(env, &a, "lo-a", 8080, "netin-on-loopback").await;
        let port = env.ports.0;
        net_in(&a, port as u32, 8080).await.unwrap();
        assert_eq!(std::fs::read_to_string(&localnet).unwrap().trim(), "1", "on with NetIn");
        assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "netin-on-loopback");

        let pid = env.container_pids("lo-a")[0];
        let eth0 = Eth0::open(pid);
        let gw_mac = mac_of_link(&env.bridge);
        let send = |packet: Vec<u8>| eth0.send(&frame(gw_mac, eth0.mac, &[], ETH_IP, &packet));

        // UDP: the gateway gets it (NetOut all), 127.0.0.1 does not.
        let (gw_udp, gw_port) = udp_listener(env.gateway);
        let (lo_udp, lo_port) = udp_listener(Ipv4Addr::LOCALHOST);
        send(udp_packet(ip_a, env.gateway, 40000, gw_port, b"to-gateway"));
        let mut buf = [0u8; 64];
        let (n, _) = recv_from(&gw_udp, &mut buf).expect("the hand-made datagram reaches the gateway");
        assert_eq!(&buf[..n], b"to-gateway");
        send(udp_packet(ip_a, Ipv4Addr::LOCALHOST, 40000, lo_port, b"to-loopback"));
        assert_nothing_arrives(&lo_udp, "a container's datagram to the host's 127.0.0.1");

        // TCP SYN: the gateway's listener answers SYN-ACK, 127.0.0.1's does not.
        let gw_tcp = TcpListener::bind((env.gateway, 0)).unwrap();
        let lo_tcp = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        lo_tcp.set_nonblocking(true).unwrap();
        let syn_ack_from = |src: Ipv4Addr, sport: u16| {
            eth0.capture(Duration::from_millis(1500)).iter().any(|f| {
                let (t, p) = ether_payload(f);
                t == ETH_IP && p.len() >= 40 && p[9] == 6 && p[12..16] == src.octets()
                    && p[20..22] == sport.to_be_bytes() && p[33] & 0x12 == 0x12
            })
        };
        let port_of = |l: &TcpListener| l.local_addr().unwrap().port();
        send(tcp_syn_packet(ip_a, env.gateway, 40001, port_of(&gw_tcp)));
        assert!(syn_ack_from(env.gateway, port_of(&gw_tcp)), "the gateway's listener answers");
        send(tcp_syn_packet(ip_a, Ipv4Addr::LOCALHOST, 40002, port_of(&lo_tcp)));
        assert!(
            !syn_ack_from(Ipv4Addr::LOCALHOST, port_of(&lo_tcp)),
            "the host's 127.0.0.1 listener answered a container's SYN"
        );

        // A normal connect: the container routes 127.0.0.1 via the gateway
        // and lets its kernel take answers from 127.0.0.1 (it may: root in
        // its own netns).
        let script = format!(
            "ip route del local 127.0.0.1 table local; ip route del local 127.0.0.0/8 table local; \
             for c in all eth0 lo; do echo 1 > /proc/sys/net/ipv4/conf/$c/route_localnet; echo 1 > /proc/sys/net/ipv4/conf/$c/accept_local; done; \
             ip route add 127.0.0.1/32 via {} dev eth0",
            env.gateway
        );
        cmd("nsenter", &[&format!("--net=/proc/{pid}/ns/net"), "sh", "-c", &script]);
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, port_of(&lo_tcp)));
        let connected = in_netns(pid, move || TcpStream::connect_timeout(&to, Duration::from_secs(2)));
        assert!(connected.is_err(), "a container connected to the host's {to}");
        match lo_tcp.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the host's 127.0.0.1 listener accepted: {other:?}"),
        }
        // NetIn on 127.0.0.1 still works, and stops needing route_localnet
        // when the container goes.
        assert_serves(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), "netin-on-loopback");
        drop(eth0);
        client.destroy("lo-a").await.unwrap();
        assert_eq!(std::fs::read_to_string(&localnet).unwrap().trim(), "0", "off again");
    });
}

/// The host's link-layer address for `ip` on `bridge` (None: no entry).
fn host_neighbour(bridge: &str, ip: Ipv4Addr) -> Option<String> {
    let out = std::process::Command::new("ip")
        .args(["-4", "neigh", "show", &ip.to_string(), "dev", bridge])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "lladdr")?;
    words.next().map(str::to_string)
}

/// Make the host resolve `ip` (one datagram to its discard port) and wait
/// until its neighbour entry is there.
fn host_resolves(env: &TestEnv, ip: Ipv4Addr) -> String {
    let s = std::net::UdpSocket::bind((env.gateway, 0)).unwrap();
    s.send_to(b"arp", (ip, 9)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match host_neighbour(&env.bridge, ip) {
            Some(mac) => return mac,
            None if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            None => panic!("the host did not resolve {ip}"),
        }
    }
}

/// Issue 17 #2: a container port passes untagged IPv4 and ARP only. A
/// VLAN-tagged frame (802.1Q or 802.1ad, VID 0, which the host would strip
/// and accept) from A carrying B's address neither reaches the host as B
/// (using B's NetOut rule) nor rewrites the host's ARP entry for B.
#[test]
fn tagged_frames_cannot_pass_as_a_neighbour() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let (server, port) = udp_listener(env.gateway);
        let to_host = Rule::udp(env.gateway, port);
        let _a = create_plain(&client, "vlan-a").await;
        let b = create_with_net_out(&client, "vlan-b", &[to_host]).await;
        let ip_b = ip_of(&b).await;
        let gw_mac = mac_of_link(&env.bridge);
        let eth_a = Eth0::of(env, "vlan-a");
        let eth_b = Eth0::of(env, "vlan-b");
        let datagram = |data: &[u8]| udp_packet(ip_b, env.gateway, 40000, port, data);

        // B's own frame passes (its rule), untagged and from its port.
        eth_b.send(&frame(
            gw_mac,
            eth_b.mac,
            &[],
            ETH_IP,
            &datagram(b"b-itself"),
        ));
        let mut buf = [0u8; 64];
        let (n, _) = recv_from(&server, &mut buf).expect("B's hand-made datagram arrives");
        assert_eq!(&buf[..n], b"b-itself");
        // A, tagged, as B: nothing arrives.
        for tags in [
            &[TPID_8021Q][..],
            &[TPID_8021AD],
            &[TPID_8021AD, TPID_8021Q],
        ] {
            eth_a.send(&frame(
                gw_mac,
                eth_a.mac,
                tags,
                ETH_IP,
                &datagram(b"a-as-b"),
            ));
        }
        assert_nothing_arrives(&server, "a tagged datagram sent by A as B");

        // The host learns B's MAC, then A claims B's address in a tagged
        // gratuitous ARP (after the neighbour table's 1 s lock time).
        let b_mac = mac_text(eth_b.mac);
        assert_eq!(host_resolves(env, ip_b), b_mac);
        std::thread::sleep(Duration::from_millis(1200));
        let garp = arp_packet(1, eth_a.mac, ip_b, [0; 6], ip_b);
        for tags in [&[TPID_8021Q][..], &[TPID_8021AD]] {
            eth_a.send(&frame(BROADCAST, eth_a.mac, tags, ETH_ARP, &garp));
        }
        std::thread::sleep(Duration::from_millis(300));
        assert_eq!(
            host_neighbour(&env.bridge, ip_b).as_deref(),
            Some(b_mac.as_str()),
            "a tagged ARP from A rewrote the host's entry for B"
        );
    });
}

/// The path MTU the host has cached for `ip` (None: none).
fn cached_mtu(ip: Ipv4Addr) -> Option<u32> {
    let out = std::process::Command::new("ip")
        .args(["-4", "route", "get", &ip.to_string()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words.find(|w| *w == "mtu")?;
    words.next()?.parse().ok()
}

/// Send an ICMP destination-unreachable (`code`, next-hop MTU `mtu`) to
/// `to` from inside `pid`'s netns, quoting the UDP datagram `quoted`.
fn send_icmp_unreachable(pid: i32, to: Ipv4Addr, code: u8, mtu: u16, quoted: Vec<u8>) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    in_netns(pid, move || {
        let mut icmp = vec![3, code, 0, 0, 0, 0];
        icmp.extend_from_slice(&mtu.to_be_bytes());
        icmp.extend_from_slice(&quoted[..quoted.len().min(28)]);
        let sum = inet_checksum(&icmp);
        icmp[2..4].copy_from_slice(&sum.to_be_bytes());
        // SAFETY: plain socket(2); owned at once.
        let fd = unsafe {
            libc::socket(
                libc::AF_INET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::IPPROTO_ICMP,
            )
        };
        assert!(
            fd >= 0,
            "raw ICMP socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: socket just returned fd.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let addr = sockaddr_in(to);
        // SAFETY: sendto reads `icmp` and one sockaddr_in, both live.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                icmp.as_ptr() as *const libc::c_void,
                icmp.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            )
        };
        assert_eq!(
            n,
            icmp.len() as isize,
            "sendto: {}",
            std::io::Error::last_os_error()
        );
    })
}

/// Issue 17 #3: conntrack calls an ICMP error RELATED to whatever flow it
/// quotes, whoever sends it. The host has a UDP flow with container B;
/// container A's forged port-unreachable and frag-needed about that flow
/// are dropped (no ECONNREFUSED on the host's socket, no path MTU), while
/// the same errors from B, the flow's endpoint, still get through.
#[test]
fn a_container_cannot_forge_icmp_errors_for_a_neighbours_flows() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_with_net_out(&client, "icmp-a", &[net_out_all()]).await;
        let b = create_plain(&client, "icmp-b").await;
        let (ip_a, ip_b) = (ip_of(&a).await, ip_of(&b).await);
        let (pid_a, pid_b) = (
            env.container_pids("icmp-a")[0],
            env.container_pids("icmp-b")[0],
        );
        // B listens (a socket of this test in B's netns); the host talks to it.
        let b_server = in_netns(pid_b, move || {
            std::net::UdpSocket::bind((ip_b, 7777)).unwrap()
        });
        b_server
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let host = std::net::UdpSocket::bind((env.gateway, 0)).unwrap();
        host.connect((ip_b, 7777)).unwrap();
        host.set_read_timeout(Some(Duration::from_millis(1000)))
            .unwrap();
        host.send(b"hello-b").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = recv_from(&b_server, &mut buf).expect("B gets the host's datagram");
        assert_eq!(&buf[..n], b"hello-b");
        let sport = host.local_addr().unwrap().port();
        let quoted = udp_packet(env.gateway, ip_b, sport, 7777, b"hello-b");
        // The error an ICMP message left on the host's socket, if any.
        let error = |host: &std::net::UdpSocket| match host.recv(&mut [0u8; 16]) {
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            other => Some(format!("{other:?}")),
        };

        send_icmp_unreachable(pid_a, env.gateway, 3, 0, quoted.clone());
        assert_eq!(
            error(&host),
            None,
            "A's ({ip_a}) forged port-unreachable reached the host's socket"
        );
        send_icmp_unreachable(pid_a, env.gateway, 4, 600, quoted.clone());
        assert_eq!(
            error(&host),
            None,
            "A's forged frag-needed reached the host's socket"
        );
        assert_eq!(
            cached_mtu(ip_b),
            None,
            "A's forged frag-needed set the host's path MTU to B"
        );

        send_icmp_unreachable(pid_b, env.gateway, 3, 0, quoted.clone());
        let refused = error(&host).expect("B's own port-unreachable reaches the host's socket");
        assert!(refused.contains("ConnectionRefused"), "{refused}");
        send_icmp_unreachable(pid_b, env.gateway, 4, 1200, quoted);
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(
            cached_mtu(ip_b),
            Some(1200),
            "B's own frag-needed sets the path MTU"
        );
    });
}

/// The bridge's forwarding entries, one line each.
fn fdb(bridge: &str) -> Vec<String> {
    let out = std::process::Command::new("bridge")
        .args(["fdb", "show", "br", bridge])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Issue 17 #4: a container port learns no MACs (a flood of forged source
/// addresses does not grow the bridge's forwarding table) and passes only
/// frames from the container's own MAC, which is a static entry.
#[test]
fn a_container_port_learns_nothing_and_sends_from_its_own_mac_only() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let (server, port) = udp_listener(env.gateway);
        let to_host = Rule::udp(env.gateway, port);
        let a = create_with_net_out(&client, "fdb-a", &[to_host]).await;
        let ip_a = ip_of(&a).await;
        let eth0 = Eth0::of(env, "fdb-a");
        let gw_mac = mac_of_link(&env.bridge);
        let own = mac_text(eth0.mac);
        let before = fdb(&env.bridge);
        assert!(
            before
                .iter()
                .any(|l| l.starts_with(&own) && l.contains(" static")),
            "the container's MAC {own} is a static entry: {before:?}"
        );
        // Learning and unknown-unicast flooding are off on the port, so the
        // bound holds even without the bridge table.
        let ports = env.bridge_ports();
        let link = std::process::Command::new("bridge")
            .args(["-d", "link", "show", "dev", &ports[0]])
            .output()
            .unwrap();
        let link = String::from_utf8_lossy(&link.stdout).to_string();
        assert!(
            link.contains("learning off") && link.contains(" flood off"),
            "{}: {link}",
            ports[0]
        );
        let datagram = |data: &[u8]| udp_packet(ip_a, env.gateway, 40000, port, data);

        // 3000 frames from forged (locally administered) source MACs.
        let forged = |i: u32| {
            let b = i.to_be_bytes();
            [0x06, 0x5e, b[0], b[1], b[2], b[3]]
        };
        for i in 0..3000 {
            eth0.send(&frame(gw_mac, forged(i), &[], ETH_IP, &datagram(b"flood")));
        }
        eth0.send(&frame(gw_mac, eth0.mac, &[], ETH_IP, &datagram(b"own-mac")));
        let mut buf = [0u8; 64];
        let (n, _) =
            recv_from(&server, &mut buf).expect("the frame from the container's MAC arrives");
        assert_eq!(&buf[..n], b"own-mac", "no frame from a forged MAC arrived");
        let after = fdb(&env.bridge);
        let learned: Vec<&String> = after.iter().filter(|l| l.starts_with("06:5e:")).collect();
        assert!(
            learned.is_empty(),
            "the bridge learned {} forged MACs",
            learned.len()
        );
        assert!(
            after.len() <= before.len(),
            "the table grew: {before:?} -> {after:?}"
        );
        assert_nothing_arrives(&server, "a frame from a forged MAC");
    });
}

/// Issue 17 #11: the host's end of a veth sends no IPv6 into the container
/// (router solicitations, MLD), and the host's ARP requests for one
/// container's address reach only that container's port.
#[test]
fn a_container_sees_no_host_ipv6_and_no_arp_for_others() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let a = create_plain(&client, "quiet-a").await;
        // Open at once: the host end's IPv6 start-up (DAD, MLD, router
        // solicitations every 4 s) happens in the first seconds.
        let started = Instant::now();
        let eth0 = Eth0::of(env, "quiet-a");
        let b = create_plain(&client, "quiet-b").await;
        let (ip_a, ip_b) = (ip_of(&a).await, ip_of(&b).await);
        host_resolves(env, ip_b);
        host_resolves(env, ip_a);
        let frames = eth0.capture(Duration::from_secs(9).saturating_sub(started.elapsed()));
        let mut arp_targets = Vec::new();
        for f in &frames {
            let (t, p) = ether_payload(f);
            assert_ne!(
                t, ETH_IPV6,
                "IPv6 from the host reached the container: {f:02x?}"
            );
            if t == ETH_ARP && p.len() >= 28 && p[6..8] == [0, 1] {
                arp_targets.push(Ipv4Addr::new(p[24], p[25], p[26], p[27]));
            }
        }
        assert!(
            arp_targets.contains(&ip_a),
            "the host's ARP for A reaches A: {arp_targets:?}"
        );
        assert!(
            arp_targets.iter().all(|t| *t == ip_a),
            "A saw the host's ARP requests for {arp_targets:?}"
        );
    });
}

/// Review of issue 17: a frame to a reserved link-local group address
/// (01:80:c2:00:00:0X, 802.1D's "never forwarded" range) is not bridged;
/// the bridge hands it up on the port itself (for LLDP and 802.1X
/// daemons), so the host's IPv4 and ARP code take it as received on the
/// container's veth — past the bridge table's prerouting checks (source
/// MAC and address) and the inet table's egress check (`iifname !=
/// bridge accept`). Neither a datagram its NetOut does not allow, nor one
/// from a forged address, nor an ARP request from a forged address (which
/// would make the host add a neighbour entry: a flood fills the host's
/// ARP table) may get in that way, while the same datagram sent to the
/// gateway's MAC as NetOut allows it does.
#[test]
fn link_local_group_frames_do_not_pass_the_port_checks() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let (allowed, allowed_port) = udp_listener(env.gateway);
        let (closed, closed_port) = udp_listener(env.gateway);
        let to_host = Rule::udp(env.gateway, allowed_port);
        let a = create_with_net_out(&client, "ll-a", &[to_host]).await;
        let ip_a = ip_of(&a).await;
        let eth0 = Eth0::of(env, "ll-a");
        let gw_mac = mac_of_link(&env.bridge);
        let stranger = Ipv4Addr::new(10, 99, 99, 99);
        eth0.send(&frame(
            gw_mac,
            eth0.mac,
            &[],
            ETH_IP,
            &udp_packet(ip_a, env.gateway, 40000, allowed_port, b"allowed"),
        ));
        let mut buf = [0u8; 64];
        let (n, _) = recv_from(&allowed, &mut buf).expect("the allowed datagram arrives");
        assert_eq!(&buf[..n], b"allowed");
        for last in (0x00..=0x0f).filter(|b| *b != 0x01) {
            let group = [0x01, 0x80, 0xc2, 0, 0, last];
            let to = |src, port, data: &[u8]| {
                frame(
                    group,
                    eth0.mac,
                    &[],
                    ETH_IP,
                    &udp_packet(src, env.gateway, 40000, port, data),
                )
            };
            eth0.send(&to(ip_a, closed_port, b"past-net-out"));
            eth0.send(&to(stranger, allowed_port, b"forged-source"));
            let arp = arp_packet(1, eth0.mac, stranger, [0; 6], env.gateway);
            eth0.send(&frame(group, eth0.mac, &[], ETH_ARP, &arp));
        }
        assert_nothing_arrives(
            &closed,
            "a datagram NetOut does not allow, to a link-local group",
        );
        assert_nothing_arrives(
            &allowed,
            "a datagram from a forged address, to a link-local group",
        );
        let port = env.bridge_ports()[0].clone();
        let neigh = std::process::Command::new("ip")
            .args(["-4", "neigh", "show", "dev", &port])
            .output()
            .unwrap();
        let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
        assert!(
            !neigh.contains(&stranger.to_string()),
            "a forged ARP request made the host add a neighbour on {port}: {neigh}"
        );
    });
}

/// Sets a host sysctl for the test and restores it when dropped (even on
/// failure).
struct Sysctl {
    path: String,
    old: String,
}

impl Sysctl {
    fn set(path: &str, value: &str) -> Sysctl {
        let old = std::fs::read_to_string(path).unwrap().trim().to_string();
        std::fs::write(path, value).unwrap();
        Sysctl {
            path: path.to_string(),
            old,
        }
    }
}

impl Drop for Sysctl {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.path, &self.old);
    }
}

/// A UDP datagram to `via` with a loose source route option naming `to`
/// as the next hop (the UDP checksum is 0, none).
fn udp_source_routed(
    src: Ipv4Addr,
    via: Ipv4Addr,
    to: Ipv4Addr,
    dport: u16,
    data: &[u8],
) -> Vec<u8> {
    let mut u = [40000u16.to_be_bytes(), dport.to_be_bytes()].concat();
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    // LSRR (type 0x83, length 7, pointer 4, one address), then EOL.
    let mut opt = vec![0x83, 7, 4];
    opt.extend_from_slice(&to.octets());
    opt.push(0);
    let mut h = vec![0x47, 0];
    h.extend_from_slice(&((28 + u.len()) as u16).to_be_bytes());
    h.extend_from_slice(&[0, 1, 0x40, 0, 64, 17, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&via.octets());
    h.extend_from_slice(&opt);
    let sum = inet_checksum(&h);
    h[10..12].copy_from_slice(&sum.to_be_bytes());
    h.extend_from_slice(&u);
    h
}

/// Review of issue 17 #1: a loose source route through the gateway to
/// 127.0.0.1. The loopback chain sees the gateway as destination; the
/// kernel's source routing then rewrites it to 127.0.0.1, which the
/// bridge's route_localnet (on while NetIn exists) lets it deliver to the
/// host's loopback services. Hosts accept source routes only where
/// `conf.all.accept_source_route` is on (off by default, some hosts turn
/// it on); the bridge's own setting must refuse them whatever `all` says.
#[test]
fn a_source_route_through_the_gateway_does_not_reach_the_hosts_loopback() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let _all = Sysctl::set("/proc/sys/net/ipv4/conf/all/accept_source_route", "1");
        let a = create_net(
            &client,
            Spec {
                handle: "srr-a",
                net_out: &[net_out_all()],
                net_in: &[(env.ports.0 as u32, 8080)],
                ..Spec::default()
            },
        )
        .await
        .unwrap();
        let ip_a = ip_of(&a).await;
        let localnet = format!("/proc/sys/net/ipv4/conf/{}/route_localnet", env.bridge);
        assert_eq!(std::fs::read_to_string(&localnet).unwrap().trim(), "1");
        let eth0 = Eth0::of(env, "srr-a");
        let gw_mac = mac_of_link(&env.bridge);
        let (lo_udp, lo_port) = udp_listener(Ipv4Addr::LOCALHOST);
        let to_lo = udp_source_routed(
            ip_a,
            env.gateway,
            Ipv4Addr::LOCALHOST,
            lo_port,
            b"to-loopback",
        );
        eth0.send(&frame(gw_mac, eth0.mac, &[], ETH_IP, &to_lo));
        assert_nothing_arrives(&lo_udp, "a source-routed datagram to the host's 127.0.0.1");
    });
}

/// Issue 23 #2: one container's new flows fill at most its share of the
/// host's conntrack table (the policy's conntrack_max_per_container; here
/// 32), so it cannot fill nf_conntrack_max and make the host drop every
/// container's and its own new flows. A sends a datagram from each of 100
/// source ports to a listener on the gateway (100 flows): 32 arrive, the
/// rest are refused; B's flow still gets through.
#[test]
fn a_container_s_flows_are_capped_in_the_conntrack_table() {
    const CAP: usize = 32;
    let env = TestEnv::start_with_options(EnvOptions {
        helper_extra: format!("conntrack_max_per_container = {CAP}\n"),
        ..EnvOptions::default()
    });
    let env = &env;
    env.run(|client| async move {
        let a = create_with_net_out(&client, "ct-a", &[net_out_all()]).await;
        let b = create_with_net_out(&client, "ct-b", &[net_out_all()]).await;
        let (ip_a, ip_b) = (ip_of(&a).await, ip_of(&b).await);
        let (listener, port) = udp_listener(env.gateway);
        let to = SocketAddr::from((env.gateway, port));
        let send_from = |handle: &str, ip: Ipv4Addr, flows: usize| {
            let pid = env.container_pids(handle)[0];
            in_netns(pid, move || {
                // Each socket is a flow of its own (its own source port);
                // kept open until all are sent.
                let sockets: Vec<std::net::UdpSocket> = (0..flows)
                    .map(|i| {
                        let s = std::net::UdpSocket::bind((ip, 0)).unwrap();
                        s.send_to(format!("flow {i}").as_bytes(), to).unwrap();
                        s
                    })
                    .collect();
                sockets.len()
            })
        };
        let received = |from: Ipv4Addr| {
            let mut ports = std::collections::HashSet::new();
            let mut buf = [0u8; 64];
            while let Ok((_, peer)) = recv_from(&listener, &mut buf) {
                assert_eq!(peer.ip(), std::net::IpAddr::V4(from));
                ports.insert(peer.port());
            }
            ports.len()
        };
        assert_eq!(send_from("ct-a", ip_a, 100), 100);
        let got = received(ip_a);
        println!("{got} of A's 100 flows reached the host with a cap of {CAP}");
        assert_eq!(
            got, CAP,
            "A's flows beyond the cap were let through (or too few were)"
        );
        // B has a share of its own.
        assert_eq!(send_from("ct-b", ip_b, 5), 5);
        assert_eq!(received(ip_b), 5, "B's flows were refused because of A's");
        client.destroy("ct-a").await.unwrap();
        client.destroy("ct-b").await.unwrap();
    });
}
