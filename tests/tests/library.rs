//! The Rust client library's own types, without Cap'n Proto: a container
//! made from a `ContainerSpec`, commands run and collected, processes
//! signalled, files streamed in and out, properties, and errors by code.

use grove_client::{Command, ContainerSpec, ErrorCode, NetOutRule, Signal};
use grove_tests::*;

#[test]
fn the_library_drives_a_container_without_capnp() {
    let env = TestEnv::start();
    let env = &env;
    env.run(|client| async move {
        let spec = ContainerSpec {
            handle: "lib-1".into(),
            env: vec!["GREETING=hi".into()],
            properties: vec![("team".into(), "blue".into())],
            memory_limit_bytes: Some(64 << 20),
            pids_max: Some(100),
            net_out: vec![NetOutRule::new(
                grove_client::api::net_out_rule::Protocol::Tcp,
            )],
            ..ContainerSpec::default()
        };
        let c = client.create(&spec).await.unwrap();
        assert_eq!(c.handle(), "lib-1");

        // exec collects status and both outputs.
        let out = c
            .exec(&Command::new(
                "sh",
                &["-c", "echo $GREETING; echo oops >&2; exit 3"],
            ))
            .await
            .unwrap();
        assert_eq!(
            (out.status, &out.stdout[..], &out.stderr[..]),
            (3, &b"hi\n"[..], &b"oops\n"[..])
        );

        // The limits and properties of the spec are in force.
        let info = c.info().await.unwrap();
        assert_eq!(info.state, "active");
        assert!(!info.container_ip.is_empty(), "{info:?}");
        assert!(info.properties.contains(&("team".into(), "blue".into())));
        let file = grove_tests::cg_file("memory.limit_in_bytes", "memory.max");
        let limits = env.cgroup_dir("memory").join("lib-1").join(file);
        assert_eq!(
            std::fs::read_to_string(limits).unwrap().trim(),
            (64u64 << 20).to_string()
        );

        // Properties.
        c.set_property("stage", "test").await.unwrap();
        assert_eq!(c.property("stage").await.unwrap(), "test");
        c.remove_property("stage").await.unwrap();
        assert!(c.property("stage").await.is_err());
        let names: Vec<String> = c
            .properties()
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.0)
            .collect();
        assert_eq!(names, ["team"]);
        assert_eq!(
            client
                .list(&[("team".into(), "blue".into())])
                .await
                .unwrap(),
            ["lib-1"]
        );

        // A process signalled while it runs.
        let sleeper = c.run(&Command::new("sleep", &["60"])).await.unwrap();
        assert!(!sleeper.id().is_empty());
        assert!(c
            .info()
            .await
            .unwrap()
            .process_ids
            .contains(&sleeper.id().to_string()));
        sleeper.signal(Signal::Kill).await.unwrap();
        assert_eq!(sleeper.wait().await.unwrap(), -9);

        // Files in and out.
        c.stream_in("/tmp/in", "", &tar_of("note.txt", b"streamed\n"))
            .await
            .unwrap();
        let cat = c
            .exec(&Command::new("cat", &["/tmp/in/note.txt"]))
            .await
            .unwrap();
        assert_eq!(cat.stdout, b"streamed\n");
        let tar = c.stream_out("/tmp/in/note.txt", "").await.unwrap();
        let mut archive = tar::Archive::new(&tar[..]);
        let mut entries = archive.entries().unwrap();
        let mut entry = entries.next().unwrap().unwrap();
        let mut text = String::new();
        std::io::Read::read_to_string(&mut entry, &mut text).unwrap();
        assert_eq!(text, "streamed\n");

        // Ports.
        let (host, container) = c.net_in(0, 8080).await.unwrap();
        assert!(host > 0 && container == 8080);
        assert!(c.info().await.unwrap().mapped_ports.contains(&(host, 8080)));

        // Errors come with their code as a type.
        let e = client.container("no-such").await.err().unwrap();
        assert_eq!(e.kind(), ErrorCode::ContainerNotFound, "{e}");
        let e = client.create(&spec).await.err().unwrap();
        assert_eq!(e.kind(), ErrorCode::HandleTaken, "{e}");
        let e = c
            .exec(&Command::new("/no/such/binary", &[]))
            .await
            .err()
            .unwrap();
        assert_eq!(e.kind(), ErrorCode::ExecutableNotFound, "{e}");

        // Stop, then destroy.
        c.stop(true).await.unwrap();
        assert_eq!(c.info().await.unwrap().state, "stopped");
        let capacity = client.capacity().await.unwrap();
        assert!(capacity.max_containers > 0 && capacity.memory_bytes > 0);
        client.destroy("lib-1").await.unwrap();
        let e = client.container("lib-1").await.err().unwrap();
        assert_eq!(e.kind(), ErrorCode::ContainerNotFound);
    });
}
