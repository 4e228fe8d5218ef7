//! Spending the escrow: agreed terms, building the PSBT, checking it, signing, finalizing.

use std::collections::BTreeMap;

use bitcoin::address::NetworkUnchecked;
use bitcoin::ecdsa;
use bitcoin::psbt::{Psbt, PsbtSighashType};
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, FeeRate, Network, OutPoint, PublicKey, Sequence, Transaction, TxIn, TxOut,
    Weight, absolute,
};
use miniscript::psbt::PsbtExt;

use crate::payout::{FULL_SHARE_BP, ModeratorFee, Payment, Plan};
use crate::{CheckError, Escrow, FinalizeError, Role, SignError, TermsError};

/// Largest PSBT accepted from outside, in bytes (base64 text may be 4/3 of this).
pub const MAX_PSBT_BYTES: usize = 256 * 1024;

/// Size assumed for each ECDSA signature in the witness: 70 bytes of DER (low-R, low-S) plus the
/// sighash byte. This crate signs with low-R, so real signatures are this size, or in about one
/// case in a hundred one byte shorter, which only raises the effective fee rate slightly.
pub const SIGNATURE_WITNESS_BYTES: usize = 71;

/// One output paying into the escrow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Funding {
    /// The funding output.
    pub outpoint: OutPoint,
    /// Its value.
    pub amount: Amount,
}

/// Which way out of the escrow, and to whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Spend {
    /// The order completed: everything to the seller. Buyer and seller sign.
    Release {
        /// The seller's payout address.
        seller: Address<NetworkUnchecked>,
    },
    /// The seller refunds `buyer_bp` basis points (10,000 = all) to the buyer; the rest goes to
    /// the seller. Seller and buyer sign.
    Refund {
        /// The buyer's refund address.
        buyer: Address<NetworkUnchecked>,
        /// The seller's payout address (receives nothing on a full refund).
        seller: Address<NetworkUnchecked>,
        /// The buyer's share.
        buyer_bp: u16,
    },
    /// The moderator's decision: the moderator's fee first, then `buyer_bp` of the rest to the
    /// buyer and the remainder to the seller. The moderator and one party sign.
    Dispute {
        /// The buyer's refund address.
        buyer: Address<NetworkUnchecked>,
        /// The seller's payout address.
        seller: Address<NetworkUnchecked>,
        /// The moderator's address.
        moderator: Address<NetworkUnchecked>,
        /// The buyer's share of what remains after the moderator's fee.
        buyer_bp: u16,
        /// The fee agreed in the order.
        fee: ModeratorFee,
    },
    /// The timeout passed: everything to the seller, who signs alone.
    TimeoutClaim {
        /// The seller's payout address.
        seller: Address<NetworkUnchecked>,
    },
}

/// The two kinds of witness a spend can have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// Two signatures through the multisig branch.
    Cooperative,
    /// The seller's signature after the relative time lock.
    Timeout,
}

/// Everything two phones must agree on before money moves: the escrow, what funded it, how it
/// is paid out, and the most the miners may take. A PSBT is signed only if it matches these
/// exactly ([`check`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terms {
    escrow: Escrow,
    network: Network,
    fundings: Vec<Funding>,
    total: Amount,
    plan: Plan,
    path: Path,
    max_fee: Amount,
}

fn require(
    address: &Address<NetworkUnchecked>,
    role: Role,
    network: Network,
) -> Result<bitcoin::ScriptBuf, TermsError> {
    address
        .clone()
        .require_network(network)
        .map(|a| a.script_pubkey())
        .map_err(|_| TermsError::WrongNetwork { role, network })
}

fn check_share(bp: u16) -> Result<u16, TermsError> {
    if bp > FULL_SHARE_BP {
        Err(TermsError::ShareOutOfRange { bp })
    } else {
        Ok(bp)
    }
}

impl Terms {
    /// Checks and fixes the terms of one spend.
    ///
    /// # Errors
    /// [`TermsError`] for an address on another network, a dispute without a moderator, a share
    /// above 100 %, no, duplicate or empty fundings, or a total above 21 million BTC.
    pub fn new(
        escrow: Escrow,
        network: Network,
        fundings: &[Funding],
        spend: &Spend,
        max_fee: Amount,
    ) -> Result<Self, TermsError> {
        if fundings.is_empty() {
            return Err(TermsError::NoFunding);
        }
        let mut sorted = fundings.to_vec();
        sorted.sort();
        let mut total = Amount::ZERO;
        for (i, funding) in sorted.iter().enumerate() {
            if i > 0 && sorted[i - 1].outpoint == funding.outpoint {
                return Err(TermsError::DuplicateFunding {
                    outpoint: funding.outpoint,
                });
            }
            if funding.amount == Amount::ZERO {
                return Err(TermsError::EmptyFunding {
                    outpoint: funding.outpoint,
                });
            }
            total = total
                .checked_add(funding.amount)
                .filter(|t| *t <= Amount::MAX_MONEY)
                .ok_or(TermsError::AmountOverflow)?;
        }
        let (plan, path) = match spend {
            Spend::Release { seller } => (
                Plan::ToSeller {
                    seller: require(seller, Role::Seller, network)?,
                },
                Path::Cooperative,
            ),
            Spend::TimeoutClaim { seller } => (
                Plan::ToSeller {
                    seller: require(seller, Role::Seller, network)?,
                },
                Path::Timeout,
            ),
            Spend::Refund {
                buyer,
                seller,
                buyer_bp,
            } => (
                Plan::Refund {
                    buyer: require(buyer, Role::Buyer, network)?,
                    seller: require(seller, Role::Seller, network)?,
                    buyer_bp: check_share(*buyer_bp)?,
                },
                Path::Cooperative,
            ),
            Spend::Dispute {
                buyer,
                seller,
                moderator,
                buyer_bp,
                fee,
            } => {
                if escrow.moderator().is_none() {
                    return Err(TermsError::NoModerator);
                }
                if fee.fixed > Amount::MAX_MONEY {
                    return Err(TermsError::AmountOverflow);
                }
                (
                    Plan::Dispute {
                        buyer: require(buyer, Role::Buyer, network)?,
                        seller: require(seller, Role::Seller, network)?,
                        moderator: require(moderator, Role::Moderator, network)?,
                        buyer_bp: check_share(*buyer_bp)?,
                        fee: ModeratorFee {
                            fixed: fee.fixed,
                            percentage_bp: check_share(fee.percentage_bp)?,
                        },
                    },
                    Path::Cooperative,
                )
            }
        };
        Ok(Self {
            escrow,
            network,
            fundings: sorted,
            total,
            plan,
            path,
            max_fee,
        })
    }

    /// The escrow being spent.
    #[must_use]
    pub fn escrow(&self) -> &Escrow {
        &self.escrow
    }

    /// The network of every address.
    #[must_use]
    pub fn network(&self) -> Network {
        self.network
    }

    /// The funding outputs, sorted by outpoint (the input order of built PSBTs).
    #[must_use]
    pub fn fundings(&self) -> &[Funding] {
        &self.fundings
    }

    /// The sum of the funding outputs.
    #[must_use]
    pub fn total(&self) -> Amount {
        self.total
    }

    /// Cooperative or timeout.
    #[must_use]
    pub fn path(&self) -> Path {
        self.path
    }

    /// The agreed miner fee cap.
    #[must_use]
    pub fn max_fee(&self) -> Amount {
        self.max_fee
    }

    /// The outputs the agreed split gives when miners take `fee` (see [`crate::payout`]).
    ///
    /// # Errors
    /// [`TermsError::FeeExceedsFunds`], [`TermsError::ModeratorFeeExceedsFunds`],
    /// [`TermsError::AllOutputsDust`].
    pub fn payments(&self, fee: Amount) -> Result<Vec<Payment>, TermsError> {
        self.plan.payments(self.total, fee)
    }

    /// The sequence every input of this path carries: no relative lock (and RBF signalled) for
    /// two signatures; the timeout in blocks for the seller's claim.
    #[must_use]
    pub fn sequence(&self) -> Sequence {
        match self.path {
            Path::Cooperative => Sequence::ENABLE_RBF_NO_LOCKTIME,
            Path::Timeout => Sequence::from_height(self.escrow.timeout_blocks()),
        }
    }

    /// The weight of the finished transaction with these outputs (signatures of
    /// [`SIGNATURE_WITNESS_BYTES`]).
    #[must_use]
    pub fn weight(&self, outputs: &[TxOut]) -> Weight {
        let witness_script_len = self.escrow.witness_script().len();
        let item = |len: usize| varint_len(len) + len;
        let witness_per_input = match self.path {
            // dummy, two signatures, witness script
            Path::Cooperative => {
                varint_len(4)
                    + item(0)
                    + 2 * item(SIGNATURE_WITNESS_BYTES)
                    + item(witness_script_len)
            }
            // seller's signature, the multisig's dissatisfaction (k + 1 empty items), script
            Path::Timeout => {
                varint_len(5)
                    + item(SIGNATURE_WITNESS_BYTES)
                    + 3 * item(0)
                    + item(witness_script_len)
            }
        };
        let inputs = self.fundings.len();
        let base = 4
            + varint_len(inputs)
            + inputs * (32 + 4 + item(0) + 4)
            + varint_len(outputs.len())
            + outputs
                .iter()
                .map(|o| 8 + item(o.script_pubkey.len()))
                .sum::<usize>()
            + 4;
        let witness = 2 + inputs * witness_per_input;
        Weight::from_wu((base * 4 + witness) as u64)
    }

    fn unsigned(&self, outputs: Vec<TxOut>) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: absolute::LockTime::ZERO,
            input: self
                .fundings
                .iter()
                .map(|f| TxIn {
                    previous_output: f.outpoint,
                    sequence: self.sequence(),
                    ..TxIn::default()
                })
                .collect(),
            output: outputs,
        }
    }

    /// Builds the unsigned PSBT of this spend at `fee_rate`.
    ///
    /// The fee is `fee_rate × weight`, rounded up to a whole satoshi, for the exact weight of the
    /// finished transaction. When the split drops a dust output, the weight (and so the fee) is
    /// computed again for the smaller transaction, until the set of outputs is stable.
    ///
    /// # Errors
    /// [`TermsError::FeeAboveCap`] if the fee exceeds the agreed cap, or any error of
    /// [`payments`](Self::payments).
    pub fn build(&self, fee_rate: FeeRate) -> Result<Psbt, TermsError> {
        // Start from every output the plan can have, with its real script (the weight depends on
        // script lengths); each round can only remove outputs.
        let mut outputs: Vec<TxOut> = self
            .plan_scripts()
            .into_iter()
            .map(|script_pubkey| TxOut {
                value: Amount::ZERO,
                script_pubkey,
            })
            .collect();
        let mut previous: Option<(Amount, Vec<TxOut>)> = None;
        for _ in 0..4 {
            let fee = fee_rate
                .fee_wu(self.weight(&outputs))
                .ok_or(TermsError::AmountOverflow)?;
            let next: Vec<TxOut> = self
                .payments(fee)?
                .into_iter()
                .map(|p| TxOut {
                    value: p.amount,
                    script_pubkey: p.script_pubkey,
                })
                .collect();
            let stable = next.len() >= outputs.len();
            if stable {
                // Same outputs as assumed (or, at a dust boundary, more: then keep the previous
                // round's smaller set and its higher fee, which is consistent with the rule).
                let (fee, chosen) = match previous {
                    Some((prev_fee, prev_outputs)) if next.len() > outputs.len() => {
                        (prev_fee, prev_outputs)
                    }
                    _ => (fee, next),
                };
                return self.finish(fee, chosen);
            }
            previous = Some((fee, next.clone()));
            outputs = next;
        }
        match previous {
            Some((fee, chosen)) => self.finish(fee, chosen),
            None => Err(TermsError::AllOutputsDust { total: self.total }),
        }
    }

    fn plan_scripts(&self) -> Vec<bitcoin::ScriptBuf> {
        match &self.plan {
            Plan::ToSeller { seller } => vec![seller.clone()],
            Plan::Refund { buyer, seller, .. } => vec![buyer.clone(), seller.clone()],
            Plan::Dispute {
                buyer,
                seller,
                moderator,
                ..
            } => vec![buyer.clone(), seller.clone(), moderator.clone()],
        }
    }

    fn finish(&self, fee: Amount, outputs: Vec<TxOut>) -> Result<Psbt, TermsError> {
        if fee > self.max_fee {
            return Err(TermsError::FeeAboveCap {
                fee,
                cap: self.max_fee,
            });
        }
        let mut psbt =
            Psbt::from_unsigned_tx(self.unsigned(outputs)).map_err(|e| TermsError::Descriptor {
                reason: e.to_string(),
            })?;
        for (input, funding) in psbt.inputs.iter_mut().zip(&self.fundings) {
            input.witness_utxo = Some(TxOut {
                value: funding.amount,
                script_pubkey: self.escrow.script_pubkey().to_owned(),
            });
            input.witness_script = Some(self.escrow.witness_script().to_owned());
        }
        Ok(psbt)
    }
}

fn varint_len(n: usize) -> usize {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        _ => 5,
    }
}

/// What [`check`] established about a PSBT that matches the terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// The miner fee the PSBT pays.
    pub fee: Amount,
    /// The outputs, as the agreed split.
    pub payments: Vec<Payment>,
}

/// Decodes a PSBT received from another party: binary (BIP 174) or its base64 text.
///
/// # Errors
/// [`CheckError::TooLarge`] before decoding anything over [`MAX_PSBT_BYTES`];
/// [`CheckError::Malformed`] for anything that is not a PSBT.
pub fn parse_psbt(bytes: &[u8]) -> Result<Psbt, CheckError> {
    let max_text = MAX_PSBT_BYTES / 3 * 4 + 4;
    if bytes.len() > max_text {
        return Err(CheckError::TooLarge {
            size: bytes.len(),
            max: MAX_PSBT_BYTES,
        });
    }
    let malformed = |reason: String| CheckError::Malformed { reason };
    if bytes.starts_with(b"psbt\xff") {
        if bytes.len() > MAX_PSBT_BYTES {
            return Err(CheckError::TooLarge {
                size: bytes.len(),
                max: MAX_PSBT_BYTES,
            });
        }
        return Psbt::deserialize(bytes).map_err(|e| malformed(e.to_string()));
    }
    let text =
        core::str::from_utf8(bytes).map_err(|_| malformed("neither binary nor base64".into()))?;
    text.trim()
        .parse::<Psbt>()
        .map_err(|e| malformed(e.to_string()))
}

/// Checks that `psbt` spends exactly the escrow's funding outputs, on the agreed path, paying
/// exactly the agreed split to the agreed addresses, with a miner fee within the cap, and with
/// nothing but `SIGHASH_ALL`. A phone runs this before it signs anything.
///
/// # Errors
/// The first mismatch, as a [`CheckError`].
pub fn check(psbt: &Psbt, terms: &Terms) -> Result<Checked, CheckError> {
    let tx = &psbt.unsigned_tx;
    if tx.version != Version::TWO {
        return Err(CheckError::WrongVersion {
            actual: tx.version.0,
        });
    }
    if tx.lock_time != absolute::LockTime::ZERO {
        return Err(CheckError::WrongLockTime);
    }
    let mut seen: BTreeMap<OutPoint, usize> = BTreeMap::new();
    for (index, txin) in tx.input.iter().enumerate() {
        let outpoint = txin.previous_output;
        let Some(funding) = terms.fundings.iter().find(|f| f.outpoint == outpoint) else {
            return Err(CheckError::ForeignInput { index, outpoint });
        };
        if seen.insert(outpoint, index).is_some() {
            return Err(CheckError::DuplicateInput { index, outpoint });
        }
        if txin.sequence != terms.sequence() {
            return Err(CheckError::WrongSequence {
                index,
                expected: terms.sequence().to_consensus_u32(),
                actual: txin.sequence.to_consensus_u32(),
            });
        }
        let input = psbt
            .inputs
            .get(index)
            .ok_or(CheckError::WrongInputUtxo { index })?;
        let expected_utxo = TxOut {
            value: funding.amount,
            script_pubkey: terms.escrow.script_pubkey().to_owned(),
        };
        if input.witness_utxo.as_ref() != Some(&expected_utxo) {
            return Err(CheckError::WrongInputUtxo { index });
        }
        if input.witness_script.as_deref() != Some(terms.escrow.witness_script())
            || input.redeem_script.is_some()
        {
            return Err(CheckError::WrongWitnessScript { index });
        }
        let all = PsbtSighashType::from(EcdsaSighashType::All);
        if input.sighash_type.is_some_and(|t| t != all) {
            return Err(CheckError::NonDefaultSighash { index });
        }
        for (key, signature) in &input.partial_sigs {
            if terms.escrow.role_of(key).is_none() {
                return Err(CheckError::UnknownSigner { index });
            }
            if signature.sighash_type != EcdsaSighashType::All {
                return Err(CheckError::NonDefaultSighash { index });
            }
        }
    }
    if let Some(missing) = terms
        .fundings
        .iter()
        .find(|f| !seen.contains_key(&f.outpoint))
    {
        return Err(CheckError::MissingInput {
            outpoint: missing.outpoint,
        });
    }
    let mut paid = Amount::ZERO;
    for output in &tx.output {
        paid = paid
            .checked_add(output.value)
            .ok_or(CheckError::OutputsExceedInputs)?;
    }
    let fee = terms
        .total
        .checked_sub(paid)
        .ok_or(CheckError::OutputsExceedInputs)?;
    if fee > terms.max_fee {
        return Err(CheckError::FeeAboveCap {
            fee,
            cap: terms.max_fee,
        });
    }
    let payments = terms.payments(fee)?;
    if payments.len() != tx.output.len() {
        return Err(CheckError::WrongOutputCount {
            expected: payments.len(),
            actual: tx.output.len(),
        });
    }
    for (index, (payment, output)) in payments.iter().zip(&tx.output).enumerate() {
        if payment.script_pubkey != output.script_pubkey {
            return Err(CheckError::WrongPayee {
                index,
                role: payment.role,
            });
        }
        if payment.amount != output.value {
            return Err(CheckError::WrongAmount {
                index,
                role: payment.role,
                expected: payment.amount,
                actual: output.value,
            });
        }
    }
    Ok(Checked { fee, payments })
}

/// Checks `psbt` against `terms` and, if it matches, signs every input with `key`
/// (ECDSA, `SIGHASH_ALL`, low-R). Returns the role the key has in the escrow.
///
/// # Errors
/// [`SignError::Check`] if the PSBT does not match (nothing is signed);
/// [`SignError::KeyNotInEscrow`]; [`SignError::NotTheSeller`] for anyone else on the timeout path.
pub fn sign(psbt: &mut Psbt, terms: &Terms, key: &SecretKey) -> Result<Role, SignError> {
    check(psbt, terms)?;
    let secp = Secp256k1::signing_only();
    let public = PublicKey::new(key.public_key(&secp));
    let role = terms
        .escrow
        .role_of(&public)
        .ok_or(SignError::KeyNotInEscrow)?;
    if terms.path == Path::Timeout && role != Role::Seller {
        return Err(SignError::NotTheSeller);
    }
    let mut cache = SighashCache::new(&psbt.unsigned_tx);
    let mut signatures = Vec::with_capacity(psbt.inputs.len());
    for (index, txin) in psbt.unsigned_tx.input.iter().enumerate() {
        let amount = terms
            .fundings
            .iter()
            .find(|f| f.outpoint == txin.previous_output)
            .map(|f| f.amount)
            .ok_or(SignError::Sighash { index })?;
        let sighash = cache
            .p2wsh_signature_hash(
                index,
                terms.escrow.witness_script(),
                amount,
                EcdsaSighashType::All,
            )
            .map_err(|_| SignError::Sighash { index })?;
        let signature = secp.sign_ecdsa_low_r(&Message::from(sighash), key);
        signatures.push(ecdsa::Signature {
            signature,
            sighash_type: EcdsaSighashType::All,
        });
    }
    for (input, signature) in psbt.inputs.iter_mut().zip(signatures) {
        input.partial_sigs.insert(public, signature);
    }
    Ok(role)
}

/// Merges the signatures of `other` into `psbt` (both must be the same unsigned transaction).
///
/// # Errors
/// [`FinalizeError::Mismatch`] if the transactions differ.
pub fn combine(psbt: &mut Psbt, other: Psbt) -> Result<(), FinalizeError> {
    psbt.combine(other).map_err(|_| FinalizeError::Mismatch)
}

/// Checks `psbt` against `terms` once more, completes every input's witness from the signatures
/// present (miniscript picks the satisfaction), and extracts the final transaction, which
/// miniscript's interpreter has checked against the escrow's script.
///
/// # Errors
/// [`FinalizeError::Check`] if the PSBT does not match the terms;
/// [`FinalizeError::NotEnoughSignatures`] if the signatures do not satisfy the script.
pub fn finalize(mut psbt: Psbt, terms: &Terms) -> Result<Transaction, FinalizeError> {
    check(&psbt, terms)?;
    let secp = Secp256k1::verification_only();
    psbt.finalize_mut(&secp)
        .map_err(|errors| FinalizeError::NotEnoughSignatures {
            reason: errors
                .first()
                .map_or_else(|| "unknown".to_string(), ToString::to_string),
        })?;
    psbt.extract(&secp)
        .map_err(|e| FinalizeError::NotEnoughSignatures {
            reason: e.to_string(),
        })
}
