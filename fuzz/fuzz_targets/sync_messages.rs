//! Any bytes as a peer's sync traffic: a length-prefixed `SyncRequest` and `SyncResponse` read
//! through the server's codec, and a negentropy frame answered by a responder and read by an
//! initiator over a small fixed set. Must never panic; failures are errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    souk_server::p2p::sync::fuzz_one(data);
});
