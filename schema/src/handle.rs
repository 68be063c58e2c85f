//! Container handles name directories, cgroups, sockets and hostnames, so
//! their syntax is narrow: 1 to 64 bytes of `A-Z a-z 0-9 . _ -`, not starting
//! with '.' or '-'. That rules out '/', "..", NUL, whitespace and non-ASCII.

use serde::{Deserialize, Serialize};
use std::fmt;

pub const MAX_HANDLE_LEN: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Handle(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandleError {
    #[error("handle is empty")]
    Empty,
    #[error("handle is {0} bytes long; at most {MAX_HANDLE_LEN} are allowed")]
    TooLong(usize),
    #[error("handle {0:?} contains {1:?}; only A-Z a-z 0-9 . _ - are allowed")]
    BadChar(String, char),
    #[error("handle {0:?} starts with {1:?}; it must start with a letter, digit or '_'")]
    BadStart(String, char),
}

impl Handle {
    pub fn new(s: impl Into<String>) -> Result<Handle, HandleError> {
        let s = s.into();
        if s.is_empty() {
            return Err(HandleError::Empty);
        }
        if s.len() > MAX_HANDLE_LEN {
            return Err(HandleError::TooLong(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
        {
            return Err(HandleError::BadChar(s, c));
        }
        let first = s.as_bytes()[0] as char;
        if first == '.' || first == '-' {
            return Err(HandleError::BadStart(s, first));
        }
        Ok(Handle(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Handle {
    type Error = HandleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Handle::new(s).map_err(crate::envelope::refused)
    }
}

impl From<Handle> for String {
    fn from(h: Handle) -> String {
        h.0
    }
}

impl fmt::Display for Handle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Handle {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_handles() {
        for h in ["a", "web-1", "0f3c_x.y", "A".repeat(64).as_str()] {
            assert_eq!(Handle::new(h).unwrap().as_str(), h);
        }
    }

    #[test]
    fn refuses_what_could_escape_or_confuse() {
        assert_eq!(Handle::new(""), Err(HandleError::Empty));
        assert_eq!(Handle::new("a".repeat(65)), Err(HandleError::TooLong(65)));
        assert!(matches!(
            Handle::new("a/b"),
            Err(HandleError::BadChar(_, '/'))
        ));
        assert!(matches!(
            Handle::new(".."),
            Err(HandleError::BadStart(_, '.'))
        ));
        assert!(matches!(
            Handle::new("-rf"),
            Err(HandleError::BadStart(_, '-'))
        ));
        assert!(matches!(
            Handle::new("caf\u{e9}"),
            Err(HandleError::BadChar(_, '\u{e9}'))
        ));
        assert!(matches!(
            Handle::new("a\0b"),
            Err(HandleError::BadChar(_, '\0'))
        ));
        assert!(matches!(
            Handle::new("a b"),
            Err(HandleError::BadChar(_, ' '))
        ));
    }

    #[test]
    fn deserializing_validates() {
        let bytes = postcard::to_allocvec(&"../etc".to_string()).unwrap();
        assert!(postcard::from_bytes::<Handle>(&bytes).is_err());
        let bytes = postcard::to_allocvec(&"ok".to_string()).unwrap();
        assert_eq!(
            postcard::from_bytes::<Handle>(&bytes).unwrap().as_str(),
            "ok"
        );
    }
}
