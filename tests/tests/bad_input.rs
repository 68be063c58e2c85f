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
