//! Promise pipelining: create → run → wait sent without awaiting anything in
//! between travel in one round trip. The connection is recorded, and the test
//! checks that all three calls had left the client before the first byte of
//! any answer came back.

use capnp::traits::HasTypeId;
use capnp_rpc::rpc_capnp::message;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite};
use grove_client::{api, channel_sink, Chunk, Client, Command};
use grove_tests::*;
use std::cell::RefCell;
use std::io;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use tokio_util::compat::TokioAsyncReadCompatExt;

#[derive(Default)]
struct Log {
    written: Vec<u8>,
    /// How many bytes had been written when the first answer byte arrived.
    written_before_first_read: Option<usize>,
}

struct Recorder<T> {
    inner: T,
    log: Rc<RefCell<Log>>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Recorder<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            let mut log = self.log.borrow_mut();
            if n > 0 && log.written_before_first_read.is_none() {
                log.written_before_first_read = Some(log.written.len());
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Recorder<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let poll = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = poll {
            self.log.borrow_mut().written.extend_from_slice(&buf[..n]);
        }
        poll
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// (interface id, method id) of every Call message in a byte stream.
fn calls_in(mut bytes: &[u8]) -> Vec<(u64, u16)> {
    let mut calls = Vec::new();
    while !bytes.is_empty() {
        let Ok(Some(reader)) = capnp::serialize::try_read_message(&mut bytes, Default::default())
        else {
            break;
        };
        let message: message::Reader = reader.get_root().unwrap();
        if let Ok(message::Which::Call(Ok(call))) = message.which() {
            calls.push((call.get_interface_id(), call.get_method_id()));
        }
    }
    calls
}

#[test]
fn create_run_wait_in_one_round_trip() {
    let env = TestEnv::start();
    let socket = env.socket.clone();
    block_on(async move {
        let stream = tokio::net::UnixStream::connect(&socket).await.unwrap();
        let (reader, writer) = stream.compat().split();
        let log = Rc::new(RefCell::new(Log::default()));
        let client = Client::over(
            Recorder {
                inner: reader,
                log: log.clone(),
            },
            Recorder {
                inner: writer,
                log: log.clone(),
            },
        );

        let mut create = client.grove.create_request();
        create.get().init_spec().set_handle("pipelined");
        let container = create.send().pipeline.get_container();
        let (stdout, mut output) = channel_sink();
        let mut run = container.run_request();
        Command::new("echo", &["through", "the", "pipe"])
            .fill(run.get().init_spec())
            .unwrap();
        run.get().init_io().set_stdout(stdout);
        let process = run.send().pipeline.get_process();
        let status = process
            .wait_request()
            .send()
            .promise
            .await
            .unwrap()
            .get()
            .unwrap()
            .get_exit_status();

        assert_eq!(status, 0);
        assert_eq!(
            output.recv().await,
            Some(Chunk::Data(b"through the pipe\n".to_vec()))
        );
        let log = log.borrow();
        let before_any_answer =
            &log.written[..log.written_before_first_read.expect("answers arrived")];
        let calls = calls_in(before_any_answer);
        for (interface, method, name) in [
            (api::grove::Client::TYPE_ID, 2, "Grove.create"),
            (api::container::Client::TYPE_ID, 2, "Container.run"),
            (api::process::Client::TYPE_ID, 1, "Process.wait"),
        ] {
            assert!(
                calls.contains(&(interface, method)),
                "{name} was sent before any answer: {calls:x?}"
            );
        }
    });
}
