//! Build + check + sign (each signer) + finalize, per spending path.
//! Run with `cargo bench -p souk-escrow --bench paths`.

use criterion::{Criterion, criterion_group, criterion_main};
use souk_escrow::bitcoin::hashes::Hash;
use souk_escrow::bitcoin::secp256k1::{Secp256k1, SecretKey};
use souk_escrow::bitcoin::{
    Address, Amount, CompressedPublicKey, FeeRate, Network, OutPoint, Txid,
};
use souk_escrow::{Escrow, Funding, ModeratorFee, Spend, Terms, check, finalize, sign};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let secp = Secp256k1::new();
    let secret = |b: u8| SecretKey::from_slice(&[b; 32]).expect("valid");
    let (buyer, seller, moderator) = (secret(1), secret(2), secret(3));
    let public = |k: &SecretKey| CompressedPublicKey(k.public_key(&secp));
    let address = |k: &SecretKey| {
        Address::p2wpkh(&public(k), Network::Regtest)
            .as_unchecked()
            .clone()
    };
    let escrow = Escrow::moderated(public(&buyer), public(&seller), public(&moderator), 4_320)
        .expect("escrow");
    let fundings = [
        Funding {
            outpoint: OutPoint::new(Txid::from_byte_array([1; 32]), 0),
            amount: Amount::from_sat(400_000),
        },
        Funding {
            outpoint: OutPoint::new(Txid::from_byte_array([2; 32]), 1),
            amount: Amount::from_sat(150_000),
        },
    ];
    let paths: Vec<(&str, Spend, Vec<&SecretKey>)> = vec![
        (
            "release",
            Spend::Release {
                seller: address(&seller),
            },
            vec![&buyer, &seller],
        ),
        (
            "refund",
            Spend::Refund {
                buyer: address(&buyer),
                seller: address(&seller),
                buyer_bp: 10_000,
            },
            vec![&seller, &buyer],
        ),
        (
            "dispute",
            Spend::Dispute {
                buyer: address(&buyer),
                seller: address(&seller),
                moderator: address(&moderator),
                buyer_bp: 7_000,
                fee: ModeratorFee {
                    fixed: Amount::from_sat(5_000),
                    percentage_bp: 150,
                },
            },
            vec![&moderator, &buyer],
        ),
        (
            "timeout_claim",
            Spend::TimeoutClaim {
                seller: address(&seller),
            },
            vec![&seller],
        ),
    ];
    let mut group =
        c.benchmark_group("escrow_path (2 inputs: build + check + sign each + finalize)");
    for (name, spend, signers) in &paths {
        let terms = Terms::new(
            escrow.clone(),
            Network::Regtest,
            &fundings,
            spend,
            Amount::from_sat(20_000),
        )
        .expect("terms");
        group.bench_function(*name, |b| {
            b.iter(|| {
                let mut psbt = terms
                    .build(FeeRate::from_sat_per_vb_u32(10))
                    .expect("builds");
                check(&psbt, &terms).expect("matches");
                for key in signers {
                    sign(&mut psbt, &terms, key).expect("signs");
                }
                black_box(finalize(psbt, &terms).expect("finalizes"))
            });
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
