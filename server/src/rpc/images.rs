//! `Images`: the image cache's operations (images/service.rs) on the wire.

use super::text;
use crate::containers::Grove;
use crate::images::service::{Detail, Removed, Summary};
use grove_schema::api_capnp::{image_info, images as api, prune_result};
use grove_schema::auth_file::Login;
use grove_schema::helper::LayerInfo;
use std::rc::Rc;

pub struct ImagesServer {
    pub grove: Rc<Grove>,
}

/// A login from the API's username and password (none when both are empty).
pub fn login(username: String, password: String) -> Option<Login> {
    (!username.is_empty() || !password.is_empty()).then_some(Login { username, password })
}

fn fill_info(mut b: image_info::Builder<'_>, s: &Summary) {
    let mut names = b.reborrow().init_names(s.record.names.len() as u32);
    for (i, n) in s.record.names.iter().enumerate() {
        names.set(i as u32, n);
    }
    b.set_digest(&s.record.digest);
    b.set_platform(&s.record.platform);
    b.set_downloaded_bytes(s.downloaded_bytes);
    b.set_unpacked_bytes(s.unpacked_bytes);
    b.set_pulled_at(s.record.pulled_at);
    b.set_last_used(s.record.last_used);
    b.set_containers(s.containers);
}

fn fill_removed(mut b: prune_result::Builder<'_>, r: &Removed) {
    let mut images = b.reborrow().init_images(r.images.len() as u32);
    for (i, n) in r.images.iter().enumerate() {
        images.set(i as u32, n);
    }
    let mut layers = b.reborrow().init_layers(r.layers.len() as u32);
    for (i, n) in r.layers.iter().enumerate() {
        layers.set(i as u32, n);
    }
    b.set_freed_bytes(r.freed_bytes);
}

fn fill_layers(
    mut list: capnp::struct_list::Builder<'_, grove_schema::api_capnp::layer_info::Owned>,
    layers: &[LayerInfo],
) {
    for (i, l) in layers.iter().enumerate() {
        let mut b = list.reborrow().get(i as u32);
        b.set_diff_id(format!("sha256:{}", l.id));
        b.set_bytes(l.bytes);
        b.set_inodes(l.inodes);
        b.set_containers(l.containers);
        b.set_last_used(l.last_used);
    }
}

fn fill_texts(mut list: capnp::text_list::Builder<'_>, items: &[String]) {
    for (i, t) in items.iter().enumerate() {
        list.set(i as u32, t);
    }
}

fn fill_detail(mut b: grove_schema::api_capnp::image_detail::Builder<'_>, d: &Detail) {
    fill_info(b.reborrow().init_info(), &d.summary);
    let r = &d.summary.record;
    b.set_media_type(&r.media_type);
    b.set_config(&r.config.digest);
    b.set_source(&r.source);
    let mut layers = b.reborrow().init_layers(r.layers.len() as u32);
    for (i, l) in r.layers.iter().enumerate() {
        let mut e = layers.reborrow().get(i as u32);
        e.set_digest(&l.blob.digest);
        e.set_media_type(&l.blob.media_type);
        e.set_size(l.blob.size);
        e.set_diff_id(&l.diff_id);
        let unpacked = d
            .unpacked
            .get(l.diff_id.strip_prefix("sha256:").unwrap_or(""));
        e.set_unpacked(unpacked.is_some());
        e.set_unpacked_bytes(unpacked.copied().unwrap_or(0));
    }
    let p = &d.process;
    let env = p.env.clone().unwrap_or_default();
    fill_texts(b.reborrow().init_env(env.len() as u32), &env);
    b.set_working_dir(p.working_dir.as_deref().unwrap_or(""));
    b.set_user(p.user.as_deref().unwrap_or(""));
    let entrypoint = p.entrypoint.clone().unwrap_or_default();
    fill_texts(
        b.reborrow().init_entrypoint(entrypoint.len() as u32),
        &entrypoint,
    );
    let cmd = p.cmd.clone().unwrap_or_default();
    fill_texts(b.reborrow().init_cmd(cmd.len() as u32), &cmd);
}

impl api::Server for ImagesServer {
    async fn pull(
        self: Rc<Self>,
        params: api::PullParams,
        mut results: api::PullResults,
    ) -> Result<(), capnp::Error> {
        let p = params.get()?;
        let image = p.get_image()?;
        let uri = text("image.uri", image.get_uri())?;
        let login = login(
            text("image.username", image.get_username())?,
            text("image.password", image.get_password())?,
        );
        let progress = p.get_progress().ok();
        // Runs to the end even if the client goes away meanwhile.
        let grove = self.grove.clone();
        let summary =
            tokio::task::spawn_local(async move { grove.image_pull(&uri, login, progress).await })
                .await
                .map_err(crate::error::ApiError::internal)??;
        fill_info(results.get().init_image(), &summary);
        Ok(())
    }

    async fn list(
        self: Rc<Self>,
        _: api::ListParams,
        mut results: api::ListResults,
    ) -> Result<(), capnp::Error> {
        let (images, layers) = self.grove.image_list().await?;
        let mut r = results.get();
        let mut list = r.reborrow().init_images(images.len() as u32);
        for (i, s) in images.iter().enumerate() {
            fill_info(list.reborrow().get(i as u32), s);
        }
        fill_layers(r.init_layers(layers.len() as u32), &layers);
        Ok(())
    }

    async fn inspect(
        self: Rc<Self>,
        params: api::InspectParams,
        mut results: api::InspectResults,
    ) -> Result<(), capnp::Error> {
        let name = text("name", params.get()?.get_name())?;
        let detail = self.grove.image_inspect(&name).await?;
        fill_detail(results.get().init_image(), &detail);
        Ok(())
    }

    async fn remove(
        self: Rc<Self>,
        params: api::RemoveParams,
        mut results: api::RemoveResults,
    ) -> Result<(), capnp::Error> {
        let name = text("name", params.get()?.get_name())?;
        let removed = self.grove.image_remove(&name).await?;
        fill_removed(results.get().init_removed(), &removed);
        Ok(())
    }

    async fn prune(
        self: Rc<Self>,
        params: api::PruneParams,
        mut results: api::PruneResults,
    ) -> Result<(), capnp::Error> {
        let all = params.get()?.get_all();
        let removed = self.grove.image_prune(all).await?;
        fill_removed(results.get().init_removed(), &removed);
        Ok(())
    }
}
