//! Error types, one per operation, each variant with a stable [`code`](TermsError::code).
//! Messages name amounts, indices and roles; they never contain keys or addresses.

use bitcoin::{Amount, OutPoint};

use crate::Role;

/// Why an escrow or the terms of a spend could not be set up, or a spend not built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TermsError {
    /// Two of the escrow's keys are the same key.
    #[error("the {first:?} and {second:?} keys are the same key; every party needs its own")]
    DuplicateKey {
        /// One role.
        first: Role,
        /// The other role.
        second: Role,
    },
    /// The timeout is zero blocks.
    #[error("the escrow timeout must be at least 1 block")]
    ZeroTimeout,
    /// miniscript refused the descriptor (should not happen for valid keys).
    #[error("miniscript refused the escrow descriptor: {reason}")]
    Descriptor {
        /// What miniscript said.
        reason: String,
    },
    /// A payout address is for another network than the escrow's.
    #[error("the {role:?} payout address is not a {network} address")]
    WrongNetwork {
        /// Whose address.
        role: Role,
        /// The escrow's network.
        network: bitcoin::Network,
    },
    /// A dispute payout needs a moderated escrow.
    #[error("a dispute resolution needs a moderated escrow; this is a direct-payment escrow")]
    NoModerator,
    /// A share in basis points is above 10,000.
    #[error("a share of {bp} basis points is more than 100 %")]
    ShareOutOfRange {
        /// The share given.
        bp: u16,
    },
    /// No funding outputs were given.
    #[error("the escrow has no funding outputs to spend")]
    NoFunding,
    /// A funding output is listed twice.
    #[error("funding output {outpoint} is listed twice")]
    DuplicateFunding {
        /// The repeated outpoint.
        outpoint: OutPoint,
    },
    /// A funding output has no value.
    #[error("funding output {outpoint} has a value of 0")]
    EmptyFunding {
        /// The outpoint.
        outpoint: OutPoint,
    },
    /// Amounts add up to more than 21 million BTC or overflow.
    #[error("the amounts add up to more than 21,000,000 BTC")]
    AmountOverflow,
    /// The miner fee would take everything.
    #[error("the miner fee of {fee} would use up the escrowed {total}")]
    FeeExceedsFunds {
        /// The fee.
        fee: Amount,
        /// What is escrowed.
        total: Amount,
    },
    /// The miner fee is above the agreed cap.
    #[error("the miner fee of {fee} is above the agreed cap of {cap}")]
    FeeAboveCap {
        /// The fee.
        fee: Amount,
        /// The cap.
        cap: Amount,
    },
    /// The moderator's fee is more than what is left after the miner fee.
    #[error("the moderator fee of {fee} is more than the {available} left after the miner fee")]
    ModeratorFeeExceedsFunds {
        /// The moderator's fee.
        fee: Amount,
        /// What is left to split.
        available: Amount,
    },
    /// Every output would be below the dust limit.
    #[error("{total} is too little to pay anyone an output above the dust limit")]
    AllOutputsDust {
        /// What was left to pay out.
        total: Amount,
    },
}

impl TermsError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::DuplicateKey { .. } => "duplicate_key",
            Self::ZeroTimeout => "zero_timeout",
            Self::Descriptor { .. } => "descriptor",
            Self::WrongNetwork { .. } => "wrong_network",
            Self::NoModerator => "no_moderator",
            Self::ShareOutOfRange { .. } => "share_out_of_range",
            Self::NoFunding => "no_funding",
            Self::DuplicateFunding { .. } => "duplicate_funding",
            Self::EmptyFunding { .. } => "empty_funding",
            Self::AmountOverflow => "amount_overflow",
            Self::FeeExceedsFunds { .. } => "fee_exceeds_funds",
            Self::FeeAboveCap { .. } => "fee_above_cap",
            Self::ModeratorFeeExceedsFunds { .. } => "moderator_fee_exceeds_funds",
            Self::AllOutputsDust { .. } => "all_outputs_dust",
        }
    }
}

/// Why a PSBT does not match the agreed terms. A phone refuses to sign on any of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CheckError {
    /// The bytes are over [`MAX_PSBT_BYTES`](crate::MAX_PSBT_BYTES).
    #[error("the PSBT is {size} bytes, more than the limit of {max}")]
    TooLarge {
        /// Size received.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The bytes are not a PSBT (BIP 174), or not base64 of one.
    #[error("not a valid PSBT: {reason}")]
    Malformed {
        /// What the decoder said.
        reason: String,
    },
    /// The transaction version is not 2 (needed for relative time locks).
    #[error("transaction version is {actual}, expected 2")]
    WrongVersion {
        /// Version found.
        actual: i32,
    },
    /// The transaction has an absolute lock time.
    #[error("the transaction must not have an absolute lock time")]
    WrongLockTime,
    /// An input spends something that is not one of the escrow's funding outputs.
    #[error("input {index} spends {outpoint}, which is not one of the escrow's funding outputs")]
    ForeignInput {
        /// Input index.
        index: usize,
        /// What it spends.
        outpoint: OutPoint,
    },
    /// An input is listed twice.
    #[error("input {index} spends {outpoint} a second time")]
    DuplicateInput {
        /// Input index.
        index: usize,
        /// What it spends.
        outpoint: OutPoint,
    },
    /// A funding output of the escrow is not spent.
    #[error(
        "funding output {outpoint} is not spent; an escrow spend must spend every funding output"
    )]
    MissingInput {
        /// The unspent funding output.
        outpoint: OutPoint,
    },
    /// An input's sequence does not match the spending path.
    #[error(
        "input {index} has sequence {actual:#010x}, expected {expected:#010x} for this spending path"
    )]
    WrongSequence {
        /// Input index.
        index: usize,
        /// What the path needs.
        expected: u32,
        /// What the PSBT has.
        actual: u32,
    },
    /// An input's `witness_utxo` is missing or is not the escrow's output with the funded value.
    #[error("input {index} does not describe the escrow's funding output and value")]
    WrongInputUtxo {
        /// Input index.
        index: usize,
    },
    /// An input's witness script is missing or is not the escrow's.
    #[error("input {index} does not carry the escrow's witness script")]
    WrongWitnessScript {
        /// Input index.
        index: usize,
    },
    /// An input asks for, or carries a signature with, a sighash type other than `ALL`.
    #[error("input {index} uses a sighash type other than ALL")]
    NonDefaultSighash {
        /// Input index.
        index: usize,
    },
    /// An input carries a signature from a key that is not one of the escrow's.
    #[error("input {index} carries a signature from a key outside the escrow")]
    UnknownSigner {
        /// Input index.
        index: usize,
    },
    /// The outputs pay more than the inputs hold.
    #[error("the outputs pay more than the escrow holds")]
    OutputsExceedInputs,
    /// The miner fee is above the agreed cap.
    #[error("the miner fee of {fee} is above the agreed cap of {cap}")]
    FeeAboveCap {
        /// The fee.
        fee: Amount,
        /// The cap.
        cap: Amount,
    },
    /// The number of outputs is not what the agreed split needs.
    #[error("the transaction has {actual} outputs; the agreed split has {expected}")]
    WrongOutputCount {
        /// Outputs the split needs.
        expected: usize,
        /// Outputs found.
        actual: usize,
    },
    /// An output pays someone other than the agreed payee.
    #[error("output {index} does not pay the agreed {role:?} address")]
    WrongPayee {
        /// Output index.
        index: usize,
        /// Who it should pay.
        role: Role,
    },
    /// An output pays the agreed payee the wrong amount.
    #[error("output {index} pays the {role:?} {actual}, the agreed split gives {expected}")]
    WrongAmount {
        /// Output index.
        index: usize,
        /// Who it pays.
        role: Role,
        /// The agreed amount.
        expected: Amount,
        /// The amount found.
        actual: Amount,
    },
    /// The agreed split cannot be computed with this PSBT's fee.
    #[error(transparent)]
    Terms(#[from] TermsError),
}

impl CheckError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge { .. } => "psbt_too_large",
            Self::Malformed { .. } => "psbt_malformed",
            Self::WrongVersion { .. } => "wrong_version",
            Self::WrongLockTime => "wrong_lock_time",
            Self::ForeignInput { .. } => "foreign_input",
            Self::DuplicateInput { .. } => "duplicate_input",
            Self::MissingInput { .. } => "missing_input",
            Self::WrongSequence { .. } => "wrong_sequence",
            Self::WrongInputUtxo { .. } => "wrong_input_utxo",
            Self::WrongWitnessScript { .. } => "wrong_witness_script",
            Self::NonDefaultSighash { .. } => "non_default_sighash",
            Self::UnknownSigner { .. } => "unknown_signer",
            Self::OutputsExceedInputs => "outputs_exceed_inputs",
            Self::FeeAboveCap { .. } => "fee_above_cap",
            Self::WrongOutputCount { .. } => "wrong_output_count",
            Self::WrongPayee { .. } => "wrong_payee",
            Self::WrongAmount { .. } => "wrong_amount",
            Self::Terms(inner) => inner.code(),
        }
    }
}

/// Why a party could not sign.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SignError {
    /// The PSBT failed [`check`](crate::check); nothing was signed.
    #[error("refusing to sign: {0}")]
    Check(#[from] CheckError),
    /// The key is not one of the escrow's three (or two).
    #[error("this key is not one of the escrow's keys")]
    KeyNotInEscrow,
    /// The timeout path is the seller's alone.
    #[error("only the seller signs the timeout claim")]
    NotTheSeller,
    /// Computing the signature hash failed (an input index out of range).
    #[error("could not compute the signature hash of input {index}")]
    Sighash {
        /// Input index.
        index: usize,
    },
}

impl SignError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Check(inner) => inner.code(),
            Self::KeyNotInEscrow => "key_not_in_escrow",
            Self::NotTheSeller => "not_the_seller",
            Self::Sighash { .. } => "sighash",
        }
    }
}

/// Why a PSBT could not be finalized into a transaction.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FinalizeError {
    /// The PSBT failed [`check`](crate::check).
    #[error("refusing to finalize: {0}")]
    Check(#[from] CheckError),
    /// Two PSBTs to combine are for different transactions.
    #[error("the PSBTs are for different transactions and cannot be combined")]
    Mismatch,
    /// The signatures present do not satisfy the escrow's script on some input.
    #[error("not enough valid signatures to spend: {reason}")]
    NotEnoughSignatures {
        /// What miniscript's finalizer said about the first failing input.
        reason: String,
    },
}

impl FinalizeError {
    /// The stable machine-readable code.
    #[must_use]
    pub fn code(&self) -> &'static str {
        match self {
            Self::Check(inner) => inner.code(),
            Self::Mismatch => "psbt_mismatch",
            Self::NotEnoughSignatures { .. } => "not_enough_signatures",
        }
    }
}
