//! The Esplora stand-in over HTTP, proven with real escrow spends: what Bitcoin Core's
//! interpreter accepts goes in, forged witnesses, early timeout claims, double spends and
//! overspends are refused with Core's reasons.

use souk_escrow::bitcoin::consensus::serialize;
use souk_escrow::bitcoin::secp256k1::{Secp256k1, SecretKey};
use souk_escrow::bitcoin::{
    Address, Amount, CompressedPublicKey, FeeRate, Network, Transaction, TxOut,
};
use souk_escrow::{Escrow, Funding, Spend, Terms, finalize, sign};
use souk_testkit::Esplora;

const TIMEOUT: u16 = 144;

struct Parties {
    buyer: SecretKey,
    seller: SecretKey,
    moderator: SecretKey,
    escrow: Escrow,
}

fn parties() -> Parties {
    let secp = Secp256k1::new();
    let key = |b: u8| SecretKey::from_slice(&[b; 32]).expect("valid secret");
    let public = |k: &SecretKey| CompressedPublicKey(k.public_key(&secp));
    let (buyer, seller, moderator) = (key(1), key(2), key(3));
    let escrow = Escrow::moderated(public(&buyer), public(&seller), public(&moderator), TIMEOUT)
        .expect("distinct keys");
    Parties {
        buyer,
        seller,
        moderator,
        escrow,
    }
}

fn address_of(key: &SecretKey) -> Address {
    let secp = Secp256k1::new();
    Address::p2wpkh(
        &CompressedPublicKey(key.public_key(&secp)),
        Network::Regtest,
    )
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn get_json(url: String) -> serde_json::Value {
    client()
        .get(url)
        .send()
        .await
        .expect("reachable")
        .json()
        .await
        .expect("json")
}

async fn broadcast(chain: &Esplora, tx: &Transaction) -> (u16, String) {
    let hex: String = serialize(tx).iter().map(|b| format!("{b:02x}")).collect();
    let response = client()
        .post(format!("{}/tx", chain.url))
        .body(hex)
        .send()
        .await
        .expect("reachable");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

/// Pays 100,000 sats into the escrow and confirms it; returns the funding and the terms maker.
fn fund(chain: &Esplora, p: &Parties) -> Funding {
    let outpoint = chain
        .pay(&p.escrow.address(Network::Regtest).to_string(), 100_000)
        .expect("regtest address");
    chain.mine(1);
    Funding {
        outpoint,
        amount: Amount::from_sat(100_000),
    }
}

fn terms(p: &Parties, funding: Funding, spend: &Spend) -> Terms {
    Terms::new(
        p.escrow.clone(),
        Network::Regtest,
        &[funding],
        spend,
        Amount::from_sat(5_000),
    )
    .expect("valid terms")
}

fn release(p: &Parties) -> Spend {
    Spend::Release {
        seller: address_of(&p.seller).as_unchecked().clone(),
    }
}

#[tokio::test]
async fn a_release_signed_by_buyer_and_seller_is_accepted_and_confirmed() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let funding = fund(&chain, &p);
    let terms = terms(&p, funding, &release(&p));
    let mut psbt = terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &terms, &p.buyer).expect("buyer signs");
    sign(&mut psbt, &terms, &p.seller).expect("seller signs");
    let tx = finalize(psbt, &terms).expect("finalizes");
    let (status, body) = broadcast(&chain, &tx).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, tx.compute_txid().to_string());

    let spent = get_json(format!(
        "{}/tx/{}/outspend/{}",
        chain.url, funding.outpoint.txid, funding.outpoint.vout
    ))
    .await;
    assert_eq!(spent["spent"], true);
    assert_eq!(spent["txid"], body);
    chain.mine(1);
    let status = get_json(format!("{}/tx/{body}/status", chain.url)).await;
    assert_eq!(status["confirmed"], true);
    assert_eq!(status["block_height"], chain.height());
    assert!(chain.balance(&address_of(&p.seller).script_pubkey()) > 95_000);

    // Broadcasting the same transaction again is harmless; spending the escrow again is not.
    assert_eq!(broadcast(&chain, &tx).await.0, 200);
}

#[tokio::test]
async fn a_forged_witness_is_refused_by_the_script_interpreter() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let funding = fund(&chain, &p);
    let terms = terms(&p, funding, &release(&p));
    let mut psbt = terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &terms, &p.buyer).expect("buyer signs");
    sign(&mut psbt, &terms, &p.seller).expect("seller signs");
    let mut tx = finalize(psbt, &terms).expect("finalizes");
    // Flip one byte inside the first signature of the witness.
    let mut items: Vec<Vec<u8>> = tx.input[0].witness.iter().map(<[u8]>::to_vec).collect();
    let sig = items
        .iter_mut()
        .find(|i| i.len() > 60)
        .expect("a signature");
    sig[10] ^= 1;
    tx.input[0].witness = items.into();
    let (status, body) = broadcast(&chain, &tx).await;
    assert_eq!(status, 400);
    assert!(
        body.contains("mandatory-script-verify-flag-failed"),
        "{body}"
    );
    assert_eq!(
        chain.balance(&p.escrow.script_pubkey().to_owned()),
        100_000,
        "nothing moved"
    );
}

#[tokio::test]
async fn the_seller_alone_can_claim_only_after_the_timeout() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let funding = fund(&chain, &p);
    let claim = Spend::TimeoutClaim {
        seller: address_of(&p.seller).as_unchecked().clone(),
    };
    let terms = terms(&p, funding, &claim);
    let mut psbt = terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &terms, &p.seller).expect("seller signs");
    let tx = finalize(psbt, &terms).expect("finalizes");
    let (status, body) = broadcast(&chain, &tx).await;
    assert_eq!(status, 400, "one confirmation is not {TIMEOUT}");
    assert!(body.contains("non-BIP68-final"), "{body}");
    chain.mine(u32::from(TIMEOUT) - 2);
    assert_eq!(broadcast(&chain, &tx).await.0, 400, "one block early");
    chain.mine(1);
    let (status, body) = broadcast(&chain, &tx).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn double_spends_overspends_and_garbage_are_refused() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let funding = fund(&chain, &p);
    let release_terms = terms(&p, funding, &release(&p));
    let mut psbt = release_terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &release_terms, &p.buyer).expect("signs");
    sign(&mut psbt, &release_terms, &p.seller).expect("signs");
    let release_tx = finalize(psbt, &release_terms).expect("finalizes");

    let refund = Spend::Refund {
        buyer: address_of(&p.buyer).as_unchecked().clone(),
        seller: address_of(&p.seller).as_unchecked().clone(),
        buyer_bp: 10_000,
    };
    let refund_terms = terms(&p, funding, &refund);
    let mut psbt = refund_terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &refund_terms, &p.seller).expect("signs");
    sign(&mut psbt, &refund_terms, &p.buyer).expect("signs");
    let refund_tx = finalize(psbt, &refund_terms).expect("finalizes");

    assert_eq!(broadcast(&chain, &release_tx).await.0, 200);
    let (status, body) = broadcast(&chain, &refund_tx).await;
    assert_eq!(status, 400);
    assert!(body.contains("txn-mempool-conflict"), "{body}");

    // An overspend of a fresh funding.
    let other = fund(&chain, &p);
    let mut greedy = refund_tx.clone();
    greedy.input[0].previous_output = other.outpoint;
    greedy.output = vec![TxOut {
        value: Amount::from_sat(200_000),
        script_pubkey: address_of(&p.buyer).script_pubkey(),
    }];
    let (status, body) = broadcast(&chain, &greedy).await;
    assert_eq!(status, 400);
    assert!(body.contains("bad-txns-in-belowout"), "{body}");

    // An output that does not exist.
    let mut ghost = refund_tx.clone();
    ghost.input[0].previous_output.vout = 7;
    let (status, body) = broadcast(&chain, &ghost).await;
    assert_eq!(status, 400);
    assert!(body.contains("missing-inputs"), "{body}");

    let response = client()
        .post(format!("{}/tx", chain.url))
        .body("zz-not-hex")
        .send()
        .await
        .expect("reachable");
    assert_eq!(response.status(), 400);
}

#[tokio::test]
async fn payments_to_an_address_are_listed_with_their_confirmations() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let address = p.escrow.address(Network::Regtest).to_string();
    let outpoint = chain.pay(&address, 42_000).expect("pays");
    let utxos = get_json(format!("{}/address/{address}/utxo", chain.url)).await;
    assert_eq!(utxos[0]["txid"], outpoint.txid.to_string());
    assert_eq!(utxos[0]["value"], 42_000);
    assert_eq!(utxos[0]["status"]["confirmed"], false);
    chain.mine(3);
    let txs = get_json(format!("{}/address/{address}/txs", chain.url)).await;
    assert_eq!(txs[0]["status"]["block_height"], chain.height() - 2);
    let height: String = client()
        .get(format!("{}/blocks/tip/height", chain.url))
        .send()
        .await
        .expect("height")
        .text()
        .await
        .expect("text");
    assert_eq!(height, chain.height().to_string());
}

#[tokio::test]
async fn a_dispute_payout_signed_by_the_moderator_and_one_party_is_accepted() {
    let chain = Esplora::start(Network::Regtest).await.expect("bind");
    let p = parties();
    let funding = fund(&chain, &p);
    let decision = Spend::Dispute {
        buyer: address_of(&p.buyer).as_unchecked().clone(),
        seller: address_of(&p.seller).as_unchecked().clone(),
        moderator: address_of(&p.moderator).as_unchecked().clone(),
        buyer_bp: 7_000,
        fee: souk_escrow::ModeratorFee {
            fixed: Amount::from_sat(1_000),
            percentage_bp: 100,
        },
    };
    let terms = terms(&p, funding, &decision);
    let mut psbt = terms
        .build(FeeRate::from_sat_per_vb_u32(2))
        .expect("builds");
    sign(&mut psbt, &terms, &p.moderator).expect("moderator signs");
    sign(&mut psbt, &terms, &p.buyer).expect("buyer signs");
    let tx = finalize(psbt, &terms).expect("finalizes");
    let (status, body) = broadcast(&chain, &tx).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        tx.output.len(),
        3,
        "moderator fee, buyer share, seller share"
    );
}
