//! The framing both private protocols share: a postcard-encoded
//! `Envelope { version, body }` per datagram. Decoding refuses oversized
//! input, other versions, undecodable bodies and trailing bytes.

use serde::{Deserialize, Serialize};
use std::cell::RefCell;

thread_local! {
    /// The message of the last value that refused to be decoded (postcard
    /// reports a validator's refusal without its text).
    static REFUSAL: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Called by the validating `TryFrom` impls of decoded types: remember why
/// a value was refused, so `decode` can say it.
pub(crate) fn refused<E: std::fmt::Display>(why: E) -> E {
    REFUSAL.with(|r| *r.borrow_mut() = Some(why.to_string()));
    why
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub version: u16,
    pub body: T,
}

/// Why a datagram could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// Too long, truncated, garbage, a bad field or trailing bytes.
    Malformed(String),
    /// Well-framed, but another version of the protocol.
    UnsupportedVersion(String),
}

pub fn encode<T: Serialize>(version: u16, body: &T) -> Vec<u8> {
    postcard::to_allocvec(&Envelope { version, body })
        .expect("postcard encoding into a Vec cannot fail")
}

pub fn decode<T: for<'de> Deserialize<'de>>(
    bytes: &[u8],
    max: usize,
    version: u16,
) -> Result<T, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::Malformed(format!(
            "datagram is {} bytes; at most {max} are allowed",
            bytes.len()
        )));
    }
    // The version comes first so that a peer speaking another version gets a
    // precise answer rather than "malformed".
    let (found, _) = postcard::take_from_bytes::<u16>(bytes)
        .map_err(|e| DecodeError::Malformed(format!("no version header: {e}")))?;
    if found != version {
        return Err(DecodeError::UnsupportedVersion(format!(
            "protocol version {found}; this side speaks {version}"
        )));
    }
    REFUSAL.with(|r| r.borrow_mut().take());
    let (envelope, rest) = postcard::take_from_bytes::<Envelope<T>>(bytes).map_err(|e| {
        match REFUSAL.with(|r| r.borrow_mut().take()) {
            Some(why) => DecodeError::Malformed(format!("undecodable message: {why}")),
            None => DecodeError::Malformed(format!("undecodable message: {e}")),
        }
    })?;
    if !rest.is_empty() {
        return Err(DecodeError::Malformed(format!(
            "{} trailing bytes after the message",
            rest.len()
        )));
    }
    Ok(envelope.body)
}
