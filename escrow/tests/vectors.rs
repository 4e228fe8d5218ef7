//! `escrow/test-vectors/escrow.json`: keys → descriptor → address on each network, and one fully
//! signed transaction per spending path with the outputs it spends, so that an independent
//! implementation can check them. Regenerated and compared here; rewrite after an intended
//! change with `SOUK_BLESS=1 cargo test -p souk-escrow --test vectors`.

use std::collections::HashMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use souk_escrow::bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use souk_escrow::bitcoin::hashes::Hash;
use souk_escrow::bitcoin::{
    Address, Amount, CompressedPublicKey, FeeRate, Network, OutPoint, ScriptBuf, Transaction,
    TxOut, Txid,
};
use souk_escrow::{Escrow, Funding, ModeratorFee, Spend, Terms, finalize, sign};
use souk_protocol::identity::EscrowKey;
use souk_protocol::{Keychain, Mnemonic};

const TIMEOUT: u16 = 4_320;
const PARTIES: [(&str, &str, &str); 3] = [
    (
        "buyer",
        "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about",
        "",
    ),
    (
        "seller",
        "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title",
        "TREZOR",
    ),
    (
        "moderator",
        "letter advice cage absurd amount doctor acoustic avoid letter advice cage above",
        "",
    ),
];

struct Party {
    key: EscrowKey,
    payout: Address,
}

fn parties() -> Vec<Party> {
    PARTIES
        .iter()
        .map(|(_, phrase, passphrase)| {
            let keys =
                Keychain::from_mnemonic(&Mnemonic::parse(phrase).expect("valid"), passphrase);
            Party {
                key: keys.escrow_key(Network::Regtest, 0).expect("derive"),
                payout: keys.payout_address(Network::Regtest, 0).expect("derive"),
            }
        })
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn fundings() -> Vec<Funding> {
    [(0x11u8, 1, 400_000u64), (0x22, 0, 150_000)]
        .into_iter()
        .map(|(byte, vout, sat)| Funding {
            outpoint: OutPoint::new(Txid::from_byte_array([byte; 32]), vout),
            amount: Amount::from_sat(sat),
        })
        .collect()
}

fn escrow_vector(kind: &str, escrow: &Escrow) -> Value {
    let addresses: serde_json::Map<String, Value> = [
        ("bitcoin", Network::Bitcoin),
        ("testnet", Network::Testnet),
        ("signet", Network::Signet),
        ("regtest", Network::Regtest),
    ]
    .into_iter()
    .map(|(name, network)| (name.to_string(), json!(escrow.address(network).to_string())))
    .collect();
    json!({
        "kind": kind,
        "descriptor": escrow.descriptor().to_string(),
        "witness_script_hex": hex(escrow.witness_script().as_bytes()),
        "script_pubkey_hex": hex(escrow.script_pubkey().as_bytes()),
        "addresses": addresses,
    })
}

fn spend_vector(
    name: &str,
    escrow_kind: &str,
    escrow: &Escrow,
    spend: &Spend,
    signers: &[(&str, &Party)],
) -> Value {
    let fundings = fundings();
    let terms = Terms::new(
        escrow.clone(),
        Network::Regtest,
        &fundings,
        spend,
        Amount::from_sat(20_000),
    )
    .expect("terms");
    let rate = FeeRate::from_sat_per_vb_u32(10);
    let mut psbt = terms.build(rate).expect("builds");
    let unsigned = psbt.to_string();
    for (_, party) in signers {
        sign(&mut psbt, &terms, &party.key.secret).expect("signs");
    }
    let tx = finalize(psbt, &terms).expect("finalizes");
    let spent: HashMap<OutPoint, TxOut> = fundings
        .iter()
        .map(|f| {
            (
                f.outpoint,
                TxOut {
                    value: f.amount,
                    script_pubkey: escrow.script_pubkey().to_owned(),
                },
            )
        })
        .collect();
    tx.verify(|o| spent.get(o).cloned())
        .expect("valid under bitcoinconsensus");
    let paid: Amount = tx.output.iter().map(|o| o.value).sum();
    json!({
        "name": name,
        "escrow": escrow_kind,
        "signers": signers.iter().map(|(role, _)| *role).collect::<Vec<_>>(),
        "fee_rate_sat_per_vb": 10,
        "spent_outputs": fundings.iter().map(|f| json!({
            "txid": f.outpoint.txid.to_string(),
            "vout": f.outpoint.vout,
            "amount_sat": f.amount.to_sat(),
        })).collect::<Vec<_>>(),
        "unsigned_psbt_base64": unsigned,
        "fee_sat": (terms.total() - paid).to_sat(),
        "outputs": tx.output.iter().map(|o| json!({
            "address": Address::from_script(&o.script_pubkey, Network::Regtest).map(|a| a.to_string()).unwrap_or_default(),
            "amount_sat": o.value.to_sat(),
        })).collect::<Vec<_>>(),
        "txid": tx.compute_txid().to_string(),
        "tx_hex": serialize_hex(&tx),
    })
}

fn vectors() -> Value {
    let p = parties();
    let public = |i: usize| -> CompressedPublicKey { p[i].key.public };
    let moderated = Escrow::moderated(public(0), public(1), public(2), TIMEOUT).expect("escrow");
    let direct = Escrow::direct(public(0), public(1), TIMEOUT).expect("escrow");
    let addr = |i: usize| p[i].payout.as_unchecked().clone();
    let (buyer, seller, moderator) = (("buyer", &p[0]), ("seller", &p[1]), ("moderator", &p[2]));
    let spends = vec![
        spend_vector(
            "release",
            "moderated",
            &moderated,
            &Spend::Release { seller: addr(1) },
            &[buyer, seller],
        ),
        spend_vector(
            "partial-refund-40-percent",
            "moderated",
            &moderated,
            &Spend::Refund {
                buyer: addr(0),
                seller: addr(1),
                buyer_bp: 4_000,
            },
            &[seller, buyer],
        ),
        spend_vector(
            "dispute-70-30",
            "moderated",
            &moderated,
            &Spend::Dispute {
                buyer: addr(0),
                seller: addr(1),
                moderator: addr(2),
                buyer_bp: 7_000,
                fee: ModeratorFee {
                    fixed: Amount::from_sat(5_000),
                    percentage_bp: 150,
                },
            },
            &[moderator, buyer],
        ),
        spend_vector(
            "timeout-claim",
            "moderated",
            &moderated,
            &Spend::TimeoutClaim { seller: addr(1) },
            &[seller],
        ),
        spend_vector(
            "direct-release",
            "direct",
            &direct,
            &Spend::Release { seller: addr(1) },
            &[buyer, seller],
        ),
        spend_vector(
            "direct-full-refund",
            "direct",
            &direct,
            &Spend::Refund {
                buyer: addr(0),
                seller: addr(1),
                buyer_bp: 10_000,
            },
            &[seller, buyer],
        ),
    ];
    let keys: Vec<Value> = PARTIES
        .iter()
        .zip(&p)
        .map(|((role, phrase, passphrase), party)| {
            json!({
                "role": role,
                "mnemonic": phrase,
                "passphrase": passphrase,
                "escrow_key_path": "m/1397708107'/1'/1'/0'/0",
                "public_key_hex": hex(&party.key.public.to_bytes()),
                "payout_address_regtest": party.payout.to_string(),
            })
        })
        .collect();
    json!({
        "description": "Souk escrow vectors. Keys are escrow key 0 of each party's mnemonic on the test-network path (coin type 1); the same escrow is shown as an address on every network. Spends are on regtest, fee rate 10 sat/vB, ECDSA low-R signatures (RFC 6979), and each spends two funding outputs whose previous transactions are not given (only their outpoints and amounts, which is all a segwit v0 verifier needs). See escrow/README.md.",
        "timeout_blocks": TIMEOUT,
        "keys": keys,
        "escrows": [escrow_vector("moderated", &moderated), escrow_vector("direct", &direct)],
        "spends": spends,
    })
}

fn path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-vectors/escrow.json")
}

#[test]
fn escrow_vectors_match_the_committed_file() {
    let fresh = serde_json::to_string_pretty(&vectors()).expect("json") + "\n";
    if std::env::var_os("SOUK_BLESS").is_some() {
        std::fs::write(path(), &fresh).expect("write");
        return;
    }
    let committed = std::fs::read_to_string(path()).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale; if the change is intended, run SOUK_BLESS=1 cargo test -p souk-escrow --test vectors and review the diff",
        path().display()
    );
}

/// Reads the committed file and checks every transaction with Bitcoin Core's interpreter.
#[test]
fn committed_transactions_are_valid_under_bitcoin_core_rules() {
    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(path()).expect("vector file")).expect("json");
    let scripts: HashMap<String, ScriptBuf> = file["escrows"]
        .as_array()
        .expect("escrows")
        .iter()
        .map(|e| {
            let hex = e["script_pubkey_hex"].as_str().expect("hex");
            let bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex"))
                .collect();
            (
                e["kind"].as_str().expect("kind").to_string(),
                ScriptBuf::from_bytes(bytes),
            )
        })
        .collect();
    let spends = file["spends"].as_array().expect("spends");
    assert_eq!(spends.len(), 6);
    for spend in spends {
        let tx: Transaction =
            deserialize_hex(spend["tx_hex"].as_str().expect("tx")).expect("tx decodes");
        let script = &scripts[spend["escrow"].as_str().expect("escrow")];
        let spent: HashMap<OutPoint, TxOut> = spend["spent_outputs"]
            .as_array()
            .expect("spent")
            .iter()
            .map(|o| {
                let outpoint = OutPoint::new(
                    o["txid"].as_str().expect("txid").parse().expect("txid"),
                    o["vout"].as_u64().expect("vout") as u32,
                );
                (
                    outpoint,
                    TxOut {
                        value: Amount::from_sat(o["amount_sat"].as_u64().expect("amount")),
                        script_pubkey: script.clone(),
                    },
                )
            })
            .collect();
        assert_eq!(
            tx.verify(|o| spent.get(o).cloned()),
            Ok(()),
            "{}",
            spend["name"]
        );
        let total: u64 = spent.values().map(|o| o.value.to_sat()).sum();
        let paid: u64 = tx.output.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total - paid, spend["fee_sat"].as_u64().expect("fee"));
    }
}
