//! A small world for escrow tests: three parties and an outsider with fixed keys, funding
//! transactions paying into the escrow, and Bitcoin Core's interpreter (`bitcoinconsensus`)
//! to judge the result.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the fixture"
)]

use std::collections::HashMap;

use souk_escrow::bitcoin::absolute::LockTime;
use souk_escrow::bitcoin::address::NetworkUnchecked;
use souk_escrow::bitcoin::hashes::Hash;
use souk_escrow::bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use souk_escrow::bitcoin::sighash::{EcdsaSighashType, SighashCache};
use souk_escrow::bitcoin::transaction::Version;
use souk_escrow::bitcoin::{
    Address, Amount, CompressedPublicKey, FeeRate, Network, OutPoint, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness,
};
use souk_escrow::{Escrow, Funding, ModeratorFee, Spend, Terms};

pub const NETWORK: Network = Network::Regtest;
pub const TIMEOUT: u16 = 1_000;

pub struct Party {
    pub secret: SecretKey,
    pub public: CompressedPublicKey,
    pub address: Address,
}

pub fn party(byte: u8) -> Party {
    let secp = Secp256k1::new();
    let secret = SecretKey::from_slice(&[byte; 32]).expect("valid secret");
    let public = CompressedPublicKey(secret.public_key(&secp));
    Party {
        secret,
        public,
        address: Address::p2wpkh(&public, NETWORK),
    }
}

pub fn buyer() -> Party {
    party(1)
}
pub fn seller() -> Party {
    party(2)
}
pub fn moderator() -> Party {
    party(3)
}
pub fn outsider() -> Party {
    party(4)
}

pub fn moderated() -> Escrow {
    Escrow::moderated(buyer().public, seller().public, moderator().public, TIMEOUT).expect("valid")
}

pub fn direct() -> Escrow {
    Escrow::direct(buyer().public, seller().public, TIMEOUT).expect("valid")
}

/// Funding transactions paying `amounts` into `escrow`, one output each, plus the map from
/// outpoint to output that the interpreter needs.
pub struct Chain {
    pub fundings: Vec<Funding>,
    pub utxos: HashMap<OutPoint, TxOut>,
}

pub fn fund(escrow: &Escrow, amounts: &[u64]) -> Chain {
    let mut fundings = Vec::new();
    let mut utxos = HashMap::new();
    for (i, amount) in amounts.iter().enumerate() {
        let funding_tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint {
                    txid: Txid::from_byte_array([i as u8 + 0x40; 32]),
                    vout: 0,
                },
                ..TxIn::default()
            }],
            output: vec![TxOut {
                value: Amount::from_sat(*amount),
                script_pubkey: escrow.script_pubkey().to_owned(),
            }],
        };
        let outpoint = OutPoint {
            txid: funding_tx.compute_txid(),
            vout: 0,
        };
        fundings.push(Funding {
            outpoint,
            amount: Amount::from_sat(*amount),
        });
        utxos.insert(outpoint, funding_tx.output[0].clone());
    }
    Chain { fundings, utxos }
}

impl Chain {
    /// Bitcoin Core's verdict on `tx` (all consensus flags, including CSV and segwit).
    pub fn verify(&self, tx: &Transaction) -> Result<(), String> {
        tx.verify(|outpoint| self.utxos.get(outpoint).cloned())
            .map_err(|e| e.to_string())
    }
}

pub fn unchecked(address: &Address) -> Address<NetworkUnchecked> {
    address.as_unchecked().clone()
}

pub fn release() -> Spend {
    Spend::Release {
        seller: unchecked(&seller().address),
    }
}

pub fn refund(buyer_bp: u16) -> Spend {
    Spend::Refund {
        buyer: unchecked(&buyer().address),
        seller: unchecked(&seller().address),
        buyer_bp,
    }
}

pub fn dispute(buyer_bp: u16, fee: ModeratorFee) -> Spend {
    Spend::Dispute {
        buyer: unchecked(&buyer().address),
        seller: unchecked(&seller().address),
        moderator: unchecked(&moderator().address),
        buyer_bp,
        fee,
    }
}

pub fn timeout_claim() -> Spend {
    Spend::TimeoutClaim {
        seller: unchecked(&seller().address),
    }
}

pub fn terms(escrow: Escrow, chain: &Chain, spend: &Spend) -> Terms {
    Terms::new(
        escrow,
        NETWORK,
        &chain.fundings,
        spend,
        Amount::from_sat(50_000),
    )
    .expect("valid terms")
}

pub fn fee_rate() -> FeeRate {
    FeeRate::from_sat_per_vb_u32(12)
}

/// A raw ECDSA signature (DER + sighash byte) by `key` over input `index` of `tx`, for building
/// witnesses by hand, including ones this crate would refuse to make.
pub fn raw_signature(
    tx: &Transaction,
    index: usize,
    escrow: &Escrow,
    amount: Amount,
    key: &SecretKey,
) -> Vec<u8> {
    let secp = Secp256k1::new();
    let sighash = SighashCache::new(tx)
        .p2wsh_signature_hash(
            index,
            escrow.witness_script(),
            amount,
            EcdsaSighashType::All,
        )
        .expect("sighash");
    let signature = secp.sign_ecdsa_low_r(&Message::from(sighash), key);
    let mut bytes = signature.serialize_der().to_vec();
    bytes.push(EcdsaSighashType::All as u8);
    bytes
}

/// Witness for the multisig branch: the dummy, then signatures in key order, then the script.
pub fn multisig_witness(signatures: &[&[u8]], escrow: &Escrow) -> Witness {
    let mut items: Vec<&[u8]> = vec![&[]];
    items.extend_from_slice(signatures);
    items.push(escrow.witness_script().as_bytes());
    Witness::from_slice(&items)
}

/// Witness for the timeout branch: the signature, the multisig's dissatisfaction, the script.
pub fn timeout_witness(signature: &[u8], escrow: &Escrow) -> Witness {
    Witness::from_slice(&[signature, &[], &[], &[], escrow.witness_script().as_bytes()])
}

pub fn script_of(party: &Party) -> ScriptBuf {
    party.address.script_pubkey()
}

pub fn sequence_of(tx: &Transaction) -> Sequence {
    tx.input[0].sequence
}
