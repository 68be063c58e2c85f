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
