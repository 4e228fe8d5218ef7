//! The committed test vectors in `protocol/test-vectors/` are regenerated from the code and
//! compared byte for byte. After an intended protocol change, rewrite them with
//! `SOUK_BLESS=1 cargo test -p souk-protocol --test vectors` and review the diff.

use std::path::PathBuf;

use prost::Message;
use serde_json::{Value, json};
use souk_protocol::bitcoin::Network;
use souk_protocol::limits::{MAX_ENVELOPE_BYTES, MAX_FUTURE_SKEW_SECS};
use souk_protocol::message;
use souk_protocol::samples::{self, SAMPLE_TIME, TEST_MNEMONIC};
use souk_protocol::{
    IdentityKey, Keychain, Kind, Mnemonic, RawEnvelope, ValidationContext, open, pb,
    rating_permit_digest, signing_digest,
};

const SECOND_MNEMONIC: &str = "legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth useful legal winner thank year wave sausage worth title";
const SECOND_PASSPHRASE: &str = "TREZOR";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn keychain(phrase: &str, passphrase: &str) -> Keychain {
    Keychain::from_mnemonic(&Mnemonic::parse(phrase).expect("valid"), passphrase)
}

fn identity_vectors() -> Value {
    let vectors: Vec<Value> = [(TEST_MNEMONIC, ""), (SECOND_MNEMONIC, SECOND_PASSPHRASE)]
        .into_iter()
        .map(|(phrase, passphrase)| {
            let mnemonic = Mnemonic::parse(phrase).expect("valid");
            let keys = keychain(phrase, passphrase);
            let identity = keys.identity();
            let networks: serde_json::Map<String, Value> = [
                ("bitcoin", Network::Bitcoin),
                ("testnet", Network::Testnet),
                ("signet", Network::Signet),
                ("regtest", Network::Regtest),
            ]
            .into_iter()
            .map(|(name, network)| {
                let escrow: Vec<Value> = (0..3)
                    .map(|i| {
                        let key = keys.escrow_key(network, i).expect("derive");
                        json!({ "index": i, "path": format!("m/1397708107'/1'/{}'/0'/{i}", souk_protocol::identity::coin_type(network)), "public_key_hex": hex(&key.public.to_bytes()) })
                    })
                    .collect();
                let payout: Vec<Value> = (0..3)
                    .map(|i| {
                        json!({ "index": i, "path": format!("m/84'/{}'/0'/0/{i}", souk_protocol::identity::coin_type(network)), "address": keys.payout_address(network, i).expect("derive").to_string() })
                    })
                    .collect();
                let order_id = [0xa5u8; 32];
                let moderation_key = keys.moderation_key(network, &order_id).expect("derive");
                let moderation_xpub = keys.moderation_xpub(network).expect("derive").to_string();
                assert_eq!(
                    souk_protocol::identity::moderation_key_from_xpub(&moderation_xpub, &order_id)
                        .expect("derive"),
                    moderation_key.public
                );
                let value = json!({
                    "coin_type": souk_protocol::identity::coin_type(network),
                    "escrow_account_path": format!("m/1397708107'/1'/{}'/0'", souk_protocol::identity::coin_type(network)),
                    "escrow_xpub": keys.escrow_xpub(network).expect("derive").to_string(),
                    "escrow_keys": escrow,
                    "payout_addresses": payout,
                    "moderation_account_path": format!("m/1397708107'/1'/{}'/1'", souk_protocol::identity::coin_type(network)),
                    "moderation_xpub": moderation_xpub,
                    "moderation_key": {
                        "order_id_hex": hex(&order_id),
                        "index": moderation_key.index,
                        "public_key_hex": hex(&moderation_key.public.to_bytes()),
                    },
                });
                (name.to_string(), value)
            })
            .collect();
            let rating: Vec<Value> = (0..2)
                .map(|i| {
                    json!({ "index": i, "path": format!("m/1397708107'/2'/{i}'"), "public_key_hex": keys.rating_key(i).expect("derive").public_key().to_hex() })
                })
                .collect();
            json!({
                "mnemonic": phrase,
                "passphrase": passphrase,
                "seed_hex": hex(mnemonic.to_seed(passphrase).as_bytes()),
                "identity_path": "m/1397708107'/0'/0'",
                "identity_public_key_hex": identity.public_key().to_hex(),
                "identity_address": identity.public_key().to_address(),
                "rating_keys": rating,
                "networks": networks,
            })
        })
        .collect();
    json!({
        "description": "BIP 39 mnemonic -> seed -> Souk identity (SLIP-10 ed25519), rating keys, escrow keys (BIP 32) and payout addresses (BIP 84). See SPEC.md, 'Keys'.",
        "vectors": vectors,
    })
}

fn seller() -> IdentityKey {
    keychain(TEST_MNEMONIC, "").identity()
}

fn buyer_rating_key() -> IdentityKey {
    keychain(SECOND_MNEMONIC, SECOND_PASSPHRASE)
        .rating_key(0)
        .expect("derive")
}

fn moderator() -> IdentityKey {
    keychain(SECOND_MNEMONIC, SECOND_PASSPHRASE).identity()
}

const SELLER_IDENTITY: &str =
    "identity key (m/1397708107'/0'/0') of signer_mnemonic, no passphrase";
const BUYER_RATING_KEY: &str = "rating key 0 (m/1397708107'/2'/0') of the 24-word mnemonic of identity.json (\"legal winner ... title\", passphrase \"TREZOR\")";

fn envelope_vector(
    name: &str,
    note: &str,
    (signer, signer_key): (&IdentityKey, &str),
    kind: Kind,
    payload: Vec<u8>,
) -> Value {
    let bytes = RawEnvelope::sign_unchecked(signer, kind as i32, payload.clone());
    let opened = open(&bytes, &ValidationContext::at(SAMPLE_TIME)).expect("vector must be valid");
    json!({
        "name": name,
        "note": note,
        "kind": kind as i32,
        "payload_hex": hex(&payload),
        "signer_hex": signer.public_key().to_hex(),
        "signer_key": signer_key,
        "signing_digest_hex": hex(&signing_digest(kind as i32, &payload)),
        "signature_hex": hex(opened.envelope().signature()),
        "envelope_hex": hex(&bytes),
        "id": opened.id().to_string(),
    })
}

fn envelope_vectors() -> Value {
    let seller = seller();
    let rating_key = buyer_rating_key();
    let order_id = [0x0d; 32];
    let rating = samples::rating(SAMPLE_TIME, order_id, &seller, &rating_key.public_key());
    let mut unknown_field = samples::digital_listing(SAMPLE_TIME, "with-extension").encode_to_vec();
    unknown_field.extend_from_slice(&[0xb2, 0x09, 5]);
    unknown_field.extend_from_slice(b"hello");
    let mut vectors = vec![
        envelope_vector(
            "profile",
            "a store that also moderates",
            (&seller, SELLER_IDENTITY),
            Kind::Profile,
            samples::profile(SAMPLE_TIME).encode_to_vec(),
        ),
        envelope_vector(
            "listing-physical",
            "options, SKUs, shipping, tax, coupons, one accepted moderator",
            (&seller, SELLER_IDENTITY),
            Kind::Listing,
            samples::listing(SAMPLE_TIME, "blue-mug", Some(&moderator().public_key()))
                .encode_to_vec(),
        ),
        envelope_vector(
            "listing-digital",
            "priced in satoshis",
            (&seller, SELLER_IDENTITY),
            Kind::Listing,
            samples::digital_listing(SAMPLE_TIME, "dawn-recordings").encode_to_vec(),
        ),
        envelope_vector(
            "tombstone",
            "withdraws blue-mug",
            (&seller, SELLER_IDENTITY),
            Kind::Tombstone,
            samples::tombstone(SAMPLE_TIME + 60, "blue-mug").encode_to_vec(),
        ),
        envelope_vector(
            "listing-unknown-field",
            "payload carries field 150 that v1 readers do not know; it verifies and keeps its bytes",
            (&seller, SELLER_IDENTITY),
            Kind::Listing,
            unknown_field,
        ),
    ];
    let mut rating_vector = envelope_vector(
        "rating",
        "signed by the buyer's rating key, with the seller's permit (the seller is the identity of signer_mnemonic)",
        (&rating_key, BUYER_RATING_KEY),
        Kind::Rating,
        rating.encode_to_vec(),
    );
    rating_vector["permit_digest_hex"] = json!(hex(&rating_permit_digest(
        &order_id,
        &rating_key.public_key(),
        &seller.public_key(),
        pb::RatingRole::Seller
    )));
    vectors.push(rating_vector);
    json!({
        "description": "Valid envelopes. Each opens at time `now` with the given id. See SPEC.md, 'Envelopes'.",
        "now": SAMPLE_TIME,
        "signer_mnemonic": TEST_MNEMONIC,
        "vectors": vectors,
    })
}

fn invalid_vector(name: &str, bytes: &[u8], now: u64) -> Value {
    let code = open(bytes, &ValidationContext::at(now))
        .expect_err("vector must be invalid")
        .code();
    json!({ "name": name, "now": now, "envelope_hex": hex(bytes), "code": code })
}

fn invalid_vectors() -> Value {
    let seller = seller();
    let listing = samples::listing(SAMPLE_TIME, "blue-mug", None);
    let good = RawEnvelope::sign_unchecked(&seller, Kind::Listing as i32, listing.encode_to_vec());
    let decoded = pb::Envelope::decode(good.as_slice()).expect("decodes");
    let with = |f: fn(&mut pb::Envelope)| {
        let mut e = decoded.clone();
        f(&mut e);
        e.encode_to_vec()
    };
    let sign = |l: pb::Listing| {
        RawEnvelope::sign_unchecked(&seller, Kind::Listing as i32, l.encode_to_vec())
    };

    let mut oversize = pb::Envelope {
        kind: Kind::Listing as i32,
        payload: vec![0; MAX_ENVELOPE_BYTES],
        signer: decoded.signer.clone(),
        signature: decoded.signature.clone(),
    }
    .encode_to_vec();
    oversize.truncate(MAX_ENVELOPE_BYTES + 1);
    let mut future = listing.clone();
    future.created_at = SAMPLE_TIME + MAX_FUTURE_SKEW_SECS + 1;
    let mut long_title = listing.clone();
    long_title.title = "x".repeat(201);
    let mut expired = listing.clone();
    expired.expires_at = SAMPLE_TIME;
    expired.created_at = SAMPLE_TIME - 3_600;
    let mut not_canonical = good.clone();
    not_canonical.extend_from_slice(&[0x28, 0x01]);

    let rating_key = buyer_rating_key();
    let mut forged_rating =
        samples::rating(SAMPLE_TIME, [0x0d; 32], &seller, &rating_key.public_key());
    forged_rating.order_id = vec![0x0e; 32];
    let forged_rating = RawEnvelope::sign_unchecked(
        &rating_key,
        Kind::Rating as i32,
        forged_rating.encode_to_vec(),
    );

    let vectors = vec![
        invalid_vector(
            "bad-signature",
            &with(|e| e.signature[0] ^= 0x01),
            SAMPLE_TIME,
        ),
        invalid_vector(
            "payload-altered-after-signing",
            &with(|e| e.payload[10] ^= 0x01),
            SAMPLE_TIME,
        ),
        invalid_vector("unknown-kind", &with(|e| e.kind = 99), SAMPLE_TIME),
        invalid_vector("kind-unspecified", &with(|e| e.kind = 0), SAMPLE_TIME),
        invalid_vector(
            "wrong-kind",
            &with(|e| e.kind = Kind::Profile as i32),
            SAMPLE_TIME,
        ),
        invalid_vector("oversize", &oversize, SAMPLE_TIME),
        invalid_vector("truncated", &good[..good.len() - 1], SAMPLE_TIME),
        invalid_vector("empty", &[], SAMPLE_TIME),
        invalid_vector("not-canonical", &not_canonical, SAMPLE_TIME),
        invalid_vector(
            "signer-not-32-bytes",
            &with(|e| e.signer.truncate(31)),
            SAMPLE_TIME,
        ),
        invalid_vector(
            "signer-small-order",
            &with(|e| {
                e.signer = {
                    let mut k = vec![0; 32];
                    k[0] = 1;
                    k
                }
            }),
            SAMPLE_TIME,
        ),
        invalid_vector(
            "signature-not-64-bytes",
            &with(|e| e.signature.truncate(63)),
            SAMPLE_TIME,
        ),
        invalid_vector("future-timestamp", &sign(future), SAMPLE_TIME),
        invalid_vector("title-too-long", &sign(long_title), SAMPLE_TIME),
        invalid_vector("expired", &sign(expired), SAMPLE_TIME),
        invalid_vector(
            "rating-permit-for-another-order",
            &forged_rating,
            SAMPLE_TIME,
        ),
    ];
    json!({
        "description": "Envelopes that must be refused, each with the stable error code of the first check it fails at time `now`. See SPEC.md, 'Accepting an envelope'.",
        "vectors": vectors,
    })
}

fn message_vector(
    name: &str,
    note: &str,
    (sender, sender_key): (&IdentityKey, &str),
    (recipient, recipient_key): (&IdentityKey, &str),
    message: &pb::Message,
    ephemeral_secret: [u8; 32],
    nonce: [u8; 24],
) -> Value {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    let signed = sender
        .sign_message(message, &ctx)
        .expect("vector must be valid");
    let outer = pb::SignedMessage::decode(signed.as_slice()).expect("decodes");
    let sealed =
        message::seal_signed_with(&signed, &recipient.public_key(), &ephemeral_secret, &nonce)
            .expect("seals");
    let parts = pb::SealedMessage::decode(sealed.as_slice()).expect("decodes");
    let opened = recipient.open_message(&sealed, &ctx).expect("opens");
    assert_eq!(opened.sender(), sender.public_key());
    let ephemeral_public =
        x25519_dalek::x25519(ephemeral_secret, x25519_dalek::X25519_BASEPOINT_BYTES);
    let shared = x25519_dalek::x25519(ephemeral_secret, recipient.public_key().to_x25519());
    json!({
        "name": name,
        "note": note,
        "sender_hex": sender.public_key().to_hex(),
        "sender_key": sender_key,
        "recipient_hex": recipient.public_key().to_hex(),
        "recipient_key": recipient_key,
        "recipient_x25519_hex": hex(&recipient.public_key().to_x25519()),
        "payload_hex": hex(&outer.payload),
        "message_digest_hex": hex(&message::message_digest(&outer.payload)),
        "signature_hex": hex(&outer.signature),
        "signed_hex": hex(&signed),
        "ephemeral_secret_hex": hex(&ephemeral_secret),
        "ephemeral_public_hex": hex(&ephemeral_public),
        "shared_secret_hex": hex(&shared),
        "nonce_hex": hex(&nonce),
        "ciphertext_hex": hex(&parts.ciphertext),
        "sealed_hex": hex(&sealed),
        "sealed_id": message::SealedId::of(&sealed).to_string(),
        "order_id_hex": opened.order_id().map(|id| hex(&id)),
    })
}

fn message_vectors() -> Value {
    let seller = seller();
    let buyer = moderator(); // the 24-word identity plays the buyer here
    let buyer_keys = keychain(SECOND_MNEMONIC, SECOND_PASSPHRASE);
    let listing = seller
        .seal(
            &souk_protocol::Object::Listing(samples::listing(SAMPLE_TIME, "mug", None)),
            &ValidationContext::at(SAMPLE_TIME),
        )
        .expect("sample listing");
    let order = pb::Message {
        created_at: SAMPLE_TIME,
        recipient: seller.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Order(pb::OrderRequest {
            listing: listing.envelope().bytes().to_vec(),
            items: vec![pb::OrderItem {
                sku: 1,
                quantity: 1,
            }],
            shipping_option: "Germany".into(),
            shipping_service: "DHL Paket".into(),
            shipping_address: "Hauptstrasse 1\n10115 Berlin".into(),
            payment: pb::PaymentMethod::Direct as i32,
            moderator: Vec::new(),
            buyer_escrow_key: Vec::new(),
            refund_address: buyer_keys
                .payout_address(Network::Regtest, 0)
                .expect("derive")
                .to_string(),
            amount_sats: 42_000,
            rating_key: buyer_rating_key().public_key().as_bytes().to_vec(),
            reply_inbox_servers: vec!["https://inbox.example.org".into()],
            network: "regtest".into(),
            memo: String::new(),
            moderator_profile: Vec::new(),
        })),
    };
    let chat = pb::Message {
        created_at: SAMPLE_TIME,
        recipient: buyer.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Chat(pb::Chat {
            text: "Yes, the blue mug is still available.".into(),
        })),
    };
    let challenge = [0x5a; 32];
    json!({
        "description": "Private messages (SPEC.md, Private messages): signed, then sealed with a fixed one-time X25519 secret and nonce so that the bytes are reproducible. Real senders draw both at random.",
        "now": SAMPLE_TIME,
        "vectors": [
            message_vector(
                "order_request",
                "a direct order for the sample listing; its order id is SHA-256(\"souk/v1/order\\0\" || signed)",
                (&buyer, "identity key of identity.json's 24-word mnemonic (passphrase \"TREZOR\")"),
                (&seller, SELLER_IDENTITY),
                &order,
                [0x11; 32],
                [0x22; 24],
            ),
            message_vector(
                "chat",
                "chat outside any order",
                (&seller, SELLER_IDENTITY),
                (&buyer, "identity key of identity.json's 24-word mnemonic (passphrase \"TREZOR\")"),
                &chat,
                [0x33; 32],
                [0x44; 24],
            ),
        ],
        "inbox_auth": {
            "recipient_hex": seller.public_key().to_hex(),
            "challenge_hex": hex(&challenge),
            "digest_hex": hex(&message::inbox_auth_digest(&challenge, &seller.public_key())),
            "signature_hex": hex(&seller.sign_inbox_challenge(&challenge)),
        },
    })
}

/// Signatures where the rule of SPEC step 9 (cofactored, canonical non-small-order `R`,
/// canonical `S`) and libsodium's cofactorless check part or agree, built on purpose. Each case
/// records Souk's verdict (`accepted`, by construction) and libsodium's (`libsodium`), which the
/// Python checker recomputes independently.
fn signature_rule_vectors() -> Value {
    use curve25519_dalek::constants::ED25519_BASEPOINT_POINT as B;
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::IsIdentity as _;
    use sha2::{Digest as _, Sha512};

    let scalar = |label: &str| Scalar::from_hash(Sha512::new().chain_update(label));
    let challenge = |r: &[u8; 32], a: &[u8; 32], digest: &[u8; 32]| {
        Scalar::from_hash(
            Sha512::new()
                .chain_update(r)
                .chain_update(a)
                .chain_update(digest),
        )
    };
    let join = |r: &[u8; 32], s: &[u8; 32]| {
        let mut signature = [0u8; 64];
        signature[..32].copy_from_slice(r);
        signature[32..].copy_from_slice(s);
        signature
    };
    // A point of order 8: [L]P is the torsion part of P (times L); the first y = 2, 3, … whose
    // point has a torsion part of order 8. [L]P = [L - 1]P + P.
    let order_eight = (2u8..=255)
        .filter_map(|y| {
            let mut bytes = [0u8; 32];
            bytes[0] = y;
            CompressedEdwardsY(bytes).decompress()
        })
        .map(|p| -Scalar::ONE * p + p)
        .find(|t| !(Scalar::from(4u8) * t).is_identity())
        .expect("a point of order 8");
    assert!(order_eight.mul_by_cofactor().is_identity());
    let a = scalar("souk signature-rule vectors: key");
    let key = (a * B).compress().to_bytes();
    let digest: [u8; 32] = Sha512::digest(b"souk signature-rule vectors: digest")[..32]
        .try_into()
        .expect("32 bytes");
    let r = scalar("souk signature-rule vectors: nonce");

    let honest_r = (r * B).compress().to_bytes();
    let honest = join(
        &honest_r,
        (r + challenge(&honest_r, &key, &digest) * a).as_bytes(),
    );

    let torsion_r = (r * B + order_eight).compress().to_bytes();
    let torsion = join(
        &torsion_r,
        (r + challenge(&torsion_r, &key, &digest) * a).as_bytes(),
    );

    let identity_r = curve25519_dalek::edwards::EdwardsPoint::default()
        .compress()
        .to_bytes();
    let small_r = join(
        &identity_r,
        (challenge(&identity_r, &key, &digest) * a).as_bytes(),
    );

    // S + L: the same scalar, not canonically encoded.
    let s = r + challenge(&honest_r, &key, &digest) * a;
    let mut unreduced = *s.as_bytes();
    let mut carry = 1u16;
    for (byte, l) in unreduced.iter_mut().zip((-Scalar::ONE).as_bytes()) {
        let sum = u16::from(*byte) + u16::from(*l) + carry;
        *byte = sum.to_le_bytes()[0];
        carry = sum >> 8;
    }
    let unreduced_s = join(&honest_r, &unreduced);

    let public = souk_protocol::PublicKey::from_bytes(&key).expect("a valid key");
    let cases = [
        ("honest", honest, true, true, "an ordinary signature"),
        (
            "r-with-torsion-component",
            torsion,
            true,
            false,
            "R = [r]B + T with T of order 8 and S = r + k·a: the cofactored equation holds, the cofactorless one does not",
        ),
        (
            "small-order-r",
            small_r,
            false,
            false,
            "R is the identity and S = k·a, so [S]B - [k]A = R, but R is of small order",
        ),
        (
            "s-not-canonical",
            unreduced_s,
            false,
            false,
            "the honest signature with S + L in place of S",
        ),
    ];
    let vectors: Vec<Value> = cases
        .iter()
        .map(|(name, signature, accepted, libsodium, note)| {
            assert_eq!(
                public.verify_digest(&digest, signature),
                *accepted,
                "{name}: the library disagrees with the case's construction"
            );
            json!({
                "name": name,
                "public_key_hex": hex(&key),
                "digest_hex": hex(&digest),
                "signature_hex": hex(signature),
                "accepted": accepted,
                "libsodium": libsodium,
                "note": note,
            })
        })
        .collect();
    json!({
        "description": "SPEC.md step 9: ed25519 with canonical S, R the canonical encoding of a point not of small order, and the cofactored equation [8][S]B = [8]R + [8][k]A, k = SHA-512(R || A || digest) mod L. `accepted` is the rule's verdict; `libsodium` is crypto_sign_verify_detached's (cofactorless), which parts from it only on `r-with-torsion-component`.",
        "vectors": vectors,
    })
}

fn vector_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test-vectors")
}

fn check_file(name: &str, value: &Value) {
    let path = vector_dir().join(name);
    let fresh = serde_json::to_string_pretty(value).expect("serialises") + "\n";
    if std::env::var_os("SOUK_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write vectors");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "{} is stale: the code now produces different vectors. If the protocol change is intended, run `SOUK_BLESS=1 cargo test -p souk-protocol --test vectors` and review the diff.",
        path.display()
    );
}

#[test]
fn identity_vectors_match_the_committed_file() {
    check_file("identity.json", &identity_vectors());
}

#[test]
fn envelope_vectors_match_the_committed_file() {
    check_file("envelopes.json", &envelope_vectors());
}

#[test]
fn message_vectors_match_the_committed_file() {
    check_file("messages.json", &message_vectors());
}

#[test]
fn invalid_envelope_vectors_match_the_committed_file() {
    check_file("invalid-envelopes.json", &invalid_vectors());
}

#[test]
fn signature_rule_vectors_match_the_committed_file() {
    check_file("signature-rule.json", &signature_rule_vectors());
}

/// Reads the committed files (not the generator) and checks them against the library, so a
/// hand-edited vector file cannot pass either.
#[test]
fn committed_vectors_open_as_recorded() {
    let read = |name: &str| -> Value {
        serde_json::from_str(
            &std::fs::read_to_string(vector_dir().join(name)).expect("vector file"),
        )
        .expect("json")
    };
    let unhex = |s: &Value| -> Vec<u8> {
        let s = s.as_str().expect("hex string");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    };
    let valid = read("envelopes.json");
    let now = valid["now"].as_u64().expect("now");
    for v in valid["vectors"].as_array().expect("vectors") {
        let opened = open(&unhex(&v["envelope_hex"]), &ValidationContext::at(now))
            .expect("valid vector opens");
        assert_eq!(
            opened.id().to_string(),
            v["id"].as_str().expect("id"),
            "{}",
            v["name"]
        );
    }
    let invalid = read("invalid-envelopes.json");
    for v in invalid["vectors"].as_array().expect("vectors") {
        let now = v["now"].as_u64().expect("now");
        let err = open(&unhex(&v["envelope_hex"]), &ValidationContext::at(now))
            .expect_err("invalid vector");
        assert_eq!(
            err.code(),
            v["code"].as_str().expect("code"),
            "{}",
            v["name"]
        );
    }
    let identity = read("identity.json");
    for v in identity["vectors"].as_array().expect("vectors") {
        let keys = keychain(
            v["mnemonic"].as_str().expect("m"),
            v["passphrase"].as_str().expect("p"),
        );
        assert_eq!(
            keys.identity().public_key().to_address(),
            v["identity_address"].as_str().expect("address")
        );
    }
}
