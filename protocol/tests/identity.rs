//! Mnemonics, key derivation and addresses.

use std::str::FromStr;

use souk_protocol::bitcoin::bech32;
use souk_protocol::bitcoin::{Address, Network};
use souk_protocol::identity::EscrowIndexCursor;
use souk_protocol::{IdentityError, Keychain, Mnemonic, PublicKey, WordCount};

const ABANDON_12: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

fn keychain(phrase: &str, passphrase: &str) -> Keychain {
    Keychain::from_mnemonic(
        &Mnemonic::parse(phrase).expect("valid mnemonic"),
        passphrase,
    )
}

fn mnemonic_error(phrase: &str) -> String {
    Mnemonic::parse(phrase)
        .expect_err("must be refused")
        .to_string()
}

#[test]
fn generated_mnemonics_have_the_requested_length_and_restore_to_the_same_keys() {
    for (count, words) in [(WordCount::Words12, 12), (WordCount::Words24, 24)] {
        let mnemonic = Mnemonic::generate(count).expect("system RNG");
        assert_eq!(mnemonic.phrase().split(' ').count(), words);
        assert_eq!(mnemonic.word_count(), count);
        let restored = Mnemonic::parse(&mnemonic.phrase()).expect("restores");
        assert_eq!(
            Keychain::from_mnemonic(&mnemonic, "")
                .identity()
                .public_key(),
            Keychain::from_mnemonic(&restored, "")
                .identity()
                .public_key()
        );
    }
}

#[test]
fn two_generated_mnemonics_differ() {
    let a = Mnemonic::generate(WordCount::Words12).expect("rng");
    let b = Mnemonic::generate(WordCount::Words12).expect("rng");
    assert_ne!(*a.phrase(), *b.phrase());
}

#[test]
fn bip39_seed_matches_the_published_trezor_vector() {
    // BIP 39 reference vectors use the passphrase "TREZOR".
    let seed = Mnemonic::parse(ABANDON_12)
        .expect("valid")
        .to_seed("TREZOR");
    let hex: String = seed.as_bytes().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        hex,
        "c55257c360c07c72029aebc1b53c05ed0362ada38ead3e3e9efa3708e53495531f09a6987599d18264c1e1c92f2cf141630c7a3c4ab7c81b2f001698e7463b04"
    );
}

#[test]
fn restoring_ignores_case_and_extra_whitespace() {
    let messy = format!("  {}  ", ABANDON_12.to_uppercase().replace(' ', "   \t"));
    assert_eq!(
        keychain(&messy, "").identity().public_key(),
        keychain(ABANDON_12, "").identity().public_key()
    );
}

#[test]
fn a_passphrase_gives_a_different_identity() {
    assert_ne!(
        keychain(ABANDON_12, "").identity().public_key(),
        keychain(ABANDON_12, "correct horse")
            .identity()
            .public_key()
    );
}

#[test]
fn mnemonic_errors_say_what_is_wrong_without_repeating_the_words() {
    let wrong_count = mnemonic_error("abandon abandon abandon");
    assert!(
        wrong_count.contains("expected 12 or 24 words, got 3"),
        "{wrong_count}"
    );

    let unknown = mnemonic_error(&ABANDON_12.replace("about", "bitcoinx"));
    assert!(unknown.contains("word 12"), "{unknown}");
    assert!(!unknown.contains("bitcoinx"), "{unknown}");

    let checksum = mnemonic_error(&ABANDON_12.replace("about", "abandon"));
    assert!(checksum.contains("checksum"), "{checksum}");

    let fifteen = format!("{ABANDON_12} abandon abandon abandon");
    assert!(mnemonic_error(&fifteen).contains("got 15"));
}

#[test]
fn mnemonic_debug_output_is_redacted() {
    let mnemonic = Mnemonic::parse(ABANDON_12).expect("valid");
    let debug = format!("{mnemonic:?} {:?}", mnemonic.to_seed(""));
    assert!(!debug.contains("abandon"), "{debug}");
    let key = keychain(ABANDON_12, "").identity();
    assert!(format!("{key:?}").contains("souk1"));
}

#[test]
fn entropy_must_be_16_or_32_bytes() {
    let err = Mnemonic::from_entropy(&[0; 20]).expect_err("20 bytes");
    assert_eq!(err, IdentityError::InvalidEntropyLength { len: 20 });
    assert_eq!(err.code(), "invalid_entropy_length");
    assert_eq!(
        *Mnemonic::from_entropy(&[0; 16]).expect("16").phrase(),
        ABANDON_12
    );
}

#[test]
fn payout_addresses_are_the_standard_bip84_ones() {
    // BIP 84's published test vectors for the "abandon … about" mnemonic, m/84'/0'/0'/0/0 and /1.
    let keys = keychain(ABANDON_12, "");
    assert_eq!(
        keys.payout_address(Network::Bitcoin, 0)
            .expect("derive")
            .to_string(),
        "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    );
    assert_eq!(
        keys.payout_address(Network::Bitcoin, 1)
            .expect("derive")
            .to_string(),
        "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
    );
}

#[test]
fn test_networks_use_coin_type_1_and_their_own_address_prefixes() {
    let keys = keychain(ABANDON_12, "");
    let testnet = keys
        .payout_address(Network::Testnet, 0)
        .expect("derive")
        .to_string();
    let signet = keys
        .payout_address(Network::Signet, 0)
        .expect("derive")
        .to_string();
    let regtest = keys
        .payout_address(Network::Regtest, 0)
        .expect("derive")
        .to_string();
    assert!(testnet.starts_with("tb1q"));
    assert_eq!(testnet, signet, "signet shares testnet's addresses");
    assert!(regtest.starts_with("bcrt1q"));
    assert!(
        keys.escrow_xpub(Network::Testnet)
            .expect("derive")
            .to_string()
            .starts_with("tpub")
    );
    assert!(
        keys.escrow_xpub(Network::Bitcoin)
            .expect("derive")
            .to_string()
            .starts_with("xpub")
    );
}

#[test]
fn escrow_keys_are_children_of_the_published_escrow_xpub() {
    use souk_protocol::bitcoin::bip32::ChildNumber;
    use souk_protocol::bitcoin::secp256k1::Secp256k1;
    let keys = keychain(ABANDON_12, "");
    let xpub = keys.escrow_xpub(Network::Bitcoin).expect("derive");
    let secp = Secp256k1::verification_only();
    for index in [0, 1, 7] {
        let key = keys.escrow_key(Network::Bitcoin, index).expect("derive");
        let child = xpub
            .derive_pub(&secp, &[ChildNumber::Normal { index }])
            .expect("derive pub");
        assert_eq!(child.public_key, key.public.0, "index {index}");
        assert_eq!(key.index, index);
    }
    assert_ne!(
        keys.escrow_key(Network::Bitcoin, 0).expect("0").public,
        keys.escrow_key(Network::Bitcoin, 1).expect("1").public
    );
}

#[test]
fn escrow_keys_are_separate_from_payout_keys() {
    let keys = keychain(ABANDON_12, "");
    let escrow = keys.escrow_key(Network::Bitcoin, 0).expect("derive").public;
    let payout_as_escrow = Address::p2wpkh(&escrow, Network::Bitcoin);
    assert_ne!(
        payout_as_escrow,
        keys.payout_address(Network::Bitcoin, 0).expect("derive")
    );
}

#[test]
fn rating_keys_are_per_order_and_unlike_the_identity() {
    let keys = keychain(ABANDON_12, "");
    let identity = keys.identity().public_key();
    let first = keys.rating_key(0).expect("0").public_key();
    let second = keys.rating_key(1).expect("1").public_key();
    assert_ne!(first, identity);
    assert_ne!(first, second);
}

#[test]
fn indices_must_be_below_two_to_the_31() {
    let keys = keychain(ABANDON_12, "");
    let index = 1 << 31;
    for err in [
        keys.escrow_key(Network::Bitcoin, index)
            .map(|_| ())
            .expect_err("escrow"),
        keys.payout_address(Network::Bitcoin, index)
            .map(|_| ())
            .expect_err("payout"),
        keys.rating_key(index).map(|_| ()).expect_err("rating"),
    ] {
        assert_eq!(err, IdentityError::IndexOutOfRange { index });
    }
}

#[test]
fn the_index_cursor_never_hands_out_an_index_twice() {
    let mut cursor = EscrowIndexCursor::default();
    let taken: Vec<u32> = (0..5).map(|_| cursor.allocate().expect("index")).collect();
    assert_eq!(taken, [0, 1, 2, 3, 4]);
    let mut resumed = EscrowIndexCursor::starting_at(cursor.next());
    assert_eq!(resumed.allocate().expect("index"), 5);
    let mut last = EscrowIndexCursor::starting_at((1 << 31) - 1);
    assert_eq!(last.allocate().expect("last index"), (1 << 31) - 1);
    assert_eq!(
        last.allocate(),
        Err(IdentityError::IndexOutOfRange { index: 1 << 31 })
    );
}

#[test]
fn addresses_round_trip_through_text_and_hex() {
    let public = keychain(ABANDON_12, "").identity().public_key();
    let text = public.to_address();
    assert!(text.starts_with("souk1"));
    assert_eq!(text.len(), 63);
    assert_eq!(PublicKey::from_str(&text).expect("parses"), public);
    assert_eq!(
        PublicKey::from_str(&text.to_uppercase()).expect("upper case"),
        public
    );
    assert_eq!(PublicKey::from_str(&public.to_hex()).expect("hex"), public);
    assert_eq!(
        PublicKey::from_bytes(public.as_bytes()).expect("raw"),
        public
    );
}

fn address_error(text: &str) -> IdentityError {
    PublicKey::from_str(text).expect_err("must be refused")
}

#[test]
fn mistyped_addresses_are_refused() {
    let text = keychain(ABANDON_12, "")
        .identity()
        .public_key()
        .to_address();
    // One character changed: the checksum catches it.
    let mut chars: Vec<char> = text.chars().collect();
    chars[10] = if chars[10] == 'q' { 'p' } else { 'q' };
    let typo: String = chars.into_iter().collect();
    assert_eq!(address_error(&typo).code(), "invalid_address");
    // Dropped character.
    assert_eq!(address_error(&text[..62]).code(), "invalid_address");
    // Someone else's prefix, valid checksum.
    let bech32_other =
        bech32::encode::<bech32::Bech32m>(bech32::Hrp::parse("npub").expect("hrp"), &[7; 32])
            .expect("encode");
    assert!(
        address_error(&bech32_other)
            .to_string()
            .contains("expected \"souk\"")
    );
    // Old bech32 (not bech32m) checksum over the same key.
    let bech32_classic = bech32::encode::<bech32::Bech32>(
        bech32::Hrp::parse("souk").expect("hrp"),
        keychain(ABANDON_12, "").identity().public_key().as_bytes(),
    )
    .expect("encode");
    assert_eq!(address_error(&bech32_classic).code(), "invalid_address");
    assert_eq!(address_error("").code(), "invalid_address");
}

#[test]
fn raw_keys_must_be_valid_non_weak_points() {
    assert!(PublicKey::from_bytes(&[1; 31]).is_err());
    // The identity point (small order) is refused.
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    let err = PublicKey::from_bytes(&identity_point).expect_err("weak");
    assert!(err.to_string().contains("weak"), "{err}");
    // y = p + 1 is a non-canonical encoding of the point with y = 1 (the identity): decoders
    // that reduce modulo p would accept it, so it is refused before anything else.
    let mut non_canonical = [0xffu8; 32];
    non_canonical[0] = 0xee;
    non_canonical[31] = 0x7f;
    let err = PublicKey::from_bytes(&non_canonical).expect_err("non-canonical");
    assert!(err.to_string().contains("canonical"), "{err}");
}

#[test]
fn a_moderators_key_for_an_order_comes_from_its_offer_alone_and_differs_per_order() {
    use souk_protocol::identity::{moderation_index, moderation_key_from_xpub};
    let keys = Keychain::from_mnemonic(
        &Mnemonic::parse(souk_protocol::samples::TEST_MNEMONIC).expect("valid"),
        "",
    );
    let xpub = keys
        .moderation_xpub(Network::Regtest)
        .expect("derive")
        .to_string();
    assert!(xpub.starts_with("tpub"));
    assert_eq!(xpub, souk_protocol::samples::test_moderation_xpub());
    let mut seen = std::collections::HashSet::new();
    for n in 0u8..16 {
        let order_id = [n.wrapping_mul(37).wrapping_add(1); 32];
        let secret_side = keys
            .moderation_key(Network::Regtest, &order_id)
            .expect("derive");
        let public_side = moderation_key_from_xpub(&xpub, &order_id).expect("derive");
        assert_eq!(secret_side.public, public_side);
        assert_eq!(secret_side.index, moderation_index(&order_id));
        assert!(seen.insert(public_side), "one key per order");
        // Never one of the moderator's own escrow keys (another account).
        assert_ne!(
            keys.escrow_key(Network::Regtest, secret_side.index)
                .expect("derive")
                .public,
            public_side
        );
    }
    assert_eq!(moderation_index(&[0xff; 32]), 0x7fff_ffff, "never hardened");
    assert!(moderation_key_from_xpub("xpub-nonsense", &[0; 32]).is_err());
}
