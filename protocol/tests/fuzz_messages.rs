//! The seed corpus of the `private_messages` fuzz target is generated here (rewrite it with
//! `SOUK_BLESS=1`), replayed through the same property function as the fuzzer, and mutated.

use std::path::PathBuf;

use proptest::prelude::*;
use souk_protocol::fuzzing::{message_recipient, private_messages};
use souk_protocol::message::seal_signed_with;
use souk_protocol::samples::{self, SAMPLE_TIME};
use souk_protocol::{IdentityKey, Object, ValidationContext};

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/private_messages")
}

/// Every sample message, signed by a fixed sender and sealed to the fuzz recipient: once as a
/// sealed input (selector 0) and once as a plaintext input (selector 1). Deterministic.
fn seeds() -> Vec<(String, Vec<u8>)> {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    let sender = IdentityKey::from_secret_bytes(&[0x51; 32]);
    let recipient = message_recipient().public_key();
    let listing = sender
        .seal(
            &Object::Listing(samples::digital_listing(SAMPLE_TIME, "ebook")),
            &ctx,
        )
        .expect("sample listing");
    let mut out = Vec::new();
    for (i, message) in samples::messages(&recipient, listing.envelope().bytes())
        .iter()
        .enumerate()
    {
        let signed = sender
            .sign_message(message, &ctx)
            .expect("samples are valid");
        let sealed = seal_signed_with(&signed, &recipient, &[i as u8 + 1; 32], &[i as u8; 24])
            .expect("seals");
        out.push((
            format!("seed-sealed-{i:02}"),
            [&[0u8][..], &sealed].concat(),
        ));
        out.push((
            format!("seed-signed-{i:02}"),
            [&[1u8][..], &signed].concat(),
        ));
    }
    out
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    let seeds = seeds();
    if std::env::var_os("SOUK_BLESS").is_some() {
        std::fs::create_dir_all(dir()).expect("corpus dir");
        for (name, bytes) in &seeds {
            std::fs::write(dir().join(name), bytes).expect("write seed");
        }
    }
    for (name, bytes) in &seeds {
        let committed = std::fs::read(dir().join(name)).unwrap_or_default();
        assert!(
            &committed == bytes,
            "fuzz/corpus/private_messages/{name} is stale; run SOUK_BLESS=1 cargo test -p souk-protocol --test fuzz_messages"
        );
    }
}

#[test]
fn every_seed_opens_and_every_corpus_input_keeps_the_properties() {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    for (name, bytes) in seeds() {
        let opened = if name.starts_with("seed-sealed") {
            message_recipient().open_message(&bytes[1..], &ctx).is_ok()
        } else {
            souk_protocol::message::read_signed_message(&bytes[1..], &ctx).is_ok()
        };
        assert!(
            opened,
            "{name} must be a valid message, or the fuzzer starts nowhere"
        );
    }
    let mut count = 0;
    for entry in std::fs::read_dir(dir()).expect("the corpus is committed") {
        let path = entry.expect("entry").path();
        let bytes = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| private_messages(&bytes));
        assert!(outcome.is_ok(), "{} broke a property", path.display());
        count += 1;
    }
    assert!(count >= 24, "corpus holds {count} inputs");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        private_messages(&bytes);
    }

    #[test]
    fn mutated_seeds_never_panic(
        pick in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let seeds = seeds();
        let mut bytes = seeds[pick % seeds.len()].1.clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            if i > 0 {
                bytes[i] = value;
            }
        }
        private_messages(&bytes);
        let end = cut.index(bytes.len() + 1);
        private_messages(&bytes[..end]);
    }
}
