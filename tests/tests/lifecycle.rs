//! The container lifecycle end to end: ping, capacity, create, lookup, list,
//! info, run, wait, stop, destroy — through the real helper, groved and wshd.

use grove_client::Command;
use grove_tests::*;

#[test]
fn lifecycle_end_to_end() {
    let env = TestEnv::start();
    env.run(|client| async move {
        client.ping().await.unwrap();

        let response = client
            .grove
            .capacity_request()
            .send()
            .promise
            .await
            .unwrap();
        let capacity = response.get().unwrap().get_capacity().unwrap();
        assert!(
            capacity.get_memory_in_bytes() > 1 << 30,
            "the host has more than 1 GiB"
        );
        assert!(
            capacity.get_disk_in_bytes() > 1 << 30,
            "the host has more than 1 GiB of disk"
        );
        assert_eq!(capacity.get_max_containers(), 100);

        let (container, handle) = create(&client, "life-1", "").await.unwrap();
        assert_eq!(handle, "life-1");
        assert_eq!(client.list(&[]).await.unwrap(), vec!["life-1".to_string()]);
        let looked_up = client.lookup("life-1").await.unwrap();

        let info = looked_up.info_request().send().promise.await.unwrap();
        let info = info.get().unwrap().get_info().unwrap();
        assert_eq!(info.get_state().unwrap(), "active");
        assert_eq!(info.get_process_ids().unwrap().len(), 0);

        let (status, out, err) = exec(&container, "/bin/echo", &["hello", "grove"]).await;
        assert_eq!(
            (status, out.as_str(), err.as_str()),
            (0, "hello grove\n", "")
        );

        // A relative path is looked up in PATH; stderr is its own stream.
        let (status, out, err) = exec(
            &container,
            "sh",
            &["-c", "echo to-out; echo to-err >&2; exit 7"],
        )
        .await;
        assert_eq!(
            (status, out.as_str(), err.as_str()),
            (7, "to-out\n", "to-err\n")
        );

        // A running process shows in info, by id.
        let mut sleeper = Command::new("sleep", &["100"]);
        sleeper.id = "the-sleeper".into();
        let started = start(&container, &sleeper).await.unwrap();
        let ids = running_process_ids(&container).await;
        assert_eq!(ids, vec!["the-sleeper".to_string()]);
        let id = started.process.id_request().send().promise.await.unwrap();
        assert_eq!(id.get().unwrap().get_id().unwrap(), "the-sleeper");

        // stop(kill) kills it and leaves the container, stopped.
        let mut stop = container.stop_request();
        stop.get().set_kill(true);
        stop.send().promise.await.unwrap();
        assert_eq!(wait(&started.process).await.unwrap(), -9);
        let info = container.info_request().send().promise.await.unwrap();
        assert_eq!(
            info.get().unwrap().get_info().unwrap().get_state().unwrap(),
            "stopped"
        );
        let refused = start(&container, &Command::new("true", &[]))
            .await
            .err()
            .unwrap();
        assert!(refused.is("invalidState"), "{refused}");

        client.destroy("life-1").await.unwrap();
        let gone = client.lookup("life-1").await.err().unwrap();
        assert!(gone.is("containerNotFound"), "{gone}");
        assert_eq!(gone.message, "unknown handle: life-1");
        let again = client.destroy("life-1").await.err().unwrap();
        assert!(again.is("containerNotFound"), "{again}");
        // The capability outlives its container, but every call says so.
        let stale = container.info_request().send().promise.await.err().unwrap();
        assert!(grove_client::Error::from(stale).is("containerNotFound"));
        assert!(client.list(&[]).await.unwrap().is_empty());
    });
}

#[test]
fn handles_are_generated_unique_and_validated() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (_, generated) = create(&client, "", "").await.unwrap();
        assert!(!generated.is_empty());
        let (_, other) = create(&client, "", "").await.unwrap();
        assert_ne!(generated, other);

        let taken = create(&client, &generated, "").await.err().unwrap();
        assert!(taken.is("handleTaken"), "{taken}");

        for bad in ["a/b", "..", "../etc", "caf\u{e9}", "a b", ".hidden"] {
            let e = create(&client, bad, "").await.err().unwrap();
            assert!(e.is("invalidSpec"), "{bad}: {e}");
            assert!(e.message.starts_with("spec.handle"), "{bad}: {e}");
        }
        assert_eq!(
            client.list(&[]).await.unwrap().len(),
            2,
            "refused creates leave nothing"
        );
    });
}

#[test]
fn list_ands_its_property_filters_and_properties_persist() {
    let env = TestEnv::start();
    let records_dir = env.root.join("server/containers");
    env.run(|client| async move {
        for (handle, props) in [
            ("p1", vec![("team", "a"), ("tier", "web")]),
            ("p2", vec![("team", "a"), ("tier", "db")]),
            ("p3", vec![("team", "b"), ("tier", "web")]),
        ] {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(handle);
            let mut list = spec.init_properties(props.len() as u32);
            for (i, (k, v)) in props.iter().enumerate() {
                list.reborrow().get(i as u32).set_name(k);
                list.reborrow().get(i as u32).set_value(v);
            }
            request.send().promise.await.unwrap();
        }
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(
            client.list(&[pair("team", "a")]).await.unwrap(),
            vec!["p1", "p2"]
        );
        assert_eq!(
            client
                .list(&[pair("team", "a"), pair("tier", "web")])
                .await
                .unwrap(),
            vec!["p1"]
        );
        assert!(client.list(&[pair("team", "c")]).await.unwrap().is_empty());

        let p3 = client.lookup("p3").await.unwrap();
        let mut set = p3.set_property_request();
        set.get().set_name("team");
        set.get().set_value("a");
        set.send().promise.await.unwrap();
        assert_eq!(
            client.list(&[pair("team", "a")]).await.unwrap(),
            vec!["p1", "p2", "p3"]
        );
        let mut remove = p3.remove_property_request();
        remove.get().set_name("tier");
        remove.send().promise.await.unwrap();
        let mut get = p3.property_request();
        get.get().set_name("tier");
        let missing = grove_client::Error::from(get.send().promise.await.err().unwrap());
        assert!(missing.is("invalidSpec"), "{missing}");

        // Records are on disk: a restarted groved lists the same containers.
        let records = std::fs::read_dir(&records_dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))
            })
            .count();
        assert_eq!(records, 3);
    });
}

#[test]
fn refused_operations_say_why() {
    let env = TestEnv::start();
    env.run(|client| async move {
        let (_container, _) = create(&client, "ni", "").await.unwrap();

        // Host bind mounts and privileged containers are refused by the
        // default policy (no bind_allow, allow_privileged off); neither
        // leaves anything behind.
        let mut request = client.grove.create_request();
        let mut spec = request.get().init_spec();
        spec.set_handle("with-bind");
        let mut bind = spec.init_bind_mounts(1).get(0);
        bind.set_src_path("/tmp");
        bind.set_dst_path("/mnt");
        let e = grove_client::Error::from(request.send().promise.await.err().unwrap());
        assert!(
            e.is("policyRefused") && e.message.contains("bind_allow"),
            "{e}"
        );
        let mut request = client.grove.create_request();
        let mut spec = request.get().init_spec();
        spec.set_handle("privileged");
        spec.set_privileged(true);
        let e = grove_client::Error::from(request.send().promise.await.err().unwrap());
        assert!(e.is("policyRefused"), "{e}");
        assert_eq!(client.list(&[]).await.unwrap(), vec!["ni"]);
    });
}

#[test]
fn bulk_info_reports_per_handle_results_and_errors() {
    let env = TestEnv::start();
    env.run(|client| async move {
        create(&client, "b1", "").await.unwrap();
        let mut request = client.grove.bulk_info_request();
        let mut handles = request.get().init_handles(2);
        handles.set(0, "b1");
        handles.set(1, "nope");
        let response = request.send().promise.await.unwrap();
        let results = response.get().unwrap().get_results().unwrap();
        assert_eq!(results.len(), 2);
        use grove_client::api::info_result::Which;
        match results.get(0).which().unwrap() {
            Which::Info(info) => assert_eq!(info.unwrap().get_state().unwrap(), "active"),
            Which::Error(e) => panic!("b1: {}", e.unwrap().to_str().unwrap()),
        }
        match results.get(1).which().unwrap() {
            Which::Error(e) => assert_eq!(
                e.unwrap().to_str().unwrap(),
                "[containerNotFound] unknown handle: nope"
            ),
            Which::Info(_) => panic!("nope has no info"),
        }
    });
}
