//! Before a phone signs, `check` compares the PSBT with the agreed terms; each way a PSBT can
//! differ has its own error, and nothing is signed.

mod common;

use common::*;
use souk_escrow::bitcoin::PublicKey;
use souk_escrow::bitcoin::ecdsa;
use souk_escrow::bitcoin::hashes::Hash;
use souk_escrow::bitcoin::psbt::{Psbt, PsbtSighashType};
use souk_escrow::bitcoin::secp256k1::{Message, Secp256k1};
use souk_escrow::bitcoin::sighash::EcdsaSighashType;
use souk_escrow::bitcoin::transaction::Version;
use souk_escrow::bitcoin::{Amount, OutPoint, Sequence, TxIn, TxOut, Txid, absolute};
use souk_escrow::{
    CheckError, FinalizeError, ModeratorFee, Role, SignError, Spend, Terms, check, combine,
    finalize, parse_psbt, sign,
};

struct Case {
    terms: Terms,
    psbt: Psbt,
}

fn case(spend: &Spend) -> Case {
    let escrow = moderated();
    let chain = fund(&escrow, &[200_000, 100_000]);
    let terms = terms(escrow, &chain, spend);
    let psbt = terms.build(fee_rate()).expect("builds");
    Case { terms, psbt }
}

/// Alters a freshly built release PSBT and expects `check` (and so `sign`) to refuse it with `code`.
fn refuses(alter: impl FnOnce(&mut Psbt), code: &str) {
    refuses_in(&release(), alter, code);
}

fn refuses_in(spend: &Spend, alter: impl FnOnce(&mut Psbt), code: &str) {
    let Case { terms, mut psbt } = case(spend);
    alter(&mut psbt);
    let error = check(&psbt, &terms).expect_err("must be refused");
    assert_eq!(error.code(), code, "{error}");
    let before = psbt.clone();
    let refused = sign(&mut psbt, &terms, &buyer().secret).expect_err("sign refuses too");
    assert_eq!(refused, SignError::Check(error));
    assert_eq!(psbt, before, "nothing was signed");
}

#[test]
fn a_freshly_built_psbt_passes() {
    let Case { terms, psbt } = case(&release());
    let checked = check(&psbt, &terms).expect("matches");
    assert_eq!(checked.payments.len(), 1);
    assert_eq!(checked.payments[0].role, Role::Seller);
    assert_eq!(
        checked.fee + checked.payments[0].amount,
        Amount::from_sat(300_000)
    );
}

#[test]
fn inputs_must_be_exactly_the_escrow_fundings() {
    refuses(
        |p| p.unsigned_tx.input[0].previous_output = OutPoint::new(Txid::all_zeros(), 7),
        "foreign_input",
    );
    refuses(
        |p| {
            p.unsigned_tx.input.pop();
            p.inputs.pop();
        },
        "missing_input",
    );
    refuses(
        |p| {
            let again = p.unsigned_tx.input[0].clone();
            p.unsigned_tx.input.push(again);
            let input = p.inputs[0].clone();
            p.inputs.push(input);
        },
        "duplicate_input",
    );
}

#[test]
fn inputs_must_describe_the_escrow_output_and_its_value() {
    refuses(
        |p| {
            if let Some(utxo) = p.inputs[0].witness_utxo.as_mut() {
                utxo.value = Amount::from_sat(1_000_000);
            }
        },
        "wrong_input_utxo",
    );
    refuses(|p| p.inputs[1].witness_utxo = None, "wrong_input_utxo");
    refuses(
        |p| p.inputs[0].witness_script = Some(script_of(&outsider())),
        "wrong_witness_script",
    );
}

#[test]
fn only_sighash_all_is_accepted() {
    refuses(
        |p| {
            p.inputs[0].sighash_type = Some(PsbtSighashType::from(
                EcdsaSighashType::SinglePlusAnyoneCanPay,
            ))
        },
        "non_default_sighash",
    );
}

#[test]
fn signatures_from_outside_keys_are_refused() {
    refuses(
        |p| {
            let secp = Secp256k1::new();
            let msg = Message::from_digest([1; 32]);
            let signature = secp.sign_ecdsa(&msg, &outsider().secret);
            p.inputs[0].partial_sigs.insert(
                PublicKey::from(outsider().public),
                ecdsa::Signature::sighash_all(signature),
            );
        },
        "unknown_signer",
    );
}

#[test]
fn the_transaction_shape_is_fixed() {
    refuses(|p| p.unsigned_tx.version = Version::ONE, "wrong_version");
    refuses(
        |p| p.unsigned_tx.lock_time = absolute::LockTime::from_height(800_000).expect("height"),
        "wrong_lock_time",
    );
    refuses(
        |p| p.unsigned_tx.input[0].sequence = Sequence::from_height(TIMEOUT),
        "wrong_sequence",
    );
}

#[test]
fn outputs_must_pay_exactly_the_agreed_split() {
    refuses(
        |p| p.unsigned_tx.output[0].script_pubkey = script_of(&outsider()),
        "wrong_payee",
    );
    // One satoshi moved from the seller to the buyer in a 50 % refund.
    refuses_in(
        &refund(5_000),
        |p| {
            p.unsigned_tx.output[0].value += Amount::from_sat(1);
            p.unsigned_tx.output[1].value -= Amount::from_sat(1);
        },
        "wrong_amount",
    );
    refuses(
        |p| {
            p.unsigned_tx.output[0].value -= Amount::from_sat(1_000);
            p.unsigned_tx.output.push(TxOut {
                value: Amount::from_sat(1_000),
                script_pubkey: script_of(&outsider()),
            });
            p.outputs.push(Default::default());
        },
        "wrong_output_count",
    );
    refuses(
        |p| p.unsigned_tx.output[0].value = Amount::from_sat(300_001),
        "outputs_exceed_inputs",
    );
}

#[test]
fn a_higher_fee_within_the_cap_is_accepted_as_the_builders_choice() {
    // The fee rate is not part of the terms (it depends on the mempool when the PSBT is built);
    // the cap is. Paying miners 1 sat more is consistent with "everything else to the seller".
    let Case { terms, mut psbt } = case(&release());
    let built_fee = check(&psbt, &terms).expect("as built").fee;
    psbt.unsigned_tx.output[0].value -= Amount::from_sat(1);
    assert_eq!(
        check(&psbt, &terms).expect("within the cap").fee,
        built_fee + Amount::from_sat(1)
    );
}

#[test]
fn a_fee_above_the_cap_is_refused() {
    // 60,000 sat of fee: the split is still "all to the seller", but the cap is 50,000.
    refuses(
        |p| p.unsigned_tx.output[0].value = Amount::from_sat(240_000),
        "fee_above_cap",
    );
}

#[test]
fn the_split_is_checked_for_disputes_too() {
    let fee = ModeratorFee {
        fixed: Amount::from_sat(2_000),
        percentage_bp: 100,
    };
    let Case { terms, mut psbt } = case(&dispute(7_000, fee));
    check(&psbt, &terms).expect("as built");
    // The moderator pays itself 1 sat more, taken from the buyer.
    psbt.unsigned_tx.output[0].value -= Amount::from_sat(1);
    psbt.unsigned_tx.output[2].value += Amount::from_sat(1);
    let error = check(&psbt, &terms).expect_err("refused");
    assert!(
        matches!(
            error,
            CheckError::WrongAmount {
                index: 0,
                role: Role::Buyer,
                ..
            }
        ),
        "{error}"
    );
}

#[test]
fn keys_outside_the_escrow_cannot_sign() {
    let Case { terms, mut psbt } = case(&release());
    assert_eq!(
        sign(&mut psbt, &terms, &outsider().secret),
        Err(SignError::KeyNotInEscrow)
    );
}

#[test]
fn only_the_seller_signs_a_timeout_claim() {
    let Case { terms, mut psbt } = case(&timeout_claim());
    assert_eq!(
        sign(&mut psbt, &terms, &buyer().secret),
        Err(SignError::NotTheSeller)
    );
    assert_eq!(sign(&mut psbt, &terms, &seller().secret), Ok(Role::Seller));
}

#[test]
fn one_signature_does_not_finalize() {
    let Case { terms, mut psbt } = case(&release());
    sign(&mut psbt, &terms, &buyer().secret).expect("signs");
    let error = finalize(psbt, &terms).expect_err("needs two");
    assert_eq!(error.code(), "not_enough_signatures");
}

#[test]
fn phones_sign_separate_copies_that_combine() {
    let Case { terms, psbt } = case(&refund(10_000));
    let (mut at_seller, mut at_buyer) = (psbt.clone(), psbt);
    sign(&mut at_seller, &terms, &seller().secret).expect("seller signs");
    // The PSBT travels as base64 text through the inbox.
    let text = at_seller.to_string();
    let mut received = parse_psbt(text.as_bytes()).expect("parses");
    sign(&mut at_buyer, &terms, &buyer().secret).expect("buyer signs");
    combine(&mut received, at_buyer).expect("same transaction");
    let tx = finalize(received, &terms).expect("two signatures");
    let chain = fund(&moderated(), &[200_000, 100_000]);
    assert_eq!(chain.verify(&tx), Ok(()));
}

#[test]
fn psbts_for_different_transactions_do_not_combine() {
    let Case { mut psbt, .. } = case(&release());
    let Case { psbt: other, .. } = case(&refund(10_000));
    assert_eq!(combine(&mut psbt, other), Err(FinalizeError::Mismatch));
}

#[test]
fn psbts_parse_from_binary_and_base64_and_refuse_garbage() {
    let Case { psbt, .. } = case(&release());
    assert_eq!(parse_psbt(&psbt.serialize()).expect("binary"), psbt);
    assert_eq!(
        parse_psbt(psbt.to_string().as_bytes()).expect("base64"),
        psbt
    );
    assert_eq!(
        parse_psbt(b"not a psbt").expect_err("garbage").code(),
        "psbt_malformed"
    );
    assert_eq!(
        parse_psbt(b"psbt\xff\x00").expect_err("truncated").code(),
        "psbt_malformed"
    );
    let huge = vec![b'A'; souk_escrow::MAX_PSBT_BYTES * 2];
    assert_eq!(
        parse_psbt(&huge).expect_err("huge").code(),
        "psbt_too_large"
    );
    let mut huge_binary = b"psbt\xff".to_vec();
    huge_binary.resize(souk_escrow::MAX_PSBT_BYTES + 1, 0);
    assert_eq!(
        parse_psbt(&huge_binary).expect_err("huge").code(),
        "psbt_too_large"
    );
}

#[test]
fn an_input_from_elsewhere_cannot_be_slipped_in() {
    refuses(
        |p| {
            p.unsigned_tx.input.push(TxIn {
                previous_output: OutPoint::new(Txid::all_zeros(), 0),
                sequence: Sequence::ENABLE_RBF_NO_LOCKTIME,
                ..TxIn::default()
            });
            p.inputs.push(Default::default());
        },
        "foreign_input",
    );
}
