//! The root helper's decoder: any bytes must decode to a valid request or a
//! typed error — never a panic — and whatever decodes must encode back to
//! bytes that decode to the same request.
#![no_main]

use grove_schema::helper::{decode_request, encode_request};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode_request(data) {
        let again = decode_request(&encode_request(&request)).expect("re-encoded request decodes");
        assert_eq!(again, request);
    }
});
