//! Helpers the server's benchmarks share: the demo corpus, the committed query mix and
//! percentiles.

#![allow(dead_code, reason = "each benchmark uses a part")]

use std::time::Duration;

use souk_server::config::DemoArgs;

/// The value at quantile `p` (0 to 1) of `sorted`, 0 when empty.
pub fn percentile<T: Copy + Default>(sorted: &[T], p: f64) -> T {
    if sorted.is_empty() {
        return T::default();
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss,
        reason = "index math"
    )]
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}

/// [`percentile`] of durations, in milliseconds.
pub fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    percentile(sorted, p).as_secs_f64() * 1000.0
}

/// The committed query mix (`benches/queries.txt`), one URL query string per entry, encoded.
pub fn query_lines() -> Vec<String> {
    include_str!("../queries.txt")
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let pairs: Vec<(String, String)> = serde_urlencoded::from_str(l).expect("query line");
            serde_urlencoded::to_string(&pairs).expect("encoded")
        })
        .collect()
}

/// The demo corpus for `listings` listings (seed 7): the stores' profiles, then listings in
/// batches of 1,000, as envelope bytes.
pub fn demo_batches(listings: usize, now: u64) -> Vec<Vec<Vec<u8>>> {
    let demo = DemoArgs {
        listings,
        stores: (listings / 100).max(10),
        seed: 7,
    };
    let bytes = |objects: Vec<souk_protocol::SignedObject>| {
        objects
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect::<Vec<_>>()
    };
    let mut batches = vec![bytes(souk_server::demo::profiles(&demo, now))];
    for start in (0..listings).step_by(1_000) {
        let end = (start + 1_000).min(listings);
        batches.push(bytes(souk_server::demo::listings(&demo, now, start..end)));
    }
    batches
}
