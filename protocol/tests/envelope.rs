//! Signing, verifying, object ids, canonical encoding and replacement.

use prost::Message;
use souk_protocol::samples::{self, SAMPLE_TIME, TEST_MNEMONIC};
use souk_protocol::{
    EnvelopeError, IdentityKey, Keychain, Kind, Mnemonic, Object, ObjectId, RawEnvelope,
    SignedObject, ValidationContext, Version, compare_versions, open, open_batch, pb, verify_batch,
};

fn ctx() -> ValidationContext {
    ValidationContext::at(SAMPLE_TIME)
}

fn seller() -> IdentityKey {
    Keychain::from_mnemonic(&Mnemonic::parse(TEST_MNEMONIC).expect("valid"), "").identity()
}

fn sealed(object: &Object) -> SignedObject {
    seller()
        .seal(object, &ctx())
        .expect("sample objects are valid")
}

fn listing_bytes() -> Vec<u8> {
    sealed(&Object::Listing(samples::listing(SAMPLE_TIME, "mug", None)))
        .envelope()
        .bytes()
        .to_vec()
}

fn code(bytes: &[u8]) -> &'static str {
    open(bytes, &ctx()).expect_err("must be refused").code()
}

#[test]
fn every_kind_seals_and_opens_to_the_same_object() {
    let keys = Keychain::from_mnemonic(&Mnemonic::parse(TEST_MNEMONIC).expect("valid"), "");
    let rating_key = keys.rating_key(0).expect("rating key");
    let objects = [
        Object::Profile(samples::profile(SAMPLE_TIME)),
        Object::Listing(samples::listing(SAMPLE_TIME, "mug", None)),
        Object::Listing(samples::digital_listing(SAMPLE_TIME, "sounds")),
        Object::Tombstone(samples::tombstone(SAMPLE_TIME, "mug")),
        Object::Rating(samples::rating(
            SAMPLE_TIME,
            [9; 32],
            &seller(),
            &rating_key.public_key(),
        )),
    ];
    for object in objects {
        let signer = if object.kind() == Kind::Rating {
            rating_key.clone()
        } else {
            keys.identity()
        };
        let sealed = signer.seal(&object, &ctx()).expect("valid");
        let opened = open(sealed.envelope().bytes(), &ctx()).expect("opens");
        assert_eq!(opened.object(), &object);
        assert_eq!(opened.envelope().kind(), object.kind());
        assert_eq!(opened.signer(), signer.public_key());
        assert_eq!(opened.id(), ObjectId::of(sealed.envelope().bytes()));
    }
}

#[test]
fn the_signature_covers_the_domain_separated_digest_of_kind_and_payload() {
    use sha2::{Digest, Sha256};
    let raw = RawEnvelope::decode(&listing_bytes()).expect("decodes");
    let mut expected = Sha256::new();
    expected.update(b"souk/v1/envelope\0");
    expected.update(2u32.to_be_bytes());
    expected.update(raw.payload());
    assert_eq!(raw.signing_digest(), <[u8; 32]>::from(expected.finalize()));
}

#[test]
fn unknown_payload_fields_verify_and_survive_relaying_byte_for_byte() {
    // A newer client adds field 150 (a string) to its listing; this reader does not know it.
    let mut payload = samples::listing(SAMPLE_TIME, "mug", None).encode_to_vec();
    payload.extend_from_slice(&[0xb2, 0x09, 5]); // tag 150, wire type 2, length 5
    payload.extend_from_slice(b"hello");
    let bytes = RawEnvelope::sign_unchecked(&seller(), Kind::Listing as i32, payload.clone());

    let opened = open(&bytes, &ctx()).expect("unknown fields are fine");
    assert_eq!(opened.envelope().payload(), payload.as_slice());
    assert_eq!(
        opened.envelope().bytes(),
        bytes.as_slice(),
        "relays forward the original bytes"
    );
    // Re-encoding the decoded object would drop the field and break the signature: which is
    // exactly why verification never re-encodes.
    assert_ne!(opened.object().encode_payload(), payload);
}

#[test]
fn any_single_bit_flip_is_refused_and_never_panics() {
    let bytes = listing_bytes();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut forged = bytes.clone();
            forged[i] ^= 1 << bit;
            assert!(
                open(&forged, &ctx()).is_err(),
                "flip of bit {bit} in byte {i} accepted"
            );
        }
    }
}

#[test]
fn every_truncation_is_refused() {
    let bytes = listing_bytes();
    for len in 0..bytes.len() {
        assert!(
            open(&bytes[..len], &ctx()).is_err(),
            "truncation to {len} accepted"
        );
    }
}

#[test]
fn oversize_envelopes_are_refused_before_decoding() {
    let huge = vec![0xffu8; souk_protocol::limits::MAX_ENVELOPE_BYTES + 1];
    assert_eq!(
        open(&huge, &ctx()).expect_err("too large"),
        EnvelopeError::TooLarge {
            size: huge.len(),
            max: souk_protocol::limits::MAX_ENVELOPE_BYTES,
        }
    );
}

#[test]
fn non_canonical_encodings_of_a_valid_envelope_are_refused() {
    let bytes = listing_bytes();
    let envelope = pb::Envelope::decode(bytes.as_slice()).expect("decodes");

    // Same fields, reversed order: decodes to the same message, but has a different id.
    let mut reordered = Vec::new();
    for (tag, value) in [
        (4u8, &envelope.signature),
        (3, &envelope.signer),
        (2, &envelope.payload),
    ] {
        prost::encoding::bytes::encode(u32::from(tag), value, &mut reordered);
    }
    prost::encoding::int32::encode(1, &envelope.kind, &mut reordered);
    assert_eq!(
        pb::Envelope::decode(reordered.as_slice()).expect("decodes"),
        envelope
    );
    assert_eq!(code(&reordered), "envelope_not_canonical");

    // An unknown field appended to the envelope itself.
    let mut extended = bytes.clone();
    extended.extend_from_slice(&[0x28, 0x01]); // field 5, varint 1
    assert_eq!(code(&extended), "envelope_not_canonical");

    // A field repeated (the last one wins in protobuf, so it would decode the same).
    let mut repeated = bytes;
    prost::encoding::int32::encode(1, &envelope.kind, &mut repeated);
    assert_eq!(code(&repeated), "envelope_not_canonical");
}

#[test]
fn structural_errors_have_their_own_codes() {
    let valid = pb::Envelope::decode(listing_bytes().as_slice()).expect("decodes");
    let check = |mutate: fn(&mut pb::Envelope), expected: &str| {
        let mut envelope = valid.clone();
        mutate(&mut envelope);
        assert_eq!(code(&envelope.encode_to_vec()), expected);
    };
    check(|e| e.kind = 99, "unknown_kind");
    check(|e| e.kind = 0, "unknown_kind");
    check(|e| e.signer.truncate(31), "invalid_signer");
    check(|e| e.signer = vec![0; 32], "invalid_signer");
    check(|e| e.signature.truncate(63), "invalid_signature_length");
    check(|e| e.kind = Kind::Profile as i32, "payload_malformed");
    check(|e| e.signature[0] ^= 1, "bad_signature");
    assert_eq!(code(b"\xff\xff\xff"), "envelope_malformed");
}

#[test]
fn a_valid_signature_from_someone_else_is_refused() {
    let other = IdentityKey::from_secret_bytes(&[42; 32]);
    let mut envelope = pb::Envelope::decode(listing_bytes().as_slice()).expect("decodes");
    envelope.signer = other.public_key().as_bytes().to_vec();
    assert_eq!(code(&envelope.encode_to_vec()), "bad_signature");
}

#[test]
fn a_rating_needs_a_permit_from_the_rated_party() {
    let keys = Keychain::from_mnemonic(&Mnemonic::parse(TEST_MNEMONIC).expect("valid"), "");
    let rating_key = keys.rating_key(3).expect("rating key");
    let impostor = IdentityKey::from_secret_bytes(&[7; 32]);
    let valid = samples::rating(SAMPLE_TIME, [1; 32], &seller(), &rating_key.public_key());

    // The permit was signed for order [1; 32]; the rating claims another order.
    let mut other_order = valid.clone();
    other_order.order_id = vec![2; 32];
    // The permit was signed by someone other than the rated seller.
    let mut wrong_signer = valid.clone();
    wrong_signer.proof = Some(impostor.sign_rating_permit(
        &[1; 32],
        &rating_key.public_key(),
        pb::RatingRole::Seller,
    ));
    for rating in [other_order, wrong_signer] {
        let bytes =
            RawEnvelope::sign_unchecked(&rating_key, Kind::Rating as i32, rating.encode_to_vec());
        assert_eq!(code(&bytes), "bad_rating_proof");
        assert!(
            rating_key.seal(&Object::Rating(rating), &ctx()).is_err(),
            "seal refuses it too"
        );
    }
    // The permit names the rating key: the buyer's identity key cannot reuse it.
    let bytes =
        RawEnvelope::sign_unchecked(&keys.identity(), Kind::Rating as i32, valid.encode_to_vec());
    assert_eq!(code(&bytes), "bad_rating_proof");
}

#[test]
fn batch_verification_accepts_good_batches_and_refuses_a_batch_with_one_forgery() {
    let key = seller();
    let good: Vec<RawEnvelope> = (0..16)
        .map(|i| {
            let object = Object::Listing(samples::listing(SAMPLE_TIME, &format!("mug-{i}"), None));
            key.seal(&object, &ctx()).expect("valid").envelope().clone()
        })
        .collect();
    let refs: Vec<&RawEnvelope> = good.iter().collect();
    assert_eq!(verify_batch(&refs), Ok(()));

    let mut forged = pb::Envelope::decode(good[5].bytes()).expect("decodes");
    forged.signature[10] ^= 0x40;
    let forged = RawEnvelope::decode(&forged.encode_to_vec()).expect("structurally fine");
    let mut with_forgery = refs.clone();
    with_forgery[5] = &forged;
    assert_eq!(
        verify_batch(&with_forgery),
        Err(EnvelopeError::BadSignature)
    );
    assert_eq!(verify_batch(&[]), Ok(()));
}

/// `open_batch` returns for every envelope what `open` returns for it alone: garbage, a payload
/// that fails validation, a forged signature, a rating without a valid proof, an impostor's
/// signature and valid envelopes, in one batch.
#[test]
fn open_batch_decides_each_envelope_as_open_does() {
    let key = seller();
    let mut batch: Vec<Vec<u8>> = (0..40)
        .map(|i| {
            let object = Object::Listing(samples::listing(SAMPLE_TIME, &format!("mug-{i}"), None));
            key.seal(&object, &ctx())
                .expect("valid")
                .envelope()
                .bytes()
                .to_vec()
        })
        .collect();
    let mut forged = pb::Envelope::decode(batch[3].as_slice()).expect("decodes");
    forged.signature[40] ^= 0x01;
    batch[3] = forged.encode_to_vec();
    let mut stranger = pb::Envelope::decode(batch[17].as_slice()).expect("decodes");
    stranger.signer = IdentityKey::from_secret_bytes(&[9; 32])
        .public_key()
        .as_bytes()
        .to_vec();
    batch[17] = stranger.encode_to_vec();
    batch[20] = b"not an envelope".to_vec();
    let mut invalid = samples::listing(SAMPLE_TIME, "mug-invalid", None);
    invalid.title = String::new();
    batch[25] = RawEnvelope::sign_unchecked(&key, Kind::Listing as i32, invalid.encode_to_vec());
    let keys = Keychain::from_mnemonic(&Mnemonic::parse(TEST_MNEMONIC).expect("valid"), "");
    let rating_key = keys.rating_key(3).expect("rating key");
    let mut rating = samples::rating(SAMPLE_TIME, [1; 32], &seller(), &rating_key.public_key());
    batch.push(
        rating_key
            .seal(&Object::Rating(rating.clone()), &ctx())
            .expect("valid")
            .envelope()
            .bytes()
            .to_vec(),
    );
    rating.order_id = vec![2; 32];
    batch.push(RawEnvelope::sign_unchecked(
        &rating_key,
        Kind::Rating as i32,
        rating.encode_to_vec(),
    ));
    // Signers that are not keys, each twice (a batch decodes a signer's key once and must
    // remember a refusal as faithfully as a key): a point of small order, and 31 bytes.
    let mut weak = pb::Envelope::decode(batch[30].as_slice()).expect("decodes");
    weak.signer = [0u8; 32].to_vec();
    let mut short = pb::Envelope::decode(batch[31].as_slice()).expect("decodes");
    short.signer.truncate(31);
    for envelope in [&weak, &short, &weak, &short] {
        batch.push(envelope.encode_to_vec());
    }

    let outcome = |result: Result<SignedObject, EnvelopeError>| {
        result.map(|o| o.envelope().id()).map_err(|e| e.code())
    };
    let together: Vec<_> = open_batch(&batch, &ctx())
        .into_iter()
        .map(outcome)
        .collect();
    let alone: Vec<_> = batch.iter().map(|b| outcome(open(b, &ctx()))).collect();
    assert_eq!(together, alone);
    let codes: Vec<&str> = alone.iter().filter_map(|r| r.err()).collect();
    assert_eq!(
        codes,
        [
            "bad_signature",
            "bad_signature",
            "envelope_malformed",
            "missing_field",
            "bad_rating_proof",
            "invalid_signer",
            "invalid_signer",
            "invalid_signer",
            "invalid_signer"
        ],
        "each kind of failure is in the batch"
    );
    assert_eq!(alone.iter().filter(|r| r.is_ok()).count(), 37);
    assert!(open_batch::<Vec<u8>>(&[], &ctx()).is_empty());
}

#[test]
fn object_ids_print_and_parse_as_hex() {
    let id = ObjectId::of(&listing_bytes());
    let text = id.to_string();
    assert_eq!(text.len(), 64);
    assert_eq!(text.parse::<ObjectId>(), Ok(id));
    assert!("zz".repeat(32).parse::<ObjectId>().is_err());
    assert!("ab".parse::<ObjectId>().is_err());
}

fn version(created_at: u64, tombstone: bool, id: u8) -> Version {
    Version {
        created_at,
        tombstone,
        id: ObjectId([id; 32]),
    }
}

#[test]
fn the_newer_version_wins() {
    use std::cmp::Ordering::*;
    let cases = [
        (version(20, false, 9), version(10, false, 1), Greater),
        (version(10, false, 1), version(20, false, 9), Less),
        // Same time: a tombstone beats a listing, whatever the ids.
        (version(10, true, 9), version(10, false, 1), Greater),
        // Same time and kind: the smaller id wins.
        (version(10, false, 1), version(10, false, 2), Greater),
        (version(10, false, 2), version(10, false, 1), Less),
        (version(10, false, 3), version(10, false, 3), Equal),
        // A tombstone does not beat a newer listing (the seller re-listed).
        (version(10, true, 1), version(11, false, 1), Less),
    ];
    for (a, b, expected) in cases {
        assert_eq!(compare_versions(&a, &b), expected, "{a:?} vs {b:?}");
        assert_eq!(
            compare_versions(&b, &a),
            expected.reverse(),
            "antisymmetric"
        );
    }
}

#[test]
fn listings_and_tombstones_for_one_slug_share_a_slot() {
    let listing = sealed(&Object::Listing(samples::listing(SAMPLE_TIME, "mug", None)));
    let tombstone = sealed(&Object::Tombstone(samples::tombstone(SAMPLE_TIME, "mug")));
    let other = sealed(&Object::Listing(samples::listing(
        SAMPLE_TIME,
        "bowl",
        None,
    )));
    assert_eq!(listing.replace_key(), tombstone.replace_key());
    assert_ne!(listing.replace_key(), other.replace_key());
    assert_eq!(
        compare_versions(&tombstone.version(), &listing.version()),
        std::cmp::Ordering::Greater
    );
}
