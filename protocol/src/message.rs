//! Private messages: signed by the sender, sealed to the recipient (SPEC.md, "Private messages").
//!
//! A [`pb::Message`] is signed with the sender's identity key into a [`pb::SignedMessage`], and
//! that is encrypted to the recipient's identity key:
//!
//! ```text
//! E, e        = a fresh X25519 key pair for this message
//! R           = the recipient's ed25519 key in X25519 form (Montgomery u-coordinate)
//! shared      = X25519(e, R)                        (refused if all zero)
//! key         = HKDF-SHA256(salt = "souk/v1/seal\0", ikm = shared,
//!                           info = E || R || recipient_ed25519)      (32 bytes)
//! ciphertext  = XChaCha20-Poly1305(key, nonce (24 random bytes),
//!                                  aad = recipient_ed25519 || E, SignedMessage)
//! ```
//!
//! The recipient computes the same key from its identity secret. Inbox servers see only the
//! recipient and the size. The sender is known only to the recipient, who checks the signature
//! after decrypting; the recipient is inside the signed bytes, so a message cannot be re-sealed to
//! a third person as if it had been addressed to them.
//!
//! Using one ed25519 key for signing and (in its X25519 form) for this KEM is the construction
//! that libsodium's `crypto_sign_ed25519_pk_to_curve25519` and age's ssh-ed25519 recipients use;
//! Thormarker, "On using the same key pair for Ed25519 and an X25519 based KEM" (ePrint 2021/509)
//! shows that the combination stays secure. It spares a second published key, so anyone who knows
//! a person's address can write to them.

use core::fmt;

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use prost::Message as _;
use sha2::{Digest, Sha256};
use x25519_dalek::{X25519_BASEPOINT_BYTES, x25519};
use zeroize::Zeroizing;

use crate::identity::{IdentityKey, PublicKey};
use crate::limits::MAX_SEALED_MESSAGE_BYTES;
use crate::validate::{self, ValidationContext};
use crate::{MessageError, pb};

/// Domain-separation prefix of the digest a message signature covers.
pub const MESSAGE_SIGNATURE_DOMAIN: &[u8] = b"souk/v1/message\0";
/// HKDF salt of the sealing key.
pub const SEAL_DOMAIN: &[u8] = b"souk/v1/seal\0";
/// Domain-separation prefix of an order id.
pub const ORDER_ID_DOMAIN: &[u8] = b"souk/v1/order\0";
/// Domain-separation prefix of the digest that proves inbox ownership to a server.
pub const INBOX_AUTH_DOMAIN: &[u8] = b"souk/v1/inbox-auth\0";

/// Bytes a sealed message adds around its plaintext: the Poly1305 tag and the protobuf framing
/// of four fields (an upper bound).
pub const SEAL_OVERHEAD: usize = 16 + 3 * (1 + 1 + 32) + 1 + 1 + 24 + 1 + 5;

/// The digest a message signature covers: `SHA-256(MESSAGE_SIGNATURE_DOMAIN || payload)`.
#[must_use]
pub fn message_digest(payload: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(MESSAGE_SIGNATURE_DOMAIN);
    hasher.update(payload);
    hasher.finalize().into()
}

/// The id of an order: `SHA-256(ORDER_ID_DOMAIN || signed)`, where `signed` is the buyer's
/// `SignedMessage` encoding that carried the `OrderRequest`.
#[must_use]
pub fn order_id_of(signed_order: &[u8]) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(ORDER_ID_DOMAIN);
    hasher.update(signed_order);
    hasher.finalize().into()
}

/// The digest a recipient signs to show an inbox server that it holds `recipient`'s secret:
/// `SHA-256(INBOX_AUTH_DOMAIN || challenge (32) || recipient (32))`. The challenge is random,
/// issued by the server, single-use and short-lived.
#[must_use]
pub fn inbox_auth_digest(challenge: &[u8; 32], recipient: &PublicKey) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update(INBOX_AUTH_DOMAIN);
    hasher.update(challenge);
    hasher.update(recipient.as_bytes());
    hasher.finalize().into()
}

/// Whether `signature` proves that `recipient`'s owner answered `challenge` (ed25519 under the
/// protocol's rule, [`PublicKey::verify_digest`]).
#[must_use]
pub fn verify_inbox_auth(recipient: &PublicKey, challenge: &[u8; 32], signature: &[u8]) -> bool {
    let Ok(signature) = <[u8; 64]>::try_from(signature) else {
        return false;
    };
    recipient.verify_digest(&inbox_auth_digest(challenge, recipient), &signature)
}

/// The id inbox servers file a sealed message under: SHA-256 of its bytes. Shown as hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SealedId(pub [u8; 32]);

impl SealedId {
    /// The id of the sealed message with these bytes.
    #[must_use]
    pub fn of(bytes: &[u8]) -> Self {
        Self(Sha256::digest(bytes).into())
    }
}

impl fmt::Display for SealedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::hex(&self.0))
    }
}

impl fmt::Debug for SealedId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedId({self})")
    }
}

/// What an inbox server can know about a sealed message without its recipient's key: who it is
/// for, its id and its size. [`inspect_sealed`] checks everything a server can check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedHeader {
    /// The recipient.
    pub recipient: PublicKey,
    /// SHA-256 of the bytes.
    pub id: SealedId,
    /// Size in bytes.
    pub len: usize,
}

/// Checks a sealed message as a server can: size, protobuf shape, field lengths, recipient key.
///
/// # Errors
/// [`MessageError::TooLarge`], [`MessageError::Malformed`] or
/// [`MessageError::InvalidRecipient`].
pub fn inspect_sealed(bytes: &[u8]) -> Result<SealedHeader, MessageError> {
    let sealed = decode_sealed(bytes)?;
    let recipient = PublicKey::from_slice(&sealed.recipient)
        .map_err(|reason| MessageError::InvalidRecipient { reason })?;
    Ok(SealedHeader {
        recipient,
        id: SealedId::of(bytes),
        len: bytes.len(),
    })
}

fn decode_sealed(bytes: &[u8]) -> Result<pb::SealedMessage, MessageError> {
    if bytes.len() > MAX_SEALED_MESSAGE_BYTES {
        return Err(MessageError::TooLarge {
            size: bytes.len(),
            max: MAX_SEALED_MESSAGE_BYTES,
        });
    }
    let sealed = pb::SealedMessage::decode(bytes).map_err(|e| MessageError::Malformed {
        reason: e.to_string(),
    })?;
    let malformed = |reason: &str| MessageError::Malformed {
        reason: reason.to_owned(),
    };
    if sealed.ephemeral.len() != 32 {
        return Err(malformed("ephemeral must be 32 bytes"));
    }
    if sealed.nonce.len() != 24 {
        return Err(malformed("nonce must be 24 bytes"));
    }
    if sealed.ciphertext.len() < 16 {
        return Err(malformed("ciphertext is shorter than its tag"));
    }
    Ok(sealed)
}

/// A message that was decrypted (or a quoted one that was read) and whose signature and rules
/// were checked.
#[derive(Clone, PartialEq)]
pub struct OpenedMessage {
    sender: PublicKey,
    message: pb::Message,
    signed: Vec<u8>,
}

impl OpenedMessage {
    /// Who signed it.
    #[must_use]
    pub fn sender(&self) -> PublicKey {
        self.sender
    }

    /// The message.
    #[must_use]
    pub fn message(&self) -> &pb::Message {
        &self.message
    }

    /// The message, taken.
    #[must_use]
    pub fn into_message(self) -> pb::Message {
        self.message
    }

    /// The `SignedMessage` encoding, exactly as signed: what a dispute quotes.
    #[must_use]
    pub fn signed_bytes(&self) -> &[u8] {
        &self.signed
    }

    /// The order this message belongs to: its `order_id`, or for an `OrderRequest` the id the
    /// request defines ([`order_id_of`]). `None` for chat outside any order.
    #[must_use]
    pub fn order_id(&self) -> Option<[u8; 32]> {
        if matches!(self.message.body, Some(pb::message::Body::Order(_))) {
            return Some(order_id_of(&self.signed));
        }
        <[u8; 32]>::try_from(self.message.order_id.as_slice()).ok()
    }
}

impl fmt::Debug for OpenedMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The body is private; show only what a log may hold.
        f.debug_struct("OpenedMessage")
            .field("sender", &self.sender)
            .field("created_at", &self.message.created_at)
            .field("signed_len", &self.signed.len())
            .finish_non_exhaustive()
    }
}

/// Reads a `SignedMessage` encoding: decodes it, checks the signer, the strict signature and the
/// message rules. Used after decryption, and by a moderator for the messages a dispute quotes.
///
/// # Errors
/// [`MessageError::MalformedPlaintext`], [`MessageError::InvalidSigner`],
/// [`MessageError::BadSignature`] or [`MessageError::Invalid`].
pub fn read_signed_message(
    signed: &[u8],
    ctx: &ValidationContext,
) -> Result<OpenedMessage, MessageError> {
    let outer =
        pb::SignedMessage::decode(signed).map_err(|e| MessageError::MalformedPlaintext {
            reason: e.to_string(),
        })?;
    let sender = PublicKey::from_slice(&outer.signer)
        .map_err(|reason| MessageError::InvalidSigner { reason })?;
    let message = pb::Message::decode(outer.payload.as_slice()).map_err(|e| {
        MessageError::MalformedPlaintext {
            reason: e.to_string(),
        }
    })?;
    validate::message(&message, ctx)?;
    let signature =
        <[u8; 64]>::try_from(outer.signature.as_slice()).map_err(|_| MessageError::BadSignature)?;
    if !sender.verify_digest(&message_digest(&outer.payload), &signature) {
        return Err(MessageError::BadSignature);
    }
    Ok(OpenedMessage {
        sender,
        message,
        signed: signed.to_vec(),
    })
}

/// Encrypts an already signed message to `recipient` with the given one-time X25519 secret and
/// nonce. Deterministic, for test vectors; applications use [`IdentityKey::seal_message`], which
/// draws both from the operating system.
///
/// # Errors
/// [`MessageError::TooLarge`] if the result would exceed the limit, [`MessageError::Undecryptable`]
/// if `ephemeral_secret` gives an all-zero shared secret (impossible for a clamped random scalar
/// and a valid recipient, refused anyway).
pub fn seal_signed_with(
    signed: &[u8],
    recipient: &PublicKey,
    ephemeral_secret: &[u8; 32],
    nonce: &[u8; 24],
) -> Result<Vec<u8>, MessageError> {
    if signed.len() + SEAL_OVERHEAD > MAX_SEALED_MESSAGE_BYTES {
        return Err(MessageError::TooLarge {
            size: signed.len() + SEAL_OVERHEAD,
            max: MAX_SEALED_MESSAGE_BYTES,
        });
    }
    let ephemeral = x25519(*ephemeral_secret, X25519_BASEPOINT_BYTES);
    let shared = Zeroizing::new(x25519(*ephemeral_secret, recipient.to_x25519()));
    let cipher = cipher(&shared, &ephemeral, recipient)?;
    let ciphertext = cipher
        .encrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: signed,
                aad: &aad(recipient, &ephemeral),
            },
        )
        .map_err(|_| MessageError::Undecryptable)?;
    Ok(pb::SealedMessage {
        recipient: recipient.as_bytes().to_vec(),
        ephemeral: ephemeral.to_vec(),
        nonce: nonce.to_vec(),
        ciphertext,
    }
    .encode_to_vec())
}

fn aad(recipient: &PublicKey, ephemeral: &[u8; 32]) -> [u8; 64] {
    let mut aad = [0u8; 64];
    aad[..32].copy_from_slice(recipient.as_bytes());
    aad[32..].copy_from_slice(ephemeral);
    aad
}

fn cipher(
    shared: &[u8; 32],
    ephemeral: &[u8; 32],
    recipient: &PublicKey,
) -> Result<XChaCha20Poly1305, MessageError> {
    // A low-order ephemeral point gives an all-zero secret: nothing secret about it.
    if shared.iter().all(|b| *b == 0) {
        return Err(MessageError::Undecryptable);
    }
    let mut info = [0u8; 96];
    info[..32].copy_from_slice(ephemeral);
    info[32..64].copy_from_slice(&recipient.to_x25519());
    info[64..].copy_from_slice(recipient.as_bytes());
    let mut key = Zeroizing::new([0u8; 32]);
    Hkdf::<Sha256>::new(Some(SEAL_DOMAIN), shared)
        .expand(&info, key.as_mut_slice())
        .map_err(|_| MessageError::Undecryptable)?;
    XChaCha20Poly1305::new_from_slice(key.as_slice()).map_err(|_| MessageError::Undecryptable)
}

impl IdentityKey {
    /// Validates `message` and signs it: the `SignedMessage` encoding. [`Self::seal_message`]
    /// does this and encrypts; this alone is for quoting and for tests.
    ///
    /// # Errors
    /// [`MessageError::Invalid`] with the rule the message breaks.
    pub fn sign_message(
        &self,
        message: &pb::Message,
        ctx: &ValidationContext,
    ) -> Result<Vec<u8>, MessageError> {
        validate::message(message, ctx)?;
        let payload = message.encode_to_vec();
        let signature = self.sign_digest(&message_digest(&payload));
        Ok(pb::SignedMessage {
            payload,
            signer: self.public_key().as_bytes().to_vec(),
            signature: signature.to_vec(),
        }
        .encode_to_vec())
    }

    /// Validates, signs and seals `message` to its `recipient`, with a fresh one-time key and
    /// nonce. Returns the sealed bytes and the `SignedMessage` inside (which the sender keeps, for
    /// its own records and for quoting in a dispute).
    ///
    /// # Errors
    /// [`MessageError::Invalid`], [`MessageError::TooLarge`] or [`MessageError::Randomness`].
    pub fn seal_message(
        &self,
        message: &pb::Message,
        ctx: &ValidationContext,
    ) -> Result<Sealed, MessageError> {
        let signed = self.sign_message(message, ctx)?;
        let recipient = PublicKey::from_slice(&message.recipient)
            .map_err(|reason| MessageError::InvalidRecipient { reason })?;
        let mut secret = Zeroizing::new([0u8; 32]);
        let mut nonce = [0u8; 24];
        getrandom::fill(secret.as_mut_slice())
            .and_then(|()| getrandom::fill(&mut nonce))
            .map_err(|e| MessageError::Randomness {
                reason: e.to_string(),
            })?;
        let bytes = seal_signed_with(&signed, &recipient, &secret, &nonce)?;
        Ok(Sealed {
            id: SealedId::of(&bytes),
            bytes,
            signed,
        })
    }

    /// Decrypts a sealed message addressed to this key and checks it: size, shape, recipient,
    /// decryption, signer, signature, the message rules and that the signed recipient is this
    /// key.
    ///
    /// # Errors
    /// The first check that fails, as a [`MessageError`] with a stable code.
    pub fn open_message(
        &self,
        bytes: &[u8],
        ctx: &ValidationContext,
    ) -> Result<OpenedMessage, MessageError> {
        let sealed = decode_sealed(bytes)?;
        let me = self.public_key();
        if sealed.recipient.as_slice() != me.as_bytes() {
            return Err(MessageError::WrongRecipient);
        }
        let mut ephemeral = [0u8; 32];
        ephemeral.copy_from_slice(&sealed.ephemeral);
        let mut nonce = [0u8; 24];
        nonce.copy_from_slice(&sealed.nonce);
        let shared = Zeroizing::new(x25519(*self.x25519_secret(), ephemeral));
        let cipher = cipher(&shared, &ephemeral, &me)?;
        let plaintext = Zeroizing::new(
            cipher
                .decrypt(
                    &XNonce::from(nonce),
                    Payload {
                        msg: &sealed.ciphertext,
                        aad: &aad(&me, &ephemeral),
                    },
                )
                .map_err(|_| MessageError::Undecryptable)?,
        );
        let opened = read_signed_message(&plaintext, ctx)?;
        if opened.message.recipient.as_slice() != me.as_bytes() {
            return Err(MessageError::RecipientMismatch);
        }
        Ok(opened)
    }

    /// Answers an inbox server's challenge: the signature over [`inbox_auth_digest`].
    #[must_use]
    pub fn sign_inbox_challenge(&self, challenge: &[u8; 32]) -> [u8; 64] {
        self.sign_digest(&inbox_auth_digest(challenge, &self.public_key()))
    }
}

/// A freshly sealed message.
#[derive(Clone)]
pub struct Sealed {
    /// Its id at inbox servers.
    pub id: SealedId,
    /// The `SealedMessage` bytes to post.
    pub bytes: Vec<u8>,
    /// The `SignedMessage` inside, for the sender's records.
    pub signed: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("id", &self.id)
            .field("len", &self.bytes.len())
            .finish_non_exhaustive()
    }
}
