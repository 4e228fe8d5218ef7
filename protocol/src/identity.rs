//! Mnemonics, key derivation and identity addresses.
//!
//! One English BIP 39 mnemonic (12 or 24 words, optional passphrase) gives a 64-byte seed, and
//! from it every key a person needs (SPEC.md, "Keys"):
//!
//! | key | curve, scheme | path |
//! |---|---|---|
//! | identity | ed25519, SLIP-10 | `m/1397708107'/0'/0'` |
//! | per-order rating key `i` | ed25519, SLIP-10 | `m/1397708107'/2'/i'` |
//! | per-order escrow key `i` | secp256k1, BIP 32 | `m/1397708107'/1'/coin'/0'/i` |
//! | payout / refund address `i` | secp256k1, BIP 32 (BIP 84) | `m/84'/coin'/0'/0/i` |
//!
//! `1397708107` is `0x534F554B`, the ASCII bytes of "SOUK"; `coin` is 0 on mainnet and 1 on
//! every test network (SLIP-44). Payouts use the standard BIP 84 account so that any ordinary
//! wallet restored from the same mnemonic finds the money; escrow keys live under Souk's own
//! purpose so that no wallet ever hands them out as ordinary receive addresses.

use core::fmt;
use core::str::FromStr;

use bitcoin::bech32::{self, Bech32m, Hrp, primitives::decode::CheckedHrpstring};
use bitcoin::bip32::{ChildNumber, Xpriv, Xpub};
use bitcoin::secp256k1::{self, Secp256k1};
use bitcoin::{Address, CompressedPublicKey, Network};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha512;
use zeroize::Zeroizing;

use crate::IdentityError;

/// The BIP 43 purpose of Souk's own derivation paths: `0x534F554B`, "SOUK" in ASCII.
pub const SOUK_PURPOSE: u32 = 0x534F_554B;
/// Branch under [`SOUK_PURPOSE`] for the identity key.
pub const IDENTITY_BRANCH: u32 = 0;
/// Branch under [`SOUK_PURPOSE`] for per-order escrow keys.
pub const ESCROW_BRANCH: u32 = 1;
/// Account of the escrow branch whose keys a moderator uses, one per moderated order.
pub const MODERATION_ACCOUNT: u32 = 1;
/// Branch under [`SOUK_PURPOSE`] for per-order rating keys.
pub const RATING_BRANCH: u32 = 2;
/// The BIP 84 purpose used for payout and refund addresses.
pub const PAYOUT_PURPOSE: u32 = 84;
/// Human-readable part of the text form of an identity public key.
pub const ADDRESS_HRP: &str = "souk";

const HARDENED: u32 = 0x8000_0000;

/// How many words a new mnemonic has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WordCount {
    /// 12 words, 128 bits of entropy.
    Words12,
    /// 24 words, 256 bits of entropy.
    Words24,
}

impl WordCount {
    /// Number of words.
    #[must_use]
    pub fn words(self) -> usize {
        match self {
            Self::Words12 => 12,
            Self::Words24 => 24,
        }
    }

    fn entropy_len(self) -> usize {
        match self {
            Self::Words12 => 16,
            Self::Words24 => 32,
        }
    }
}

/// An English BIP 39 mnemonic of 12 or 24 words. Its `Debug` output never shows the words.
#[derive(Clone, PartialEq, Eq)]
pub struct Mnemonic {
    inner: bip39::Mnemonic,
}

impl Mnemonic {
    /// A new mnemonic from the operating system's random number generator.
    ///
    /// # Errors
    /// [`IdentityError::Randomness`] if the system RNG fails.
    pub fn generate(words: WordCount) -> Result<Self, IdentityError> {
        let mut entropy = Zeroizing::new([0u8; 32]);
        let entropy = &mut entropy[..words.entropy_len()];
        getrandom::fill(entropy).map_err(|e| IdentityError::Randomness {
            reason: e.to_string(),
        })?;
        Self::from_entropy(entropy)
    }

    /// The mnemonic that encodes `entropy` (16 bytes for 12 words, 32 bytes for 24).
    ///
    /// # Errors
    /// [`IdentityError::InvalidEntropyLength`] for any other length.
    pub fn from_entropy(entropy: &[u8]) -> Result<Self, IdentityError> {
        if entropy.len() != 16 && entropy.len() != 32 {
            return Err(IdentityError::InvalidEntropyLength { len: entropy.len() });
        }
        bip39::Mnemonic::from_entropy(entropy)
            .map(|inner| Self { inner })
            .map_err(|e| IdentityError::InvalidMnemonic {
                reason: e.to_string(),
            })
    }

    /// Restores a mnemonic from its words. Case, surrounding and repeated whitespace and Unicode
    /// normalisation do not matter.
    ///
    /// # Errors
    /// [`IdentityError::InvalidMnemonic`] if the phrase is not 12 or 24 English BIP 39 words
    /// with a correct checksum. The error never repeats the phrase.
    pub fn parse(phrase: &str) -> Result<Self, IdentityError> {
        let normalized = Zeroizing::new(
            phrase
                .split_whitespace()
                .map(str::to_lowercase)
                .collect::<Vec<_>>()
                .join(" "),
        );
        let words = normalized.split(' ').filter(|w| !w.is_empty()).count();
        if words != 12 && words != 24 {
            return Err(IdentityError::InvalidMnemonic {
                reason: format!("expected 12 or 24 words, got {words}"),
            });
        }
        bip39::Mnemonic::parse_in(bip39::Language::English, normalized.as_str())
            .map(|inner| Self { inner })
            .map_err(|e| IdentityError::InvalidMnemonic {
                reason: redact_bip39_error(&e),
            })
    }

    /// The words, separated by single spaces.
    #[must_use]
    pub fn phrase(&self) -> Zeroizing<String> {
        Zeroizing::new(self.inner.to_string())
    }

    /// How many words the mnemonic has.
    #[must_use]
    pub fn word_count(&self) -> WordCount {
        if self.inner.word_count() == 24 {
            WordCount::Words24
        } else {
            WordCount::Words12
        }
    }

    /// The BIP 39 seed: PBKDF2-HMAC-SHA512 of the phrase, salted with `"mnemonic" + passphrase`,
    /// 2048 rounds.
    #[must_use]
    pub fn to_seed(&self, passphrase: &str) -> Seed {
        Seed(Zeroizing::new(self.inner.to_seed(passphrase)))
    }
}

impl fmt::Debug for Mnemonic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Mnemonic({} words, redacted)", self.inner.word_count())
    }
}

fn redact_bip39_error(e: &bip39::Error) -> String {
    match e {
        bip39::Error::UnknownWord(index) => {
            format!("word {} is not in the English list", index + 1)
        }
        bip39::Error::InvalidChecksum => "the checksum does not match; check the words".into(),
        bip39::Error::BadWordCount(n) => format!("expected 12 or 24 words, got {n}"),
        other => format!("{other:?}")
            .split('(')
            .next()
            .unwrap_or("invalid")
            .to_string(),
    }
}

/// A 64-byte BIP 39 seed. Zeroed when dropped; its `Debug` output is redacted.
#[derive(Clone)]
pub struct Seed(Zeroizing<[u8; 64]>);

impl Seed {
    /// Wraps a seed that the platform kept (for example in Android Keystore).
    #[must_use]
    pub fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The seed's bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

impl fmt::Debug for Seed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Seed(redacted)")
    }
}

/// Derives every key of one person from their seed. See the module documentation for the paths.
/// Cloning copies the seed (zeroed on drop in every copy).
#[derive(Clone)]
pub struct Keychain {
    seed: Seed,
    secp: Secp256k1<secp256k1::All>,
}

impl fmt::Debug for Keychain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keychain")
            .field("identity", &self.identity().public_key())
            .finish_non_exhaustive()
    }
}

impl Keychain {
    /// The keychain of a seed.
    #[must_use]
    pub fn new(seed: Seed) -> Self {
        Self {
            seed,
            secp: Secp256k1::new(),
        }
    }

    /// The keychain of a mnemonic and passphrase (use `""` for none).
    #[must_use]
    pub fn from_mnemonic(mnemonic: &Mnemonic, passphrase: &str) -> Self {
        Self::new(mnemonic.to_seed(passphrase))
    }

    /// The identity key, `m/1397708107'/0'/0'` by SLIP-10 for ed25519.
    #[must_use]
    pub fn identity(&self) -> IdentityKey {
        let secret = slip10_ed25519(self.seed.as_bytes(), &[SOUK_PURPOSE, IDENTITY_BRANCH, 0]);
        IdentityKey::from_secret_bytes(&secret)
    }

    /// The rating key of the order with rating index `index`, `m/1397708107'/2'/index'`.
    ///
    /// # Errors
    /// [`IdentityError::IndexOutOfRange`] if `index >= 2^31`.
    pub fn rating_key(&self, index: u32) -> Result<IdentityKey, IdentityError> {
        check_index(index)?;
        let secret = slip10_ed25519(self.seed.as_bytes(), &[SOUK_PURPOSE, RATING_BRANCH, index]);
        Ok(IdentityKey::from_secret_bytes(&secret))
    }

    fn master_xpriv(&self, network: Network) -> Result<Xpriv, IdentityError> {
        Xpriv::new_master(network, self.seed.as_bytes()).map_err(derivation_error)
    }

    fn derive_xpriv(&self, network: Network, path: &[ChildNumber]) -> Result<Xpriv, IdentityError> {
        self.master_xpriv(network)?
            .derive_priv(&self.secp, &path)
            .map_err(derivation_error)
    }

    /// `m/1397708107'/1'/coin'/account'`: account 0 holds a person's own escrow keys,
    /// [`MODERATION_ACCOUNT`] the keys it uses as a moderator.
    fn escrow_account_path(network: Network, account: u32) -> [ChildNumber; 4] {
        [
            hardened(SOUK_PURPOSE),
            hardened(ESCROW_BRANCH),
            hardened(coin_type(network)),
            hardened(account),
        ]
    }

    /// The key pair at `m/1397708107'/1'/coin'/account'/index`.
    fn escrow_account_key(
        &self,
        network: Network,
        account: u32,
        index: u32,
    ) -> Result<EscrowKey, IdentityError> {
        let mut path = Self::escrow_account_path(network, account).to_vec();
        path.push(ChildNumber::Normal { index });
        let secret = self.derive_xpriv(network, &path)?.private_key;
        let public =
            CompressedPublicKey(secp256k1::PublicKey::from_secret_key(&self.secp, &secret));
        Ok(EscrowKey {
            index,
            secret,
            public,
        })
    }

    /// The extended public key of the escrow account, `m/1397708107'/1'/coin'/0'`.
    ///
    /// # Errors
    /// [`IdentityError::Derivation`] in the negligible case of an invalid child key.
    pub fn escrow_xpub(&self, network: Network) -> Result<Xpub, IdentityError> {
        let xpriv = self.derive_xpriv(network, &Self::escrow_account_path(network, 0))?;
        Ok(Xpub::from_priv(&self.secp, &xpriv))
    }

    /// The escrow key of the order with escrow index `index`, `m/1397708107'/1'/coin'/0'/index`.
    /// A wallet hands out each index once, in order, and persists the next index before it
    /// reveals the key (see [`EscrowIndexCursor`]).
    ///
    /// # Errors
    /// [`IdentityError::IndexOutOfRange`] if `index >= 2^31`; [`IdentityError::Derivation`] in
    /// the negligible case of an invalid child key.
    pub fn escrow_key(&self, network: Network, index: u32) -> Result<EscrowKey, IdentityError> {
        check_index(index)?;
        self.escrow_account_key(network, 0, index)
    }

    /// The extended public key of the moderation account, `m/1397708107'/1'/coin'/1'`, which a
    /// moderator publishes in its offer (`ModeratorOffer.escrow_xpub`).
    ///
    /// # Errors
    /// [`IdentityError::Derivation`] in the negligible case of an invalid child key.
    pub fn moderation_xpub(&self, network: Network) -> Result<Xpub, IdentityError> {
        let xpriv = self.derive_xpriv(
            network,
            &Self::escrow_account_path(network, MODERATION_ACCOUNT),
        )?;
        Ok(Xpub::from_priv(&self.secp, &xpriv))
    }

    /// The moderator's escrow key for the order `order_id`:
    /// `m/1397708107'/1'/coin'/1'/i` with `i =` [`moderation_index`]`(order_id)`. Its public key
    /// equals [`moderation_key_from_xpub`] of [`Self::moderation_xpub`].
    ///
    /// # Errors
    /// [`IdentityError::Derivation`] in the negligible case of an invalid child key.
    pub fn moderation_key(
        &self,
        network: Network,
        order_id: &[u8; 32],
    ) -> Result<EscrowKey, IdentityError> {
        self.escrow_account_key(network, MODERATION_ACCOUNT, moderation_index(order_id))
    }

    /// The payout (and refund) address with index `index`: native SegWit (P2WPKH) at the BIP 84
    /// receive path `m/84'/coin'/0'/0/index`.
    ///
    /// # Errors
    /// [`IdentityError::IndexOutOfRange`] if `index >= 2^31`; [`IdentityError::Derivation`] in
    /// the negligible case of an invalid child key.
    pub fn payout_address(&self, network: Network, index: u32) -> Result<Address, IdentityError> {
        check_index(index)?;
        let path = [
            hardened(PAYOUT_PURPOSE),
            hardened(coin_type(network)),
            hardened(0),
            ChildNumber::Normal { index: 0 },
            ChildNumber::Normal { index },
        ];
        let xpriv = self.derive_xpriv(network, &path)?;
        let public = CompressedPublicKey(secp256k1::PublicKey::from_secret_key(
            &self.secp,
            &xpriv.private_key,
        ));
        Ok(Address::p2wpkh(&public, network))
    }
}

/// The moderation index of an order: its id's first four bytes, big-endian, with the top bit
/// cleared (a non-hardened BIP 32 index).
#[must_use]
pub fn moderation_index(order_id: &[u8; 32]) -> u32 {
    u32::from_be_bytes([order_id[0], order_id[1], order_id[2], order_id[3]]) & 0x7fff_ffff
}

/// A moderator's escrow public key for the order `order_id`, from the xpub in its offer (what a
/// buyer and a seller compute; the moderator derives the same with [`Keychain::moderation_key`]).
///
/// # Errors
/// [`IdentityError::InvalidAddress`] if `xpub` does not parse; [`IdentityError::Derivation`] in
/// the negligible case of an invalid child key.
pub fn moderation_key_from_xpub(
    xpub: &str,
    order_id: &[u8; 32],
) -> Result<CompressedPublicKey, IdentityError> {
    let xpub: Xpub = xpub.parse().map_err(|_| IdentityError::InvalidAddress {
        reason: "not a BIP 32 extended public key".into(),
    })?;
    let secp = Secp256k1::verification_only();
    let child = xpub
        .derive_pub(
            &secp,
            &[ChildNumber::Normal {
                index: moderation_index(order_id),
            }],
        )
        .map_err(derivation_error)?;
    Ok(CompressedPublicKey(child.public_key))
}

/// One order's escrow key pair. `secp256k1::SecretKey` is not zeroed on drop, so callers derive
/// it when they sign and drop it right after; its `Debug` output never shows the secret.
#[derive(Clone)]
pub struct EscrowKey {
    /// The derivation index this key came from.
    pub index: u32,
    /// The secret key.
    pub secret: secp256k1::SecretKey,
    /// The compressed public key that goes into the escrow script.
    pub public: CompressedPublicKey,
}

impl fmt::Debug for EscrowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowKey")
            .field("index", &self.index)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

/// Hands out escrow (or rating) indices once each, in order. The wallet persists
/// [`next`](Self::next) *before* it uses the index it was given, so that a crash can skip an
/// index but never reuse one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct EscrowIndexCursor {
    next: u32,
}

impl EscrowIndexCursor {
    /// A cursor that will hand out `next` first (as persisted by the wallet).
    #[must_use]
    pub fn starting_at(next: u32) -> Self {
        Self { next }
    }

    /// The index that [`allocate`](Self::allocate) will return next.
    #[must_use]
    pub fn next(&self) -> u32 {
        self.next
    }

    /// Takes the next unused index.
    ///
    /// # Errors
    /// [`IdentityError::IndexOutOfRange`] once all 2^31 indices are used.
    pub fn allocate(&mut self) -> Result<u32, IdentityError> {
        let index = self.next;
        check_index(index)?;
        self.next = index + 1;
        Ok(index)
    }
}

fn check_index(index: u32) -> Result<(), IdentityError> {
    if index >= HARDENED {
        Err(IdentityError::IndexOutOfRange { index })
    } else {
        Ok(())
    }
}

fn hardened(index: u32) -> ChildNumber {
    ChildNumber::Hardened { index }
}

fn derivation_error(e: bitcoin::bip32::Error) -> IdentityError {
    IdentityError::Derivation {
        reason: e.to_string(),
    }
}

/// SLIP-44 coin type: 0 on mainnet, 1 on testnets, signet and regtest.
#[must_use]
pub fn coin_type(network: Network) -> u32 {
    match network {
        Network::Bitcoin => 0,
        _ => 1,
    }
}

/// SLIP-10 derivation of an ed25519 secret key. Every index is hardened (ed25519 has no other
/// kind); `path` holds the indices without the hardened bit.
pub(crate) fn slip10_ed25519(seed: &[u8], path: &[u32]) -> Zeroizing<[u8; 32]> {
    let mut key = Zeroizing::new([0u8; 32]);
    let mut chain_code = Zeroizing::new([0u8; 32]);
    let split = |out: &[u8], key: &mut [u8; 32], chain_code: &mut [u8; 32]| {
        key.copy_from_slice(&out[..32]);
        chain_code.copy_from_slice(&out[32..]);
    };
    let out = hmac_sha512(b"ed25519 seed", &[seed]);
    split(&out[..], &mut key, &mut chain_code);
    for index in path {
        let index = (index | HARDENED).to_be_bytes();
        let out = hmac_sha512(&chain_code[..], &[&[0u8], &key[..], &index]);
        split(&out[..], &mut key, &mut chain_code);
    }
    key
}

fn hmac_sha512(key: &[u8], parts: &[&[u8]]) -> Zeroizing<[u8; 64]> {
    #[allow(clippy::expect_used, reason = "HMAC accepts keys of every length")]
    let mut mac = <Hmac<Sha512> as KeyInit>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    let mut out = Zeroizing::new([0u8; 64]);
    out.copy_from_slice(&mac.finalize().into_bytes());
    out
}

/// Whether `bytes`, which decode to a curve point, are that point's canonical encoding: the one
/// re-encoding the point gives. Decoding reduces `y` modulo p = 2^255 - 19 and takes the sign bit
/// as the parity of `x`, so an encoding differs from its point's only when `y` is p or more, or
/// when the sign bit is set for `x` = 0 (`y` = 1 or p - 1). Checking those directly is the same
/// test as re-encoding without the field inversion re-encoding costs (a sixth of an envelope's
/// verification).
pub(crate) fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    // y = bits 0..255 little-endian; p - 1 = 0x7fff…ffec.
    let top = bytes[31] & 0x7f;
    let high_bits_set = top == 0x7f && bytes[1..31].iter().all(|b| *b == 0xff);
    if high_bits_set && bytes[0] >= 0xed {
        return false; // y ≥ p
    }
    let sign = bytes[31] & 0x80 != 0;
    let y_is_one = bytes[0] == 1 && top == 0 && bytes[1..31].iter().all(|b| *b == 0);
    let y_is_p_minus_one = high_bits_set && bytes[0] == 0xec;
    !(sign && (y_is_one || y_is_p_minus_one))
}

/// The canonical encodings of the eight points of order dividing 8 (the whole torsion subgroup
/// of edwards25519): the identity, the point of order 2, the two of order 4 and the four of order
/// 8. A test decodes each and checks that they are eight distinct small-order points, each
/// encoded canonically.
pub(crate) const SMALL_ORDER_ENCODINGS: [[u8; 32]; 8] = [
    // identity: y = 1
    [
        0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ],
    // order 2: y = p - 1
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    // order 4: y = 0, x even
    [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ],
    // order 4: y = 0, x odd
    [
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x80,
    ],
    // order 8, x even
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x05,
    ],
    // order 8, x odd
    [
        0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98,
        0xf0, 0xd5, 0xdf, 0xac, 0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53,
        0xfc, 0x85,
    ],
    // order 8, x even
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0x7a,
    ],
    // order 8, x odd
    [
        0xc7, 0x17, 0x6a, 0x70, 0x3d, 0x4d, 0xd8, 0x4f, 0xba, 0x3c, 0x0b, 0x76, 0x0d, 0x10, 0x67,
        0x0f, 0x2a, 0x20, 0x53, 0xfa, 0x2c, 0x39, 0xcc, 0xc6, 0x4e, 0xc7, 0xfd, 0x77, 0x92, 0xac,
        0x03, 0xfa,
    ],
];

/// Shards of [`DECODED`], chosen by a key's first byte (keys are uniformly random bytes).
const DECODED_SHARDS: usize = 16;
/// Keys a shard's young generation holds before it becomes the old one: the cache remembers at
/// least the last `DECODED_SHARDS × DECODED_GENERATION` (32,768) distinct keys it decoded and at
/// most twice as many (about 15 MiB, reached only by a server that sees that many signers).
const DECODED_GENERATION: usize = 2_048;

/// Valid keys [`PublicKey::from_slice`] decoded, shared by every thread: a server verifies
/// envelopes from thousands of sellers on whichever threads are free, and a key it has seen
/// before skips the field exponentiation of decoding it (an eighth of verifying an envelope).
///
/// Each shard keeps two generations (hash maps with the standard library's randomly keyed
/// hasher, so chosen keys cannot flood one): a lookup that finds a key in the old one moves it
/// to the young one, and a full young generation replaces the old one. Only keys that decoded
/// are remembered, and decoding is a pure function, so the cache changes no verdict; keys
/// chosen to crowd one shard cost their sender a decoding each, as without it.
static DECODED: [std::sync::Mutex<DecodedKeys>; DECODED_SHARDS] =
    [const { std::sync::Mutex::new(DecodedKeys::new()) }; DECODED_SHARDS];

/// One shard of [`DECODED`].
struct DecodedKeys {
    young: Option<std::collections::HashMap<[u8; 32], PublicKey>>,
    old: Option<std::collections::HashMap<[u8; 32], PublicKey>>,
}

impl DecodedKeys {
    const fn new() -> Self {
        Self {
            young: None,
            old: None,
        }
    }

    fn get(&mut self, bytes: &[u8; 32]) -> Option<PublicKey> {
        if let Some(key) = self.young.as_ref().and_then(|young| young.get(bytes)) {
            return Some(*key);
        }
        let key = self.old.as_mut().and_then(|old| old.remove(bytes))?;
        self.insert(*bytes, key);
        Some(key)
    }

    fn insert(&mut self, bytes: [u8; 32], key: PublicKey) {
        if self
            .young
            .as_ref()
            .is_some_and(|young| young.len() >= DECODED_GENERATION)
        {
            self.old = self.young.take();
        }
        self.young
            .get_or_insert_with(std::collections::HashMap::new)
            .insert(bytes, key);
    }
}

/// The shard of [`DECODED`] that holds `bytes`, locked. A panic while it was locked left it
/// whole (every change is one map operation), so a poisoned lock is used as it is.
fn decoded_shard(bytes: &[u8; 32]) -> std::sync::MutexGuard<'static, DecodedKeys> {
    DECODED[usize::from(bytes[0]) % DECODED_SHARDS]
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The address (`souk1…`) of the key whose 32 raw bytes are `key`, as
/// [`PublicKey::to_address`] gives it, without decoding the curve point (a field
/// exponentiation): for bytes known to be a valid key, such as the signer of an envelope a
/// server stored after checking it.
#[must_use]
pub fn address_of(key: &[u8; 32]) -> String {
    #[allow(
        clippy::expect_used,
        reason = "the HRP is a valid constant and 32 bytes are far below bech32's length limit"
    )]
    let hrp = Hrp::parse(ADDRESS_HRP).expect("valid HRP");
    #[allow(clippy::expect_used, reason = "see above")]
    bech32::encode::<Bech32m>(hrp, key).expect("32 bytes always encode")
}

/// A person's ed25519 identity public key: their address in Souk.
///
/// Its text form is bech32m (BIP 350) with the human-readable part `souk` over the 32 key bytes,
/// for example `souk1…` (63 characters). Constructing one checks that the bytes are a valid,
/// non-weak curve point, so a `PublicKey` can always verify.
#[derive(Clone, Copy)]
pub struct PublicKey {
    key: VerifyingKey,
}

impl PublicKey {
    /// The key from its 32 raw bytes.
    ///
    /// # Errors
    /// [`IdentityError::InvalidAddress`] if the bytes are not 32 long, not the canonical
    /// encoding of a curve point, or a weak (small-order) point.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, IdentityError> {
        Self::from_slice(bytes).map_err(|reason| IdentityError::InvalidAddress {
            reason: reason.into(),
        })
    }

    pub(crate) fn from_slice(bytes: &[u8]) -> Result<Self, &'static str> {
        let bytes: &[u8; 32] = bytes.try_into().map_err(|_| "not 32 bytes")?;
        // Decoding a point costs a field exponentiation, and a store's envelopes (and the
        // moderators its listings name) share their keys: look in the keys decoded before.
        if let Some(key) = decoded_shard(bytes).get(bytes) {
            return Ok(key);
        }
        // Decoded outside the lock: other threads go on meanwhile.
        let key = Self::decode(bytes)?;
        decoded_shard(bytes).insert(*bytes, key);
        Ok(key)
    }

    fn decode(bytes: &[u8; 32]) -> Result<Self, &'static str> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| "not a curve point")?;
        if !is_canonical_encoding(bytes) {
            return Err("not the canonical encoding of its point");
        }
        if key.is_weak() {
            return Err("a weak, small-order point");
        }
        Ok(Self { key })
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    /// The text form, `souk1…`.
    #[must_use]
    pub fn to_address(&self) -> String {
        address_of(self.as_bytes())
    }

    /// Lower-case hex of the raw bytes.
    #[must_use]
    pub fn to_hex(&self) -> String {
        crate::hex(self.as_bytes())
    }

    /// This key's X25519 (Montgomery u-coordinate) form, the birational map of RFC 7748 §4.1.
    #[must_use]
    pub fn to_x25519(&self) -> [u8; 32] {
        self.key.to_montgomery().to_bytes()
    }

    /// Whether `signature` is this key's ed25519 signature over `digest` under Souk's rule:
    /// canonical `S`, `R` the canonical encoding of a point not of small order, and RFC 8032's
    /// cofactored equation `[8][S]B = [8]R + [8][k]A` (the key itself was refused at
    /// construction if weak or non-canonical).
    ///
    /// Every signature check of the protocol comes here or to [`crate::verify_batch`] /
    /// [`crate::open_batch`], which decide every signature exactly as this does; the module
    /// `signature` explains why the rule is the cofactored one.
    #[must_use]
    pub fn verify_digest(&self, digest: &[u8; 32], signature: &[u8; 64]) -> bool {
        crate::signature::verify_one(self, digest, signature)
    }

    /// The key as a curve point (a copy of the one decoded at construction).
    pub(crate) fn edwards_point(&self) -> curve25519_dalek::edwards::EdwardsPoint {
        self.key.to_edwards()
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}
impl Eq for PublicKey {}
impl core::hash::Hash for PublicKey {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}
impl PartialOrd for PublicKey {
    fn partial_cmp(&self, other: &Self) -> Option<core::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for PublicKey {
    fn cmp(&self, other: &Self) -> core::cmp::Ordering {
        self.as_bytes().cmp(other.as_bytes())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_address())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_address())
    }
}

impl FromStr for PublicKey {
    type Err = IdentityError;

    /// Parses the text form `souk1…` (bech32m; upper case accepted) or 64 hex digits.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = |reason: String| IdentityError::InvalidAddress { reason };
        if s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            let bytes = crate::unhex(s).ok_or_else(|| invalid("bad hex".into()))?;
            return Self::from_bytes(&bytes);
        }
        let checked = CheckedHrpstring::new::<Bech32m>(s).map_err(|e| invalid(e.to_string()))?;
        if checked.hrp().to_lowercase() != ADDRESS_HRP {
            return Err(invalid(format!(
                "prefix is {:?}, expected {ADDRESS_HRP:?}",
                checked.hrp().to_lowercase()
            )));
        }
        let bytes: Vec<u8> = checked.byte_iter().collect();
        Self::from_bytes(&bytes)
    }
}

/// An ed25519 identity (or rating) secret key. Zeroed on drop; `Debug` shows only the public key.
#[derive(Clone)]
pub struct IdentityKey {
    signing: SigningKey,
    public: PublicKey,
}

impl IdentityKey {
    /// The key with the given 32-byte secret (the SLIP-10 output, or RFC 8032's "seed").
    #[must_use]
    pub fn from_secret_bytes(secret: &[u8; 32]) -> Self {
        let signing = SigningKey::from_bytes(secret);
        let public = PublicKey {
            key: signing.verifying_key(),
        };
        Self { signing, public }
    }

    /// The public key, which is this person's address.
    #[must_use]
    pub fn public_key(&self) -> PublicKey {
        self.public
    }

    /// The X25519 secret that pairs with [`PublicKey::to_x25519`]: the first half of
    /// `SHA-512(secret)` (RFC 8032 §5.1.5); X25519 clamps it exactly as ed25519 does.
    pub(crate) fn x25519_secret(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_scalar_bytes())
    }

    /// Signs a 32-byte digest.
    pub(crate) fn sign_digest(&self, digest: &[u8; 32]) -> [u8; 64] {
        use ed25519_dalek::Signer;
        self.signing.sign(digest).to_bytes()
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityKey")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha256(bytes: &[u8]) -> [u8; 32] {
        use sha2::Digest as _;
        sha2::Sha256::digest(bytes).into()
    }

    /// Keys remembered by `from_slice` are only ever handed back for their own bytes: keys that
    /// share a shard of the cache (a first byte) come back as themselves, and a refused encoding
    /// stays refused after a valid key of its shard was remembered.
    #[test]
    fn remembered_keys_are_only_returned_for_their_own_bytes() {
        let (mut same_slot, mut refused): (Vec<[u8; 32]>, Option<[u8; 32]>) = (Vec::new(), None);
        let mut seed = [1u8; 32];
        while same_slot.len() < 3 || refused.is_none() {
            seed = sha256(&seed);
            let mut candidate = seed;
            candidate[0] = 0x42;
            match PublicKey::decode(&candidate) {
                Ok(_) => same_slot.push(candidate),
                Err(_) => refused = Some(candidate),
            }
        }
        for _ in 0..3 {
            for bytes in &same_slot {
                let key = PublicKey::from_bytes(bytes).expect("valid key");
                assert_eq!(key.as_bytes(), bytes);
            }
        }
        let refused = refused.unwrap_or_default();
        for bytes in &same_slot {
            let _ = PublicKey::from_bytes(bytes).expect("valid key");
            assert!(PublicKey::from_bytes(&refused).is_err());
        }
    }

    /// A shard of the decoded-key cache holds at most two generations however many distinct keys
    /// it is given, and a key looked up in the old generation moves to the young one, so a key
    /// in use outlives the turnover that drops the keys nobody asked for again.
    #[test]
    fn the_decoded_key_cache_is_bounded_and_keeps_the_keys_in_use() {
        let key = PublicKey::from_bytes(&[
            0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5, 0x4b, 0xfe, 0xd3, 0xc9, 0x64,
            0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25, 0xaf, 0x02, 0x1a, 0x68,
            0xf7, 0x07, 0x51, 0x1a,
        ])
        .expect("RFC 8032's first test key");
        // The shard files entries by their bytes; one real key as every value is enough here.
        let bytes = |i: usize| sha256(&i.to_le_bytes());
        let sizes = |cache: &DecodedKeys| {
            (
                cache
                    .young
                    .as_ref()
                    .map_or(0, std::collections::HashMap::len),
                cache.old.as_ref().map_or(0, std::collections::HashMap::len),
            )
        };
        let mut cache = DecodedKeys::new();
        assert!(cache.get(&bytes(0)).is_none());
        for i in 0..DECODED_GENERATION {
            cache.insert(bytes(i), key);
        }
        assert_eq!(sizes(&cache), (DECODED_GENERATION, 0));
        // One more turns the young generation into the old one.
        cache.insert(bytes(DECODED_GENERATION), key);
        assert_eq!(sizes(&cache), (1, DECODED_GENERATION));
        // A key found in the old generation moves to the young one.
        assert!(cache.get(&bytes(0)).is_some());
        assert_eq!(sizes(&cache), (2, DECODED_GENERATION - 1));
        assert!(
            cache
                .young
                .as_ref()
                .is_some_and(|young| young.contains_key(&bytes(0)))
        );
        for i in DECODED_GENERATION + 1..4 * DECODED_GENERATION {
            cache.insert(bytes(i), key);
            let (young, old) = sizes(&cache);
            assert!(young <= DECODED_GENERATION && old <= DECODED_GENERATION);
        }
        // Two turnovers later, the keys not asked for again are gone; the last ones are there.
        assert!(cache.get(&bytes(0)).is_none());
        assert!(cache.get(&bytes(1)).is_none());
        assert!(cache.get(&bytes(4 * DECODED_GENERATION - 1)).is_some());
    }

    /// The direct test of canonical encodings agrees with re-encoding the decoded point, on every
    /// encoding next to the edges (`y` near 0, near p and up to 2^255 - 1, both sign bits) and on
    /// 20,000 pseudo-random ones.
    #[test]
    fn canonical_encodings_are_told_apart_exactly_as_re_encoding_does() {
        let reencodes = |bytes: &[u8; 32]| {
            VerifyingKey::from_bytes(bytes)
                .ok()
                .map(|key| key.to_edwards().compress().as_bytes() == bytes)
        };
        let mut cases: Vec<[u8; 32]> = Vec::new();
        for sign in [0u8, 0x80] {
            for low in 0u8..=80 {
                let mut small = [0u8; 32];
                small[0] = low;
                small[31] = sign;
                cases.push(small);
            }
            // 2^255 - 1 down to p - 60 (p = 2^255 - 19).
            for below_top in 0u8..=80 {
                let mut high = [0xffu8; 32];
                high[0] = 0xff - below_top;
                high[31] = 0x7f | sign;
                cases.push(high);
            }
        }
        let mut seed = [7u8; 32];
        for _ in 0..20_000 {
            seed = sha256(&seed);
            cases.push(seed);
        }
        let (mut points, mut refused) = (0, 0);
        for bytes in &cases {
            if let Some(canonical) = reencodes(bytes) {
                points += 1;
                refused += usize::from(!canonical);
                assert_eq!(
                    is_canonical_encoding(bytes),
                    canonical,
                    "{}",
                    crate::hex(bytes)
                );
            }
        }
        // The edges hold non-canonical points of both kinds, and most random strings are points.
        assert!(
            refused >= 4,
            "only {refused} non-canonical encodings were met"
        );
        assert!(points > 10_000, "only {points} encodings decoded");
    }

    /// SLIP-0010, "Test vector 1 for ed25519": seed 000102…0f, private keys along m/0'/1'/2'/2'/1000000000'.
    #[test]
    fn slip10_matches_the_published_ed25519_vectors() {
        let seed = crate::unhex("000102030405060708090a0b0c0d0e0f").unwrap_or_default();
        let cases: &[(&[u32], &str)] = &[
            (
                &[],
                "2b4be7f19ee27bbf30c667b642d5f4aa69fd169872f8fc3059c08ebae2eb19e7",
            ),
            (
                &[0],
                "68e0fe46dfb67e368c75379acec591dad19df3cde26e63b93a8e704f1dade7a3",
            ),
            (
                &[0, 1],
                "b1d0bad404bf35da785a64ca1ac54b2617211d2777696fbffaf208f746ae84f2",
            ),
            (
                &[0, 1, 2],
                "92a5b23c0b8a99e37d07df3fb9966917f5d06e02ddbd909c7e184371463e9fc9",
            ),
            (
                &[0, 1, 2, 2],
                "30d1dc7e5fc04c31219ab25a27ae00b50f6fd66622f6e9c913253d6511d1e662",
            ),
            (
                &[0, 1, 2, 2, 1_000_000_000],
                "8f94d394a8e8fd6b1bc2f3f49f5c47e385281d5c17e65324b0f62483e37e8793",
            ),
        ];
        for (path, expected) in cases {
            let key = slip10_ed25519(&seed, path);
            assert_eq!(crate::hex(&key[..]), *expected, "path {path:?}");
        }
    }

    /// `verify_digest` decides every signature as the rule written out from RFC 8032 with the
    /// cofactored equation, agrees with ed25519-dalek's `verify_strict` on all but signatures
    /// whose `R` carries an unmatched torsion component, and batches decide as it does.
    mod verification {
        use curve25519_dalek::constants::ED25519_BASEPOINT_POINT as B;
        use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
        use curve25519_dalek::scalar::Scalar;
        use curve25519_dalek::traits::IsIdentity as _;
        use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
        use sha2::{Digest as _, Sha512};

        use super::super::{PublicKey, SMALL_ORDER_ENCODINGS};

        /// What `verify_strict` says, what `verify_digest` says, and what plain RFC 8032
        /// verification (cofactorless, no small-order checks) says. Every call also checks that
        /// `verify_digest` agrees with [`reference`], and that a batch holding the signature
        /// three times among honest ones decides each copy as `verify_digest` does.
        fn verdicts(key: &[u8; 32], digest: &[u8; 32], signature: &[u8; 64]) -> (bool, bool, bool) {
            let signature_ = Signature::from_bytes(signature);
            let strict = VerifyingKey::from_bytes(key)
                .is_ok_and(|k| k.verify_strict(digest, &signature_).is_ok());
            let plain =
                VerifyingKey::from_bytes(key).is_ok_and(|k| k.verify(digest, &signature_).is_ok());
            let ours = PublicKey::from_bytes(key).is_ok_and(|k| k.verify_digest(digest, signature));
            assert_eq!(
                ours,
                reference(key, digest, signature),
                "verify_digest and the rule as written differ"
            );
            if let Ok(public) = PublicKey::from_bytes(key) {
                static HONEST: std::sync::OnceLock<Vec<Signed>> = std::sync::OnceLock::new();
                let honest = HONEST.get_or_init(|| honest_signatures(6));
                let mut items: Vec<crate::signature::Item<'_>> =
                    honest.iter().map(|(k, d, s)| (k, d, s)).collect();
                for at in [0, 4, items.len() + 1] {
                    items.insert(at, (&public, digest, signature));
                }
                let verdicts = crate::signature::verify_many(&items);
                let expected: Vec<bool> = items
                    .iter()
                    .map(|(_, _, s)| *s != signature || ours)
                    .collect();
                assert_eq!(verdicts, expected, "a batch decided differently");
            }
            (strict, ours, plain)
        }

        /// Souk's rule written out from RFC 8032 §5.1.7 with constant-time arithmetic and no
        /// shared code: `S` canonical; `R` decodes, re-encodes to its own bytes and is not of
        /// small order; the key decodes under the same conditions; `[8]([S]B - R - [k]A) = 0`.
        fn reference(key: &[u8; 32], digest: &[u8; 32], signature: &[u8; 64]) -> bool {
            let point = |bytes: &[u8; 32]| {
                CompressedEdwardsY(*bytes)
                    .decompress()
                    .filter(|p| p.compress().as_bytes() == bytes && !p.is_small_order())
            };
            let mut r_bytes = [0u8; 32];
            r_bytes.copy_from_slice(&signature[..32]);
            let mut s_bytes = [0u8; 32];
            s_bytes.copy_from_slice(&signature[32..]);
            let (Some(r), Some(a), Some(s)) = (
                point(&r_bytes),
                point(key),
                Option::<Scalar>::from(Scalar::from_canonical_bytes(s_bytes)),
            ) else {
                return false;
            };
            let k = challenge(&r_bytes, key, digest);
            (s * B - r - k * a).mul_by_cofactor().is_identity()
        }

        /// A key, a digest and a signature.
        type Signed = (PublicKey, [u8; 32], [u8; 64]);

        /// `count` honest signatures by three keys.
        fn honest_signatures(count: u64) -> Vec<Signed> {
            let mut stream = Stream(9 << 32);
            let secrets = [stream.scalar(), stream.scalar(), stream.scalar()];
            (0..count)
                .map(|i| {
                    let a = secrets[usize::try_from(i % 3).expect("small")];
                    let key = (a * B).compress().to_bytes();
                    let r = stream.scalar();
                    let big_r = (r * B).compress().to_bytes();
                    let digest = stream.digest();
                    let s = r + challenge(&big_r, &key, &digest) * a;
                    let public = PublicKey::from_bytes(&key).expect("a valid key");
                    (public, digest, signature(&big_r, &s))
                })
                .collect()
        }

        /// A deterministic stream of scalars and digests.
        struct Stream(u64);
        impl Stream {
            fn bytes(&mut self) -> [u8; 64] {
                self.0 += 1;
                Sha512::digest(self.0.to_le_bytes()).into()
            }
            fn scalar(&mut self) -> Scalar {
                Scalar::from_bytes_mod_order_wide(&self.bytes())
            }
            fn digest(&mut self) -> [u8; 32] {
                let mut digest = [0u8; 32];
                digest.copy_from_slice(&self.bytes()[..32]);
                digest
            }
        }

        fn torsion() -> Vec<EdwardsPoint> {
            SMALL_ORDER_ENCODINGS
                .iter()
                .map(|bytes| CompressedEdwardsY(*bytes).decompress().expect("a point"))
                .collect()
        }

        /// A point of order exactly 8.
        fn order_eight() -> EdwardsPoint {
            let point = torsion()
                .into_iter()
                .find(|t| !(Scalar::from(4u8) * t).is_identity())
                .expect("the subgroup has points of order 8");
            assert!(point.mul_by_cofactor().is_identity());
            point
        }

        fn challenge(r: &[u8; 32], a: &[u8; 32], digest: &[u8; 32]) -> Scalar {
            let hash: [u8; 64] = Sha512::new()
                .chain_update(r)
                .chain_update(a)
                .chain_update(digest)
                .finalize()
                .into();
            Scalar::from_bytes_mod_order_wide(&hash)
        }

        /// A digest whose challenge `k` (for `r` and `key`) gives `-[k]t = wanted`, and that
        /// `k`. With `t` of order 8 one digest in eight does; the stream is fixed, so the search
        /// is too.
        fn digest_reaching(
            stream: &mut Stream,
            r: &[u8; 32],
            key: &[u8; 32],
            t: EdwardsPoint,
            wanted: EdwardsPoint,
        ) -> ([u8; 32], Scalar) {
            (0..400)
                .map(|_| stream.digest())
                .map(|digest| (digest, challenge(r, key, &digest)))
                .find(|(_, k)| -(k * t) == wanted)
                .expect("one digest in eight reaches each torsion point")
        }

        fn signature(r: &[u8; 32], s: &Scalar) -> [u8; 64] {
            let mut signature = [0u8; 64];
            signature[..32].copy_from_slice(r);
            signature[32..].copy_from_slice(s.as_bytes());
            signature
        }

        /// The eight constants are canonical encodings of eight distinct points of order
        /// dividing 8; the torsion subgroup has eight points, so they are all of them.
        #[test]
        fn the_small_order_encodings_are_the_whole_torsion_subgroup() {
            let points = torsion();
            for (point, bytes) in points.iter().zip(&SMALL_ORDER_ENCODINGS) {
                assert!(point.is_small_order());
                assert_eq!(point.compress().as_bytes(), bytes, "canonical");
            }
            for (i, p) in points.iter().enumerate() {
                for q in &points[i + 1..] {
                    assert_ne!(p, q);
                }
            }
        }

        /// Honest signatures verify; changing any bit of the signature or the digest does not.
        #[test]
        fn honest_signatures_and_their_mutations_agree() {
            let mut stream = Stream(0);
            for _ in 0..24 {
                let (a, r) = (stream.scalar(), stream.scalar());
                let key = (a * B).compress().to_bytes();
                let big_r = (r * B).compress().to_bytes();
                let digest = stream.digest();
                let s = r + challenge(&big_r, &key, &digest) * a;
                let signature = signature(&big_r, &s);
                assert_eq!(verdicts(&key, &digest, &signature), (true, true, true));
                for bit in 0..512 {
                    let mut changed = signature;
                    changed[bit / 8] ^= 1 << (bit % 8);
                    let (strict, ours, _) = verdicts(&key, &digest, &changed);
                    assert_eq!((strict, ours), (false, false), "bit {bit}");
                }
                for bit in 0..256 {
                    let mut changed = digest;
                    changed[bit / 8] ^= 1 << (bit % 8);
                    let (strict, ours, _) = verdicts(&key, &changed, &signature);
                    assert_eq!((strict, ours), (false, false), "digest bit {bit}");
                }
                // S + l = S + (l - 1) + 1: the same scalar, not canonically encoded.
                let mut unreduced = *s.as_bytes();
                let mut carry = 1u16;
                for (byte, l) in unreduced.iter_mut().zip((-Scalar::ONE).as_bytes()) {
                    let sum = u16::from(*byte) + u16::from(*l) + carry;
                    *byte = sum.to_le_bytes()[0];
                    carry = sum >> 8;
                }
                let mut malleated = signature;
                malleated[32..].copy_from_slice(&unreduced);
                let (strict, ours, _) = verdicts(&key, &digest, &malleated);
                assert_eq!((strict, ours), (false, false), "S + l");
            }
        }

        /// A small-order `R` that satisfies the plain equation — possible with a key that has a
        /// torsion component — is refused by both, for each of the eight points; so is the
        /// identity `R` with a torsion-free key.
        #[test]
        fn a_small_order_r_is_refused_even_when_the_equation_holds() {
            let mut stream = Stream(1 << 32);
            let t = order_eight();
            for (index, small) in SMALL_ORDER_ENCODINGS.iter().enumerate() {
                let a = stream.scalar();
                let key = (a * B + t).compress().to_bytes();
                // A key with a torsion component is a valid key: the refusals below are R's.
                assert!(PublicKey::from_bytes(&key).is_ok());
                // R' = [k·a]B - [k](aB + T) = -[k]T, which is R for one k in eight.
                let wanted = CompressedEdwardsY(*small).decompress().expect("a point");
                let (digest, k) = digest_reaching(&mut stream, small, &key, t, wanted);
                let signature = signature(small, &(k * a));
                assert_eq!(
                    verdicts(&key, &digest, &signature),
                    (false, false, true),
                    "point {index}"
                );
            }
            let a = stream.scalar();
            let key = (a * B).compress().to_bytes();
            let identity = SMALL_ORDER_ENCODINGS[0];
            let digest = stream.digest();
            let s = challenge(&identity, &key, &digest) * a;
            assert_eq!(
                verdicts(&key, &digest, &signature(&identity, &s)),
                (false, false, true)
            );
        }

        /// A mixed-order `R` (a torsion component next to a large one) that satisfies the plain
        /// equation is accepted by both: strict verification refuses small-order points only.
        #[test]
        fn a_mixed_order_r_that_satisfies_the_equation_is_accepted() {
            let mut stream = Stream(2 << 32);
            let t = order_eight();
            for (index, torsion) in torsion().into_iter().enumerate() {
                let (a, r) = (stream.scalar(), stream.scalar());
                let key = (a * B + t).compress().to_bytes();
                let big_r = (r * B + torsion).compress().to_bytes();
                // R' = [r + k·a]B - [k](aB + T) = rB - [k]T, which is R when -[k]T = torsion.
                let (digest, k) = digest_reaching(&mut stream, &big_r, &key, t, torsion);
                let signature = signature(&big_r, &(r + k * a));
                assert_eq!(
                    verdicts(&key, &digest, &signature),
                    (true, true, true),
                    "torsion {index}"
                );
            }
        }

        /// The one place the rule differs from `verify_strict`: an `R` with a torsion component
        /// that `[S]B - [k]A` lacks. The cofactored equation ignores it, the cofactorless one
        /// does not. Only the key's holder can make such a signature (a different `R` gives a
        /// different `k`), and no signer does by accident.
        #[test]
        fn an_r_with_an_unmatched_torsion_component_is_accepted_unlike_verify_strict() {
            let mut stream = Stream(4 << 32);
            for (index, torsion) in torsion().into_iter().enumerate().skip(1) {
                let (a, r) = (stream.scalar(), stream.scalar());
                let key = (a * B).compress().to_bytes();
                let big_r = (r * B + torsion).compress().to_bytes();
                let digest = stream.digest();
                let signature = signature(&big_r, &(r + challenge(&big_r, &key, &digest) * a));
                assert_eq!(
                    verdicts(&key, &digest, &signature),
                    (false, true, false),
                    "torsion {index}"
                );
            }
        }

        /// A batch of 300 signatures by three keys, with forgeries of several kinds in different
        /// places (none, one, a cluster, spread out, all), decides each as it is decided alone.
        #[test]
        fn batches_decide_every_signature_as_it_is_decided_alone() {
            let honest = honest_signatures(300);
            let forge = |(key, digest, signature): &Signed, how: usize| {
                let (mut digest, mut signature) = (*digest, *signature);
                match how % 3 {
                    0 => signature[40] ^= 1,
                    1 => digest[0] ^= 0x80,
                    _ => signature[..32].copy_from_slice(&SMALL_ORDER_ENCODINGS[3]),
                }
                (*key, digest, signature)
            };
            let cases: Vec<Vec<usize>> = vec![
                vec![],
                vec![0],
                vec![299],
                vec![150],
                (100..140).collect(),
                (0..300).step_by(7).collect(),
                (0..300).collect(),
            ];
            for bad in cases {
                let items: Vec<Signed> = honest
                    .iter()
                    .enumerate()
                    .map(|(i, item)| {
                        if bad.contains(&i) {
                            forge(item, i)
                        } else {
                            *item
                        }
                    })
                    .collect();
                let refs: Vec<crate::signature::Item<'_>> =
                    items.iter().map(|(k, d, s)| (k, d, s)).collect();
                let verdicts = crate::signature::verify_many(&refs);
                for (i, good) in verdicts.iter().enumerate() {
                    assert_eq!(
                        *good,
                        !bad.contains(&i),
                        "signature {i} with {bad:?} forged"
                    );
                }
            }
        }

        /// Non-canonical encodings of `R` (y ≥ p, or the sign bit set where x = 0) and random
        /// bytes are refused by both.
        #[test]
        fn non_canonical_and_random_r_are_refused() {
            let mut stream = Stream(3 << 32);
            let a = stream.scalar();
            let key = (a * B).compress().to_bytes();
            let mut encodings: Vec<[u8; 32]> = Vec::new();
            for low in [0xedu8, 0xee, 0xef, 0xf0, 0xff] {
                let mut y = [0xffu8; 32];
                y[0] = low;
                y[31] = 0x7f;
                encodings.push(y);
                y[31] = 0xff;
                encodings.push(y);
            }
            let mut one_negative = SMALL_ORDER_ENCODINGS[0];
            one_negative[31] |= 0x80;
            let mut minus_one_negative = SMALL_ORDER_ENCODINGS[1];
            minus_one_negative[31] |= 0x80;
            encodings.extend([one_negative, minus_one_negative]);
            for _ in 0..200 {
                let mut random = [0u8; 32];
                random.copy_from_slice(&stream.bytes()[..32]);
                encodings.push(random);
            }
            for big_r in &encodings {
                let digest = stream.digest();
                for s in [
                    Scalar::ZERO,
                    challenge(big_r, &key, &digest) * a,
                    stream.scalar(),
                ] {
                    let (strict, ours, _) = verdicts(&key, &digest, &signature(big_r, &s));
                    assert_eq!((strict, ours), (false, false), "R {}", crate::hex(big_r));
                }
            }
        }
    }
}
