//! Any bytes as a search answer from an untrusted index server: parse the JSON, verify every
//! hit, compare every summary. Must never panic; failures are errors or dropped hits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use souk_protocol::ValidationContext;

/// 2026-11-26T00:00:00Z: after the committed corpus pages were signed, before they expire.
const NOW: u64 = 1_795_651_200;

fuzz_target!(|data: &[u8]| {
    let ctx = ValidationContext::at(NOW);
    if let Ok(page) = souk_mobile_core::read_search_page("https://fuzz.example", data, &ctx) {
        assert!(page.hits.len() + page.dropped.len() <= 1 + data.len() / 2);
    }
});
