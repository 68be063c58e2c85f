//! wshd's seccomp filter on the real kernel, from inside containers: it is
//! an allowlist, so system calls it does not name (newer than its table,
//! or unused numbers) fail with ENOSYS; socket families outside its list
//! (AF_XDP above all: container root holds CAP_NET_RAW over its network
//! namespace, which is all AF_XDP asks) fail with EAFNOSUPPORT; TIOCSTI is
//! refused. `grove-escape probe` (tests/escape/src/probe.rs) makes the
//! calls. The same binary run on the host shows the kernel has what the
//! filter hides, so the test would fail without the filter.

use grove_client::{api, Command};
use grove_tests::*;

const DIR: &str = "/opt/probe";

/// A fresh container with grove-escape in /opt/probe.
async fn container_with_probe(
    client: &grove_client::Client,
    handle: &str,
) -> api::container::Client {
    let (container, _) = create(client, handle, "").await.unwrap();
    stream_in_escape(&container, DIR).await.unwrap();
    let (status, out, err) = exec(&container, "chmod", &["755", DIR]).await;
    assert_eq!(status, 0, "{out}{err}");
    container
}

/// `grove-escape probe ARGS` in the container as `user` ("" = root): its
/// PROBE lines.
async fn probe_in(container: &api::container::Client, user: &str, args: &[&str]) -> Vec<String> {
    let mut argv = vec!["probe"];
    argv.extend(args);
    let mut command = Command::new(&format!("{DIR}/grove-escape"), &argv);
    command.user = user.into();
    let (status, out, err) = exec_command(container, &command).await;
    assert_eq!(status, 0, "probe {args:?} as {user:?}: {out}{err}");
    out.lines().map(str::to_string).collect()
}

/// The same probe on the host, as this (root) test process.
fn probe_on_host(args: &[&str]) -> Vec<String> {
    let out = std::process::Command::new(escape_binary())
        .arg("probe")
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

const ENOSYS: &str = "errno=38";
const EAFNOSUPPORT: &str = "errno=97";
const EPERM: &str = "errno=1";

/// The system calls Linux 6.15–6.17 added (open_tree_attr, file_getattr,
/// file_setattr) and numbers no kernel uses yet.
const NEW_CALLS: &[&str] = &["467", "468", "469"];
const UNUSED: &[&str] = &["337", "423", "470", "499", "1000"];

#[test]
fn system_calls_the_allowlist_does_not_name_fail_with_enosys() {
    // On the host the kernel has the new calls (with null arguments they
    // fail, but not with ENOSYS) — when it is new enough to.
    let mut args = vec!["syscall"];
    args.extend(NEW_CALLS);
    let host = probe_on_host(&args);
    let host_has: Vec<&str> = NEW_CALLS
        .iter()
        .zip(&host)
        .filter(|(_, line)| !line.ends_with(ENOSYS))
        .map(|(nr, _)| *nr)
        .collect();
    println!("the host kernel has system calls {host_has:?} of {NEW_CALLS:?}: {host:?}");

    let env = TestEnv::start();
    env.run(|client| async move {
        let c = container_with_probe(&client, "sc-enosys").await;
        let mut args = vec!["syscall"];
        args.extend(NEW_CALLS);
        args.extend(UNUSED);
        for user in ["", "user"] {
            let lines = probe_in(&c, user, &args).await;
            assert_eq!(lines.len(), args.len() - 1, "{lines:?}");
            for (nr, line) in args[1..].iter().zip(&lines) {
                assert_eq!(
                    *line,
                    format!("PROBE syscall {nr} {ENOSYS}"),
                    "as {user:?}: syscall {nr} reached the kernel (all: {lines:?})"
                );
            }
        }

        // What a shell session does still works under the allowlist.
        let script = "set -e; ls / >/dev/null; cat /etc/passwd | sort | head -n 1 >/dev/null; \
            ps >/dev/null; date >/dev/null; id -u; mkdir -p /tmp/d && cd /tmp/d; \
            echo x > f && ln -s f l && chmod 600 f && cat l; sleep 0.1 & wait; \
            (echo sub) | tr a-z A-Z; kill -0 $$; rm -r /tmp/d; echo done";
        let (status, out, err) = exec(&c, "sh", &["-c", script]).await;
        assert_eq!(status, 0, "{out}{err}");
        assert_eq!(out, "0\nx\nSUB\ndone\n", "{err}");
    });
}

#[test]
fn af_xdp_and_other_unlisted_socket_families_are_refused() {
    // AF_XDP = 44, SOCK_RAW = 3. On the host (root) the kernel makes one
    // when it has AF_XDP, as it would for container root without the
    // filter (CAP_NET_RAW over the container's network namespace).
    let host = probe_on_host(&["socket", "44", "3"]);
    println!("AF_XDP on the host: {host:?}");

    let env = TestEnv::start();
    env.run(|client| async move {
        let c = container_with_probe(&client, "sc-xdp").await;
        // (family, type, root's answer): refused families answer as on a
        // kernel without them; the allowed ones work.
        let cases = [
            ("44", "3", EAFNOSUPPORT), // AF_XDP
            ("40", "1", EAFNOSUPPORT), // AF_VSOCK, SOCK_STREAM
            ("38", "5", EAFNOSUPPORT), // AF_ALG, SOCK_SEQPACKET
            ("21", "5", EAFNOSUPPORT), // AF_RDS
            ("30", "2", EAFNOSUPPORT), // AF_TIPC
            ("1", "1", "ok"),          // AF_UNIX
            ("2", "2", "ok"),          // AF_INET, SOCK_DGRAM
            ("10", "1", "ok"),         // AF_INET6
            ("16", "3", "ok"),         // AF_NETLINK
            ("17", "3", "ok"),         // AF_PACKET (CAP_NET_RAW)
        ];
        for (family, kind, want) in cases {
            let lines = probe_in(&c, "", &["socket", family, kind]).await;
            assert_eq!(
                lines,
                [format!("PROBE socket {family} {kind} {want}")],
                "socket({family}, {kind}) as root"
            );
        }
        // A user gets AF_XDP refused the same way (before its own EPERM).
        let lines = probe_in(&c, "user", &["socket", "44", "3"]).await;
        assert_eq!(lines, [format!("PROBE socket 44 3 {EAFNOSUPPORT}")]);
    });
}

#[test]
fn tiocsti_is_refused_in_a_container() {
    let host = probe_on_host(&["tiocsti"]);
    println!("TIOCSTI on the host: {host:?}");

    let env = TestEnv::start();
    env.run(|client| async move {
        let c = container_with_probe(&client, "sc-tiocsti").await;
        for user in ["", "user"] {
            let lines = probe_in(&c, user, &["tiocsti"]).await;
            assert_eq!(lines, [format!("PROBE tiocsti {EPERM}")], "as {user:?}");
        }
    });
}
