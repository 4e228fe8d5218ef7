//! Any bytes as a sealed private message (server check, then decryption and the plaintext
//! parser) or as a decrypted `SignedMessage`. See `souk_protocol::fuzzing::private_messages`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    souk_protocol::fuzzing::private_messages(data);
});
