//! Any bytes through the whole acceptance pipeline: size, decode, canonical check, payload
//! decode, validation, signature, rating proof. See `souk_protocol::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    souk_protocol::fuzzing::decode_verify_validate(data);
});
