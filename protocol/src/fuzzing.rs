//! The properties that the fuzz target `decode_verify_validate` checks, shared with the test
//! that replays its corpus (`tests/fuzz_corpus.rs`) so that CI exercises exactly what the fuzzer
//! does. Not part of the API.

use crate::samples::SAMPLE_TIME;
use crate::{ObjectId, RawEnvelope, ValidationContext, open, open_batch};

/// Runs every check on `data`. Panics (which the fuzzer reports) if a property breaks:
///
/// - decoding, verification and validation never panic, whatever the input;
/// - an accepted envelope keeps the received bytes exactly, and its id is their SHA-256;
/// - accepting is deterministic: the same bytes open again to the same object;
/// - a refused envelope has a non-empty stable code;
/// - a batch decides the input as `open` does, among copies of a valid envelope and itself (so
///   that its signature is checked in a batch equation with others).
pub fn decode_verify_validate(data: &[u8]) {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    let alone = open(data, &ctx);
    let outcome = |r: &Result<crate::SignedObject, crate::EnvelopeError>| {
        r.as_ref()
            .map(crate::SignedObject::id)
            .map_err(|e| e.code())
    };
    let valid = valid_listing();
    let batch = [data, valid, data, valid, data];
    let together = open_batch(&batch, &ctx);
    for (bytes, result) in batch.iter().zip(&together) {
        let expected = if *bytes == data {
            outcome(&alone)
        } else {
            Ok(ObjectId::of(valid))
        };
        assert_eq!(outcome(result), expected, "a batch decided differently");
    }
    match alone {
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

/// A valid listing envelope to batch fuzz inputs with.
fn valid_listing() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(|| {
        let object = crate::Object::Listing(crate::samples::listing(SAMPLE_TIME, "fuzz", None));
        message_recipient()
            .seal(&object, &ValidationContext::at(SAMPLE_TIME))
            .unwrap_or_else(|_| unreachable!("the sample listing is valid"))
            .envelope()
            .bytes()
            .to_vec()
    })
}

/// The recipient every `private_messages` fuzz input is sealed to: the identity of
/// [`TEST_MNEMONIC`](crate::samples::TEST_MNEMONIC), so seeds can reach decryption and beyond.
pub fn message_recipient() -> crate::IdentityKey {
    static KEY: std::sync::OnceLock<crate::IdentityKey> = std::sync::OnceLock::new();
    KEY.get_or_init(|| {
        let mnemonic = crate::Mnemonic::parse(crate::samples::TEST_MNEMONIC)
            .unwrap_or_else(|_| unreachable!("the test mnemonic is valid"));
        crate::Keychain::from_mnemonic(&mnemonic, "").identity()
    })
    .clone()
}

/// Runs every check of the `private_messages` fuzz target on `data`. The first byte chooses the
/// parser: even → the rest is a `SealedMessage` as a server and then its recipient read it; odd →
/// the rest is a decrypted `SignedMessage` (the parser behind decryption, which mutated
/// ciphertexts rarely reach). Panics if a property breaks:
///
/// - no input makes a parser panic;
/// - the server's view and the recipient's agree: an opened message was well formed for the
///   server too, with the same id and length;
/// - an opened message re-reads from its signed bytes to the same sender and message;
/// - every refusal has a non-empty stable code.
pub fn private_messages(data: &[u8]) {
    use crate::message::{SealedId, inspect_sealed, read_signed_message};
    let ctx = ValidationContext::at(SAMPLE_TIME);
    let Some((selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        let header = inspect_sealed(rest);
        match message_recipient().open_message(rest, &ctx) {
            Ok(opened) => {
                assert!(header.is_ok(), "opened, but a server would refuse it");
                if let Ok(header) = &header {
                    assert_eq!(header.id, SealedId::of(rest));
                    assert_eq!(header.len, rest.len());
                    assert_eq!(header.recipient, message_recipient().public_key());
                }
                let again = read_signed_message(opened.signed_bytes(), &ctx);
                assert!(again.is_ok(), "opened, but its signed bytes do not re-read");
                if let Ok(again) = again {
                    assert_eq!(again.sender(), opened.sender());
                    assert_eq!(again.message(), opened.message());
                }
            }
            Err(error) => assert!(!error.code().is_empty()),
        }
        if let Err(error) = header {
            assert!(!error.code().is_empty());
        }
    } else {
        match read_signed_message(rest, &ctx) {
            Ok(opened) => {
                assert_eq!(opened.signed_bytes(), rest);
                let again = read_signed_message(rest, &ctx).map(|o| o.into_message());
                assert_eq!(again.as_ref().ok(), Some(opened.message()), "deterministic");
                let _ = opened.order_id();
            }
            Err(error) => assert!(!error.code().is_empty()),
        }
    }
}
