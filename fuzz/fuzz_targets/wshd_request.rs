//! wshd's decoder: any bytes decode to a request or a typed error, never a
//! panic, and decoded requests round-trip.
#![no_main]

use grove_schema::wshd::{decode, encode, Request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>(data) {
        let again = decode::<Request>(&encode(&request)).expect("re-encoded request decodes");
        assert_eq!(again, request);
    }
});
