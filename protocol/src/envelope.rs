//! Signed envelopes: decoding, signing, verification and object ids.
//!
//! The checks run cheapest first (SPEC.md, "Accepting an envelope"):
//! size → protobuf decode → canonical encoding → kind → signer and signature lengths →
//! payload decode → validation → signature → rating proof. Nothing is re-encoded before the
//! signature is checked: the signature covers the payload bytes exactly as received.

use core::fmt;
use core::str::FromStr;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::identity::{IdentityKey, PublicKey};
use crate::limits::MAX_ENVELOPE_BYTES;
use crate::object::{Object, SignedObject};
use crate::validate::ValidationContext;
use crate::{EnvelopeError, Kind, pb};

/// Domain-separation prefix of the digest an envelope signature covers.
pub const SIGNATURE_DOMAIN: &[u8] = b"souk/v1/envelope\0";

/// The 32-byte digest that an envelope's signature covers:
/// `SHA-256(SIGNATURE_DOMAIN || u32_be(kind) || payload)`.
#[must_use]
pub fn signing_digest(kind: i32, payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(SIGNATURE_DOMAIN);
    // Kinds are non-negative on the wire; the two's-complement bytes keep this total anyway.
    hasher.update(kind.to_be_bytes());
    hasher.update(payload);
    hasher.finalize().into()
}

/// An object id: SHA-256 of the whole envelope bytes. Shown as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl ObjectId {
    /// The id of the envelope with these bytes.
    #[must_use]
    pub fn of(envelope_bytes: &[u8]) -> Self {
        Self(Sha256::digest(envelope_bytes).into())
    }

    /// The 32 bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex(&self.0))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// Error parsing an [`ObjectId`] from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an object id is 64 hex digits")]
pub struct ParseObjectIdError;

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 64 {
            return Err(ParseObjectIdError);
        }
        let bytes = crate::unhex(s).ok_or(ParseObjectIdError)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(&bytes);
        Ok(Self(id))
    }
}

/// An envelope that passed the structural checks (size, canonical protobuf, known kind, a valid
/// signer key, a 64-byte signature) but whose payload and signature are not checked yet. It keeps
/// the bytes exactly as received; relays store and forward those.
#[derive(Clone)]
pub struct RawEnvelope {
    bytes: Vec<u8>,
    kind: Kind,
    payload: Vec<u8>,
    signer: PublicKey,
    signature: [u8; 64],
    id: ObjectId,
}

impl RawEnvelope {
    /// Runs the structural checks on received bytes.
    ///
    /// # Errors
    /// [`EnvelopeError::TooLarge`], [`Malformed`](EnvelopeError::Malformed),
    /// [`NotCanonical`](EnvelopeError::NotCanonical), [`UnknownKind`](EnvelopeError::UnknownKind),
    /// [`InvalidSigner`](EnvelopeError::InvalidSigner) or
    /// [`InvalidSignatureLength`](EnvelopeError::InvalidSignatureLength).
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        Self::decode_with(bytes, PublicKey::from_slice)
    }

    /// [`RawEnvelope::decode`] with the signer's key decoded by `signer` (which must decide
    /// exactly as [`PublicKey::from_slice`] does; [`open_batch`] remembers its results).
    fn decode_with(
        bytes: &[u8],
        signer: impl FnOnce(&[u8]) -> Result<PublicKey, &'static str>,
    ) -> Result<Self, EnvelopeError> {
        if bytes.len() > MAX_ENVELOPE_BYTES {
            return Err(EnvelopeError::TooLarge {
                size: bytes.len(),
                max: MAX_ENVELOPE_BYTES,
            });
        }
        let decoded = pb::Envelope::decode(bytes).map_err(|e| EnvelopeError::Malformed {
            reason: e.to_string(),
        })?;
        if decoded.encoded_len() != bytes.len() || decoded.encode_to_vec() != bytes {
            return Err(EnvelopeError::NotCanonical);
        }
        let kind = match Kind::try_from(decoded.kind) {
            Ok(Kind::Unspecified) | Err(_) => {
                return Err(EnvelopeError::UnknownKind { kind: decoded.kind });
            }
            Ok(kind) => kind,
        };
        let signer =
            signer(&decoded.signer).map_err(|reason| EnvelopeError::InvalidSigner { reason })?;
        let signature: [u8; 64] = decoded.signature.as_slice().try_into().map_err(|_| {
            EnvelopeError::InvalidSignatureLength {
                len: decoded.signature.len(),
            }
        })?;
        Ok(Self {
            id: ObjectId::of(bytes),
            bytes: bytes.to_vec(),
            kind,
            payload: decoded.payload,
            signer,
            signature,
        })
    }

    /// The envelope bytes exactly as received.
    #[must_use]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Gives back the envelope bytes.
    #[must_use]
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// The payload's kind.
    #[must_use]
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The payload bytes exactly as signed.
    #[must_use]
    pub fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Who signed it.
    #[must_use]
    pub fn signer(&self) -> PublicKey {
        self.signer
    }

    /// The 64 signature bytes.
    #[must_use]
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }

    /// The object id, SHA-256 of [`bytes`](Self::bytes).
    #[must_use]
    pub fn id(&self) -> ObjectId {
        self.id
    }

    /// The digest the signature covers.
    #[must_use]
    pub fn signing_digest(&self) -> [u8; 32] {
        signing_digest(self.kind as i32, &self.payload)
    }

    /// Checks the signature with ed25519 "strict" verification (RFC 8032 §5.1.7 with canonical
    /// `S`, and small-order `R` and `A` refused). This is the normative rule.
    ///
    /// # Errors
    /// [`EnvelopeError::BadSignature`].
    pub fn verify_signature(&self) -> Result<(), EnvelopeError> {
        if self
            .signer
            .verify_digest(&self.signing_digest(), &self.signature)
        {
            Ok(())
        } else {
            Err(EnvelopeError::BadSignature)
        }
    }

    /// Decodes the payload, validates it, then verifies the signature (and, for a rating, its
    /// proof): everything [`open`] does after the structural checks.
    ///
    /// # Errors
    /// [`EnvelopeError::MalformedPayload`], [`EnvelopeError::Invalid`] or
    /// [`EnvelopeError::BadSignature`].
    pub fn open(self, ctx: &ValidationContext) -> Result<SignedObject, EnvelopeError> {
        let object = self.decode_and_validate(ctx)?;
        self.verify_signature()?;
        object.verify_proofs(&self.signer)?;
        Ok(SignedObject::new(self, object))
    }

    /// Steps 7 and 8 of the checks: the payload decoded as its kind's message and validated.
    fn decode_and_validate(&self, ctx: &ValidationContext) -> Result<Object, EnvelopeError> {
        let object = Object::decode(self.kind, &self.payload)?;
        object.validate(ctx)?;
        Ok(object)
    }

    /// Signs `payload` as an object of `kind` without decoding or validating it, and returns the
    /// envelope bytes. Test vectors and tools that need invalid objects use this; applications
    /// use [`IdentityKey::seal`].
    #[must_use]
    pub fn sign_unchecked(key: &IdentityKey, kind: i32, payload: Vec<u8>) -> Vec<u8> {
        sign_parts(key, kind, payload).1
    }
}

/// Signs and encodes; returns the signature and the canonical envelope bytes.
fn sign_parts(key: &IdentityKey, kind: i32, payload: Vec<u8>) -> ([u8; 64], Vec<u8>) {
    let signature = key.sign_digest(&signing_digest(kind, &payload));
    let bytes = pb::Envelope {
        kind,
        payload,
        signer: key.public_key().as_bytes().to_vec(),
        signature: signature.to_vec(),
    }
    .encode_to_vec();
    (signature, bytes)
}

impl fmt::Debug for RawEnvelope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawEnvelope")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .field("signer", &self.signer)
            .field("payload_len", &self.payload.len())
            .finish_non_exhaustive()
    }
}

impl PartialEq for RawEnvelope {
    fn eq(&self, other: &Self) -> bool {
        self.bytes == other.bytes
    }
}
impl Eq for RawEnvelope {}

/// Accepts an envelope: every check, in order, ending in a typed, validated, verified object.
///
/// # Errors
/// The first check that fails, as an [`EnvelopeError`] with a stable [`code`](EnvelopeError::code).
pub fn open(bytes: &[u8], ctx: &ValidationContext) -> Result<SignedObject, EnvelopeError> {
    RawEnvelope::decode(bytes)?.open(ctx)
}

/// Accepts many envelopes: for each, exactly what [`open`] returns for it alone, with the
/// signatures of those that reach step 9 checked together in batches (about a third of the cost
/// of checking them one by one; see [`PublicKey::verify_digest`](crate::PublicKey::verify_digest)
/// for why a batch decides each signature as the single check does).
#[must_use]
pub fn open_batch<B: AsRef<[u8]>>(
    envelopes: &[B],
    ctx: &ValidationContext,
) -> Vec<Result<SignedObject, EnvelopeError>> {
    let mut results: Vec<Result<SignedObject, EnvelopeError>> = Vec::with_capacity(envelopes.len());
    // Envelopes that passed steps 1–8, with their place in `results` (which holds a
    // `BadSignature` placeholder until step 9 decides).
    let mut checked: Vec<(usize, RawEnvelope, Object, [u8; 32])> = Vec::new();
    // Each distinct signer's key is decoded once (a field exponentiation); a store's
    // envelopes share theirs.
    let mut keys: std::collections::HashMap<[u8; 32], Result<PublicKey, &'static str>> =
        std::collections::HashMap::new();
    for bytes in envelopes {
        let signer = |key: &[u8]| match <[u8; 32]>::try_from(key) {
            Ok(bytes) => *keys
                .entry(bytes)
                .or_insert_with(|| PublicKey::from_slice(key)),
            Err(_) => PublicKey::from_slice(key),
        };
        let opened = RawEnvelope::decode_with(bytes.as_ref(), signer)
            .and_then(|raw| raw.decode_and_validate(ctx).map(|object| (raw, object)));
        match opened {
            Ok((raw, object)) => {
                let digest = raw.signing_digest();
                checked.push((results.len(), raw, object, digest));
                results.push(Err(EnvelopeError::BadSignature));
            }
            Err(error) => results.push(Err(error)),
        }
    }
    let items: Vec<crate::signature::Item<'_>> = checked
        .iter()
        .map(|(_, raw, _, digest)| (&raw.signer, digest, &raw.signature))
        .collect();
    let verdicts = crate::signature::verify_many(&items);
    drop(items);
    for ((index, raw, object, _), good) in checked.into_iter().zip(verdicts) {
        if good {
            results[index] = object
                .verify_proofs(&raw.signer)
                .map(|()| SignedObject::new(raw, object))
                .map_err(EnvelopeError::from);
        }
    }
    results
}

/// Verifies the signatures of many envelopes at once with batch verification: `Ok` exactly
/// when [`RawEnvelope::verify_signature`] accepts every one of them (the rule is the same, see
/// [`PublicKey::verify_digest`](crate::PublicKey::verify_digest)). It does not check rating
/// proofs; [`open_batch`] does everything [`open`] does.
///
/// # Errors
/// [`EnvelopeError::BadSignature`] if any signature in the batch fails.
pub fn verify_batch(envelopes: &[&RawEnvelope]) -> Result<(), EnvelopeError> {
    let digests: Vec<[u8; 32]> = envelopes.iter().map(|e| e.signing_digest()).collect();
    let items: Vec<crate::signature::Item<'_>> = envelopes
        .iter()
        .zip(&digests)
        .map(|(e, digest)| (&e.signer, digest, &e.signature))
        .collect();
    if crate::signature::verify_many(&items)
        .into_iter()
        .all(|good| good)
    {
        Ok(())
    } else {
        Err(EnvelopeError::BadSignature)
    }
}

impl IdentityKey {
    /// Validates `object` and signs it into an envelope.
    ///
    /// # Errors
    /// The [`ValidationError`](crate::ValidationError) that the object breaks: a signer never
    /// publishes what a verifier would refuse.
    pub fn seal(
        &self,
        object: &Object,
        ctx: &ValidationContext,
    ) -> Result<SignedObject, crate::ValidationError> {
        object.validate(ctx)?;
        object.verify_proofs(&self.public_key())?;
        let payload = object.encode_payload();
        let (signature, bytes) = sign_parts(self, object.kind() as i32, payload.clone());
        let envelope = RawEnvelope {
            id: ObjectId::of(&bytes),
            bytes,
            kind: object.kind(),
            payload,
            signer: self.public_key(),
            signature,
        };
        Ok(SignedObject::new(envelope, object.clone()))
    }
}
