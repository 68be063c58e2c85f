//! groved reconciles its records with the helper when it starts: a record
//! whose container the helper no longer has is kept and marked lost; a
//! container the helper has without a record is destroyed.

use grove_schema::helper::{decode_response, encode_request, Request, Response};
use grove_schema::Handle;
use grove_tests::*;

/// Ask the helper directly, as groved's uid.
fn ask_helper(env: &TestEnv, request: &Request) -> Response {
    let (uid, gid) = grove_user();
    let fd = helper_connect_as(&env.helper_socket, uid, gid).expect("connecting as grove");
    nix::unistd::write(&fd, &encode_request(request)).expect("send");
    let mut buf = vec![0u8; 256 * 1024];
    let n = nix::unistd::read(std::os::fd::AsRawFd::as_raw_fd(&fd), &mut buf).expect("recv");
    decode_response(&buf[..n]).expect("a decodable answer")
}

#[test]
fn a_restarted_groved_marks_lost_containers_and_destroys_unrecorded_ones() {
    let mut env = TestEnv::start();
    block_on(async {
        let client = env.connect().await;
        for h in ["kept", "gone", "orphan"] {
            create(&client, h, "").await.unwrap();
        }
    });
    env.stop_groved();
    // While groved is down: the helper loses "gone" (as after a reboot),
    // and groved's record of "orphan" is lost (as after a crash mid-create).
    let gone = Request::DestroyContainer {
        handle: Handle::new("gone").unwrap(),
    };
    assert!(matches!(ask_helper(&env, &gone), Response::Destroyed));
    std::fs::remove_file(env.root.join("server/containers/orphan.json")).unwrap();
    env.start_groved();

    let env = &env;
    env.run(|client| async move {
        assert_eq!(client.list(&[]).await.unwrap(), ["gone", "kept"]);
        let events = |h: &'static str| {
            let client = &client;
            async move {
                let c = client.lookup(h).await.unwrap();
                let info = c.info_request().send().promise.await.unwrap();
                let events: Vec<String> = info
                    .get()
                    .unwrap()
                    .get_info()
                    .unwrap()
                    .get_events()
                    .unwrap()
                    .iter()
                    .map(|e| e.unwrap().to_string().unwrap())
                    .collect();
                events
            }
        };
        assert!(
            events("gone").await.iter().any(|e| e.starts_with("Lost")),
            "{:?}",
            events("gone").await
        );
        assert!(events("kept").await.is_empty());
        // The unrecorded container is gone from the helper and the host.
        match ask_helper(env, &Request::ListContainers) {
            Response::Containers(list) => {
                let names: Vec<String> = list.iter().map(|c| c.handle.to_string()).collect();
                assert!(!names.contains(&"orphan".to_string()), "{names:?}");
                assert!(names.contains(&"kept".to_string()), "{names:?}");
            }
            other => panic!("{other:?}"),
        }
        assert!(!env.depot.join("orphan").exists());
        assert!(env.logs().contains("no record of"), "{}", env.logs());
        // A lost container can still be destroyed, which drops its record.
        client.destroy("gone").await.unwrap();
        assert_eq!(client.list(&[]).await.unwrap(), ["kept"]);
        // The kept one still works.
        let c = client.lookup("kept").await.unwrap();
        let (status, out, _) = exec(&c, "echo", &["alive"]).await;
        assert_eq!((status, out.as_str()), (0, "alive\n"));
    });
}
