//! Section 7: a registry image's first create (pulled into groved's
//! cache and unpacked) against its second (from the cache: nothing
//! downloaded, layers already unpacked), through a docker-registry on
//! 127.0.0.1. Each round prunes the cache first, so every first create
//! pulls.

use crate::stats::{ms, Samples};
use crate::{grove, Options, Report};
use grove_client::Client;
use grove_tests::image_api;
use grove_tests::registry::Registry;
use std::time::Instant;

/// The busybox rootfs, and a layer of `random_mib` MiB of random bytes
/// (gzip cannot shrink it: the download is its whole size).
fn layers(o: &Options, random_mib: usize) -> Vec<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    b.append_dir_all(".", &o.rootfs)
        .expect("the busybox rootfs");
    let base = b.into_inner().expect("a tar");
    let data: Vec<u8> = (0..random_mib << 20)
        .map(|_| rand::random::<u8>())
        .collect();
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(data.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    let mut b = tar::Builder::new(Vec::new());
    b.append_data(&mut h, "random", data.as_slice())
        .expect("a tar");
    vec![base, b.into_inner().expect("a tar")]
}

pub async fn image_cache(o: &Options, client: &Client, report: &mut Report) -> Result<(), String> {
    let Some(addr) = &o.registry else {
        report.sections.push(
            "## 7. Image cache\n\nSkipped: no --registry (bench/run passes one when \
             /usr/bin/docker-registry is installed).\n"
                .into(),
        );
        return Ok(());
    };
    let rounds = o.rounds.clamp(3, 20);
    let random_mib = 16;
    eprintln!(
        "==> image cache: first create (pull + unpack) vs second (cached), {rounds} rounds, \
         busybox + {random_mib} MiB"
    );
    let registry = Registry::start_at(o.work.join("registry"), addr);
    let image = layers(o, random_mib);
    let (_, digest) = registry.push_image("bench/cached", "v1", &image, "amd64");
    let uri = format!("docker://{addr}/bench/cached:v1");
    let create = |handle: String| {
        let uri = uri.clone();
        async move {
            let mut request = client.grove.create_request();
            let mut spec = request.get().init_spec();
            spec.set_handle(&handle);
            spec.init_image().set_uri(&uri);
            request
                .send()
                .promise
                .await
                .map_err(|e| format!("create from {uri}: {e}"))?;
            Ok::<_, String>(handle)
        }
    };
    let (mut first, mut second) = (Samples::default(), Samples::default());
    let mut downloaded = 0;
    for i in 0..rounds {
        image_api::prune(client, true)
            .await
            .map_err(|e| format!("prune: {e}"))?;
        let t0 = Instant::now();
        let h = create(format!("bench-pull-{i}")).await?;
        first.push(t0.elapsed());
        if i == 0 {
            let (images, _) = image_api::list(client).await.map_err(|e| e.to_string())?;
            downloaded = images
                .iter()
                .find(|im| im.digest == digest)
                .map_or(0, |im| im.downloaded_bytes);
        }
        grove::destroy(client, &h).await?;
        let t1 = Instant::now();
        let h = create(format!("bench-cached-{i}")).await?;
        second.push(t1.elapsed());
        grove::destroy(client, &h).await?;
    }
    image_api::prune(client, true)
        .await
        .map_err(|e| format!("prune: {e}"))?;
    drop(registry);
    eprintln!(
        "    first p50 {} p99 {}; second p50 {} p99 {}",
        ms(first.p50()),
        ms(first.p99()),
        ms(second.p50()),
        ms(second.p99())
    );
    let factor = first.p50().as_secs_f64() / second.p50().as_secs_f64().max(1e-9);
    report.sections.push(format!(
        "## 7. Image cache\n\n\
         A registry image (the busybox rootfs and {random_mib} MiB of random bytes; \
         {:.1} MiB of blobs) in a docker-registry on 127.0.0.1. Each round: `prune --all`, \
         then the first create (manifest, config and layers downloaded into groved's cache, \
         the layers unpacked), destroy, then a second create of the same image (from the \
         cache: nothing downloaded, the layers already unpacked), destroy. Create time only \
         (the call's round trip), {rounds} rounds.\n\n\
         | create | rounds | p50 | p99 |\n|---|---|---|---|\n\
         | first (pull + unpack) | {} | {} | {} |\n\
         | second (cached) | {} | {} | {} |\n\n\
         The second create takes {:.2} × the first ({factor:.1} times faster).\n",
        downloaded as f64 / (1 << 20) as f64,
        first.len(),
        ms(first.p50()),
        ms(first.p99()),
        second.len(),
        ms(second.p50()),
        ms(second.p99()),
        1.0 / factor,
    ));
    Ok(())
}
