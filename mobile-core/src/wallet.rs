//! The [`Wallet`]: one person's keys, held in memory only, and the signing of drafts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use souk_protocol::{
    IdentityError, IdentityKey, Keychain, Mnemonic, Object, Seed, SignedObject, ValidationContext,
    WordCount, pb,
};
use zeroize::Zeroizing;

use crate::drafts::{ListingDraft, ProfileDraft};
use crate::error::WalletError;

/// A signed envelope, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct SignedEnvelope {
    /// Object id: SHA-256 of `bytes`, 64 hex digits.
    pub id: String,
    /// The envelope bytes (protobuf), exactly as published (base64 in JSON).
    #[serde(serialize_with = "crate::base64_bytes")]
    pub bytes: Vec<u8>,
    /// `profile`, `listing` or `tombstone`.
    pub kind: String,
    /// The signer's address (`souk1…`).
    pub signer: String,
    /// Unix time stamped into the object.
    pub created_at: u64,
}

impl SignedEnvelope {
    pub(crate) fn from_sealed(sealed: &SignedObject, kind: &str) -> Self {
        Self {
            id: sealed.id().to_string(),
            bytes: sealed.envelope().bytes().to_vec(),
            kind: kind.into(),
            signer: sealed.signer().to_address(),
            created_at: sealed.object().created_at(),
        }
    }
}

/// One person's keys. Made from a recovery phrase or from the seed the app keeps in the
/// platform's key store; holds them in memory only and never writes them anywhere.
///
/// Versions signed by one `Wallet` for the same slot (the profile, or one listing slug) get
/// strictly increasing `created_at` stamps, so a quick edit always replaces the version before
/// it, even within one second.
#[derive(uniffi::Object)]
pub struct Wallet {
    mnemonic: Option<Mnemonic>,
    keychain: Keychain,
    identity: IdentityKey,
    stamps: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Wallet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wallet")
            .field("identity", &self.identity.public_key().to_address())
            .finish_non_exhaustive()
    }
}

fn identity_error(e: IdentityError) -> WalletError {
    match e {
        IdentityError::Randomness { reason } => WalletError::Randomness { reason },
        other => WalletError::InvalidMnemonic {
            reason: other.to_string(),
        },
    }
}

fn unix_now() -> u64 {
    ValidationContext::now().now
}

impl Wallet {
    fn from_keychain(mnemonic: Option<Mnemonic>, keychain: Keychain) -> Self {
        let identity = keychain.identity();
        Self {
            mnemonic,
            keychain,
            identity,
            stamps: Mutex::new(HashMap::new()),
        }
    }

    /// The keychain, for Rust callers that derive further keys (escrow, payout).
    #[must_use]
    pub fn keychain(&self) -> &Keychain {
        &self.keychain
    }

    /// Signs the object `build` makes for `slot`, stamped `at` if given, else with the clock
    /// but always later than the last stamp this wallet gave the same slot. The stamp is
    /// remembered only when signing succeeds; the lock makes concurrent edits of one slot
    /// take turns.
    fn sign_slot(
        &self,
        slot: &str,
        at: Option<u64>,
        kind: &str,
        build: impl FnOnce(u64) -> Result<Object, WalletError>,
    ) -> Result<SignedEnvelope, WalletError> {
        let mut stamps = self.stamps.lock().unwrap_or_else(PoisonError::into_inner);
        let created_at = match (at, stamps.get(slot)) {
            (Some(t), _) => t,
            (None, Some(last)) => unix_now().max(last + 1),
            (None, None) => unix_now(),
        };
        let object = build(created_at)?;
        let remembered = stamps.get(slot).copied().unwrap_or(0).max(created_at);
        // Checked against the clock, as every receiver will: a stamp pushed a few seconds
        // ahead by quick edits is well within the allowed skew.
        let sealed = self.identity.seal(&object, &ValidationContext::now())?;
        stamps.insert(slot.to_owned(), remembered);
        Ok(SignedEnvelope::from_sealed(&sealed, kind))
    }

    fn listing_at(
        &self,
        draft: &ListingDraft,
        at: Option<u64>,
    ) -> Result<SignedEnvelope, WalletError> {
        self.sign_slot(&format!("listing/{}", draft.slug), at, "listing", |t| {
            Ok(Object::Listing(draft.to_wire(t)?))
        })
    }
}

#[uniffi::export]
impl Wallet {
    /// A new wallet with a fresh 12- or 24-word recovery phrase from the system's random
    /// number generator. Show the phrase to the person (`export_mnemonic`) and store it in the
    /// platform key store before publishing anything.
    ///
    /// # Errors
    /// [`WalletError::InvalidMnemonic`] for a word count other than 12 or 24;
    /// [`WalletError::Randomness`] if the system cannot give random bytes.
    #[uniffi::constructor]
    pub fn generate(word_count: u8, passphrase: String) -> Result<Arc<Self>, WalletError> {
        let words = match word_count {
            12 => WordCount::Words12,
            24 => WordCount::Words24,
            n => {
                return Err(WalletError::InvalidMnemonic {
                    reason: format!("a new phrase has 12 or 24 words, not {n}"),
                });
            }
        };
        let passphrase = Zeroizing::new(passphrase);
        let mnemonic = Mnemonic::generate(words).map_err(identity_error)?;
        let keychain = Keychain::from_mnemonic(&mnemonic, &passphrase);
        Ok(Arc::new(Self::from_keychain(Some(mnemonic), keychain)))
    }

    /// The wallet of a recovery phrase (12 or 24 English BIP 39 words) and optional BIP 39
    /// passphrase (empty for none).
    ///
    /// # Errors
    /// [`WalletError::InvalidMnemonic`] saying what is wrong (word count, an unknown word, the
    /// checksum), never repeating the phrase.
    #[uniffi::constructor]
    pub fn restore(mnemonic: String, passphrase: String) -> Result<Arc<Self>, WalletError> {
        let mnemonic = Zeroizing::new(mnemonic);
        let passphrase = Zeroizing::new(passphrase);
        let mnemonic = Mnemonic::parse(&mnemonic).map_err(identity_error)?;
        let keychain = Keychain::from_mnemonic(&mnemonic, &passphrase);
        Ok(Arc::new(Self::from_keychain(Some(mnemonic), keychain)))
    }

    /// The wallet of a 64-byte BIP 39 seed that the app keeps in the platform key store.
    ///
    /// # Errors
    /// [`WalletError::InvalidSeed`] if it is not 64 bytes.
    #[uniffi::constructor]
    pub fn from_seed(seed: Vec<u8>) -> Result<Arc<Self>, WalletError> {
        let seed = Zeroizing::new(seed);
        let bytes: [u8; 64] = seed
            .as_slice()
            .try_into()
            .map_err(|_| WalletError::InvalidSeed {
                length: u32::try_from(seed.len()).unwrap_or(u32::MAX),
            })?;
        Ok(Arc::new(Self::from_keychain(
            None,
            Keychain::new(Seed::from_bytes(bytes)),
        )))
    }

    /// The recovery phrase, for the one screen that shows it to its owner. The only way a
    /// secret leaves the core.
    ///
    /// # Errors
    /// [`WalletError::NoMnemonic`] for a wallet made from a seed.
    pub fn export_mnemonic(&self) -> Result<String, WalletError> {
        self.mnemonic
            .as_ref()
            .map(|m| m.phrase().to_string())
            .ok_or(WalletError::NoMnemonic)
    }

    /// The identity public key as an address (`souk1…`, 63 characters): the store's address.
    #[must_use]
    pub fn identity_address(&self) -> String {
        self.identity.public_key().to_address()
    }

    /// The identity public key as 64 hex digits.
    #[must_use]
    pub fn identity_hex(&self) -> String {
        self.identity.public_key().to_hex()
    }

    /// The moderation account's extended public key for `network` (`bitcoin`, `testnet`,
    /// `signet` or `regtest`): what a moderator puts in its offer's `escrow_xpub`, so buyers and
    /// sellers derive its escrow key of each order (SPEC.md, "Keys").
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] (field `network`) for an unknown network.
    pub fn moderation_xpub(&self, network: String) -> Result<String, WalletError> {
        let invalid = |detail: String| WalletError::InvalidDraft {
            code: "bad_format".into(),
            field: "network".into(),
            detail,
        };
        let net = souk_protocol::order::parse_network(&network)
            .ok_or_else(|| invalid(format!("unknown network {network:.20}")))?;
        self.keychain
            .moderation_xpub(net)
            .map(|x| x.to_string())
            .map_err(|e| invalid(e.to_string()))
    }

    /// Signs a store profile, stamped with the current time.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] naming the field that breaks a protocol rule.
    pub fn sign_profile(&self, draft: ProfileDraft) -> Result<SignedEnvelope, WalletError> {
        self.sign_slot("profile", None, "profile", |t| {
            Ok(Object::Profile(draft.to_wire(t)?))
        })
    }

    /// Signs a store profile with an explicit `created_at` (Unix seconds), e.g. one second
    /// after the version a server holds, so that an edit replaces it even within a second.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] naming the field that breaks a protocol rule, including a
    /// time too far in the future or before the protocol's epoch.
    pub fn sign_profile_at(
        &self,
        draft: ProfileDraft,
        created_at: u64,
    ) -> Result<SignedEnvelope, WalletError> {
        self.sign_slot("profile", Some(created_at), "profile", |t| {
            Ok(Object::Profile(draft.to_wire(t)?))
        })
    }

    /// Signs a listing, stamped with the current time.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] naming the field that breaks a protocol rule.
    pub fn sign_listing(&self, draft: ListingDraft) -> Result<SignedEnvelope, WalletError> {
        self.listing_at(&draft, None)
    }

    /// Signs a listing with an explicit `created_at` (Unix seconds): for reproducible
    /// envelopes in tests and for re-signing a saved version.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] naming the field that breaks a protocol rule, including a
    /// time too far in the future or before the protocol's epoch.
    pub fn sign_listing_at(
        &self,
        draft: ListingDraft,
        created_at: u64,
    ) -> Result<SignedEnvelope, WalletError> {
        self.listing_at(&draft, Some(created_at))
    }

    /// Signs a withdrawal of the listing `slug`: servers remove it from search and refuse
    /// older versions of it.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] for a bad slug or an over-long reason.
    pub fn sign_tombstone(
        &self,
        slug: String,
        reason: String,
    ) -> Result<SignedEnvelope, WalletError> {
        self.tombstone_at(slug, reason, None)
    }

    /// Signs a withdrawal with an explicit `created_at`, e.g. one second after the version a
    /// server holds, so that it wins even when that version was stamped ahead of the clock.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] for a bad slug, an over-long reason, or a bad time.
    pub fn sign_tombstone_at(
        &self,
        slug: String,
        reason: String,
        created_at: u64,
    ) -> Result<SignedEnvelope, WalletError> {
        self.tombstone_at(slug, reason, Some(created_at))
    }
}

impl Wallet {
    fn tombstone_at(
        &self,
        slug: String,
        reason: String,
        at: Option<u64>,
    ) -> Result<SignedEnvelope, WalletError> {
        self.sign_slot(&format!("listing/{slug}"), at, "tombstone", |created_at| {
            Ok(Object::Tombstone(pb::Tombstone {
                created_at,
                slug: slug.clone(),
                reason,
            }))
        })
    }
}
