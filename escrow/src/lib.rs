//! # souk-escrow
//!
//! The Bitcoin side of a Souk order, as pure logic: the per-order escrow script, the PSBTs that
//! spend it, the check a phone runs before it signs, signing, combining and finalizing. No I/O;
//! the phone core calls it, and the chain is watched elsewhere.
//!
//! The escrow (see [`Escrow`]) is `or(multi(2, buyer, seller, moderator), and(pk(seller),
//! older(timeout)))` in P2WSH: any two parties can move the money, and a silent buyer cannot lock
//! the seller out. Every spend pays out by one documented rule ([`payout`]).
//!
//! ```
//! use souk_escrow::bitcoin::{Amount, FeeRate, Network, OutPoint, Txid};
//! use souk_escrow::bitcoin::secp256k1::{Secp256k1, SecretKey};
//! use souk_escrow::{Escrow, Funding, Spend, Terms, finalize, sign};
//! # use souk_escrow::bitcoin::hashes::Hash;
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let secp = Secp256k1::new();
//! let secret = |b: u8| SecretKey::from_slice(&[b; 32]);
//! let (buyer, seller, moderator) = (secret(1)?, secret(2)?, secret(3)?);
//! let public = |k: &SecretKey| souk_escrow::bitcoin::CompressedPublicKey(k.public_key(&secp));
//! let escrow = Escrow::moderated(public(&buyer), public(&seller), public(&moderator), 4_320)?;
//! let pay_to = escrow.address(Network::Regtest); // the buyer pays here
//!
//! // The order completes: buyer and seller release the money to the seller.
//! let funding = Funding { outpoint: OutPoint { txid: Txid::all_zeros(), vout: 0 }, amount: Amount::from_sat(250_000) };
//! let seller_address = souk_escrow::bitcoin::Address::p2wpkh(&public(&seller), Network::Regtest);
//! let spend = Spend::Release { seller: seller_address.as_unchecked().clone() };
//! let terms = Terms::new(escrow, Network::Regtest, &[funding], &spend, Amount::from_sat(5_000))?;
//! let mut psbt = terms.build(FeeRate::from_sat_per_vb_u32(10))?;
//! sign(&mut psbt, &terms, &buyer)?;   // each phone checks the PSBT against the terms, then signs
//! sign(&mut psbt, &terms, &seller)?;
//! let tx = finalize(psbt, &terms)?;
//! assert_eq!(tx.output.len(), 1);
//! assert!(tx.output[0].value < Amount::from_sat(250_000)); // minus the miner fee
//! # let _ = pay_to;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs, unsafe_code)]
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::panic)
)]

mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod payout;
mod policy;
mod spend;

pub use error::{CheckError, FinalizeError, SignError, TermsError};
pub use payout::{FULL_SHARE_BP, ModeratorFee, Payment, Role};
pub use policy::Escrow;
pub use spend::{
    Checked, Funding, MAX_PSBT_BYTES, Path, SIGNATURE_WITNESS_BYTES, Spend, Terms, check, combine,
    finalize, parse_psbt, sign,
};

/// Re-exported so that callers use the same `bitcoin` types.
pub use bitcoin;
/// Re-exported for callers that inspect the descriptor.
pub use miniscript;
