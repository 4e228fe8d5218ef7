//! Any bytes as a PSBT from another phone: parse (binary or base64), check against fixed escrow
//! terms, sign, finalize. See `souk_escrow::fuzzing`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    souk_escrow::fuzzing::parse_psbt_check(data);
});
