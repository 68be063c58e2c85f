//! The helper's per-container state machine (`helper/src/state.rs`), driven
//! over arbitrary event sequences for several containers at once.
//!
//! Input: pairs of bytes (container index, event). Each step feeds the
//! model's current state of that container through `transition` and checks
//! the table's invariants: it never panics and is pure; a container that
//! does not exist accepts only Create; an existing one refuses Create with
//! AlreadyExists; only CreateFailed (from Creating) and Destroyed (from
//! Destroying) remove a container; a Destroying container refuses a second
//! Destroy with InvalidState; resource requests leave the state unchanged;
//! every state change is an edge of the documented graph; the lifecycle
//! never dead-ends; and refused events change nothing.
#![no_main]

// The helper is a binary crate, so its pure state module is compiled in
// here directly (it depends only on grove_schema and std).
#[allow(dead_code)]
#[path = "../../helper/src/state.rs"]
mod state;

use grove_schema::helper::{ContainerState, ErrorKind};
use libfuzzer_sys::fuzz_target;
use state::{transition, Event};
use ContainerState::*;
use Event::*;

/// Containers in the model: enough to interleave, few enough that sequences
/// revisit each one often.
const CONTAINERS: usize = 4;
/// Events one input drives (the rest of a longer input is ignored).
const MAX_EVENTS: usize = 256;

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

/// Requests about a container's resources: never change its state.
fn is_resource_request(e: Event) -> bool {
    matches!(e, SetLimits | GetLimits | GetStats | Watch | Network)
}

/// The edges of the graph in state.rs's header (Creating → Running →
/// Stopped → Destroying → removed, plus the failure paths).
fn is_edge(from: &Option<ContainerState>, e: Event, to: &Option<ContainerState>) -> bool {
    matches!(
        (from, e, to),
        (None, Create, Some(Creating))
            | (Some(Creating), Created, Some(Running))
            | (Some(Creating), CreateFailed, None)
            | (Some(Running | Stopped), Destroy, Some(Destroying))
            | (Some(Destroying), Destroyed, None)
            | (Some(Destroying), DestroyFailed, Some(Stopped))
            | (Some(Running), WshdExited, Some(Stopped))
    )
}

/// Events each state must accept, so that no container can get stuck and
/// the requests the protocol documents for a state are served.
fn must_accept(s: &Option<ContainerState>, e: Event) -> bool {
    match s {
        None => e == Create,
        Some(Creating) => matches!(e, Created | CreateFailed),
        Some(Running) => matches!(e, Destroy | WshdExited) || is_resource_request(e),
        Some(Stopped) => matches!(e, Destroy | GetLimits | GetStats),
        Some(Destroying) => matches!(e, Destroyed | DestroyFailed),
    }
}

/// The error an event must get, when the protocol fixes one.
fn must_refuse(s: &Option<ContainerState>, e: Event) -> Option<ErrorKind> {
    use ErrorKind::*;
    match (s, e) {
        (Some(_), Create) => Some(AlreadyExists),
        (None, Destroy) => Some(NotFound),
        (None, e) if is_resource_request(e) => Some(NotFound),
        // A destroy in progress, or a create, is not interrupted by another.
        (Some(Destroying | Creating), Destroy) => Some(InvalidState),
        (Some(Creating | Stopped | Destroying), SetLimits | Watch | Network) => {
            Some(InvalidState)
        }
        (Some(Creating | Destroying), GetLimits | GetStats) => Some(InvalidState),
        _ => None,
    }
}

/// Events that never change a container's state when accepted (WshdExited
/// only outside Running).
fn keeps_state(s: &Option<ContainerState>, e: Event) -> bool {
    is_resource_request(e) || (e == WshdExited && s != &Some(Running))
}

fn step(before: &Option<ContainerState>, e: Event) -> Option<ContainerState> {
    let result = transition(before.as_ref(), e);
    // Pure: the same question gets the same answer.
    assert_eq!(result, transition(before.as_ref(), e), "{before:?} {e:?}");

    if must_accept(before, e) {
        assert!(result.is_ok(), "{before:?} must accept {e:?}: {result:?}");
    }
    if let Some(kind) = must_refuse(before, e) {
        match &result {
            Err(err) => assert_eq!(err.kind, kind, "{before:?} {e:?}: {err:?}"),
            Ok(after) => panic!("{before:?} accepted {e:?} (-> {after:?}); it must get {kind:?}"),
        }
    }

    match result {
        Ok(after) => {
            // A container that does not exist accepts only Create.
            if before.is_none() {
                assert_eq!(e, Create, "no container, yet {e:?} was accepted");
            }
            if keeps_state(before, e) {
                assert_eq!(&after, before, "{e:?} changed the state");
            } else {
                // Every other accepted event moves along an edge of the
                // graph: none is a silent no-op, none skips a state.
                assert!(
                    is_edge(before, e, &after),
                    "{before:?} --{e:?}--> {after:?} is not in the graph"
                );
            }
            // Only CreateFailed and Destroyed remove a container.
            if before.is_some() && after.is_none() {
                assert!(matches!(e, CreateFailed | Destroyed), "{e:?} removed it");
            }
            after
        }
        Err(err) => {
            assert!(!err.message.is_empty(), "{before:?} {e:?}: empty message");
            assert!(
                matches!(
                    err.kind,
                    ErrorKind::InvalidState | ErrorKind::NotFound | ErrorKind::AlreadyExists
                ),
                "{before:?} {e:?}: {err:?}"
            );
            // A refused event leaves the state as it was.
            before.clone()
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut model: [Option<ContainerState>; CONTAINERS] = Default::default();
    // How often each container was created and removed: a container exists
    // exactly when it was created once more than it was removed.
    let mut created = [0usize; CONTAINERS];
    let mut removed = [0usize; CONTAINERS];
    // Longer sequences only revisit the same few states; the cap keeps
    // executions fast.
    for pair in data.chunks_exact(2).take(MAX_EVENTS) {
        let i = pair[0] as usize % CONTAINERS;
        let e = EVENTS[pair[1] as usize % EVENTS.len()];
        let before = model[i].clone();
        let after = step(&before, e);
        if before.is_none() && after.is_some() {
            created[i] += 1;
        }
        if before.is_some() && after.is_none() {
            removed[i] += 1;
        }
        model[i] = after;
    }
    for i in 0..CONTAINERS {
        assert_eq!(
            created[i] - removed[i],
            usize::from(model[i].is_some()),
            "container {i}"
        );
    }
});
