//! Replays the `parse_psbt_check` fuzz target's committed corpus (and its generated seeds)
//! through the same property function, plus random and mutated inputs.

use std::path::PathBuf;

use proptest::prelude::*;
use souk_escrow::fuzzing::{parse_psbt_check, seeds};

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/parse_psbt_check")
}

#[test]
fn the_committed_seeds_are_the_generated_ones() {
    // Regenerate with SOUK_BLESS=1 after a change to the fixture or the PSBT format.
    let dir = corpus_dir();
    for (i, seed) in seeds().iter().enumerate() {
        let path = dir.join(format!("seed-{i}"));
        if std::env::var_os("SOUK_BLESS").is_some() {
            std::fs::create_dir_all(&dir).expect("corpus dir");
            std::fs::write(&path, seed).expect("write seed");
        }
        assert_eq!(
            std::fs::read(&path).ok().as_ref(),
            Some(seed),
            "{} is stale",
            path.display()
        );
    }
}

#[test]
fn every_corpus_input_keeps_the_properties() {
    let entries: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .expect("the corpus is committed")
        .map(|e| e.expect("entry").path())
        .collect();
    assert!(entries.len() >= seeds().len());
    for path in entries {
        let bytes = std::fs::read(&path).expect("corpus file");
        let outcome = std::panic::catch_unwind(|| parse_psbt_check(&bytes));
        assert!(outcome.is_ok(), "{} broke a property", path.display());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1_024)) {
        parse_psbt_check(&bytes);
        let mut with_magic = b"psbt\xff".to_vec();
        with_magic.extend_from_slice(&bytes);
        parse_psbt_check(&with_magic);
    }

    #[test]
    fn mutated_seeds_never_panic(
        pick in 0usize..16,
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let all = seeds();
        let mut bytes = all[pick % all.len()].clone();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        parse_psbt_check(&bytes);
        let end = cut.index(bytes.len() + 1);
        parse_psbt_check(&bytes[..end]);
    }
}
