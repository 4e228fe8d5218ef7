//! The property that the fuzz target `parse_psbt_check` checks, shared with the test that
//! replays its corpus (`tests/fuzz_corpus.rs`). Not part of the API.

use std::sync::OnceLock;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Secp256k1, SecretKey};
use bitcoin::{Address, Amount, CompressedPublicKey, FeeRate, Network, OutPoint, Txid};

use crate::{Escrow, Funding, Spend, Terms, check, finalize, parse_psbt, sign};

struct Fixture {
    terms: Terms,
    buyer: SecretKey,
    seller: SecretKey,
}

#[allow(
    clippy::expect_used,
    reason = "constant keys and amounts that are valid by construction"
)]
fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let secp = Secp256k1::new();
        let secret = |b: u8| SecretKey::from_slice(&[b; 32]).expect("valid secret");
        let (buyer, seller, moderator) = (secret(1), secret(2), secret(3));
        let public = |k: &SecretKey| CompressedPublicKey(k.public_key(&secp));
        let escrow = Escrow::moderated(public(&buyer), public(&seller), public(&moderator), 144)
            .expect("valid escrow");
        let fundings = [
            Funding {
                outpoint: OutPoint::new(Txid::from_byte_array([7; 32]), 0),
                amount: Amount::from_sat(90_000),
            },
            Funding {
                outpoint: OutPoint::new(Txid::from_byte_array([8; 32]), 3),
                amount: Amount::from_sat(10_000),
            },
        ];
        let seller_address = Address::p2wpkh(&public(&seller), Network::Regtest);
        let spend = Spend::Release {
            seller: seller_address.as_unchecked().clone(),
        };
        let terms = Terms::new(
            escrow,
            Network::Regtest,
            &fundings,
            &spend,
            Amount::from_sat(5_000),
        )
        .expect("valid terms");
        Fixture {
            terms,
            buyer,
            seller,
        }
    })
}

/// PSBTs for the fixture's terms: binary and base64, unsigned, signed by one and by both
/// parties. The committed seed corpus holds these.
#[allow(clippy::expect_used, reason = "built from the fixture, which is valid")]
#[must_use]
pub fn seeds() -> Vec<Vec<u8>> {
    let f = fixture();
    let mut psbt = f
        .terms
        .build(FeeRate::from_sat_per_vb_u32(5))
        .expect("builds");
    let mut out = vec![psbt.serialize(), psbt.to_string().into_bytes()];
    sign(&mut psbt, &f.terms, &f.buyer).expect("signs");
    out.push(psbt.serialize());
    sign(&mut psbt, &f.terms, &f.seller).expect("signs");
    out.push(psbt.serialize());
    out.push(psbt.to_string().into_bytes());
    out
}

/// Runs the properties on `data`. Panics (which the fuzzer reports) if one breaks:
///
/// - parsing, checking, signing and finalizing never panic, whatever the input;
/// - a PSBT that passes `check` can be signed by a party, and still passes `check` afterwards;
/// - a PSBT signed by both parties that finalizes gives a transaction spending exactly the
///   escrow's funding outputs.
pub fn parse_psbt_check(data: &[u8]) {
    let f = fixture();
    let Ok(mut psbt) = parse_psbt(data) else {
        return;
    };
    if check(&psbt, &f.terms).is_err() {
        return;
    }
    let signed = sign(&mut psbt, &f.terms, &f.buyer);
    assert!(
        signed.is_ok(),
        "a PSBT that passed check must be signable: {signed:?}"
    );
    assert!(
        check(&psbt, &f.terms).is_ok(),
        "signing keeps the PSBT consistent"
    );
    let signed = sign(&mut psbt, &f.terms, &f.seller);
    assert!(signed.is_ok(), "the seller can sign it too: {signed:?}");
    if let Ok(tx) = finalize(psbt, &f.terms) {
        assert_eq!(tx.input.len(), f.terms.fundings().len());
    }
}
