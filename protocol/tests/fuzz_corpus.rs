//! Replays the committed seed corpus of the `decode_verify_validate` fuzz target (and anything the
//! fuzzer saved there) through the same property function, so CI checks what the fuzzer checks.
//! Also throws random, truncated and spliced inputs at it.

use std::path::PathBuf;

use proptest::prelude::*;
use souk_protocol::fuzzing::decode_verify_validate;

fn corpus() -> Vec<(PathBuf, Vec<u8>)> {
    let dir =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/decode_verify_validate");
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
        .expect("the fuzz corpus is committed")
        .map(|entry| {
            let path = entry.expect("dir entry").path();
            let bytes = std::fs::read(&path).expect("corpus file");
            (path, bytes)
        })
        .collect();
    files.sort();
    files
}

#[test]
fn every_corpus_input_keeps_the_properties() {
    let files = corpus();
    assert!(
        files.len() >= 20,
        "the seed corpus holds the test vectors; found only {}",
        files.len()
    );
    for (path, bytes) in &files {
        let outcome = std::panic::catch_unwind(|| decode_verify_validate(bytes));
        assert!(outcome.is_ok(), "{} broke a property", path.display());
    }
}

#[test]
fn the_corpus_holds_both_accepted_and_refused_inputs() {
    let ctx = souk_protocol::ValidationContext::at(souk_protocol::samples::SAMPLE_TIME);
    let accepted = corpus()
        .iter()
        .filter(|(_, b)| souk_protocol::open(b, &ctx).is_ok())
        .count();
    assert!(accepted >= 5, "accepted: {accepted}");
    assert!(corpus().len() - accepted >= 10);
}

/// The accepted inputs of the corpus, read once for all property cases.
fn valid_inputs() -> &'static [Vec<u8>] {
    static VALID: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    VALID.get_or_init(|| {
        let ctx = souk_protocol::ValidationContext::at(souk_protocol::samples::SAMPLE_TIME);
        corpus()
            .into_iter()
            .map(|(_, b)| b)
            .filter(|b| souk_protocol::open(b, &ctx).is_ok())
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2_048)) {
        decode_verify_validate(&bytes);
    }

    #[test]
    fn mutated_valid_envelopes_never_panic(
        pick in 0usize..64,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let inputs = valid_inputs();
        let mut bytes = inputs[pick % inputs.len()].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        decode_verify_validate(&bytes);
        let end = cut.index(bytes.len() + 1);
        decode_verify_validate(&bytes[..end]);
    }
}
