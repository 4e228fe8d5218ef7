//! Signatures per second, verifications per second (single and batched), the full
//! acceptance pipeline, and sealing and opening private messages. Run with
//! `cargo bench -p souk-protocol --bench signatures`.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use souk_protocol::samples::{self, SAMPLE_TIME, TEST_MNEMONIC};
use souk_protocol::{
    Keychain, Mnemonic, Object, RawEnvelope, ValidationContext, open, open_batch, verify_batch,
};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let ctx = ValidationContext::at(SAMPLE_TIME);
    let mnemonic = Mnemonic::parse(TEST_MNEMONIC).expect("valid");
    let key = Keychain::from_mnemonic(&mnemonic, "").identity();
    let listing = Object::Listing(samples::listing(SAMPLE_TIME, "blue-mug", None));
    let sealed = key.seal(&listing, &ctx).expect("valid sample");
    let bytes = sealed.envelope().bytes().to_vec();
    let raw = RawEnvelope::decode(&bytes).expect("decodes");

    let mut group = c.benchmark_group("envelope");
    group.throughput(Throughput::Elements(1));
    group.bench_function("seal_listing (validate + encode + sign)", |b| {
        b.iter(|| key.seal(black_box(&listing), &ctx).expect("valid"));
    });
    group.bench_function("verify_signature (one)", |b| {
        b.iter(|| black_box(&raw).verify_signature().expect("valid"));
    });
    group.bench_function("open_listing (decode + validate + verify)", |b| {
        b.iter(|| open(black_box(&bytes), &ctx).expect("valid"));
    });
    group.finish();

    let mut batch_group = c.benchmark_group("verify_batch");
    for size in [16usize, 64, 256] {
        let envelopes: Vec<RawEnvelope> = (0..size)
            .map(|i| {
                let object =
                    Object::Listing(samples::listing(SAMPLE_TIME, &format!("mug-{i}"), None));
                key.seal(&object, &ctx).expect("valid").envelope().clone()
            })
            .collect();
        let refs: Vec<&RawEnvelope> = envelopes.iter().collect();
        batch_group.throughput(Throughput::Elements(size as u64));
        batch_group.bench_with_input(BenchmarkId::from_parameter(size), &refs, |b, refs| {
            b.iter(|| verify_batch(black_box(refs)).expect("valid"));
        });
    }
    batch_group.finish();

    // A page of a back-fill: 1,000 listings by 200 sellers, opened one by one and as a batch.
    let sellers: Vec<souk_protocol::IdentityKey> = (0..200u8)
        .map(|i| souk_protocol::IdentityKey::from_secret_bytes(&[i.wrapping_add(1); 32]))
        .collect();
    let page: Vec<Vec<u8>> = (0..1_000usize)
        .map(|i| {
            let object = Object::Listing(samples::listing(SAMPLE_TIME, &format!("mug-{i}"), None));
            sellers[i % sellers.len()]
                .seal(&object, &ctx)
                .expect("valid")
                .envelope()
                .bytes()
                .to_vec()
        })
        .collect();
    let mut pages = c.benchmark_group("open_page_of_1000_by_200_sellers");
    pages.throughput(Throughput::Elements(page.len() as u64));
    pages.sample_size(20);
    pages.bench_function("open, one by one", |b| {
        b.iter(|| {
            black_box(&page)
                .iter()
                .map(|bytes| open(bytes, &ctx).is_ok())
                .filter(|ok| *ok)
                .count()
        });
    });
    pages.bench_function("open_batch", |b| {
        b.iter(|| {
            open_batch(black_box(&page), &ctx)
                .iter()
                .filter(|r| r.is_ok())
                .count()
        });
    });
    pages.finish();

    let mut messages = c.benchmark_group("message");
    messages.throughput(Throughput::Elements(1));
    let recipient = souk_protocol::IdentityKey::from_secret_bytes(&[7; 32]);
    let listing_bytes = bytes.clone();
    let order = samples::messages(&recipient.public_key(), &listing_bytes)
        .into_iter()
        .next()
        .expect("the first sample is an order");
    let sealed_order = key.seal_message(&order, &ctx).expect("valid");
    messages.bench_function("seal_order (validate + sign + X25519 + AEAD)", |b| {
        b.iter(|| key.seal_message(black_box(&order), &ctx).expect("valid"));
    });
    messages.bench_function("open_order (decrypt + verify + validate)", |b| {
        b.iter(|| {
            recipient
                .open_message(black_box(&sealed_order.bytes), &ctx)
                .expect("opens")
        });
    });
    messages.bench_function("inspect_sealed (what a server checks)", |b| {
        b.iter(|| {
            souk_protocol::message::inspect_sealed(black_box(&sealed_order.bytes)).expect("ok")
        });
    });
    messages.finish();

    let mut keys = c.benchmark_group("keys");
    keys.sample_size(20);
    keys.bench_function("mnemonic_to_identity (PBKDF2 2048 + SLIP-10)", |b| {
        b.iter(|| Keychain::from_mnemonic(black_box(&mnemonic), "").identity());
    });
    keys.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
