//! Typed objects, the envelope they arrived in, and which version of a replaceable object wins.

use core::cmp::Ordering;

use prost::Message;
use sha2::{Digest, Sha256};

use crate::envelope::{ObjectId, RawEnvelope};
use crate::identity::{IdentityKey, PublicKey};
use crate::validate::ValidationContext;
use crate::{EnvelopeError, Kind, ValidationError, pb};

/// A decoded payload of one of the known kinds.
#[derive(Debug, Clone, PartialEq)]
pub enum Object {
    /// A store profile.
    Profile(pb::Profile),
    /// A listing.
    Listing(pb::Listing),
    /// A rating.
    Rating(pb::Rating),
    /// A listing's withdrawal.
    Tombstone(pb::Tombstone),
}

impl Object {
    /// The envelope kind of this object.
    #[must_use]
    pub fn kind(&self) -> Kind {
        match self {
            Self::Profile(_) => Kind::Profile,
            Self::Listing(_) => Kind::Listing,
            Self::Rating(_) => Kind::Rating,
            Self::Tombstone(_) => Kind::Tombstone,
        }
    }

    /// The object's `created_at`.
    #[must_use]
    pub fn created_at(&self) -> u64 {
        match self {
            Self::Profile(p) => p.created_at,
            Self::Listing(l) => l.created_at,
            Self::Rating(r) => r.created_at,
            Self::Tombstone(t) => t.created_at,
        }
    }

    /// The protobuf payload bytes to sign.
    #[must_use]
    pub fn encode_payload(&self) -> Vec<u8> {
        match self {
            Self::Profile(m) => m.encode_to_vec(),
            Self::Listing(m) => m.encode_to_vec(),
            Self::Rating(m) => m.encode_to_vec(),
            Self::Tombstone(m) => m.encode_to_vec(),
        }
    }

    /// Decodes a payload as the message `kind` names. Unknown fields are skipped here; the
    /// original bytes, unknown fields included, stay in the envelope.
    ///
    /// # Errors
    /// [`EnvelopeError::MalformedPayload`] if the bytes are not that message;
    /// [`EnvelopeError::UnknownKind`] for [`Kind::Unspecified`].
    pub fn decode(kind: Kind, payload: &[u8]) -> Result<Self, EnvelopeError> {
        fn malformed(kind: Kind) -> impl Fn(prost::DecodeError) -> EnvelopeError {
            move |e| EnvelopeError::MalformedPayload {
                kind,
                reason: e.to_string(),
            }
        }
        Ok(match kind {
            Kind::Profile => Self::Profile(pb::Profile::decode(payload).map_err(malformed(kind))?),
            Kind::Listing => Self::Listing(pb::Listing::decode(payload).map_err(malformed(kind))?),
            Kind::Rating => Self::Rating(pb::Rating::decode(payload).map_err(malformed(kind))?),
            Kind::Tombstone => {
                Self::Tombstone(pb::Tombstone::decode(payload).map_err(malformed(kind))?)
            }
            Kind::Unspecified => return Err(EnvelopeError::UnknownKind { kind: 0 }),
        })
    }

    /// Checks every rule of SPEC.md that needs no signature check.
    ///
    /// # Errors
    /// The first rule broken.
    pub fn validate(&self, ctx: &ValidationContext) -> Result<(), ValidationError> {
        match self {
            Self::Profile(p) => crate::validate::profile(p, ctx),
            Self::Listing(l) => crate::validate::listing(l, ctx),
            Self::Rating(r) => crate::validate::rating(r, ctx),
            Self::Tombstone(t) => crate::validate::tombstone(t, ctx),
        }
    }

    /// Checks signatures inside the object (a rating's permit), given the envelope's signer.
    ///
    /// # Errors
    /// [`ValidationError::BadRatingProof`].
    pub fn verify_proofs(&self, signer: &PublicKey) -> Result<(), ValidationError> {
        match self {
            Self::Rating(r) => verify_rating_proof(r, signer),
            Self::Profile(_) | Self::Listing(_) | Self::Tombstone(_) => Ok(()),
        }
    }
}

/// An accepted object: the envelope exactly as received, and its validated, verified payload.
#[derive(Debug, Clone)]
pub struct SignedObject {
    envelope: RawEnvelope,
    object: Object,
}

impl SignedObject {
    pub(crate) fn new(envelope: RawEnvelope, object: Object) -> Self {
        Self { envelope, object }
    }

    /// The envelope, with its original bytes.
    #[must_use]
    pub fn envelope(&self) -> &RawEnvelope {
        &self.envelope
    }

    /// The typed payload.
    #[must_use]
    pub fn object(&self) -> &Object {
        &self.object
    }

    /// Splits into envelope and payload.
    #[must_use]
    pub fn into_parts(self) -> (RawEnvelope, Object) {
        (self.envelope, self.object)
    }

    /// The object id.
    #[must_use]
    pub fn id(&self) -> ObjectId {
        self.envelope.id()
    }

    /// The signer.
    #[must_use]
    pub fn signer(&self) -> PublicKey {
        self.envelope.signer()
    }

    /// The slot this object occupies; versions in the same slot replace each other.
    #[must_use]
    pub fn replace_key(&self) -> ReplaceKey {
        let slot = match &self.object {
            Object::Profile(_) => Slot::Profile,
            Object::Listing(l) => Slot::Listing {
                slug: l.slug.clone(),
            },
            Object::Tombstone(t) => Slot::Listing {
                slug: t.slug.clone(),
            },
            Object::Rating(r) => Slot::Rating {
                order_id: r.order_id.as_slice().try_into().unwrap_or([0; 32]),
                role: r.role(),
            },
        };
        ReplaceKey {
            signer: self.signer(),
            slot,
        }
    }

    /// What decides between this and another version in the same slot.
    #[must_use]
    pub fn version(&self) -> Version {
        Version {
            created_at: self.object.created_at(),
            tombstone: matches!(self.object, Object::Tombstone(_)),
            id: self.id(),
        }
    }
}

/// Which replaceable slot an object fills.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Slot {
    /// The signer's profile.
    Profile,
    /// The signer's listing with this slug (listings and tombstones compete here).
    Listing {
        /// The slug.
        slug: String,
    },
    /// The signer's rating of one order in one role.
    Rating {
        /// The order id.
        order_id: [u8; 32],
        /// Seller or moderator.
        role: pb::RatingRole,
    },
}

/// A signer and a slot: at most one object per key is current.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplaceKey {
    /// Whose object.
    pub signer: PublicKey,
    /// Which slot.
    pub slot: Slot,
}

/// What [`compare_versions`] decides on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version {
    /// The object's `created_at`.
    pub created_at: u64,
    /// Whether the object is a tombstone.
    pub tombstone: bool,
    /// The object id.
    pub id: ObjectId,
}

/// Orders two versions of the same slot: `Greater` means `a` wins over `b`.
///
/// The later `created_at` wins; at equal times a tombstone wins over a listing (withdrawal is
/// the safe outcome); then the smaller object id wins. The order is total, so every server picks
/// the same winner whatever order versions arrive in. Equal ids are the same object: `Equal`.
#[must_use]
pub fn compare_versions(a: &Version, b: &Version) -> Ordering {
    a.created_at
        .cmp(&b.created_at)
        .then(a.tombstone.cmp(&b.tombstone))
        .then(b.id.cmp(&a.id))
}

/// Domain-separation prefix of the rating-permit digest.
pub const RATING_PERMIT_DOMAIN: &[u8] = b"souk/v1/rating-permit\0";

/// The digest a rating permit signs:
/// `SHA-256(RATING_PERMIT_DOMAIN || order_id (32) || rating_key (32) || subject (32) || u32_be(role))`.
#[must_use]
pub fn rating_permit_digest(
    order_id: &[u8; 32],
    rating_key: &PublicKey,
    subject: &PublicKey,
    role: pb::RatingRole,
) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(RATING_PERMIT_DOMAIN);
    hasher.update(order_id);
    hasher.update(rating_key.as_bytes());
    hasher.update(subject.as_bytes());
    hasher.update((role as i32).to_be_bytes());
    hasher.finalize().into()
}

impl IdentityKey {
    /// Signs a permit that lets `rating_key` rate this key's owner in `role` for `order_id`. A
    /// seller gives this to the buyer when confirming an order.
    #[must_use]
    pub fn sign_rating_permit(
        &self,
        order_id: &[u8; 32],
        rating_key: &PublicKey,
        role: pb::RatingRole,
    ) -> pb::RatingProof {
        let digest = rating_permit_digest(order_id, rating_key, &self.public_key(), role);
        pb::RatingProof {
            permit_signer: self.public_key().as_bytes().to_vec(),
            permit_signature: self.sign_digest(&digest).to_vec(),
        }
    }
}

fn verify_rating_proof(rating: &pb::Rating, signer: &PublicKey) -> Result<(), ValidationError> {
    let bad = |reason| ValidationError::BadRatingProof { reason };
    let proof = rating.proof.as_ref().ok_or(bad("missing"))?;
    let subject =
        PublicKey::from_slice(&rating.subject).map_err(|_| bad("subject is not a key"))?;
    let permit_signer = PublicKey::from_slice(&proof.permit_signer)
        .map_err(|_| bad("permit signer is not a key"))?;
    if permit_signer != subject {
        return Err(bad("the permit must be signed by the rated party"));
    }
    let order_id: &[u8; 32] = rating
        .order_id
        .as_slice()
        .try_into()
        .map_err(|_| bad("order id is not 32 bytes"))?;
    let signature: &[u8; 64] = proof
        .permit_signature
        .as_slice()
        .try_into()
        .map_err(|_| bad("permit signature is not 64 bytes"))?;
    let digest = rating_permit_digest(order_id, signer, &subject, rating.role());
    if permit_signer.verify_digest(&digest, signature) {
        Ok(())
    } else {
        Err(bad("permit signature does not verify"))
    }
}
