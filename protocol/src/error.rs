//! The crate's error types. Each variant has a stable machine-readable [`code`](EnvelopeError::code)
//! that servers send to clients and that the test vectors name; the codes are part of the
//! protocol (SPEC.md lists them) and never change meaning.

use crate::Kind;

/// Why an envelope was refused. Variants are listed in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope is larger than [`MAX_ENVELOPE_BYTES`](crate::limits::MAX_ENVELOPE_BYTES).
    #[error("envelope is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size of what was received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf `Envelope`.
    #[error("envelope is not a valid protobuf Envelope: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
    /// The bytes decode, but are not the one canonical encoding of that envelope.
    #[error(
        "envelope encoding is not canonical (fields out of order, repeated, default-valued or unknown)"
    )]
    NotCanonical,
    /// The kind is not one this version of the protocol knows.
    #[error("unknown envelope kind {kind}")]
    UnknownKind {
        /// The numeric kind that was received.
        kind: i32,
    },
    /// The signer field is not a usable ed25519 public key.
    #[error("signer is not a valid ed25519 public key ({reason})")]
    InvalidSigner {
        /// Why: wrong length, not a curve point, or a weak (small-order) key.
        reason: &'static str,
    },
    /// The signature field is not 64 bytes.
    #[error("signature must be 64 bytes, got {len}")]
    InvalidSignatureLength {
        /// Length received.
        len: usize,
    },
    /// The payload does not decode as the message its kind names.
    #[error("payload is not a valid {kind:?} message: {reason}")]
    MalformedPayload {
        /// The envelope's kind.
        kind: Kind,
        /// What the decoder said.
        reason: String,
    },
    /// The payload decodes but breaks a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The signature does not verify for this signer, kind and payload.
    #[error("signature does not verify")]
    BadSignature,
}

impl EnvelopeError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "envelope_too_large",
            Self::Malformed { .. } => "envelope_malformed",
            Self::NotCanonical => "envelope_not_canonical",
            Self::UnknownKind { .. } => "unknown_kind",
            Self::InvalidSigner { .. } => "invalid_signer",
            Self::InvalidSignatureLength { .. } => "invalid_signature_length",
            Self::MalformedPayload { .. } => "payload_malformed",
            Self::Invalid(inner) => inner.code(),
            Self::BadSignature => "bad_signature",
        }
    }
}

/// A rule of SPEC.md that an object breaks. `field` names are dotted paths from the object's
/// root, for example `listing.skus.code`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// A required field is empty.
    #[error("{field} is required")]
    Missing {
        /// The field.
        field: &'static str,
    },
    /// A text or bytes field is longer than its limit.
    #[error("{field} is {actual} bytes, more than the limit of {max}")]
    TooLong {
        /// The field.
        field: &'static str,
        /// The limit in bytes.
        max: usize,
        /// The length received.
        actual: usize,
    },
    /// A list has more entries than its limit.
    #[error("{field} has {actual} entries, more than the limit of {max}")]
    TooMany {
        /// The field.
        field: &'static str,
        /// The limit.
        max: usize,
        /// The count received.
        actual: usize,
    },
    /// A number is outside its allowed range.
    #[error("{field} is {actual}, outside the allowed range {min}..={max}")]
    OutOfRange {
        /// The field.
        field: &'static str,
        /// Smallest allowed value.
        min: u64,
        /// Largest allowed value.
        max: u64,
        /// The value received (negative values are reported as 0).
        actual: u64,
    },
    /// A field does not have the required shape.
    #[error("{field} is not {expected}")]
    BadFormat {
        /// The field.
        field: &'static str,
        /// What it should be, in words.
        expected: &'static str,
    },
    /// A single-line text field contains a control character (or a multi-line one contains a
    /// control character other than tab, line feed and carriage return).
    #[error("{field} contains a control character")]
    ControlCharacter {
        /// The field.
        field: &'static str,
    },
    /// The same value appears twice in a list where values must be distinct.
    #[error("{field} contains a duplicate entry")]
    Duplicate {
        /// The field.
        field: &'static str,
    },
    /// Fields that must agree with each other do not.
    #[error("{field} is inconsistent: {reason}")]
    Inconsistent {
        /// The field.
        field: &'static str,
        /// Which rule, in words.
        reason: &'static str,
    },
    /// `created_at` lies further in the future than the allowed clock skew.
    #[error("created_at {created_at} is more than {max_skew} s after the current time {now}")]
    InFuture {
        /// The object's timestamp.
        created_at: u64,
        /// The verifier's clock.
        now: u64,
        /// The allowed skew.
        max_skew: u64,
    },
    /// `created_at` is before the protocol existed.
    #[error("created_at {created_at} is before the protocol epoch {epoch}")]
    BeforeEpoch {
        /// The object's timestamp.
        created_at: u64,
        /// [`PROTOCOL_EPOCH`](crate::limits::PROTOCOL_EPOCH).
        epoch: u64,
    },
    /// The listing's `expires_at` has passed.
    #[error("listing expired at {expires_at}, the current time is {now}")]
    Expired {
        /// The listing's expiry.
        expires_at: u64,
        /// The verifier's clock.
        now: u64,
    },
    /// A rating's proof does not show that the rated party permitted this rating key.
    #[error("rating proof is invalid: {reason}")]
    BadRatingProof {
        /// Why.
        reason: &'static str,
    },
}

impl ValidationError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing { .. } => "missing_field",
            Self::TooLong { .. } => "too_long",
            Self::TooMany { .. } => "too_many",
            Self::OutOfRange { .. } => "out_of_range",
            Self::BadFormat { .. } => "bad_format",
            Self::ControlCharacter { .. } => "control_character",
            Self::Duplicate { .. } => "duplicate",
            Self::Inconsistent { .. } => "inconsistent",
            Self::InFuture { .. } => "timestamp_in_future",
            Self::BeforeEpoch { .. } => "timestamp_before_epoch",
            Self::Expired { .. } => "expired",
            Self::BadRatingProof { .. } => "bad_rating_proof",
        }
    }

    /// The field the error is about, if it is about one field.
    #[must_use]
    pub fn field(&self) -> Option<&'static str> {
        match self {
            Self::Missing { field }
            | Self::TooLong { field, .. }
            | Self::TooMany { field, .. }
            | Self::OutOfRange { field, .. }
            | Self::BadFormat { field, .. }
            | Self::ControlCharacter { field }
            | Self::Duplicate { field }
            | Self::Inconsistent { field, .. } => Some(field),
            Self::InFuture { .. } | Self::BeforeEpoch { .. } => Some("created_at"),
            Self::Expired { .. } => Some("listing.expires_at"),
            Self::BadRatingProof { .. } => Some("rating.proof"),
        }
    }
}

/// Why a private message could not be sealed or opened (SPEC.md, "Private messages"). Variants
/// are listed in the order the checks run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessageError {
    /// The sealed message is larger than
    /// [`MAX_SEALED_MESSAGE_BYTES`](crate::limits::MAX_SEALED_MESSAGE_BYTES).
    #[error("sealed message is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size of what was received (or would have been produced).
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a protobuf `SealedMessage`, or a field has the wrong length.
    #[error("not a valid sealed message: {reason}")]
    Malformed {
        /// What is wrong.
        reason: String,
    },
    /// The sealed message's recipient is not a usable ed25519 public key.
    #[error("recipient is not a valid ed25519 public key ({reason})")]
    InvalidRecipient {
        /// Why.
        reason: &'static str,
    },
    /// The message is sealed to someone else.
    #[error("the message is sealed to another key")]
    WrongRecipient,
    /// Decryption failed: the ciphertext or its header was altered, or it was not made for this
    /// key.
    #[error("the message cannot be decrypted (altered, or not made for this key)")]
    Undecryptable,
    /// The decrypted bytes are not a `SignedMessage` carrying a `Message`.
    #[error("decrypted message is malformed: {reason}")]
    MalformedPlaintext {
        /// What the decoder said.
        reason: String,
    },
    /// The signer is not a usable ed25519 public key.
    #[error("signer is not a valid ed25519 public key ({reason})")]
    InvalidSigner {
        /// Why.
        reason: &'static str,
    },
    /// The signature does not verify for this signer and payload.
    #[error("message signature does not verify")]
    BadSignature,
    /// The signed message names a different recipient than the one it was sealed to.
    #[error("the signed message is addressed to another key than it was sealed to")]
    RecipientMismatch,
    /// The message breaks a validation rule.
    #[error(transparent)]
    Invalid(#[from] ValidationError),
    /// The operating system's random number generator failed while sealing.
    #[error("no randomness available to seal a message: {reason}")]
    Randomness {
        /// What the operating system said.
        reason: String,
    },
}

impl MessageError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "message_too_large",
            Self::Malformed { .. } => "message_malformed",
            Self::InvalidRecipient { .. } => "invalid_recipient",
            Self::WrongRecipient => "wrong_recipient",
            Self::Undecryptable => "undecryptable",
            Self::MalformedPlaintext { .. } => "plaintext_malformed",
            Self::InvalidSigner { .. } => "invalid_signer",
            Self::BadSignature => "bad_signature",
            Self::RecipientMismatch => "recipient_mismatch",
            Self::Invalid(inner) => inner.code(),
            Self::Randomness { .. } => "randomness_unavailable",
        }
    }
}

/// Why a mnemonic, key or address was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// The phrase is not a valid English BIP 39 mnemonic. The phrase itself is never included.
    #[error("not a valid BIP 39 mnemonic: {reason}")]
    InvalidMnemonic {
        /// What is wrong (word count, unknown word, checksum), without the words themselves.
        reason: String,
    },
    /// Entropy for a new mnemonic must be 16 or 32 bytes.
    #[error("mnemonic entropy must be 16 or 32 bytes, got {len}")]
    InvalidEntropyLength {
        /// Length given.
        len: usize,
    },
    /// The operating system's random number generator failed.
    #[error("the system random number generator failed: {reason}")]
    Randomness {
        /// The OS error.
        reason: String,
    },
    /// A derivation index is outside the range that path allows.
    #[error("derivation index {index} is out of range (must be below 2^31)")]
    IndexOutOfRange {
        /// The index given.
        index: u32,
    },
    /// Text is not a Souk address (`souk1…`) nor 64 hex digits.
    #[error("not a Souk identity address: {reason}")]
    InvalidAddress {
        /// Why.
        reason: String,
    },
    /// BIP 32 derivation failed (an invalid child key, with probability about 2^-127).
    #[error("BIP 32 derivation failed: {reason}")]
    Derivation {
        /// What the library said.
        reason: String,
    },
}

impl IdentityError {
    /// The stable machine-readable code of this error.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidMnemonic { .. } => "invalid_mnemonic",
            Self::InvalidEntropyLength { .. } => "invalid_entropy_length",
            Self::Randomness { .. } => "randomness_unavailable",
            Self::IndexOutOfRange { .. } => "index_out_of_range",
            Self::InvalidAddress { .. } => "invalid_address",
            Self::Derivation { .. } => "derivation_failed",
        }
    }
}
