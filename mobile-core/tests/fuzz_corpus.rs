//! Replays the fuzzer's corpus for `read_search_page` (the parser of untrusted server answers),
//! and every truncation of each file: no input panics, and a page only ever holds hits that
//! verified.

use souk_mobile_core::read_search_page;
use souk_protocol::ValidationContext;

/// The fuzz target's clock (fuzz/fuzz_targets/read_search_page.rs).
const NOW: u64 = 1_795_651_200;

#[test]
fn the_corpus_and_its_truncations_never_panic() {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../fuzz/corpus/read_search_page"
    );
    let ctx = ValidationContext::at(NOW);
    let mut files = 0;
    let mut verified = 0;
    for entry in std::fs::read_dir(dir).expect("corpus directory") {
        let bytes = std::fs::read(entry.expect("entry").path()).expect("corpus file");
        files += 1;
        if let Ok(page) = read_search_page("https://corpus.example", &bytes, &ctx) {
            verified += page.hits.len();
            for hit in &page.hits {
                assert!(souk_protocol::open(&hit.envelope, &ctx).is_ok());
            }
        }
        for cut in (0..bytes.len()).step_by(7) {
            let _ = read_search_page("https://corpus.example", &bytes[..cut], &ctx);
        }
    }
    assert!(files >= 2, "the corpus is committed");
    assert!(
        verified >= 3,
        "the seed page's hits verify at the fuzz clock"
    );
}
