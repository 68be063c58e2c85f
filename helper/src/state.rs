//! Per-container state: Creating → Running → Stopped → Destroying → removed.
//! `transition` is the whole table, as one pure function (a fuzz target).

use grove_schema::helper::{ContainerState, ErrorKind, HelperError};
use std::os::fd::OwnedFd;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A CreateContainer request.
    Create,
    /// Every create step succeeded.
    Created,
    /// A create step failed and was rolled back.
    CreateFailed,
    /// A DestroyContainer request.
    Destroy,
    /// Everything the container owned is gone.
    Destroyed,
    /// A destroy step failed; destroy may be retried.
    DestroyFailed,
    /// The container's wshd exited.
    WshdExited,
    /// A SetLimits request (Running only).
    SetLimits,
    /// A GetLimits request (Running or Stopped: the cgroups are there).
    GetLimits,
    /// A GetStats request (Running or Stopped).
    GetStats,
    /// A WatchOom or WatchExit request (Running only).
    Watch,
    /// A NetIn or NetOut request (Running only).
    Network,
}

/// The next state (None = no such container) for `event` in `current`, or
/// the error the request gets.
pub fn transition(
    current: Option<&ContainerState>,
    event: Event,
) -> Result<Option<ContainerState>, HelperError> {
    use ContainerState::*;
    use Event::*;
    let invalid = |why: &str| Err(HelperError::new(ErrorKind::InvalidState, why.to_string()));
    match (current, event) {
        (None, Create) => Ok(Some(Creating)),
        (Some(_), Create) => Err(HelperError::new(
            ErrorKind::AlreadyExists,
            "a container with that handle exists",
        )),
        (Some(Creating), Created) => Ok(Some(Running)),
        (Some(Creating), CreateFailed) => Ok(None),
        (Some(Running | Stopped), Destroy) => Ok(Some(Destroying)),
        (Some(Destroying), Destroy) => invalid("the container is already being destroyed"),
        (Some(Creating), Destroy) => invalid("the container is still being created"),
        (None, Destroy) => Err(HelperError::new(
            ErrorKind::NotFound,
            "no container has that handle",
        )),
        (Some(Destroying), Destroyed) => Ok(None),
        (Some(Destroying), DestroyFailed) => Ok(Some(Stopped)),
        (Some(Running), WshdExited) => Ok(Some(Stopped)),
        // wshd may die while we create or destroy; those paths look for themselves.
        (Some(s @ (Stopped | Creating | Destroying)), WshdExited) => Ok(Some(s.clone())),
        // Requests about a container's resources leave its state as it is.
        (None, SetLimits | GetLimits | GetStats | Watch | Network) => Err(HelperError::new(
            ErrorKind::NotFound,
            "no container has that handle",
        )),
        (Some(Running), SetLimits | GetLimits | GetStats | Watch | Network) => Ok(Some(Running)),
        (Some(Stopped), GetLimits | GetStats) => Ok(Some(Stopped)),
        (Some(s), e @ (SetLimits | Watch | Network)) => invalid(&format!(
            "{e:?} needs a running container; this one is {s:?}"
        )),
        (s, e) => invalid(&format!("event {e:?} is not valid in state {s:?}")),
    }
}

/// What the helper knows about one container.
#[derive(Debug)]
pub struct Container {
    pub state: ContainerState,
    /// wshd's host pid (0 when unknown).
    pub wshd_pid: i32,
    /// A pidfd for wshd: signals through it cannot reach a recycled pid.
    pub pidfd: Option<OwnedFd>,
    /// Image layer ids the container's overlay uses (empty for a rootfs dir).
    pub layers: Vec<String>,
    /// Which of the owner uids (`userns::owner_uid`) owns the container's
    /// user namespace; None for a privileged container (no user namespace)
    /// or a recovered one whose namespace is gone.
    pub owner_slot: Option<u32>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use ContainerState::*;
    use Event::*;

    const STATES: [Option<ContainerState>; 5] = [
        None,
        Some(Creating),
        Some(Running),
        Some(Stopped),
        Some(Destroying),
    ];
    const EVENTS: [Event; 12] = [
        Create,
        Created,
        CreateFailed,
        Destroy,
        Destroyed,
        DestroyFailed,
        WshdExited,
        SetLimits,
        GetLimits,
        GetStats,
        Watch,
        Network,
    ];
    const QUERIES: [Event; 5] = [SetLimits, GetLimits, GetStats, Watch, Network];

    #[test]
    fn resource_requests_need_the_right_state_and_change_none() {
        for e in QUERIES {
            assert_eq!(
                transition(None, e).unwrap_err().kind,
                ErrorKind::NotFound,
                "{e:?}"
            );
            assert_eq!(transition(Some(&Running), e).unwrap(), Some(Running));
            for s in [Creating, Destroying] {
                assert_eq!(
                    transition(Some(&s), e).unwrap_err().kind,
                    ErrorKind::InvalidState,
                    "{e:?} in {s:?}"
                );
            }
        }
        for e in [GetLimits, GetStats] {
            assert_eq!(transition(Some(&Stopped), e).unwrap(), Some(Stopped));
        }
        for e in [SetLimits, Watch] {
            let err = transition(Some(&Stopped), e).unwrap_err();
            assert_eq!(err.kind, ErrorKind::InvalidState);
            assert!(
                err.message.contains("needs a running container"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn the_lifecycle_goes_through() {
        let mut s = None;
        for e in [
            Create,
            Created,
            WshdExited,
            Destroy,
            DestroyFailed,
            Destroy,
            Destroyed,
        ] {
            s = transition(s.as_ref(), e).unwrap();
        }
        assert_eq!(s, None);
    }

    #[test]
    fn requests_get_the_right_errors() {
        let kind = |s: Option<ContainerState>, e| transition(s.as_ref(), e).unwrap_err().kind;
        assert_eq!(kind(Some(Running), Create), ErrorKind::AlreadyExists);
        assert_eq!(kind(Some(Destroying), Create), ErrorKind::AlreadyExists);
        assert_eq!(kind(None, Destroy), ErrorKind::NotFound);
        assert_eq!(kind(Some(Destroying), Destroy), ErrorKind::InvalidState);
        assert!(transition(Some(&Destroying), Destroy)
            .unwrap_err()
            .message
            .contains("already being destroyed"));
        assert_eq!(kind(Some(Creating), Destroy), ErrorKind::InvalidState);
    }

    #[test]
    fn every_pair_is_decided_and_stays_in_the_graph() {
        for s in &STATES {
            for e in EVENTS {
                if let Ok(next) = transition(s.as_ref(), e) {
                    // Creating and Destroying are entered only by their requests.
                    match (&next, e) {
                        (Some(Creating), _) => {
                            assert!(e == Create || s.as_ref() == Some(&Creating))
                        }
                        (Some(Destroying), _) => {
                            assert!(e == Destroy || s.as_ref() == Some(&Destroying))
                        }
                        (None, _) => assert!(matches!(e, CreateFailed | Destroyed)),
                        _ => {}
                    }
                    // Resource requests never change the state.
                    if QUERIES.contains(&e) {
                        assert_eq!(&next, s);
                    }
                }
            }
        }
        // Nothing skips Destroying on its way out of Running.
        assert!(transition(Some(&Running), Destroyed).is_err());
        assert!(transition(Some(&Stopped), Destroyed).is_err());
    }
}
