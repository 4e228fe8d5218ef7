//! Replays the committed corpus of the `sync_messages` fuzz target (`fuzz/corpus/sync_messages`)
//! and a set of hand-made hostile inputs through the same entry point, so a crash the fuzzer
//! once found stays fixed without nightly Rust.

mod common;

use prost::Message;
use souk_protocol::pb;
use souk_server::p2p::sync::fuzz_one;

fn framed(message: &impl Message) -> Vec<u8> {
    let body = message.encode_to_vec();
    let mut out = Vec::new();
    let mut length = body.len();
    loop {
        let byte = (length & 0x7f) as u8;
        length >>= 7;
        if length == 0 {
            out.push(byte);
            break;
        }
        out.push(byte | 0x80);
    }
    out.extend(body);
    out
}

#[test]
fn the_committed_corpus_replays_without_a_panic() {
    common::replay_corpus("sync_messages", fuzz_one);
}

#[test]
fn hostile_frames_are_errors_not_panics() {
    let fetch = pb::SyncRequest {
        request: Some(pb::sync_request::Request::Fetch(pb::Fetch {
            ids: vec![vec![1; 32], vec![2; 31], Vec::new()],
        })),
    };
    let reconcile = pb::SyncRequest {
        request: Some(pb::sync_request::Request::Reconcile(pb::Reconcile {
            frame: vec![
                0x61, 0, 0, 2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
            ],
        })),
    };
    let mut inputs: Vec<Vec<u8>> = vec![
        Vec::new(),
        vec![0x61],
        vec![0x60],
        vec![0x61, 0x00],
        vec![
            0x61, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f,
        ],
        vec![0x61, 0x00, 0x00, 0x02, 0xff, 0xff, 0xff, 0x0f],
        vec![0xff; 64],
        framed(&fetch),
        framed(&reconcile),
    ];
    let whole = framed(&fetch);
    for cut in 0..whole.len() {
        inputs.push(whole[..cut].to_vec());
    }
    for input in &inputs {
        fuzz_one(input);
    }
}
