//! Private messages: what a recipient can read, what nobody else can, and what an inbox server
//! can check without reading.

use prost::Message as _;
use souk_protocol::bitcoin::Network;
use souk_protocol::message::{
    self, SealedId, inbox_auth_digest, inspect_sealed, order_id_of, read_signed_message,
    seal_signed_with, verify_inbox_auth,
};
use souk_protocol::samples::{self, SAMPLE_TIME};
use souk_protocol::{IdentityKey, Keychain, Mnemonic, Object, ValidationContext, limits, pb};

fn ctx() -> ValidationContext {
    ValidationContext::at(SAMPLE_TIME)
}

fn keychain(n: u8) -> Keychain {
    Keychain::from_mnemonic(
        &Mnemonic::from_entropy(&[n; 16]).expect("16 bytes of entropy"),
        "",
    )
}

fn person(n: u8) -> IdentityKey {
    keychain(n).identity()
}

fn chat(to: &IdentityKey, text: &str) -> pb::Message {
    pb::Message {
        created_at: SAMPLE_TIME,
        recipient: to.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Chat(pb::Chat { text: text.into() })),
    }
}

/// A moderated order from `buyer` for a listing of `seller`.
fn order(buyer: u8, seller: &IdentityKey, moderator: &IdentityKey) -> pb::Message {
    let buyer_keys = keychain(buyer);
    let listing = seller
        .seal(
            &Object::Listing(samples::listing(
                SAMPLE_TIME,
                "mug",
                Some(&moderator.public_key()),
            )),
            &ctx(),
        )
        .expect("sample listing is valid");
    let escrow = buyer_keys
        .escrow_key(Network::Regtest, 0)
        .expect("escrow key");
    pb::Message {
        created_at: SAMPLE_TIME,
        recipient: seller.public_key().as_bytes().to_vec(),
        order_id: Vec::new(),
        body: Some(pb::message::Body::Order(pb::OrderRequest {
            listing: listing.envelope().bytes().to_vec(),
            items: vec![pb::OrderItem {
                sku: 0,
                quantity: 2,
            }],
            shipping_option: String::new(),
            shipping_service: String::new(),
            shipping_address: "1 Market Street\nTunis".into(),
            payment: pb::PaymentMethod::Moderated as i32,
            moderator: moderator.public_key().as_bytes().to_vec(),
            buyer_escrow_key: escrow.public.to_bytes().to_vec(),
            refund_address: buyer_keys
                .payout_address(Network::Regtest, 0)
                .expect("address")
                .to_string(),
            amount_sats: 150_000,
            rating_key: buyer_keys
                .rating_key(0)
                .expect("rating key")
                .public_key()
                .as_bytes()
                .to_vec(),
            reply_inbox_servers: vec!["http://127.0.0.1:8080".into()],
            network: "regtest".into(),
            memo: String::new(),
            moderator_profile: b"the moderator's signed profile".to_vec(),
        })),
    }
}

fn body_of(message: &mut pb::Message) -> &mut pb::message::Body {
    message.body.as_mut().expect("sample messages have a body")
}

#[test]
fn the_recipient_reads_what_the_sender_signed() {
    let (alice, bob) = (person(1), person(2));
    let sealed = alice
        .seal_message(&chat(&bob, "is the mug still for sale?"), &ctx())
        .expect("valid message");
    let opened = bob
        .open_message(&sealed.bytes, &ctx())
        .expect("bob opens it");
    assert_eq!(opened.sender(), alice.public_key());
    assert_eq!(opened.message(), &chat(&bob, "is the mug still for sale?"));
    assert_eq!(opened.signed_bytes(), sealed.signed.as_slice());
    assert_eq!(
        opened.order_id(),
        None,
        "chat outside an order has no order"
    );
    assert_eq!(sealed.id, SealedId::of(&sealed.bytes));
}

#[test]
fn every_sealing_is_fresh_but_carries_the_same_signed_message() {
    let (alice, bob) = (person(1), person(2));
    let message = chat(&bob, "hello");
    let first = alice.seal_message(&message, &ctx()).expect("valid");
    let second = alice.seal_message(&message, &ctx()).expect("valid");
    assert_ne!(
        first.bytes, second.bytes,
        "a new one-time key and nonce each time"
    );
    assert_eq!(
        first.signed, second.signed,
        "ed25519 signatures are deterministic"
    );
}

#[test]
fn nobody_but_the_recipient_can_read_it() {
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let sealed = alice
        .seal_message(&chat(&bob, "private"), &ctx())
        .expect("valid");
    assert_eq!(
        carol
            .open_message(&sealed.bytes, &ctx())
            .unwrap_err()
            .code(),
        "wrong_recipient"
    );
    // Re-addressing the envelope does not help: the key and the tag bind the recipient.
    let mut readdressed = pb::SealedMessage::decode(sealed.bytes.as_slice()).expect("decodes");
    readdressed.recipient = carol.public_key().as_bytes().to_vec();
    assert_eq!(
        carol
            .open_message(&readdressed.encode_to_vec(), &ctx())
            .unwrap_err()
            .code(),
        "undecryptable"
    );
    // Nor does the sender's own identity key.
    assert_eq!(
        alice
            .open_message(&sealed.bytes, &ctx())
            .unwrap_err()
            .code(),
        "wrong_recipient"
    );
}

#[test]
fn any_altered_byte_of_the_header_or_ciphertext_is_refused() {
    let (alice, bob) = (person(1), person(2));
    let sealed = alice
        .seal_message(&chat(&bob, "pay to this address"), &ctx())
        .expect("valid");
    let original = pb::SealedMessage::decode(sealed.bytes.as_slice()).expect("decodes");
    let mut refused = 0;
    for field in ["ephemeral", "nonce", "ciphertext"] {
        let len = match field {
            "ephemeral" => original.ephemeral.len(),
            "nonce" => original.nonce.len(),
            _ => original.ciphertext.len(),
        };
        for i in 0..len {
            let mut altered = original.clone();
            let bytes = match field {
                "ephemeral" => &mut altered.ephemeral,
                "nonce" => &mut altered.nonce,
                _ => &mut altered.ciphertext,
            };
            bytes[i] ^= 0x01;
            let code = bob
                .open_message(&altered.encode_to_vec(), &ctx())
                .unwrap_err()
                .code();
            assert_eq!(code, "undecryptable", "{field}[{i}]");
            refused += 1;
        }
    }
    assert_eq!(refused, 32 + 24 + original.ciphertext.len());
}

#[test]
fn a_message_forwarded_to_someone_else_is_refused() {
    // Bob receives Alice's signed message and seals it, unchanged, to Carol: Carol can decrypt it
    // but sees that Alice addressed it to Bob.
    let (alice, bob, carol) = (person(1), person(2), person(3));
    let sealed = alice
        .seal_message(&chat(&bob, "I agree to pay 1 BTC"), &ctx())
        .expect("valid");
    let opened = bob.open_message(&sealed.bytes, &ctx()).expect("opens");
    let forwarded = seal_signed_with(
        opened.signed_bytes(),
        &carol.public_key(),
        &[7; 32],
        &[9; 24],
    )
    .expect("seals");
    assert_eq!(
        carol.open_message(&forwarded, &ctx()).unwrap_err().code(),
        "recipient_mismatch"
    );
}

#[test]
fn a_forged_signature_inside_a_valid_encryption_is_refused() {
    let (alice, bob, mallory) = (person(1), person(2), person(4));
    // Mallory signs, then claims Alice as the signer.
    let signed = mallory
        .sign_message(&chat(&bob, "from alice, honestly"), &ctx())
        .expect("valid");
    let mut outer = pb::SignedMessage::decode(signed.as_slice()).expect("decodes");
    outer.signer = alice.public_key().as_bytes().to_vec();
    let sealed = seal_signed_with(
        &outer.encode_to_vec(),
        &bob.public_key(),
        &[3; 32],
        &[4; 24],
    )
    .expect("seals");
    assert_eq!(
        bob.open_message(&sealed, &ctx()).unwrap_err().code(),
        "bad_signature"
    );
}

#[test]
fn the_x25519_form_of_an_identity_pairs_with_its_secret() {
    // The recipient's public X25519 key is derived from the address alone; opening works only if
    // it matches what the secret gives. Checked for many keys, since a mismatch would be silent
    // until the first message.
    for n in 0..32 {
        let (alice, bob) = (person(100), person(n));
        let sealed = alice
            .seal_message(&chat(&bob, "hi"), &ctx())
            .expect("valid");
        bob.open_message(&sealed.bytes, &ctx()).expect("opens");
    }
}

#[test]
fn invalid_messages_are_refused_when_signing_and_when_opening() {
    let (alice, bob) = (person(1), person(2));
    let mut empty = chat(&bob, "x");
    empty.body = None;
    assert_eq!(
        alice.sign_message(&empty, &ctx()).unwrap_err().code(),
        "missing_field"
    );
    let mut blank = chat(&bob, "   ");
    assert_eq!(
        alice.sign_message(&blank, &ctx()).unwrap_err().code(),
        "missing_field"
    );
    blank.created_at = SAMPLE_TIME + 3600;
    assert_eq!(
        alice.sign_message(&blank, &ctx()).unwrap_err().code(),
        "timestamp_in_future"
    );
    // A sender that skips validation is caught by the recipient, before the signature is
    // even looked at (the rules are cheaper): this one carries a zero signature.
    let unchecked = pb::SignedMessage {
        payload: empty.encode_to_vec(),
        signer: alice.public_key().as_bytes().to_vec(),
        signature: vec![0; 64],
    };
    let sealed = seal_signed_with(
        &unchecked.encode_to_vec(),
        &bob.public_key(),
        &[5; 32],
        &[6; 24],
    )
    .expect("seals");
    assert_eq!(
        bob.open_message(&sealed, &ctx()).unwrap_err().code(),
        "missing_field",
        "the rules run before the signature, cheapest first"
    );
    // A signature of the wrong length is a bad signature, checked at the signature's turn.
    for (payload, expected) in [
        (empty.encode_to_vec(), "missing_field"),
        (chat(&bob, "x").encode_to_vec(), "bad_signature"),
    ] {
        let short = pb::SignedMessage {
            payload,
            signer: alice.public_key().as_bytes().to_vec(),
            signature: vec![1; 10],
        };
        let sealed = seal_signed_with(
            &short.encode_to_vec(),
            &bob.public_key(),
            &[8; 32],
            &[9; 24],
        )
        .expect("seals");
        assert_eq!(
            bob.open_message(&sealed, &ctx()).unwrap_err().code(),
            expected
        );
    }
}

#[test]
fn an_order_request_defines_the_order_id_both_sides_compute() {
    let (seller, moderator) = (person(2), person(3));
    let buyer = person(1);
    let request = order(1, &seller, &moderator);
    let sealed = buyer.seal_message(&request, &ctx()).expect("valid order");
    let opened = seller.open_message(&sealed.bytes, &ctx()).expect("opens");
    let id = order_id_of(&sealed.signed);
    assert_eq!(opened.order_id(), Some(id));
    // Every later message names it.
    let decline = pb::Message {
        created_at: SAMPLE_TIME,
        recipient: buyer.public_key().as_bytes().to_vec(),
        order_id: id.to_vec(),
        body: Some(pb::message::Body::Decline(pb::OrderDecline {
            reason: "sold out".into(),
        })),
    };
    let answer = seller.seal_message(&decline, &ctx()).expect("valid");
    let read = buyer.open_message(&answer.bytes, &ctx()).expect("opens");
    assert_eq!(read.order_id(), Some(id));
    // A moderator can read a quoted order without being its recipient.
    let quoted = read_signed_message(&sealed.signed, &ctx()).expect("reads");
    assert_eq!(quoted.sender(), buyer.public_key());
    assert_eq!(quoted.order_id(), Some(id));
}

#[test]
fn order_rules_are_checked_field_by_field() {
    let (buyer, seller, moderator) = (person(1), person(2), person(3));
    type Edit = Box<dyn Fn(&mut pb::OrderRequest)>;
    let cases: Vec<(&str, Edit)> = vec![
        ("missing_field", Box::new(|o| o.items.clear())),
        ("out_of_range", Box::new(|o| o.items[0].quantity = 0)),
        (
            "duplicate",
            Box::new(|o| {
                o.items.push(pb::OrderItem {
                    sku: 0,
                    quantity: 1,
                })
            }),
        ),
        (
            "inconsistent",
            Box::new(|o| o.payment = pb::PaymentMethod::Direct as i32),
        ),
        ("bad_format", Box::new(|o| o.buyer_escrow_key = vec![9; 33])),
        (
            "bad_format",
            Box::new(|o| o.refund_address = "not-an-address".into()),
        ),
        ("out_of_range", Box::new(|o| o.amount_sats = 0)),
        ("bad_format", Box::new(|o| o.rating_key = vec![0; 32])),
        ("missing_field", Box::new(|o| o.reply_inbox_servers.clear())),
        (
            "bad_format",
            Box::new(|o| o.reply_inbox_servers = vec!["ftp://inbox".into()]),
        ),
        ("bad_format", Box::new(|o| o.network = "mainnet".into())),
        (
            "too_long",
            Box::new(|o| o.shipping_address = "x".repeat(limits::MAX_ADDRESS_BYTES + 1)),
        ),
    ];
    for (expected, edit) in cases {
        let mut message = order(1, &seller, &moderator);
        let pb::message::Body::Order(request) = body_of(&mut message) else {
            unreachable!("order() builds an order")
        };
        edit(request);
        assert_eq!(
            buyer.sign_message(&message, &ctx()).unwrap_err().code(),
            expected
        );
    }
    // An order must not carry an order id; every other order message must.
    let mut with_id = order(1, &seller, &moderator);
    with_id.order_id = vec![1; 32];
    assert_eq!(
        buyer.sign_message(&with_id, &ctx()).unwrap_err().code(),
        "inconsistent"
    );
    let mut decline = chat(&buyer, "x");
    decline.body = Some(pb::message::Body::Decline(pb::OrderDecline::default()));
    assert_eq!(
        seller.sign_message(&decline, &ctx()).unwrap_err().code(),
        "bad_format"
    );
}

#[test]
fn servers_check_the_outside_and_never_need_a_key() {
    let (alice, bob) = (person(1), person(2));
    let sealed = alice
        .seal_message(&chat(&bob, "hi"), &ctx())
        .expect("valid");
    let header = inspect_sealed(&sealed.bytes).expect("well formed");
    assert_eq!(header.recipient, bob.public_key());
    assert_eq!(header.id, sealed.id);
    assert_eq!(header.len, sealed.bytes.len());

    assert_eq!(
        inspect_sealed(b"\xff\xff garbage").unwrap_err().code(),
        "message_malformed"
    );
    let huge = vec![0u8; limits::MAX_SEALED_MESSAGE_BYTES + 1];
    assert_eq!(
        inspect_sealed(&huge).unwrap_err().code(),
        "message_too_large"
    );
    let mut bad = pb::SealedMessage::decode(sealed.bytes.as_slice()).expect("decodes");
    bad.recipient = vec![0; 32];
    assert_eq!(
        inspect_sealed(&bad.encode_to_vec()).unwrap_err().code(),
        "invalid_recipient"
    );
    let mut short = pb::SealedMessage::decode(sealed.bytes.as_slice()).expect("decodes");
    short.nonce.truncate(12);
    assert_eq!(
        inspect_sealed(&short.encode_to_vec()).unwrap_err().code(),
        "message_malformed"
    );
}

#[test]
fn an_inbox_answer_proves_the_key_for_that_challenge_only() {
    let (bob, carol) = (person(2), person(3));
    let challenge = [42u8; 32];
    let answer = bob.sign_inbox_challenge(&challenge);
    assert!(verify_inbox_auth(&bob.public_key(), &challenge, &answer));
    assert!(!verify_inbox_auth(&bob.public_key(), &[43; 32], &answer));
    assert!(!verify_inbox_auth(&carol.public_key(), &challenge, &answer));
    assert!(!verify_inbox_auth(
        &bob.public_key(),
        &challenge,
        &answer[..63]
    ));
    assert_ne!(
        inbox_auth_digest(&challenge, &bob.public_key()),
        inbox_auth_digest(&challenge, &carol.public_key())
    );
    // The answer is not a message signature: domains differ.
    assert_ne!(
        inbox_auth_digest(&challenge, &bob.public_key()),
        message::message_digest(&challenge)
    );
}
