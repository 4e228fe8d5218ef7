//! The escrow's script: who can spend, and when.

use core::str::FromStr;

use bitcoin::{Address, CompressedPublicKey, Network, PublicKey, Script, ScriptBuf};
use miniscript::Descriptor;

use crate::{Role, TermsError};

/// A per-order escrow: a P2WSH output that two of the parties, or the seller alone after the
/// timeout, can spend.
///
/// - **Moderated**: `wsh(or_d(multi(2,B,S,M),and_v(v:pk(S),older(N))))` — any two of buyer,
///   seller and moderator; or the seller alone `N` blocks after the funding confirmed.
/// - **Direct** (no moderator): `wsh(or_d(multi(2,B,S),and_v(v:pk(S),older(N))))` — buyer and
///   seller together; or the seller alone after `N` blocks. Direct payment still goes through a
///   per-order 2-of-2 rather than straight to a seller address, so that a declined or cancelled
///   order is refunded by the seller's signature alone (no new payment from the seller's wallet),
///   every order's money is visibly its own, and all payment kinds share one PSBT flow; the
///   timeout keeps a silent buyer from locking the seller out.
///
/// The seller's key appears in both branches on purpose (the timeout claim is the seller's);
/// miniscript's policy compiler refuses repeated keys, so the descriptor is written out here and
/// parsed, which miniscript accepts for `wsh`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Escrow {
    buyer: PublicKey,
    seller: PublicKey,
    moderator: Option<PublicKey>,
    timeout_blocks: u16,
    descriptor: Descriptor<PublicKey>,
    witness_script: ScriptBuf,
    script_pubkey: ScriptBuf,
}

impl Escrow {
    /// The 2-of-3 escrow of a moderated order.
    ///
    /// # Errors
    /// [`TermsError::DuplicateKey`] if two keys are equal; [`TermsError::ZeroTimeout`].
    pub fn moderated(
        buyer: CompressedPublicKey,
        seller: CompressedPublicKey,
        moderator: CompressedPublicKey,
        timeout_blocks: u16,
    ) -> Result<Self, TermsError> {
        Self::new(buyer, seller, Some(moderator), timeout_blocks)
    }

    /// The 2-of-2 escrow of a direct-payment order.
    ///
    /// # Errors
    /// [`TermsError::DuplicateKey`] if the keys are equal; [`TermsError::ZeroTimeout`].
    pub fn direct(
        buyer: CompressedPublicKey,
        seller: CompressedPublicKey,
        timeout_blocks: u16,
    ) -> Result<Self, TermsError> {
        Self::new(buyer, seller, None, timeout_blocks)
    }

    fn new(
        buyer: CompressedPublicKey,
        seller: CompressedPublicKey,
        moderator: Option<CompressedPublicKey>,
        timeout_blocks: u16,
    ) -> Result<Self, TermsError> {
        if timeout_blocks == 0 {
            return Err(TermsError::ZeroTimeout);
        }
        let duplicate = |first, second| TermsError::DuplicateKey { first, second };
        if buyer == seller {
            return Err(duplicate(Role::Buyer, Role::Seller));
        }
        if let Some(m) = moderator {
            if m == buyer {
                return Err(duplicate(Role::Buyer, Role::Moderator));
            }
            if m == seller {
                return Err(duplicate(Role::Seller, Role::Moderator));
            }
        }
        let keys = match moderator {
            Some(m) => format!("{buyer},{seller},{m}"),
            None => format!("{buyer},{seller}"),
        };
        let text =
            format!("wsh(or_d(multi(2,{keys}),and_v(v:pk({seller}),older({timeout_blocks}))))");
        let descriptor =
            Descriptor::<PublicKey>::from_str(&text).map_err(|e| TermsError::Descriptor {
                reason: e.to_string(),
            })?;
        let witness_script = descriptor
            .explicit_script()
            .map_err(|e| TermsError::Descriptor {
                reason: e.to_string(),
            })?;
        Ok(Self {
            buyer: PublicKey::from(buyer),
            seller: PublicKey::from(seller),
            moderator: moderator.map(PublicKey::from),
            timeout_blocks,
            script_pubkey: descriptor.script_pubkey(),
            descriptor,
            witness_script,
        })
    }

    /// The output descriptor, e.g. `wsh(or_d(multi(2,…),and_v(v:pk(…),older(4320))))#checksum`.
    #[must_use]
    pub fn descriptor(&self) -> &Descriptor<PublicKey> {
        &self.descriptor
    }

    /// The address to pay into, on `network`.
    #[must_use]
    pub fn address(&self, network: Network) -> Address {
        Address::p2wsh(&self.witness_script, network)
    }

    /// The output script of the escrow (`OP_0 <sha256(witness script)>`).
    #[must_use]
    pub fn script_pubkey(&self) -> &Script {
        &self.script_pubkey
    }

    /// The witness script that every spend reveals.
    #[must_use]
    pub fn witness_script(&self) -> &Script {
        &self.witness_script
    }

    /// The buyer's key.
    #[must_use]
    pub fn buyer(&self) -> PublicKey {
        self.buyer
    }

    /// The seller's key.
    #[must_use]
    pub fn seller(&self) -> PublicKey {
        self.seller
    }

    /// The moderator's key, for a moderated escrow.
    #[must_use]
    pub fn moderator(&self) -> Option<PublicKey> {
        self.moderator
    }

    /// Blocks after funding confirmation before the seller may claim alone.
    #[must_use]
    pub fn timeout_blocks(&self) -> u16 {
        self.timeout_blocks
    }

    /// The role a key has in this escrow, if any.
    #[must_use]
    pub fn role_of(&self, key: &PublicKey) -> Option<Role> {
        if *key == self.buyer {
            Some(Role::Buyer)
        } else if *key == self.seller {
            Some(Role::Seller)
        } else if Some(*key) == self.moderator {
            Some(Role::Moderator)
        } else {
            None
        }
    }
}
