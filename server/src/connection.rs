//! What one client connection may make groved hold, enforced where the
//! connection's messages pass (a wrapper around capnp-rpc's two-party
//! network), so that every capability served on it counts, pipelined calls
//! included:
//!
//! * calls in flight: at most `max_calls_in_flight` of the client's calls
//!   are being served at once (a call counts from its `Call` message until
//!   groved sends its `Return` or the client `Finish`es it); one more is
//!   answered at once with `[limitExceeded]`, and never reaches a server;
//! * bytes of calls in flight: together at most `MAX_CALL_BYTES` (one
//!   message alone may always be served: its size is bounded by the
//!   reader options);
//! * unsent output: while more than `MAX_UNSENT` bytes of groved's messages
//!   wait to be written to the client, groved reads nothing more from it,
//!   so a client that sends calls and never reads the answers stops being
//!   read instead of growing groved's write queue.
//!
//! `Connections` also caps how many connections are open at once.

use crate::error::{ApiError, Code};
use capnp::capability::Promise;
use capnp_rpc::rpc_capnp::{cap_descriptor, exception, message};
use capnp_rpc::rpc_twoparty_capnp::Side;
use capnp_rpc::{twoparty, Connection, IncomingMessage, OutgoingMessage, VatNetwork};
use futures::FutureExt;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Bytes of calls in flight on one connection (two messages of the
/// largest size the reader options allow).
pub const MAX_CALL_BYTES: usize = 32 << 20;
/// Bytes of groved's messages waiting for the client to read them before
/// groved stops reading that client.
pub const MAX_UNSENT: usize = 1 << 20;

/// The open connections, against `max_connections`.
pub struct Connections {
    open: Cell<usize>,
    max_connections: usize,
    max_calls_in_flight: usize,
    refused: Cell<u64>,
    last_refusal_log: Cell<Option<Instant>>,
}

/// One connection's place in `Connections`, given back when dropped.
pub struct Slot(Rc<Connections>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.set(self.0.open.get() - 1);
    }
}

impl Connections {
    pub fn new(max_connections: usize, max_calls_in_flight: usize) -> Rc<Connections> {
        Rc::new(Connections {
            open: Cell::new(0),
            max_connections,
            max_calls_in_flight,
            refused: Cell::new(0),
            last_refusal_log: Cell::new(None),
        })
    }

    /// A slot for a new connection, or None (logged, at most every 10 s)
    /// when `max_connections` are open: the caller closes it.
    pub fn admit(self: &Rc<Self>) -> Option<Slot> {
        if self.open.get() >= self.max_connections {
            self.refused.set(self.refused.get() + 1);
            let now = Instant::now();
            let due = self
                .last_refusal_log
                .get()
                .is_none_or(|last| now.duration_since(last) >= Duration::from_secs(10));
            if due {
                tracing::warn!(
                    max_connections = self.max_connections,
                    refused = self.refused.get(),
                    "max_connections client connections open: new connections are closed"
                );
                self.last_refusal_log.set(Some(now));
                self.refused.set(0);
            }
            return None;
        }
        self.open.set(self.open.get() + 1);
        Some(Slot(self.clone()))
    }

    pub fn max_calls_in_flight(&self) -> usize {
        self.max_calls_in_flight
    }
}

/// The state one connection's pieces share.
pub struct Shared {
    max_calls: usize,
    /// The client's calls being served: question id → its message's bytes.
    calls: RefCell<HashMap<u32, usize>>,
    call_bytes: Cell<usize>,
    /// Bytes of groved's messages handed to the write queue and not yet
    /// written to the socket.
    unsent: Cell<usize>,
    /// Bytes read from the socket so far (a message's size is the
    /// difference across its read: capnp-futures reads exactly).
    read: Cell<u64>,
    /// The receive loop, waiting for `unsent` to fall.
    reader: RefCell<Option<Waker>>,
    /// Writing failed (the client went away): `unsent` will not fall, and
    /// the receive loop must read on to notice the end of the connection
    /// (capnp-rpc ends it only then).
    write_failed: Cell<bool>,
}

impl Shared {
    fn sent(&self, bytes: usize) {
        self.unsent.set(self.unsent.get() + bytes);
    }

    fn written(&self, bytes: usize) {
        self.unsent.set(self.unsent.get().saturating_sub(bytes));
        if self.unsent.get() <= MAX_UNSENT {
            if let Some(waker) = self.reader.borrow_mut().take() {
                waker.wake();
            }
        }
    }

    fn failed(&self) {
        self.write_failed.set(true);
        if let Some(waker) = self.reader.borrow_mut().take() {
            waker.wake();
        }
    }

    fn call_ended(&self, id: u32) {
        if let Some(bytes) = self.calls.borrow_mut().remove(&id) {
            self.call_bytes.set(self.call_bytes.get() - bytes);
        }
    }
}

/// The byte stream under the connection, counting what passes.
pub struct Metered<S> {
    inner: S,
    shared: Rc<Shared>,
}

impl<S: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Metered<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        self.shared.read.set(self.shared.read.get() + n as u64);
        polled
    }
}

impl<S: tokio::io::AsyncWrite + Unpin> tokio::io::AsyncWrite for Metered<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        match polled {
            Poll::Ready(Ok(n)) => self.shared.written(n),
            Poll::Ready(Err(_)) => self.shared.failed(),
            Poll::Pending => {}
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let polled = Pin::new(&mut self.inner).poll_flush(cx);
        if let Poll::Ready(Err(_)) = polled {
            self.shared.failed();
        }
        polled
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A client connection's stream, metered, and the state its network
/// wrapper (`Guarded::new`) will share.
pub fn meter<S>(stream: S, max_calls: usize) -> (Metered<S>, Rc<Shared>) {
    let shared = Rc::new(Shared {
        max_calls,
        calls: RefCell::new(HashMap::new()),
        call_bytes: Cell::new(0),
        unsent: Cell::new(0),
        read: Cell::new(0),
        reader: RefCell::new(None),
        write_failed: Cell::new(false),
    });
    (
        Metered {
            inner: stream,
            shared: shared.clone(),
        },
        shared,
    )
}

/// capnp-rpc's two-party network with the limits above on its connection.
pub struct Guarded<R: futures::AsyncRead + Unpin + 'static> {
    inner: twoparty::VatNetwork<R>,
    shared: Rc<Shared>,
}

impl<R: futures::AsyncRead + Unpin + 'static> Guarded<R> {
    pub fn new(inner: twoparty::VatNetwork<R>, shared: Rc<Shared>) -> Self {
        Guarded { inner, shared }
    }
}

impl<R: futures::AsyncRead + Unpin + 'static> VatNetwork<Side> for Guarded<R> {
    fn connect(&mut self, host_id: Side) -> Option<Box<dyn Connection<Side>>> {
        let shared = self.shared.clone();
        self.inner
            .connect(host_id)
            .map(|c| GuardedConnection::boxed(c, shared))
    }

    fn accept(&mut self) -> Promise<Box<dyn Connection<Side>>, capnp::Error> {
        let shared = self.shared.clone();
        Promise::from_future(
            self.inner
                .accept()
                .map(move |c| c.map(|c| GuardedConnection::boxed(c, shared))),
        )
    }

    fn drive_until_shutdown(&mut self) -> Promise<(), capnp::Error> {
        self.inner.drive_until_shutdown()
    }
}

struct GuardedConnection {
    // Shared with the receive loop, which answers refused calls itself.
    inner: Rc<RefCell<Box<dyn Connection<Side>>>>,
    shared: Rc<Shared>,
}

impl GuardedConnection {
    fn boxed(inner: Box<dyn Connection<Side>>, shared: Rc<Shared>) -> Box<dyn Connection<Side>> {
        Box::new(GuardedConnection {
            inner: Rc::new(RefCell::new(inner)),
            shared,
        })
    }
}

/// What the receive loop needs to know of a message from the client.
enum Seen {
    Call { id: u32, releases: Vec<u32> },
    Finish(u32),
    Other,
}

fn inspect(message: &dyn IncomingMessage) -> capnp::Result<Seen> {
    let root: message::Reader = message.get_body()?.get_as()?;
    Ok(match root.which()? {
        message::Call(call) => {
            let call = call?;
            // The client's own capabilities in the params: groved holds a
            // reference to each until it releases it, refused call or not.
            let mut releases = Vec::new();
            for descriptor in call.get_params()?.get_cap_table()? {
                match descriptor.which()? {
                    cap_descriptor::SenderHosted(id) | cap_descriptor::SenderPromise(id) => {
                        releases.push(id)
                    }
                    _ => {}
                }
            }
            Seen::Call {
                id: call.get_question_id(),
                releases,
            }
        }
        message::Finish(finish) => Seen::Finish(finish?.get_question_id()),
        _ => Seen::Other,
    })
}

/// Answer the client's call `id` with `error` and release the
/// capabilities its params passed, as the RPC system would have.
fn refuse(
    connection: &RefCell<Box<dyn Connection<Side>>>,
    shared: &Rc<Shared>,
    id: u32,
    releases: &[u32],
    error: ApiError,
) -> capnp::Result<()> {
    // Not a Return of a call in flight (this call never was): it must not
    // end the entry of another call under the same id.
    let mut outgoing = Outgoing {
        inner: connection.borrow_mut().new_outgoing_message(64),
        shared: shared.clone(),
        ends_call: false,
    };
    {
        let root: message::Builder = outgoing.get_body()?.init_as();
        let mut ret = root.init_return();
        ret.set_answer_id(id);
        // Released below, one Release each, as capnp-rpc does.
        ret.set_release_param_caps(false);
        ret.set_no_finish_needed(true);
        let mut exc = ret.init_exception();
        exc.set_type(exception::Type::Failed);
        exc.set_reason(error.to_string());
    }
    let _ = Box::new(outgoing).send();
    for &import in releases {
        let mut outgoing = Outgoing {
            inner: connection.borrow_mut().new_outgoing_message(8),
            shared: shared.clone(),
            ends_call: false,
        };
        {
            let root: message::Builder = outgoing.get_body()?.init_as();
            let mut release = root.init_release();
            release.set_id(import);
            release.set_reference_count(1);
        }
        let _ = Box::new(outgoing).send();
    }
    Ok(())
}

/// Wait until groved's unsent output is small enough to read more.
async fn room(shared: &Shared) {
    std::future::poll_fn(|cx| {
        if shared.unsent.get() <= MAX_UNSENT || shared.write_failed.get() {
            Poll::Ready(())
        } else {
            *shared.reader.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

impl Connection<Side> for GuardedConnection {
    fn get_peer_vat_id(&self) -> Side {
        self.inner.borrow().get_peer_vat_id()
    }

    fn new_outgoing_message(&mut self, first_segment_word_size: u32) -> Box<dyn OutgoingMessage> {
        Box::new(Outgoing {
            inner: self
                .inner
                .borrow_mut()
                .new_outgoing_message(first_segment_word_size),
            shared: self.shared.clone(),
            ends_call: true,
        })
    }

    fn receive_incoming_message(
        &mut self,
    ) -> Promise<Option<Box<dyn IncomingMessage>>, capnp::Error> {
        let connection = self.inner.clone();
        let shared = self.shared.clone();
        Promise::from_future(async move {
            loop {
                room(&shared).await;
                let before = shared.read.get();
                let receiving = connection.borrow_mut().receive_incoming_message();
                let Some(message) = receiving.await? else {
                    return Ok(None);
                };
                let bytes = (shared.read.get() - before) as usize;
                // A message that does not parse is the RPC system's to refuse.
                match inspect(&*message) {
                    // A question id in use is the RPC system's to refuse
                    // (it ends the connection): never counted or refused
                    // here, or its refusal would end the other call's count.
                    Ok(Seen::Call { id, .. }) if shared.calls.borrow().contains_key(&id) => {}
                    Ok(Seen::Call { id, releases }) => {
                        let calls = shared.calls.borrow().len();
                        let refusal = if calls >= shared.max_calls {
                            Some(format!(
                                "too many calls in flight on this connection ({})",
                                shared.max_calls
                            ))
                        } else if calls > 0 && shared.call_bytes.get() + bytes > MAX_CALL_BYTES {
                            Some(format!(
                                "too many bytes of calls in flight on this connection ({} MiB)",
                                MAX_CALL_BYTES >> 20
                            ))
                        } else {
                            None
                        };
                        if let Some(why) = refusal {
                            let error = ApiError::new(Code::LimitExceeded, why);
                            refuse(&connection, &shared, id, &releases, error)?;
                            continue;
                        }
                        shared.calls.borrow_mut().insert(id, bytes);
                        shared.call_bytes.set(shared.call_bytes.get() + bytes);
                    }
                    // Before its Return: the client cancelled the call (the
                    // RPC system drops it, and may send no Return).
                    Ok(Seen::Finish(id)) => shared.call_ended(id),
                    Ok(Seen::Other) | Err(_) => {}
                }
                return Ok(Some(message));
            }
        })
    }

    fn new_stream(
        &mut self,
    ) -> (
        Box<dyn capnp_rpc::FlowController>,
        Promise<(), capnp::Error>,
    ) {
        self.inner.borrow_mut().new_stream()
    }

    fn shutdown(&mut self, result: capnp::Result<()>) -> Promise<(), capnp::Error> {
        self.inner.borrow_mut().shutdown(result)
    }
}

/// The call a Return from groved answers.
fn answered(message: &dyn OutgoingMessage) -> Option<u32> {
    let root: message::Reader = message.get_body_as_reader().ok()?.get_as().ok()?;
    match root.which().ok()? {
        message::Return(ret) => Some(ret.ok()?.get_answer_id()),
        _ => None,
    }
}

/// A message from groved: a Return ends its call; its bytes are unsent
/// until the socket takes them.
struct Outgoing {
    inner: Box<dyn OutgoingMessage>,
    shared: Rc<Shared>,
    /// Whether a Return in it ends a call in flight (not for `refuse`).
    ends_call: bool,
}

impl OutgoingMessage for Outgoing {
    fn get_body(&mut self) -> capnp::Result<capnp::any_pointer::Builder<'_>> {
        self.inner.get_body()
    }

    fn get_body_as_reader(&self) -> capnp::Result<capnp::any_pointer::Reader<'_>> {
        self.inner.get_body_as_reader()
    }

    fn send(
        self: Box<Self>,
    ) -> (
        Promise<(), capnp::Error>,
        Rc<capnp::message::Builder<capnp::message::HeapAllocator>>,
    ) {
        let Outgoing {
            inner,
            shared,
            ends_call,
        } = *self;
        if let Some(id) = answered(&*inner).filter(|_| ends_call) {
            shared.call_ended(id);
        }
        let (promise, message) = inner.send();
        shared.sent(capnp::serialize::compute_serialized_size_in_words(&message) * 8);
        (promise, message)
    }

    fn take(self: Box<Self>) -> capnp::message::Builder<capnp::message::HeapAllocator> {
        self.inner.take()
    }

    fn size_in_words(&self) -> usize {
        self.inner.size_in_words()
    }
}
