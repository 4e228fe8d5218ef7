//! Replays the committed corpus of the `grpc_requests` fuzz target (`fuzz/corpus/grpc_requests`)
//! and hand-made hostile requests through the same entry point, so a crash the fuzzer once
//! found stays fixed without nightly Rust. `seeds` writes the corpus's starting points.

mod common;

use prost::Message;
use souk_protocol::pb;
use souk_server::grpc::fuzz_one;

fn tagged(selector: u8, message: &impl Message) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend(message.encode_to_vec());
    out
}

/// Requests that reach every branch: valid ones, each parameter out of range, odd text.
fn seeds() -> Vec<Vec<u8>> {
    let mut out = vec![
        tagged(0, &pb::SearchRequest::default()),
        tagged(
            0,
            &pb::SearchRequest {
                q: "wool sweat".into(),
                category: "/Clothing/".into(),
                r#type: 1,
                condition: 2,
                currency: "eur".into(),
                price_min: Some(1.5),
                price_max: Some(100.0),
                ships_to: "de".into(),
                seller: vec![7; 32],
                min_rating: Some(4.0),
                moderated: Some(true),
                nsfw: true,
                sort: 2,
                limit: 100,
                cursor: "bzoyMA".into(),
            },
        ),
        tagged(
            0,
            &pb::SearchRequest {
                price_min: Some(f64::NAN),
                price_max: Some(-1.0),
                r#type: 77,
                sort: -3,
                limit: u32::MAX,
                cursor: "bzo5OTk5OTk5OTk5OTk5OTk5OTk".into(),
                ..Default::default()
            },
        ),
        tagged(1, &pb::SubscribeRequest::default()),
        tagged(
            1,
            &pb::SubscribeRequest {
                kinds: vec![2, 4],
                signers: vec![vec![9; 32]],
                categories: vec!["home/kitchen".into(), "garden".into()],
                q: "ceramic mu".into(),
                since: "12345".into(),
            },
        ),
        tagged(
            1,
            &pb::SubscribeRequest {
                kinds: vec![0, -1, i32::MAX],
                signers: vec![vec![]; 101],
                categories: vec!["///".into()],
                q: "AND OR NOT \u{0} ÿ 日本".into(),
                since: "-1".into(),
            },
        ),
    ];
    out.push(vec![]);
    out.push(vec![0, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    out.push(vec![1; 300]);
    out
}

#[test]
fn seeds_and_hostile_requests_are_errors_not_panics() {
    for seed in seeds() {
        fuzz_one(&seed);
    }
    // Every truncation of every seed.
    for seed in seeds() {
        for end in 0..seed.len() {
            fuzz_one(&seed[..end]);
        }
    }
}

#[test]
fn the_committed_corpus_replays_without_a_panic() {
    if std::env::var_os("SOUK_WRITE_SEEDS").is_some() {
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/grpc_requests");
        std::fs::create_dir_all(&dir).expect("corpus directory");
        for (i, seed) in seeds().iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).expect("seed");
        }
    }
    common::replay_corpus("grpc_requests", fuzz_one);
}
