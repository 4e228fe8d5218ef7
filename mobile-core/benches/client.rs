//! What the phone does per action: sign a listing, and verify a 20-hit search page (parse the
//! server's JSON, open and check every envelope, compare every summary), its hits by one seller
//! (the best case for the batch check: one key) and by 20 (each hit its own key).
//!
//! `cargo bench -p souk-mobile-core --bench client`. Goals: signing ≤ 1 ms, a page ≤ 5 ms.
//! The release cdylib's size is measured by `scripts/bindings --size`.

use base64::Engine;
use criterion::{Criterion, criterion_group, criterion_main};
use souk_mobile_core::{ListingDraft, Wallet, read_search_page};
use souk_protocol::{
    IdentityKey, Keychain, ListingSummary, Mnemonic, Object, ValidationContext, samples,
};

fn draft() -> ListingDraft {
    let listing = samples::listing(samples::SAMPLE_TIME, "walnut-desk-lamp", None);
    ListingDraft::from_wire(&listing).expect("sample listing")
}

/// The JSON of a search page of `n` hits by `sellers` sellers (hit `i` by seller `i % sellers`),
/// as a server sends it.
fn search_page(n: usize, sellers: usize) -> Vec<u8> {
    let mnemonic = Mnemonic::parse(samples::TEST_MNEMONIC).expect("mnemonic");
    let keychain = Keychain::from_mnemonic(&mnemonic, "");
    let keys: Vec<_> = (0..sellers)
        .map(|i| {
            if i == 0 {
                keychain.identity()
            } else {
                IdentityKey::from_secret_bytes(&[u8::try_from(i).expect("few sellers"); 32])
            }
        })
        .collect();
    let ctx = ValidationContext::at(samples::SAMPLE_TIME);
    let hits: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            let key = &keys[i % sellers];
            let listing = samples::listing(samples::SAMPLE_TIME, &format!("lamp-{i}"), None);
            let sealed = key
                .seal(&Object::Listing(listing.clone()), &ctx)
                .expect("seal");
            let s = ListingSummary::of(&key.public_key(), &listing);
            serde_json::json!({
                "id": sealed.id().to_string(),
                "envelope": base64::engine::general_purpose::STANDARD.encode(sealed.envelope().bytes()),
                "summary": {
                    "seller": s.seller, "slug": s.slug, "title": s.title, "type": s.listing_type,
                    "condition": s.condition,
                    "price": {"amount": s.price_amount.to_string(), "currency": s.price_currency,
                              "divisibility": s.price_divisibility},
                    "category": s.category, "tags": s.tags, "ships_to": s.ships_to,
                    "moderated": s.moderated, "nsfw": s.nsfw, "created_at": s.created_at,
                    "expires_at": s.expires_at, "image_url": s.image_url,
                    "image_sha256": s.image_sha256,
                }
            })
        })
        .collect();
    serde_json::to_vec(&serde_json::json!({
        "total": 1234,
        "hits": hits,
        "facets": {"type": {"physical": 1200, "digital": 34}},
        "next_cursor": "bzoyMA",
    }))
    .expect("json")
}

fn bench(c: &mut Criterion) {
    let wallet = Wallet::restore(samples::TEST_MNEMONIC.into(), String::new()).expect("wallet");
    let draft = draft();
    c.bench_function("sign a listing", |b| {
        b.iter(|| {
            wallet
                .sign_listing_at(draft.clone(), samples::SAMPLE_TIME)
                .expect("sign")
        });
    });

    let ctx = ValidationContext::at(samples::SAMPLE_TIME + 60);
    for (sellers, name) in [
        (1, "verify a 20-hit search page"),
        (20, "verify a 20-hit search page by 20 sellers"),
    ] {
        let body = search_page(20, sellers);
        let page = read_search_page("https://index.example", &body, &ctx).expect("page");
        assert_eq!(page.hits.len(), 20, "every hit verifies");
        c.bench_function(name, |b| {
            b.iter(|| read_search_page("https://index.example", &body, &ctx).expect("page"));
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
