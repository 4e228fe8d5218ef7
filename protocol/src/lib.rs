//! # souk-protocol
//!
//! The wire format of Souk: identities derived from one BIP 39 mnemonic, the protobuf schema of
//! every public object, signed envelopes, validation limits and the rule that decides between
//! two versions of a replaceable object. No I/O: the only outside input is a clock reading,
//! passed in. `protocol/SPEC.md` documents every byte; `protocol/test-vectors/` holds vectors
//! that an independent implementation can check.
//!
//! ```
//! use souk_protocol::{Keychain, Mnemonic, Object, ValidationContext, open, pb};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mnemonic = Mnemonic::parse(
//!     "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
//! )?;
//! let identity = Keychain::from_mnemonic(&mnemonic, "").identity();
//! assert!(identity.public_key().to_address().starts_with("souk1"));
//!
//! let ctx = ValidationContext::at(1_767_225_600); // 2026-01-01
//! let tombstone = Object::Tombstone(pb::Tombstone {
//!     created_at: 1_767_225_600,
//!     slug: "old-bicycle".into(),
//!     reason: "sold".into(),
//! });
//! let sealed = identity.seal(&tombstone, &ctx)?;
//!
//! // Anyone receiving the bytes checks them the same way, and gets the same id.
//! let opened = open(sealed.envelope().bytes(), &ctx)?;
//! assert_eq!(opened.id(), sealed.id());
//! assert_eq!(opened.signer(), identity.public_key());
//!
//! // One flipped bit and the envelope is refused with a stable code.
//! let mut forged = sealed.envelope().bytes().to_vec();
//! let last = forged.len() - 1;
//! forged[last] ^= 1;
//! assert_eq!(open(&forged, &ctx).unwrap_err().code(), "bad_signature");
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs, unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod envelope;
mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod identity;
pub mod limits;
pub mod message;
mod object;
pub mod order;
pub mod samples;
mod signature;
pub mod summary;
mod validate;

/// Types generated from `proto/souk/v1/*.proto` by prost. Their doc comments are the schema's.
#[allow(
    missing_docs,
    reason = "generated code; the .proto files document every field"
)]
#[allow(
    clippy::doc_markdown,
    clippy::doc_lazy_continuation,
    clippy::large_enum_variant,
    unused_qualifications,
    reason = "generated code"
)]
pub mod pb {
    include!(concat!(env!("OUT_DIR"), "/souk.v1.rs"));
}

/// The compiled schema as an encoded `google.protobuf.FileDescriptorSet` (for gRPC reflection
/// and dynamic decoders).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/souk_descriptor.bin"));

pub use envelope::{
    ObjectId, ParseObjectIdError, RawEnvelope, SIGNATURE_DOMAIN, open, open_batch, signing_digest,
    verify_batch,
};
pub use error::{EnvelopeError, IdentityError, MessageError, ValidationError};
pub use identity::{IdentityKey, Keychain, Mnemonic, PublicKey, Seed, WordCount};
pub use object::{
    Object, RATING_PERMIT_DOMAIN, ReplaceKey, SignedObject, Slot, Version, compare_versions,
    rating_permit_digest,
};
pub use pb::Kind;
pub use summary::ListingSummary;
pub use validate::ValidationContext;

/// Re-exported so that callers name the same `bitcoin` types the key derivation returns.
pub use bitcoin;

/// Domain-separation prefix of coupon code hashes.
pub const COUPON_DOMAIN: &[u8] = b"souk/v1/coupon\0";

/// The published hash of a coupon code: `SHA-256(COUPON_DOMAIN || code)`, where `code` is the
/// code with surrounding whitespace removed and ASCII letters in upper case (codes are
/// case-insensitive).
#[must_use]
pub fn coupon_code_hash(code: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    let mut hasher = Sha256::new();
    hasher.update(COUPON_DOMAIN);
    hasher.update(code.trim().to_ascii_uppercase().as_bytes());
    hasher.finalize().into()
}

/// Lower-case hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    // A table, not `write!("{b:02x}")`: an index server writes two ids per search hit, and the
    // formatting machinery was 4 % of a search's CPU.
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

/// Hex (either case) to bytes; `None` for odd lengths or non-hex characters.
pub(crate) fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            let text = core::str::from_utf8(pair).ok()?;
            u8::from_str_radix(text, 16).ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_writes_every_byte_as_two_lower_case_digits_and_unhex_reads_it_back() {
        let bytes: Vec<u8> = (0..=u8::MAX).collect();
        let text = super::hex(&bytes);
        let expected: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(text, expected);
        assert_eq!(super::unhex(&text), Some(bytes.clone()));
        assert_eq!(super::unhex(&text.to_uppercase()), Some(bytes));
        assert_eq!(super::unhex("abc"), None);
        assert_eq!(super::unhex("zz"), None);
    }
}
