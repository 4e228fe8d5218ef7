//! The wallet: keys from the phrase or seed the app hands in, signing drafts into envelopes
//! that every verifier accepts, and clear, typed refusals.

use souk_mobile_core::{
    Condition, Coupon, Image, ListingDraft, ListingType, Price, ProfileDraft, ShippingOption,
    ShippingService, Wallet, WalletError,
};
use souk_protocol::{Object, ValidationContext, open, samples};

const VECTOR_ADDRESS: &str = "souk1xr8st0v6lmlfl8t56ryaz7ajws7du4d9mzhjg2zkjgg4v5wap5vqp5jwel";
const VECTOR_HEX: &str = "30cf05bd9afefe9f9d74d0c9d17bb2743cde55a5d8af24285692115651dd0d18";

fn wallet() -> std::sync::Arc<Wallet> {
    Wallet::restore(samples::TEST_MNEMONIC.into(), String::new()).expect("test mnemonic")
}

fn lamp() -> ListingDraft {
    ListingDraft {
        slug: "walnut-lamp".into(),
        listing_type: ListingType::Physical,
        title: "Walnut desk lamp".into(),
        description: "Turned walnut, linen shade.".into(),
        price: Price {
            amount: 8_900,
            currency: "EUR".into(),
            divisibility: 2,
        },
        images: vec![Image {
            sha256: "ab".repeat(32),
            url: "https://images.example.org/lamp.jpg".into(),
            ..Image::default()
        }],
        options: vec![],
        skus: vec![],
        shipping: vec![ShippingOption {
            name: "Europe".into(),
            regions: vec!["DE".into(), "FR".into()],
            services: vec![ShippingService {
                name: "Standard".into(),
                price: 900,
                ..ShippingService::default()
            }],
        }],
        taxes: vec![],
        coupons: vec![Coupon {
            title: "Launch".into(),
            code: Some("HELLO10".into()),
            percent_off_bp: Some(1_000),
            ..Coupon::default()
        }],
        tags: vec!["lamp".into()],
        category: "home/lighting".into(),
        condition: Some(Condition::UsedGood),
        nsfw: false,
        accepted_moderators: vec![],
        escrow_timeout_blocks: 0,
        refund_policy: String::new(),
        terms: String::new(),
        language: "en".into(),
        expires_at: 0,
        max_quantity_per_order: 0,
    }
}

#[test]
fn the_test_vector_phrase_gives_the_vector_identity() {
    let w = wallet();
    assert_eq!(w.identity_address(), VECTOR_ADDRESS);
    assert_eq!(w.identity_hex(), VECTOR_HEX);
    assert_eq!(w.export_mnemonic().expect("phrase"), samples::TEST_MNEMONIC);
    // Case and spacing do not matter.
    let messy = format!(
        "  {}  ",
        samples::TEST_MNEMONIC.to_uppercase().replace(' ', "   ")
    );
    let again = Wallet::restore(messy, String::new()).expect("restores");
    assert_eq!(again.identity_address(), VECTOR_ADDRESS);
    // A BIP 39 passphrase gives another identity.
    let other = Wallet::restore(samples::TEST_MNEMONIC.into(), "extra".into()).expect("ok");
    assert_ne!(other.identity_address(), VECTOR_ADDRESS);
}

#[test]
fn bad_phrases_are_refused_without_repeating_them() {
    let wrong_checksum = "abandon ".repeat(11) + "abandon";
    let unknown_word = "abandon ".repeat(11) + "souk";
    let too_few = "abandon ".repeat(11);
    for phrase in [wrong_checksum, unknown_word, too_few, String::new()] {
        let err = Wallet::restore(phrase.clone(), String::new()).expect_err("refused");
        assert_eq!(err.code(), "invalid_mnemonic", "{phrase}: {err}");
        assert!(!err.to_string().contains("souk"), "{err}");
        assert!(!err.to_string().contains("abandon"), "{err}");
        assert!(err.to_string().contains("recovery phrase"), "{err}");
    }
}

#[test]
fn new_wallets_have_12_or_24_words_and_differ() {
    let a = Wallet::generate(12, String::new()).expect("12");
    let b = Wallet::generate(24, String::new()).expect("24");
    assert_eq!(a.export_mnemonic().expect("a").split(' ').count(), 12);
    assert_eq!(b.export_mnemonic().expect("b").split(' ').count(), 24);
    assert_ne!(a.identity_address(), b.identity_address());
    let restored = Wallet::restore(a.export_mnemonic().expect("a"), String::new()).expect("ok");
    assert_eq!(restored.identity_address(), a.identity_address());
    assert_eq!(
        Wallet::generate(15, String::new()).expect_err("15").code(),
        "invalid_mnemonic"
    );
}

#[test]
fn a_seed_wallet_signs_but_has_no_phrase_to_show() {
    let seed = souk_protocol::Mnemonic::parse(samples::TEST_MNEMONIC)
        .expect("mnemonic")
        .to_seed("");
    let w = Wallet::from_seed(seed.as_bytes().to_vec()).expect("64 bytes");
    assert_eq!(w.identity_address(), VECTOR_ADDRESS);
    assert_eq!(w.export_mnemonic(), Err(WalletError::NoMnemonic));
    assert_eq!(
        Wallet::from_seed(vec![0; 32]).expect_err("32 bytes"),
        WalletError::InvalidSeed { length: 32 }
    );
}

#[test]
fn a_signed_listing_opens_to_the_same_listing_with_the_coupon_hashed() {
    let w = wallet();
    let signed = w.sign_listing(lamp()).expect("signs");
    assert_eq!(signed.kind, "listing");
    assert_eq!(signed.signer, VECTOR_ADDRESS);
    let opened = open(&signed.bytes, &ValidationContext::now()).expect("every verifier accepts");
    assert_eq!(opened.id().to_string(), signed.id);
    let Object::Listing(listing) = opened.object() else {
        panic!("not a listing")
    };
    let back = ListingDraft::from_wire(listing).expect("back");
    let mut expected = lamp();
    expected.coupons[0].code = None;
    expected.coupons[0].code_hash = Some(
        souk_protocol::coupon_code_hash("hello10")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect(),
    );
    expected.escrow_timeout_blocks = souk_protocol::limits::DEFAULT_ESCROW_TIMEOUT_BLOCKS;
    expected.expires_at = signed.created_at + souk_protocol::limits::MAX_LISTING_LIFETIME_SECS;
    assert_eq!(back, expected);
}

#[test]
fn quick_edits_of_one_slot_get_strictly_increasing_stamps() {
    let w = wallet();
    let first = w.sign_listing(lamp()).expect("v1");
    let second = w.sign_listing(lamp()).expect("v2");
    let withdrawn = w
        .sign_tombstone("walnut-lamp".into(), "sold".into())
        .expect("tombstone");
    assert!(second.created_at > first.created_at);
    assert!(withdrawn.created_at > second.created_at);
    let profile = ProfileDraft {
        store_name: "Walnut & Linen".into(),
        ..ProfileDraft::default()
    };
    let p1 = w.sign_profile(profile.clone()).expect("p1");
    let p2 = w.sign_profile(profile).expect("p2");
    assert!(p2.created_at > p1.created_at);
}

#[test]
fn invalid_drafts_name_the_field_and_sign_nothing() {
    let w = wallet();
    let cases: Vec<(&str, ListingDraft, &str)> = vec![
        (
            "title too long",
            ListingDraft {
                title: "x".repeat(300),
                ..lamp()
            },
            "listing.title",
        ),
        (
            "slug with capitals",
            ListingDraft {
                slug: "Walnut Lamp".into(),
                ..lamp()
            },
            "listing.slug",
        ),
        (
            "image hash not hex",
            ListingDraft {
                images: vec![Image {
                    sha256: "zz".into(),
                    ..Image::default()
                }],
                ..lamp()
            },
            "images[0].sha256",
        ),
        (
            "coupon with both a code and a hash",
            ListingDraft {
                coupons: vec![Coupon {
                    title: "x".into(),
                    code: Some("A".into()),
                    code_hash: Some("00".repeat(32)),
                    percent_off_bp: Some(10),
                    amount_off: None,
                }],
                ..lamp()
            },
            "coupons[0]",
        ),
        (
            "moderator that is not an address",
            ListingDraft {
                accepted_moderators: vec!["bob".into()],
                ..lamp()
            },
            "accepted_moderators[0]",
        ),
    ];
    for (what, draft, field) in cases {
        match w.sign_listing(draft) {
            Err(WalletError::InvalidDraft { field: got, .. }) => {
                assert_eq!(got, field, "{what}");
            }
            other => panic!("{what}: expected InvalidDraft, got {other:?}"),
        }
    }
    let err = w
        .sign_listing_at(lamp(), 4_000_000_000)
        .expect_err("far future");
    assert_eq!(err.code(), "invalid_draft", "{err}");
    assert!(
        w.sign_listing(lamp()).is_ok(),
        "a refused stamp is not remembered"
    );
}

#[test]
fn listing_files_in_toml_and_json_read_into_drafts() {
    let toml_text = r#"
        slug = "walnut-lamp"
        type = "physical"
        title = "Walnut desk lamp"
        condition = "used_good"
        price = { amount = 8900, currency = "EUR", divisibility = 2 }
        tags = ["lamp"]
        [[shipping]]
        name = "EU"
        regions = ["DE", "FR"]
        services = [{ name = "Standard", price = 900 }]
    "#;
    let draft: ListingDraft = toml::from_str(toml_text).expect("toml");
    assert_eq!(draft.shipping[0].services[0].price, 900);
    assert!(wallet().sign_listing(draft.clone()).is_ok());
    let json = serde_json::to_string(&draft).expect("json");
    let back: ListingDraft = serde_json::from_str(&json).expect("back");
    assert_eq!(back, draft);
    let typo = toml_text.replace("tags", "tagz");
    let err = toml::from_str::<ListingDraft>(&typo).expect_err("unknown field");
    assert!(err.to_string().contains("tagz"), "{err}");
}
