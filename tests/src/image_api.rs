//! The image cache's API (`Grove.images`) for the tests: pull, list,
//! prune, remove, with plain Rust answers.

use grove_client::{api, Client, Error};

/// What `prune` or `remove` removed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Removed {
    pub images: Vec<String>,
    pub layers: Vec<String>,
    pub freed_bytes: u64,
}

/// One cached image as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Image {
    pub names: Vec<String>,
    pub digest: String,
    pub downloaded_bytes: u64,
    pub unpacked_bytes: u64,
    pub containers: u32,
    pub last_used: u64,
}

/// One unpacked layer as `list` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layer {
    pub diff_id: String,
    pub bytes: u64,
    pub containers: u32,
    pub last_used: u64,
}

async fn images(client: &Client) -> Result<api::images::Client, Error> {
    Ok(client
        .grove
        .images_request()
        .send()
        .promise
        .await?
        .get()?
        .get_images()?)
}

fn removed(r: api::prune_result::Reader<'_>) -> Result<Removed, Error> {
    let texts = |l: capnp::text_list::Reader<'_>| -> Result<Vec<String>, Error> {
        l.iter()
            .map(|t| Ok(t?.to_string().map_err(capnp::Error::from)?))
            .collect()
    };
    Ok(Removed {
        images: texts(r.get_images()?)?,
        layers: texts(r.get_layers()?)?,
        freed_bytes: r.get_freed_bytes(),
    })
}

fn image(i: api::image_info::Reader<'_>) -> Result<Image, Error> {
    Ok(Image {
        names: i
            .get_names()?
            .iter()
            .map(|t| Ok(t?.to_string().map_err(capnp::Error::from)?))
            .collect::<Result<_, Error>>()?,
        digest: i.get_digest()?.to_string().map_err(capnp::Error::from)?,
        downloaded_bytes: i.get_downloaded_bytes(),
        unpacked_bytes: i.get_unpacked_bytes(),
        containers: i.get_containers(),
        last_used: i.get_last_used(),
    })
}

/// `Images.prune(all)`.
pub async fn prune(client: &Client, all: bool) -> Result<Removed, Error> {
    let images = images(client).await?;
    let mut request = images.prune_request();
    request.get().set_all(all);
    let response = request.send().promise.await?;
    removed(response.get()?.get_removed()?)
}

/// `Images.remove(name)`.
pub async fn remove(client: &Client, name: &str) -> Result<Removed, Error> {
    let images = images(client).await?;
    let mut request = images.remove_request();
    request.get().set_name(name);
    let response = request.send().promise.await?;
    removed(response.get()?.get_removed()?)
}

/// `Images.list`: the cached images and the unpacked layers.
pub async fn list(client: &Client) -> Result<(Vec<Image>, Vec<Layer>), Error> {
    let images_cap = images(client).await?;
    let response = images_cap.list_request().send().promise.await?;
    let r = response.get()?;
    let images = r
        .get_images()?
        .iter()
        .map(image)
        .collect::<Result<_, _>>()?;
    let layers = r
        .get_layers()?
        .iter()
        .map(|l| {
            Ok(Layer {
                diff_id: l.get_diff_id()?.to_string().map_err(capnp::Error::from)?,
                bytes: l.get_bytes(),
                containers: l.get_containers(),
                last_used: l.get_last_used(),
            })
        })
        .collect::<Result<_, Error>>()?;
    Ok((images, layers))
}

/// `Images.pull(uri)` without progress.
pub async fn pull(client: &Client, uri: &str) -> Result<Image, Error> {
    let images = images(client).await?;
    let mut request = images.pull_request();
    request.get().init_image().set_uri(uri);
    let response = request.send().promise.await?;
    image(response.get()?.get_image()?)
}
