//! The one connection to groved: opened on first use, opened again after it
//! broke (groved restarted). Every request takes the current client; a
//! request that found the connection broken answers ServiceUnavailableError
//! and the next one reconnects.

use crate::errors::GardenError;
use grove_client::{Client, ErrorCode};
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

pub struct Grove {
    socket: PathBuf,
    client: RefCell<Option<Rc<Client>>>,
}

impl Grove {
    pub fn new(socket: PathBuf) -> Grove {
        Grove {
            socket,
            client: RefCell::new(None),
        }
    }

    /// The connected client, connecting first when there is none.
    pub async fn client(&self) -> Result<Rc<Client>, GardenError> {
        if let Some(c) = self.client.borrow().as_ref() {
            return Ok(c.clone());
        }
        let client = Client::connect(&self.socket)
            .await
            .map_err(|e| GardenError::from_grove(&e, "", ""))?;
        let client = Rc::new(client);
        tracing::info!(socket = %self.socket.display(), "connected to groved");
        *self.client.borrow_mut() = Some(client.clone());
        Ok(client)
    }

    /// Translate a failed call; a broken connection is dropped so that the
    /// next request opens a new one.
    pub fn fail(
        &self,
        e: impl Into<grove_client::Error>,
        handle: &str,
        process: &str,
    ) -> GardenError {
        let e = e.into();
        if e.kind() == ErrorCode::Disconnected && self.client.borrow_mut().take().is_some() {
            tracing::warn!(error = %e.message, "lost the connection to groved");
        }
        GardenError::from_grove(&e, handle, process)
    }
}
