//! Every spending path is valid under Bitcoin Core's script interpreter, and every wrong
//! combination is not. The verdicts come from `bitcoinconsensus` (libbitcoinconsensus, Core 25.1),
//! not from our own reading of the scripts.

mod common;

use common::*;
use souk_escrow::bitcoin::secp256k1::SecretKey;
use souk_escrow::bitcoin::transaction::Version;
use souk_escrow::bitcoin::{Amount, Sequence, Transaction, TxOut};
use souk_escrow::{Escrow, ModeratorFee, Spend, finalize, sign};

/// Builds, has each of `signers` check and sign, finalizes, and asks Core.
fn spend_with(
    escrow: Escrow,
    amounts: &[u64],
    spend: &Spend,
    signers: &[&SecretKey],
) -> (Transaction, Result<(), String>) {
    let chain = fund(&escrow, amounts);
    let terms = terms(escrow, &chain, spend);
    let mut psbt = terms.build(fee_rate()).expect("builds");
    for key in signers {
        sign(&mut psbt, &terms, key).expect("signs");
    }
    let tx = finalize(psbt, &terms).expect("finalizes");
    let verdict = chain.verify(&tx);
    (tx, verdict)
}

#[test]
fn release_by_buyer_and_seller_is_valid() {
    let (tx, verdict) = spend_with(
        moderated(),
        &[300_000],
        &release(),
        &[&buyer().secret, &seller().secret],
    );
    assert_eq!(verdict, Ok(()));
    assert_eq!(tx.output.len(), 1);
    assert_eq!(tx.output[0].script_pubkey, script_of(&seller()));
}

#[test]
fn release_spends_every_funding_output() {
    let (tx, verdict) = spend_with(
        moderated(),
        &[100_000, 70_000, 30_000],
        &release(),
        &[&buyer().secret, &seller().secret],
    );
    assert_eq!(verdict, Ok(()));
    assert_eq!(tx.input.len(), 3);
}

#[test]
fn full_and_partial_refunds_are_valid() {
    for bp in [10_000, 2_500] {
        let (tx, verdict) = spend_with(
            moderated(),
            &[300_000],
            &refund(bp),
            &[&seller().secret, &buyer().secret],
        );
        assert_eq!(verdict, Ok(()), "refund of {bp} bp");
        assert_eq!(tx.output[0].script_pubkey, script_of(&buyer()));
        assert_eq!(tx.output.len(), if bp == 10_000 { 1 } else { 2 });
    }
}

#[test]
fn a_dispute_settled_by_the_moderator_with_either_party_is_valid() {
    let fee = ModeratorFee {
        fixed: Amount::from_sat(5_000),
        percentage_bp: 150,
    };
    for party in [buyer(), seller()] {
        let (tx, verdict) = spend_with(
            moderated(),
            &[1_000_000],
            &dispute(7_000, fee),
            &[&moderator().secret, &party.secret],
        );
        assert_eq!(verdict, Ok(()));
        assert_eq!(tx.output.len(), 3);
        assert_eq!(tx.output[2].script_pubkey, script_of(&moderator()));
        assert_eq!(tx.output[2].value, Amount::from_sat(5_000 + 15_000));
    }
}

#[test]
fn the_seller_alone_can_claim_after_the_timeout() {
    let (tx, verdict) = spend_with(
        moderated(),
        &[300_000, 50_000],
        &timeout_claim(),
        &[&seller().secret],
    );
    assert_eq!(verdict, Ok(()));
    assert!(
        tx.input
            .iter()
            .all(|i| i.sequence == Sequence::from_height(TIMEOUT))
    );
}

#[test]
fn the_direct_escrow_releases_refunds_and_times_out() {
    assert_eq!(
        spend_with(
            direct(),
            &[80_000],
            &release(),
            &[&buyer().secret, &seller().secret]
        )
        .1,
        Ok(())
    );
    assert_eq!(
        spend_with(
            direct(),
            &[80_000],
            &refund(10_000),
            &[&seller().secret, &buyer().secret]
        )
        .1,
        Ok(())
    );
    assert_eq!(
        spend_with(direct(), &[80_000], &timeout_claim(), &[&seller().secret]).1,
        Ok(())
    );
}

// ---- wrong combinations, witnesses assembled by hand ------------------------------------------

/// An unsigned cooperative release of one 300,000 sat funding, ready for hand-made witnesses.
fn cooperative() -> (Escrow, Chain, Transaction) {
    let escrow = moderated();
    let chain = fund(&escrow, &[300_000]);
    let terms = terms(escrow.clone(), &chain, &release());
    let tx = terms.build(fee_rate()).expect("builds").unsigned_tx;
    (escrow, chain, tx)
}

fn sig(tx: &Transaction, escrow: &Escrow, key: &SecretKey) -> Vec<u8> {
    raw_signature(tx, 0, escrow, Amount::from_sat(300_000), key)
}

#[test]
fn the_hand_made_witness_is_valid_when_it_should_be() {
    // The control for the refusals below: the same harness with two right signatures passes.
    let (escrow, chain, mut tx) = cooperative();
    let (b, s) = (
        sig(&tx, &escrow, &buyer().secret),
        sig(&tx, &escrow, &seller().secret),
    );
    tx.input[0].witness = multisig_witness(&[&b, &s], &escrow);
    assert_eq!(chain.verify(&tx), Ok(()));
}

#[test]
fn one_signature_is_not_enough() {
    let (escrow, chain, mut tx) = cooperative();
    let b = sig(&tx, &escrow, &buyer().secret);
    tx.input[0].witness = multisig_witness(&[&b], &escrow);
    assert!(chain.verify(&tx).is_err());
    tx.input[0].witness = multisig_witness(&[&b, &b], &escrow);
    assert!(
        chain.verify(&tx).is_err(),
        "the same signature twice is still one party"
    );
}

#[test]
fn a_signature_from_a_key_outside_the_escrow_is_refused() {
    let (escrow, chain, mut tx) = cooperative();
    let (b, x) = (
        sig(&tx, &escrow, &buyer().secret),
        sig(&tx, &escrow, &outsider().secret),
    );
    tx.input[0].witness = multisig_witness(&[&b, &x], &escrow);
    assert!(chain.verify(&tx).is_err());
}

#[test]
fn the_moderator_alone_cannot_spend() {
    let (escrow, chain, mut tx) = cooperative();
    let m = sig(&tx, &escrow, &moderator().secret);
    tx.input[0].witness = multisig_witness(&[&m], &escrow);
    assert!(chain.verify(&tx).is_err(), "multisig branch");
    tx.input[0].sequence = Sequence::from_height(TIMEOUT);
    let m = sig(&tx, &escrow, &moderator().secret);
    tx.input[0].witness = timeout_witness(&m, &escrow);
    assert!(chain.verify(&tx).is_err(), "timeout branch is the seller's");
}

#[test]
fn the_buyer_alone_cannot_spend_through_the_timeout_branch() {
    let (escrow, chain, mut tx) = cooperative();
    tx.input[0].sequence = Sequence::from_height(TIMEOUT);
    let b = sig(&tx, &escrow, &buyer().secret);
    tx.input[0].witness = timeout_witness(&b, &escrow);
    assert!(chain.verify(&tx).is_err());
}

#[test]
fn the_timeout_claim_fails_before_the_lock_time_or_with_a_wrong_sequence() {
    let (escrow, chain, template) = cooperative();
    let with_sequence = |sequence: Sequence, version: i32| {
        let mut tx = template.clone();
        tx.version = Version(version);
        tx.input[0].sequence = sequence;
        let s = sig(&tx, &escrow, &seller().secret);
        tx.input[0].witness = timeout_witness(&s, &escrow);
        chain.verify(&tx)
    };
    assert_eq!(
        with_sequence(Sequence::from_height(TIMEOUT), 2),
        Ok(()),
        "control"
    );
    assert!(
        with_sequence(Sequence::from_height(TIMEOUT + 1), 2).is_ok(),
        "later is fine"
    );
    assert!(
        with_sequence(Sequence::from_height(TIMEOUT - 1), 2).is_err(),
        "one block early"
    );
    assert!(
        with_sequence(Sequence::ENABLE_RBF_NO_LOCKTIME, 2).is_err(),
        "relative lock disabled"
    );
    assert!(
        with_sequence(Sequence::from_512_second_intervals(TIMEOUT), 2).is_err(),
        "time, not blocks"
    );
    assert!(
        with_sequence(Sequence::from_height(TIMEOUT), 1).is_err(),
        "version 1 has no BIP 68"
    );
}

#[test]
fn signatures_over_other_outputs_do_not_carry_over() {
    let (escrow, chain, tx) = cooperative();
    let (b, s) = (
        sig(&tx, &escrow, &buyer().secret),
        sig(&tx, &escrow, &seller().secret),
    );
    let mut redirected = tx.clone();
    redirected.output = vec![TxOut {
        value: tx.output[0].value,
        script_pubkey: script_of(&outsider()),
    }];
    redirected.input[0].witness = multisig_witness(&[&b, &s], &escrow);
    assert!(chain.verify(&redirected).is_err());
    let mut more_fee = tx.clone();
    more_fee.output[0].value = tx.output[0].value - Amount::from_sat(1);
    more_fee.input[0].witness = multisig_witness(&[&b, &s], &escrow);
    assert!(chain.verify(&more_fee).is_err(), "one satoshi changed");
}

#[test]
fn signatures_in_the_wrong_key_order_fail() {
    // OP_CHECKMULTISIG matches signatures to keys in script order (buyer, seller, moderator).
    let (escrow, chain, mut tx) = cooperative();
    let (b, s) = (
        sig(&tx, &escrow, &buyer().secret),
        sig(&tx, &escrow, &seller().secret),
    );
    tx.input[0].witness = multisig_witness(&[&s, &b], &escrow);
    assert!(chain.verify(&tx).is_err());
}
