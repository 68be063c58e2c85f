//! groved's decoder for wshd's answers. wshd is PID 1 inside a container,
//! where root can ptrace or replace it, so what groved reads from a wshd
//! socket is untrusted too: any bytes decode to a response or a typed
//! error, never a panic, and decoded responses round-trip.
#![no_main]

use grove_schema::wshd::{decode, encode, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(response) = decode::<Response>(data) {
        let again = decode::<Response>(&encode(&response)).expect("re-encoded response decodes");
        assert_eq!(again, response);
    }
});
