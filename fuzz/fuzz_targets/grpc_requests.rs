//! Any bytes as a gRPC request the index server parses before touching its store: a
//! `SearchRequest` turned into a search, or a `SubscribeRequest` turned into a feed filter and
//! cursor and matched against a listing. Must never panic; bad input is an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    souk_server::grpc::fuzz_one(data);
});
