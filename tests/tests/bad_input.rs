//! Bad input is refused with a clear error and harms nothing: rootfs paths
//! outside the helper's policy, and peers the helper does not trust.

use grove_schema::helper::{self, Request, Response};
use grove_tests::*;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

#[test]
fn rootfs_paths_are_checked_by_syntax_and_by_the_helpers_policy() {
    let env = TestEnv::start();
    let rootfs = env.rootfs.to_str().unwrap().to_string();
    env.run(|client| async move {
        for (path, code) in [
            ("relative/dir", "invalidSpec"),
            ("/var/lib/../../etc", "invalidSpec"),
            ("/etc", "policyRefused"),
            ("/", "policyRefused"),
        ] {
            let e = create(&client, "bad-rootfs", path).await.err().unwrap();
            assert!(e.is(code), "{path}: {e}");
        }
        // An allowed directory works, and nothing was left by the refusals.
        let (container, _) = create(&client, "good-rootfs", &rootfs).await.unwrap();
        assert_eq!(exec(&container, "true", &[]).await.0, 0);
        assert_eq!(client.list(&[]).await.unwrap(), vec!["good-rootfs"]);
    });
}

#[test]
fn the_helper_refuses_peers_other_than_groved_and_keeps_serving() {
    let env = TestEnv::start();
    // This test runs as root, which is not the policy's server user.
    let socket = seqpacket_connect(&env.helper_socket);
    socket
        .send(&helper::encode_request(&Request::Ping))
        .unwrap();
    let mut answer = vec![0u8; helper::MAX_RESPONSE];
    let n = socket.recv(&mut answer).unwrap_or(0);
    match helper::decode_response(&answer[..n]) {
        Ok(Response::Error(e)) => assert_eq!(e.kind, helper::ErrorKind::PolicyRefused, "{e}"),
        other => panic!("a foreign uid must be refused: {other:?}"),
    }
    env.run(|client| async move {
        client.ping().await.unwrap();
        let (container, _) = create(&client, "after-refusal", "").await.unwrap();
        assert_eq!(exec(&container, "true", &[]).await.0, 0);
    });
}

#[test]
fn groved_survives_garbage_on_its_api_socket() {
    let env = TestEnv::start();
    let mut stream = UnixStream::connect(&env.socket).unwrap();
    stream.write_all(&[0xff; 64]).unwrap();
    let _ = stream.shutdown(std::net::Shutdown::Write);
    let mut rest = Vec::new();
    let _ = stream.read_to_end(&mut rest);
    env.run(|client| async move {
        client.ping().await.unwrap();
    });
}

struct Seqpacket(std::os::fd::OwnedFd);

impl Seqpacket {
    fn send(&self, data: &[u8]) -> nix::Result<usize> {
        nix::sys::socket::send(
            self.0.as_raw_fd(),
            data,
            nix::sys::socket::MsgFlags::empty(),
        )
    }
    fn recv(&self, buffer: &mut [u8]) -> nix::Result<usize> {
        nix::sys::socket::recv(
            self.0.as_raw_fd(),
            buffer,
            nix::sys::socket::MsgFlags::empty(),
        )
    }
}

fn seqpacket_connect(path: &std::path::Path) -> Seqpacket {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    connect(fd.as_raw_fd(), &UnixAddr::new(path).unwrap()).unwrap();
    Seqpacket(fd)
}

/// Whether groved closes `stream` within 5 s (reads until end of file).
fn closed_by_groved(mut stream: std::os::unix::net::UnixStream) -> bool {
    use std::io::Read;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return true,
            Err(_) => return false, // timed out: still open
        }
    }
}

/// A message that claims more than groved reads from a client (16 MiB), or
/// a frame that is not Cap'n Proto at all, ends that connection at once —
/// before groved waits for or buffers its body — and nothing else.
#[test]
fn oversized_and_malformed_messages_end_only_their_connection() {
    use std::io::Write;
    let env = TestEnv::start();
    // One segment of 3 Mi words (24 MiB): within capnp's default limit of
    // 64 MiB, beyond groved's.
    let mut oversized = std::os::unix::net::UnixStream::connect(&env.socket).unwrap();
    let mut frame = Vec::new();
    frame.extend_from_slice(&0u32.to_le_bytes());
    frame.extend_from_slice(&(3u32 * 1024 * 1024).to_le_bytes());
    frame.extend_from_slice(&[0u8; 4096]);
    oversized.write_all(&frame).unwrap();
    assert!(
        closed_by_groved(oversized),
        "an oversized message was waited for"
    );
    // A segment table claiming 2^31 segments.
    let mut garbage = std::os::unix::net::UnixStream::connect(&env.socket).unwrap();
    garbage
        .write_all(&[0xff, 0xff, 0xff, 0x7f, 1, 0, 0, 0])
        .unwrap();
    assert!(
        closed_by_groved(garbage),
        "a malformed frame was waited for"
    );
    // groved serves on.
    env.run(|client| async move {
        client.ping().await.unwrap();
        let (c, _) = create(&client, "after-hostile", "").await.unwrap();
        let (status, out, _) = exec(&c, "echo", &["fine"]).await;
        assert_eq!((status, out.as_str()), (0, "fine\n"));
    });
}

/// Create a container with these properties through the raw API.
async fn create_with_properties(
    client: &grove_client::Client,
    handle: &str,
    props: &[(String, String)],
) -> Result<grove_client::api::container::Client, grove_client::Error> {
    let mut request = client.grove.create_request();
    let mut spec = request.get().init_spec();
    spec.set_handle(handle);
    let mut list = spec.init_properties(props.len() as u32);
    for (i, (name, value)) in props.iter().enumerate() {
        let mut p = list.reborrow().get(i as u32);
        p.set_name(name);
        p.set_value(value);
    }
    Ok(request.send().promise.await?.get()?.get_container()?)
}

async fn set_property(
    c: &grove_client::api::container::Client,
    name: &str,
    value: &str,
) -> Result<(), grove_client::Error> {
    let mut request = c.set_property_request();
    request.get().set_name(name);
    request.get().set_value(value);
    request.send().promise.await?;
    Ok(())
}

async fn property_count(c: &grove_client::api::container::Client) -> u32 {
    let r = c.properties_request().send().promise.await.unwrap();
    r.get().unwrap().get_properties().unwrap().len()
}

/// groved bounds properties: a name at most 1 KiB, a value at most 64 KiB,
/// at most 256 of them and 256 KiB in all per container, at create and on
/// setProperty; a refusal names the field and the bound and changes
/// nothing. Through the API and the CLI (grove-garden: tests/garden.rs).
#[test]
fn property_names_values_and_totals_are_bounded() {
    let env = TestEnv::start();
    let env_ref = &env;
    env.run(|client| async move {
        let x = |n: usize| "x".repeat(n);
        let one = |name: String, value: String| vec![(name, value)];
        for (props, needles) in [
            (
                one(x(100 * 1024), "v".into()),
                ["spec.properties", "name", "at most 1024 bytes"],
            ),
            (
                one("k".into(), x(64 * 1024 + 1)),
                [
                    "spec.properties[\"k\"].value",
                    "value",
                    "at most 65536 bytes",
                ],
            ),
            (
                (0..257)
                    .map(|i| (format!("k{i}"), "v".to_string()))
                    .collect(),
                ["spec.properties", "properties", "at most 256"],
            ),
            (
                (0..5).map(|i| (format!("k{i}"), x(60 * 1024))).collect(),
                ["spec.properties", "in all", "at most 262144 bytes"],
            ),
        ] {
            let e = create_with_properties(&client, "props", &props)
                .await
                .err()
                .unwrap();
            assert!(e.is("invalidSpec"), "{e}");
            for n in needles {
                assert!(e.message.contains(n), "{n:?} not in {e}");
            }
        }
        assert!(client.list(&[]).await.unwrap().is_empty());
        // Exactly at the bounds is fine.
        let c = create_with_properties(&client, "props", &one(x(1024), x(64 * 1024)))
            .await
            .unwrap();
        for (name, value, needles) in [
            (
                x(100 * 1024),
                "v".to_string(),
                ["name:", "at most 1024 bytes"],
            ),
            ("k".into(), x(100 * 1024), ["value:", "at most 65536 bytes"]),
        ] {
            let e = set_property(&c, &name, &value).await.unwrap_err();
            assert!(e.is("invalidSpec"), "{e}");
            for n in needles {
                assert!(e.message.contains(n), "{n:?} not in {e}");
            }
        }
        // 1 KiB + 64 KiB, then three more 64 KiB values: the fourth
        // passes 256 KiB in all.
        for i in 0..2 {
            set_property(&c, &format!("big{i}"), &x(64 * 1024))
                .await
                .unwrap();
        }
        let e = set_property(&c, "big2", &x(64 * 1024)).await.unwrap_err();
        assert!(e.is("invalidSpec") && e.message.contains("in all"), "{e}");
        assert_eq!(property_count(&c).await, 3);
        // Replacing a value counts the new one, not both.
        set_property(&c, "big1", &x(60 * 1024)).await.unwrap();
        assert_eq!(property_count(&c).await, 3);
    });
    let long = "n".repeat(2000);
    for args in [
        vec!["properties", "props", "set", long.as_str(), "v"],
        vec![
            "create",
            "--handle",
            "props2",
            "--property",
            &format!("{long}=v"),
        ],
    ] {
        let out = run_cli(env_ref, &args, None);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("at most 1024 bytes"),
            "{args:?}: {err}"
        );
    }
}
