//! Container escapes: the static `grove-escape` binary (tests/escape) runs
//! inside a fresh container, as root, as a user, and as a user through a
//! setuid-root copy of itself, and tries every way out it knows (mounts,
//! namespaces, ptrace, /proc and /sys writes, devices, modules, chroot and
//! pivot_root tricks, handles, keyrings, BPF, perf, kexec, ...). It prints
//! `ATTEMPT <name> BLOCKED|BLOCKED-NOT-AN-ESCAPE|ESCAPED ...` per attempt;
//! none may say ESCAPED (see tests/escape/src/main.rs for what counts). The
//! host's identity (its /etc/shadow's sha256, its root's dev:ino, its
//! namespaces) is passed in so the binary can tell the host from its own
//! container when it reaches something.
//!
//! Plus streamIn archives that try to write or link outside the container
//! through symlinks and hard links.

use grove_client::{api, Command};
use grove_tests::*;
use std::process::Stdio;

const DIR: &str = "/opt/escape";

fn header(kind: tar::EntryType, mode: u32, size: u64, owner: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(owner);
    h.set_gid(owner);
    h.set_mtime(1_600_000_000);
    h
}

/// grove-escape (0755) and grove-escape-suid (04755), both owned by root.
fn escape_tar() -> Vec<u8> {
    let binary = std::fs::read(escape_binary()).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for (name, mode) in [("grove-escape", 0o755), ("grove-escape-suid", 0o4755)] {
        let mut h = header(tar::EntryType::Regular, mode, binary.len() as u64, 0);
        b.append_data(&mut h, name, &binary[..]).unwrap();
    }
    b.into_inner().unwrap()
}

/// A fresh container with grove-escape streamed into /opt/escape.
async fn container_with_escape(
    client: &grove_client::Client,
    handle: &str,
) -> api::container::Client {
    let (container, _) = create(client, handle, "").await.unwrap();
    stream_in_tar(&container, DIR, "", &escape_tar())
        .await
        .unwrap();
    let (status, out, err) = exec(
        &container,
        "sh",
        &[
            "-c",
            &format!("chmod 755 {DIR} && ls -ln {DIR}/grove-escape-suid"),
        ],
    )
    .await;
    assert_eq!(status, 0, "{out}{err}");
    container
}

/// Run grove-escape in the container as `user` and fail on any ESCAPED
/// line, printing the whole report. Returns the report.
async fn run_escape(
    container: &api::container::Client,
    label: &str,
    binary: &str,
    user: &str,
    args: &[&str],
) -> String {
    let mut command = Command::new(&format!("{DIR}/{binary}"), args);
    command.user = user.to_string();
    command.env = host_identity_env();
    let before = HostSnapshot::take();
    let (status, out, err) = exec_command(container, &command).await;
    let report = format!("--- grove-escape {label}: exit {status}\n{out}--- stderr\n{err}");
    println!("{report}");
    let escaped: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("ATTEMPT ") && l.split(' ').nth(2) == Some("ESCAPED"))
        .collect();
    let attempts = out.lines().filter(|l| l.starts_with("ATTEMPT ")).count();
    assert!(
        attempts >= 40,
        "grove-escape {label} reported only {attempts} attempts\n{report}"
    );
    assert!(
        escaped.is_empty() && status == 0,
        "{} attempt(s) escaped the container as {label}:\n  {}\n\n{report}",
        escaped.len(),
        escaped.join("\n  ")
    );
    let changes = HostSnapshot::take().changes_since(&before);
    assert!(
        changes.is_empty(),
        "the host changed while grove-escape ran as {label}:\n{}",
        changes.join("\n")
    );
    out
}

#[test]
fn escape_attempts_as_root_are_all_blocked() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = container_with_escape(&client, "esc-root").await;
        let out = run_escape(&container, "root", "grove-escape", "", &[]).await;
        assert!(out.contains("INFO uid=0 euid=0"), "{out}");
    });
}

#[test]
fn escape_attempts_as_a_user_are_all_blocked() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = container_with_escape(&client, "esc-user").await;
        let out = run_escape(&container, "user", "grove-escape", "user", &[]).await;
        assert!(out.contains("INFO uid=1000 euid=1000"), "{out}");
    });
}

/// A setuid-root binary run by a user: with no_new_privs it must not even
/// become euid 0; if it does, every attempt runs again with euid 0 and must
/// still stay inside.
#[test]
fn a_setuid_root_binary_gives_a_user_nothing() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let container = container_with_escape(&client, "esc-suid").await;
        let out = run_escape(
            &container,
            "user via a setuid-root copy",
            "grove-escape-suid",
            "user",
            &["--expect-setuid"],
        )
        .await;
        assert!(out.contains("INFO uid=1000 "), "{out}");
        assert!(out.contains("ATTEMPT setuid-root "), "{out}");
    });
}

/// A privileged container (no user namespace; the policy must allow it):
/// root in it is the host's uid 0, so only the capability bounding set,
/// no_new_privs, seccomp, the device cgroup and the masked paths stand
/// between it and the host. None of the attempts may get through those.
#[test]
fn escape_attempts_as_root_in_a_privileged_container_are_all_blocked() {
    let env = TestEnv::start_with_policy("", "allow_privileged = on");
    env.run(|client| async move {
        let mut request = client.grove.create_request();
        let mut spec = request.get().init_spec();
        spec.set_handle("esc-privileged");
        spec.set_privileged(true);
        let response = request.send().promise.await.unwrap();
        let container = response.get().unwrap().get_container().unwrap();
        stream_in_tar(&container, DIR, "", &escape_tar())
            .await
            .unwrap();
        let out = run_escape(&container, "root, privileged", "grove-escape", "", &[]).await;
        assert!(out.contains("userns=initial"), "{out}");
    });
}

/// Files named `marker` anywhere under the host's /etc, /tmp and /root.
fn host_find(marker: &str) -> String {
    let out = std::process::Command::new("find")
        .args([
            "/etc", "/tmp", "/root", "/var/tmp", "-xdev", "-name", marker,
        ])
        .stderr(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// One tar entry written raw (tar-rs refuses to build some of these).
fn raw_header(kind: tar::EntryType, name: &str, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = header(kind, 0o644, data.len() as u64, 0);
    let old = h.as_old_mut();
    old.name.fill(0);
    old.name[..name.len()].copy_from_slice(name.as_bytes());
    old.linkname.fill(0);
    old.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out.resize(out.len().div_ceil(512) * 512, 0);
    out
}

fn end_of_archive(mut tar: Vec<u8>) -> Vec<u8> {
    tar.extend_from_slice(&[0u8; 1024]);
    tar
}

#[test]
fn stream_in_symlinks_and_hard_links_stay_inside_the_container() {
    let env = TestEnv::start();
    let marker = format!("grove-escape-marker-{}", std::process::id());
    let host_shadow = std::fs::read("/etc/shadow").unwrap();
    let before = HostSnapshot::take();
    let m = marker.clone();
    env.run(|client| async move {
        let marker = m;
        let (container, _) = create(&client, "esc-tar", "").await.unwrap();
        let sym = tar::EntryType::Symlink;
        let reg = tar::EntryType::Regular;
        let hard = tar::EntryType::Link;

        // (label, tar); every one of them tries to leave the destination.
        let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
        // evil -> /, then a file through it into /etc, and over /etc/passwd.
        cases.push((
            "symlink to / then a file through it",
            end_of_archive(
                [
                    raw_header(sym, "evil", "/", b""),
                    raw_header(reg, &format!("evil/etc/{marker}"), "", b"gotcha"),
                    raw_header(reg, "evil/etc/passwd", "", b"root::0:0::/:/bin/sh\n"),
                ]
                .concat(),
            ),
        ));
        // etc -> /etc, then files through it.
        cases.push((
            "symlink to /etc then a file through it",
            end_of_archive(
                [
                    raw_header(sym, "etc", "/etc", b""),
                    raw_header(reg, &format!("etc/{marker}"), "", b"gotcha"),
                ]
                .concat(),
            ),
        ));
        // A chain: a -> b, b -> /etc.
        cases.push((
            "a chain of symlinks to /etc",
            end_of_archive(
                [
                    raw_header(sym, "b", "/etc", b""),
                    raw_header(sym, "a", "b", b""),
                    raw_header(reg, &format!("a/{marker}"), "", b"gotcha"),
                ]
                .concat(),
            ),
        ));
        // Hard links to the shadow file, absolute, by "..", through a symlink.
        cases.push((
            "hard link to /etc/shadow",
            end_of_archive(raw_header(hard, "hl", "/etc/shadow", b"")),
        ));
        cases.push((
            "hard link to ../../../../etc/shadow",
            end_of_archive(raw_header(hard, "hl", "../../../../etc/shadow", b"")),
        ));
        cases.push((
            "hard link to /etc/shadow through a symlink",
            end_of_archive(
                [
                    raw_header(sym, "ln", "/etc", b""),
                    raw_header(hard, "hl", "ln/shadow", b""),
                ]
                .concat(),
            ),
        ));
        cases.push((
            "hard link to /etc/passwd through a symlink, then a write through it",
            end_of_archive(
                [
                    raw_header(sym, "ln", "/etc", b""),
                    raw_header(hard, "hl", "ln/passwd", b""),
                    raw_header(reg, "hl", "", b"overwritten\n"),
                ]
                .concat(),
            ),
        ));

        let passwd_before = exec(&container, "cat", &["/etc/passwd"]).await.1;
        let mut accepted = Vec::new();
        for (i, (label, tar)) in cases.iter().enumerate() {
            for user in ["", "user"] {
                let dir = if user.is_empty() {
                    format!("/tmp/t{i}")
                } else {
                    format!("/home/user/t{i}")
                };
                let result = stream_in_tar(&container, &dir, user, tar).await;
                if result.is_ok() {
                    accepted.push(format!("{label} (as {user:?})"));
                }
                // Whatever streamIn said: nothing outside the destination.
                let (_, out, _) = exec(
                    &container,
                    "sh",
                    &[
                        "-c",
                        &format!(
                            "test -e /etc/{marker} && echo marker-in-etc; \
                             test -e {dir}/hl && cat {dir}/hl; true"
                        ),
                    ],
                )
                .await;
                assert!(
                    !out.contains("marker-in-etc"),
                    "{label} as {user:?}: the container's /etc got the marker ({result:?})"
                );
                assert!(
                    !host_shadow.is_empty() && !out.as_bytes().starts_with(&host_shadow[..]),
                    "{label} as {user:?}: {dir}/hl is the host's /etc/shadow"
                );
                assert!(
                    !std::path::Path::new("/etc").join(&marker).exists(),
                    "{label} as {user:?}: the host's /etc got the marker"
                );
            }
        }
        let passwd_after = exec(&container, "cat", &["/etc/passwd"]).await.1;
        assert_eq!(passwd_before, passwd_after, "the container's /etc/passwd");
        // Symlinks and hard links are refused when they lead out; the
        // archives above all try to: none may be accepted.
        assert!(
            accepted.is_empty(),
            "streamIn accepted archives that lead outside the destination: {accepted:?}"
        );

        // The destination itself behind a symlink made inside the container:
        // it resolves in the container's own tree (its own /etc), never the
        // host's.
        let (status, _, err) = exec(&container, "ln", &["-s", "/", "/tmp/rootlink"]).await;
        assert_eq!(status, 0, "{err}");
        let tar = end_of_archive(raw_header(reg, &marker, "", b"inside"));
        stream_in_tar(&container, "/tmp/rootlink/etc", "", &tar)
            .await
            .unwrap();
        let (_, out, _) = exec(&container, "cat", &[&format!("/etc/{marker}")]).await;
        assert_eq!(out, "inside", "the container's own /etc got the file");

        // A block device node (the host's disk) in an archive: created by
        // root in the container maybe, but never readable.
        let mut h = header(tar::EntryType::Block, 0o600, 0, 0);
        h.set_device_major(254).unwrap();
        h.set_device_minor(0).unwrap();
        let mut b = tar::Builder::new(Vec::new());
        b.append_data(&mut h, "disk", &[][..]).unwrap();
        let _ = stream_in_tar(&container, "/tmp/dev", "", &b.into_inner().unwrap()).await;
        let (status, out, err) = exec(
            &container,
            "sh",
            &["-c", "head -c 512 /tmp/dev/disk | wc -c"],
        )
        .await;
        assert!(
            out.trim() == "0",
            "a streamed-in device node of the host's disk is readable ({status}): {out}{err}"
        );
    });
    assert_eq!(host_find(&marker), "", "marker files on the host");
    let changes = HostSnapshot::take().changes_since(&before);
    assert!(
        changes.is_empty(),
        "the host changed:\n{}",
        changes.join("\n")
    );
}
