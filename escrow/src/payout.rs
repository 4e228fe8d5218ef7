//! The payout math: who gets what out of an escrow, pure integer arithmetic.
//!
//! The rule (also in the README, "Payout rule"):
//!
//! 1. `available = total − miner fee`; a fee that leaves nothing is an error.
//! 2. Release and timeout claim: the seller gets `available`.
//! 3. Refund: the buyer gets `⌊available × buyer_bp / 10 000⌋`, the seller the rest.
//! 4. Dispute: the moderator's fee is `fixed + ⌊total × percentage_bp / 10 000⌋` (the
//!    percentage is of the whole escrowed amount); it must not exceed `available`. Of what
//!    remains, the buyer gets `⌊remainder × buyer_bp / 10 000⌋` and the seller the rest. So every
//!    rounding remainder (less than one satoshi per division) goes to the seller.
//! 5. Payments to the same output script are merged; payments of 0 are dropped.
//! 6. A payment below the dust limit of its own script (Bitcoin Core's relay rule at 3 sat/vB:
//!    294 sat for P2WPKH, 330 for P2WSH and P2TR, 546 for P2PKH) is dropped and its amount added to
//!    the largest remaining payment (ties: seller, then buyer, then moderator). If no payment is
//!    above dust, the spend is impossible.
//!
//! Payments are listed in the order buyer, seller, moderator; that is also the output order.

use bitcoin::{Amount, ScriptBuf};

use crate::TermsError;

/// 100 % in basis points.
pub const FULL_SHARE_BP: u16 = 10_000;

/// A party to an escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Pays into the escrow.
    Buyer,
    /// Is paid out of it.
    Seller,
    /// Settles disputes.
    Moderator,
}

/// A moderator's fee as agreed in the order (the moderator's offer, converted to satoshis).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ModeratorFee {
    /// Fixed part.
    pub fixed: Amount,
    /// Percentage part in basis points of the escrowed total.
    pub percentage_bp: u16,
}

/// What a spend pays, before addresses are checked (see [`Spend`](crate::Spend)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Everything to the seller (release, timeout claim).
    ToSeller { seller: ScriptBuf },
    /// A share to the buyer, the rest to the seller.
    Refund {
        buyer: ScriptBuf,
        seller: ScriptBuf,
        buyer_bp: u16,
    },
    /// The moderator's fee, then a share to the buyer, the rest to the seller.
    Dispute {
        buyer: ScriptBuf,
        seller: ScriptBuf,
        moderator: ScriptBuf,
        buyer_bp: u16,
        fee: ModeratorFee,
    },
}

/// One output of a spend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payment {
    /// Who is paid (the first role, if two roles share a script).
    pub role: Role,
    /// Where to.
    pub script_pubkey: ScriptBuf,
    /// How much.
    pub amount: Amount,
}

fn share(amount: u64, bp: u16) -> u64 {
    // amount ≤ 21e14 and bp ≤ 10^4, so the product fits easily in u128 and the result in u64.
    u64::try_from(u128::from(amount) * u128::from(bp) / u128::from(FULL_SHARE_BP)).unwrap_or(amount)
}

impl Plan {
    /// The payments for `total` escrowed and `fee` paid to miners, by the rule in the module
    /// documentation.
    pub(crate) fn payments(&self, total: Amount, fee: Amount) -> Result<Vec<Payment>, TermsError> {
        let available = total
            .checked_sub(fee)
            .filter(|a| *a > Amount::ZERO)
            .ok_or(TermsError::FeeExceedsFunds { fee, total })?;
        let pay = |role, script: &ScriptBuf, sat| Payment {
            role,
            script_pubkey: script.clone(),
            amount: Amount::from_sat(sat),
        };
        let raw = match self {
            Self::ToSeller { seller } => vec![pay(Role::Seller, seller, available.to_sat())],
            Self::Refund {
                buyer,
                seller,
                buyer_bp,
            } => {
                let to_buyer = share(available.to_sat(), *buyer_bp);
                vec![
                    pay(Role::Buyer, buyer, to_buyer),
                    pay(Role::Seller, seller, available.to_sat() - to_buyer),
                ]
            }
            Self::Dispute {
                buyer,
                seller,
                moderator,
                buyer_bp,
                fee: moderator_fee,
            } => {
                let fee_sat = moderator_fee
                    .fixed
                    .to_sat()
                    .checked_add(share(total.to_sat(), moderator_fee.percentage_bp))
                    .ok_or(TermsError::AmountOverflow)?;
                if fee_sat > available.to_sat() {
                    return Err(TermsError::ModeratorFeeExceedsFunds {
                        fee: Amount::from_sat(fee_sat),
                        available,
                    });
                }
                let remainder = available.to_sat() - fee_sat;
                let to_buyer = share(remainder, *buyer_bp);
                vec![
                    pay(Role::Buyer, buyer, to_buyer),
                    pay(Role::Seller, seller, remainder - to_buyer),
                    pay(Role::Moderator, moderator, fee_sat),
                ]
            }
        };
        fold(raw, available)
    }
}

/// Merges payments to the same script, drops zeros, folds dust into the largest payment.
fn fold(raw: Vec<Payment>, available: Amount) -> Result<Vec<Payment>, TermsError> {
    let mut merged: Vec<Payment> = Vec::with_capacity(raw.len());
    for payment in raw {
        match merged
            .iter_mut()
            .find(|p| p.script_pubkey == payment.script_pubkey)
        {
            Some(existing) => existing.amount += payment.amount,
            None => merged.push(payment),
        }
    }
    merged.retain(|p| p.amount > Amount::ZERO);
    let is_dust = |p: &Payment| p.amount < p.script_pubkey.minimal_non_dust();
    let dust: Amount = merged.iter().filter(|p| is_dust(p)).map(|p| p.amount).sum();
    merged.retain(|p| !is_dust(p));
    let priority = |role: Role| match role {
        Role::Seller => 2,
        Role::Buyer => 1,
        Role::Moderator => 0,
    };
    let largest = merged
        .iter_mut()
        .max_by_key(|p| (p.amount, priority(p.role)))
        .ok_or(TermsError::AllOutputsDust { total: available })?;
    largest.amount += dust;
    Ok(merged)
}
