//! A ByteStream that hands what groved writes to one task through a small
//! bounded channel: `write` returns only once there is room, so a slow
//! HTTP client holds groved back (Cap'n Proto flow control) instead of
//! grove-garden buffering (Garden drops output when its buffers fill).

use grove_client::api::byte_stream;
use std::rc::Rc;
use tokio::sync::mpsc;

pub enum Piece {
    Data(Vec<u8>),
    Done,
}

struct Sink {
    tx: mpsc::Sender<Piece>,
}

/// A ByteStream capability and the receiver of what it is sent. The channel
/// closing without `Piece::Done` means the producer failed or went away.
pub fn bounded(capacity: usize) -> (byte_stream::Client, mpsc::Receiver<Piece>) {
    let (tx, rx) = mpsc::channel(capacity);
    (capnp_rpc::new_client(Sink { tx }), rx)
}

impl byte_stream::Server for Sink {
    async fn write(self: Rc<Self>, params: byte_stream::WriteParams) -> Result<(), capnp::Error> {
        let data = params.get()?.get_data()?.to_vec();
        self.tx
            .send(Piece::Data(data))
            .await
            .map_err(|_| capnp::Error::disconnected("the HTTP client went away".into()))
    }

    async fn done(
        self: Rc<Self>,
        _: byte_stream::DoneParams,
        _: byte_stream::DoneResults,
    ) -> Result<(), capnp::Error> {
        let _ = self.tx.send(Piece::Done).await;
        Ok(())
    }
}
