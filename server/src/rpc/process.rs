//! The `Process` interface, and the `ByteStream` that feeds a process's stdin.

use crate::containers::{Container, Phase};
use crate::error::{ApiError, Code};
use crate::process::ProcessEntry;
use crate::wshd_client;
use grove_schema::api_capnp::{byte_stream, process as api, Signal};
use grove_schema::wshd::Request;
use std::rc::Rc;

/// A process of `container`: every call is a request about the container
/// (`wait` pauses its grace-time countdown for as long as it waits).
pub struct ProcessServer {
    process: Rc<ProcessEntry>,
    container: Rc<Container>,
}

impl ProcessServer {
    pub fn new(process: Rc<ProcessEntry>, container: Rc<Container>) -> ProcessServer {
        ProcessServer { process, container }
    }

    /// Ask this process's wshd; an answer lost to a destroy that overtook
    /// the call (it killed wshd) says the container is gone.
    async fn ask_wshd(&self, request: &Request) -> Result<(), capnp::Error> {
        match wshd_client::call(&self.process.wshd_socket, request).await {
            Ok(_) => Ok(()),
            Err(e) if e.code == Code::ServiceUnavailable && !self.process.is_running() => {
                Err(ApiError::new(
                    Code::InvalidState,
                    format!("process {} has exited", self.process.id),
                )
                .into())
            }
            Err(e) => Err(self.container.overtaken(e).into()),
        }
    }
}

use api::*;

impl api::Server for ProcessServer {
    async fn id(self: Rc<Self>, _: IdParams, mut results: IdResults) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        results.get().set_id(&self.process.id);
        Ok(())
    }

    async fn wait(
        self: Rc<Self>,
        _: WaitParams,
        mut results: WaitResults,
    ) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        let status = self.process.wait().await?;
        results.get().set_exit_status(status.to_api());
        Ok(())
    }

    async fn signal(
        self: Rc<Self>,
        params: SignalParams,
        _: SignalResults,
    ) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        let signal = match params.get()?.get_signal() {
            Ok(Signal::Terminate) => libc::SIGTERM,
            Ok(Signal::Kill) => libc::SIGKILL,
            Ok(Signal::Interrupt) => libc::SIGINT,
            Ok(Signal::Hangup) => libc::SIGHUP,
            Ok(Signal::Quit) => libc::SIGQUIT,
            Ok(Signal::User1) => libc::SIGUSR1,
            Ok(Signal::User2) => libc::SIGUSR2,
            Ok(Signal::WindowChange) => libc::SIGWINCH,
            Err(e) => {
                return Err(ApiError::invalid("signal", format!("unknown signal {}", e.0)).into())
            }
        };
        if !self.process.is_running() {
            return Err(ApiError::new(
                Code::InvalidState,
                format!("process {} has exited", self.process.id),
            )
            .into());
        }
        let request = Request::Signal {
            id: self.process.id.clone(),
            signal,
        };
        self.ask_wshd(&request).await
    }

    async fn stdin(
        self: Rc<Self>,
        _: StdinParams,
        mut results: StdinResults,
    ) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        if !self.process.has_stdin {
            return Err(ApiError::new(
                Code::InvalidState,
                format!("process {} was started without openStdin", self.process.id),
            )
            .into());
        }
        results.get().set_stream(capnp_rpc::new_client(StdinSink {
            process: self.process.clone(),
            container: self.container.clone(),
        }));
        Ok(())
    }

    async fn set_tty(
        self: Rc<Self>,
        params: SetTtyParams,
        _: SetTtyResults,
    ) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        let size =
            crate::rpc::container::window_size("windowSize", params.get()?.get_window_size()?)?;
        if !self.process.tty {
            return Err(ApiError::new(
                Code::InvalidState,
                format!("process {} has no tty", self.process.id),
            )
            .into());
        }
        let request = Request::SetWindowSize {
            id: self.process.id.clone(),
            size,
        };
        self.ask_wshd(&request).await
    }
}

struct StdinSink {
    process: Rc<ProcessEntry>,
    container: Rc<Container>,
}

impl byte_stream::Server for StdinSink {
    async fn write(self: Rc<Self>, params: byte_stream::WriteParams) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        let data = params.get()?.get_data()?;
        match self.process.write_stdin(data).await {
            // The process's end went with a destroy that overtook the write.
            Err(_) if self.container.phase() == Phase::Destroying => {
                Err(ApiError::not_found(self.container.handle.as_str()).into())
            }
            other => Ok(other?),
        }
    }

    async fn done(
        self: Rc<Self>,
        _: byte_stream::DoneParams,
        _: byte_stream::DoneResults,
    ) -> Result<(), capnp::Error> {
        let _busy = self.container.touch();
        self.process.close_stdin().await?;
        Ok(())
    }
}
