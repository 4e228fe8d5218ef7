//! The properties that the fuzz target `decode_verify_validate` checks, shared with the test
//! that replays its corpus (`tests/fuzz_corpus.rs`) so that CI exercises exactly what the fuzzer
//! does. Not part of the API.

use crate::samples::SAMPLE_TIME;
use crate::{ObjectId, RawEnvelope, ValidationContext, open};

/// Runs every check on `data`. Panics (which the fuzzer reports) if a property breaks:
///
/// - decoding, verification and validation never panic, whatever the input;
/// - an accepted envelope keeps the received bytes exactly, and its id is their SHA-256;
/// - accepting is deterministic: the same bytes open again to the same object;
/// - a refused envelope has a non-empty stable code.
pub fn decode_verify_validate(data: &[u8]) {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    match open(data, &ctx) {
        Ok(object) => {
            assert_eq!(
                object.envelope().bytes(),
                data,
                "bytes must be kept as received"
            );
            assert_eq!(object.id(), ObjectId::of(data));
            assert_eq!(object.object().kind(), object.envelope().kind());
            assert!(object.envelope().verify_signature().is_ok());
            let again = open(data, &ctx).map(|o| o.object().clone());
            assert_eq!(again.as_ref().ok(), Some(object.object()), "deterministic");
            let _ = object.replace_key();
        }
        Err(error) => {
            assert!(!error.code().is_empty());
            let _ = error.to_string();
            // The structural stage alone must agree with the full pipeline on structural errors.
            if let Err(structural) = RawEnvelope::decode(data) {
                assert_eq!(structural, error);
            }
        }
    }
}
