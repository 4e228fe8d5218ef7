//! Demo data: realistic signed listings from several stores, generated deterministically from a
//! seed and ingested through the normal ingest path (so every envelope is verified).

use std::time::Instant;

use souk_protocol::{IdentityKey, Object, SignedObject, ValidationContext, pb, samples};

use crate::api::SharedState;
use crate::config::DemoArgs;

/// A tiny deterministic generator (SplitMix64): the same seed gives the same data everywhere.
mod splitmix {
    /// SplitMix64 state.
    pub struct Rng(pub u64);
    impl Rng {
        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }
        pub fn below(&mut self, n: usize) -> usize {
            usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
        }
        pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
            &items[self.below(items.len())]
        }
    }
}

struct Category {
    path: &'static str,
    kind: pb::ListingType,
    nouns: &'static [&'static str],
    tags: &'static [&'static str],
    price: (u64, u64),
}

const CATEGORIES: &[Category] = &[
    Category {
        path: "home/kitchen/drinkware",
        kind: pb::ListingType::Physical,
        nouns: &["mug", "teapot", "tumbler", "carafe", "cup set"],
        tags: &["ceramics", "handmade", "kitchen", "gift"],
        price: (900, 6_500),
    },
    Category {
        path: "home/furniture",
        kind: pb::ListingType::Physical,
        nouns: &["oak stool", "bookshelf", "side table", "rocking chair"],
        tags: &["wood", "furniture", "vintage", "handmade"],
        price: (4_000, 90_000),
    },
    Category {
        path: "electronics/phones",
        kind: pb::ListingType::Physical,
        nouns: &["smartphone", "phone case", "charger", "headset"],
        tags: &["electronics", "mobile", "refurbished"],
        price: (1_500, 80_000),
    },
    Category {
        path: "electronics/computers",
        kind: pb::ListingType::Physical,
        nouns: &["laptop", "mechanical keyboard", "monitor", "mini pc"],
        tags: &["computer", "linux", "electronics"],
        price: (3_000, 250_000),
    },
    Category {
        path: "clothing/shoes",
        kind: pb::ListingType::Physical,
        nouns: &["leather boots", "running shoes", "sandals", "sneakers"],
        tags: &["shoes", "leather", "fashion"],
        price: (2_500, 30_000),
    },
    Category {
        path: "clothing/knitwear",
        kind: pb::ListingType::Physical,
        nouns: &["wool sweater", "scarf", "beanie", "cardigan"],
        tags: &["wool", "knitted", "winter", "handmade"],
        price: (1_800, 22_000),
    },
    Category {
        path: "books/fiction",
        kind: pb::ListingType::Physical,
        nouns: &["first edition novel", "poetry collection", "paperback set"],
        tags: &["books", "literature", "collectible"],
        price: (500, 40_000),
    },
    Category {
        path: "digital/audio",
        kind: pb::ListingType::Digital,
        nouns: &[
            "field recording pack",
            "synth presets",
            "drum samples",
            "podcast intro",
        ],
        tags: &["audio", "music", "samples"],
        price: (300, 5_000),
    },
    Category {
        path: "digital/software",
        kind: pb::ListingType::Digital,
        nouns: &[
            "photo editor licence",
            "font family",
            "icon set",
            "3d model pack",
        ],
        tags: &["software", "design", "license"],
        price: (500, 15_000),
    },
    Category {
        path: "services/design",
        kind: pb::ListingType::Service,
        nouns: &[
            "logo design",
            "website audit",
            "illustration",
            "translation",
        ],
        tags: &["design", "freelance", "service"],
        price: (2_000, 60_000),
    },
];

const ADJECTIVES: &[&str] = &[
    "Hand-thrown",
    "Vintage",
    "Organic",
    "Minimal",
    "Rustic",
    "Refurbished",
    "Limited",
    "Classic",
    "Blue",
    "Forest green",
    "Matte black",
    "Copper",
];
const STORES: &[&str] = &[
    "Blue Clay Pottery",
    "Atlas Audio",
    "Northwind Woodworks",
    "Kestrel Electronics",
    "Saffron Knits",
    "Old Harbour Books",
    "Pixel Foundry",
    "Meadow Leather",
    "Lumen Studio",
    "Copper Kettle",
];
const CURRENCIES: &[(&str, u32)] = &[
    ("EUR", 2),
    ("USD", 2),
    ("GBP", 2),
    ("CHF", 2),
    ("JPY", 0),
    ("BTC", 8),
];
const REGIONS: &[&[&str]] = &[
    &["DE", "AT", "CH"],
    &["US", "CA"],
    &["GB", "IE"],
    &["FR", "BE", "NL", "LU"],
    &["ALL"],
    &["JP"],
    &["BR", "AR"],
];

fn store_key(seed: u64, index: usize) -> IdentityKey {
    let mut rng = splitmix::Rng(seed ^ 0x5_0_0_C ^ (index as u64).wrapping_mul(0x1_0000_0001));
    let mut secret = [0u8; 32];
    for chunk in secret.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next().to_le_bytes());
    }
    IdentityKey::from_secret_bytes(&secret)
}

/// The signed profiles of the demo stores (every fifth also moderates).
#[must_use]
pub fn profiles(args: &DemoArgs, now: u64) -> Vec<SignedObject> {
    let ctx = ValidationContext::at(now);
    (0..args.stores.max(1))
        .filter_map(|i| {
            let key = store_key(args.seed, i);
            let mut profile = samples::profile(now);
            profile.store_name = format!("{} #{i}", STORES[i % STORES.len()]);
            profile.handle = format!("store-{i}");
            if i % 5 != 0 {
                profile.moderator = None;
            }
            key.seal(&Object::Profile(profile), &ctx).ok()
        })
        .collect()
}

/// Signed demo listings number `range` (each one depends only on the seed and its number, so
/// any range can be generated on its own, in any order).
#[must_use]
pub fn listings(args: &DemoArgs, now: u64, range: std::ops::Range<usize>) -> Vec<SignedObject> {
    let ctx = ValidationContext::at(now);
    let stores = args.stores.max(1);
    let moderators: Vec<Vec<u8>> = (0..stores)
        .step_by(5)
        .map(|i| store_key(args.seed, i).public_key().as_bytes().to_vec())
        .collect();
    let mut keys: std::collections::HashMap<usize, IdentityKey> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(range.len());
    for n in range {
        let mut rng = splitmix::Rng(args.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ (n as u64));
        let category = rng.pick(CATEGORIES);
        let noun = rng.pick(category.nouns);
        let adjective = rng.pick(ADJECTIVES);
        let (currency, divisibility) = *rng.pick(CURRENCIES);
        let (low, high) = category.price;
        let base = low + rng.next() % (high - low + 1);
        let amount = match currency {
            "JPY" => base * 150 / 100,
            "BTC" => base * 12,
            _ => base,
        };
        let mut listing = samples::listing(now - (rng.next() % 86_400), &format!("item-{n}"), None);
        listing.r#type = category.kind as i32;
        listing.title = format!("{adjective} {noun}");
        listing.description = format!(
            "{adjective} {noun} from our {} collection. Carefully packed and shipped within two days. Item {n}.",
            category.path.rsplit('/').next().unwrap_or("shop")
        );
        listing.category = category.path.into();
        listing.price = Some(pb::Price {
            amount: amount.max(1),
            currency: currency.into(),
            divisibility,
        });
        listing.tags = {
            let mut tags: Vec<String> = (0..3)
                .map(|_| rng.pick(category.tags).to_string())
                .collect();
            tags.sort();
            tags.dedup();
            tags
        };
        listing.options.clear();
        listing.skus.clear();
        listing.coupons.clear();
        listing.taxes.clear();
        listing.nsfw = rng.below(50) == 0;
        listing.accepted_moderators = if rng.below(3) == 0 {
            Vec::new()
        } else {
            vec![rng.pick(&moderators).clone()]
        };
        if category.kind == pb::ListingType::Physical {
            listing.condition = *rng.pick(&[
                pb::Condition::New as i32,
                pb::Condition::UsedGood as i32,
                pb::Condition::UsedLikeNew as i32,
                pb::Condition::Refurbished as i32,
            ]);
            let regions = rng.pick(REGIONS);
            listing.shipping.truncate(1);
            if let Some(option) = listing.shipping.first_mut() {
                option.name = "Standard".into();
                option.regions = regions.iter().map(|r| (*r).to_string()).collect();
            }
        } else {
            listing.condition = pb::Condition::Unspecified as i32;
            listing.shipping.clear();
        }
        let store = rng.below(stores);
        let key = keys
            .entry(store)
            .or_insert_with(|| store_key(args.seed, store));
        if let Ok(sealed) = key.seal(&Object::Listing(listing), &ctx) {
            out.push(sealed);
        }
    }
    out
}

/// Generates the demo data and ingests it through the server's ingest path, with progress.
///
/// # Errors
/// If ingesting fails.
pub async fn run(state: &SharedState, args: &DemoArgs) -> anyhow::Result<()> {
    const CHUNK: usize = 500;
    let started = Instant::now();
    let now = ValidationContext::now().now;
    let total = args.listings + args.stores.max(1);
    let (mut accepted, mut duplicates, mut other, mut done) = (0usize, 0usize, 0usize, 0usize);
    let mut next = 0usize;
    let mut first = true;
    while first || next < args.listings {
        let chunk = if first {
            first = false;
            profiles(args, now)
        } else {
            let end = (next + CHUNK).min(args.listings);
            let chunk = listings(args, now, next..end);
            next = end;
            chunk
        };
        let bytes: Vec<Vec<u8>> = chunk
            .iter()
            .map(|o| o.envelope().bytes().to_vec())
            .collect();
        done += bytes.len();
        let results = state
            .ingestor
            .ingest(bytes)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for result in results {
            match result {
                crate::ingest::IngestResult::Accepted { .. } => accepted += 1,
                crate::ingest::IngestResult::Duplicate { .. } => duplicates += 1,
                _ => other += 1,
            }
        }
        if done % 10_000 < CHUNK || done == total {
            println!("  ingested {done}/{total}");
        }
    }
    println!(
        "done in {:.1} s: {accepted} accepted, {duplicates} already there, {other} refused. Start the server and try: curl 'http://{}/api/v1/listings/search?q=mug'",
        started.elapsed().as_secs_f64(),
        state.config.listen
    );
    Ok(())
}
