//! Realistic example objects, the same everywhere: test vectors, tests, benchmarks, demo data
//! and documentation all start from these.

use crate::identity::{IdentityKey, PublicKey};
use crate::pb;

/// The mnemonic of the test vectors' signer. Never use it for real money.
pub const TEST_MNEMONIC: &str =
    "abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon abandon about";

/// 2026-01-01T00:00:00Z, the `created_at` of the samples in the test vectors.
pub const SAMPLE_TIME: u64 = 1_767_225_600;

fn sha256(text: &str) -> Vec<u8> {
    use sha2::{Digest, Sha256};
    Sha256::digest(text.as_bytes()).to_vec()
}

/// A physical listing with every kind of field filled in: options and SKUs, two shipping
/// routes, a tax, two coupons, tags, a category and an accepted moderator.
#[must_use]
pub fn listing(created_at: u64, slug: &str, moderator: Option<&PublicKey>) -> pb::Listing {
    pb::Listing {
        created_at,
        slug: slug.into(),
        r#type: pb::ListingType::Physical as i32,
        title: "Hand-thrown stoneware mug, 350 ml".into(),
        description: "Wheel-thrown in our workshop from local clay.\n\nDishwasher safe; every glaze is lead-free.".into(),
        images: vec![pb::ImageRef {
            sha256: sha256("mug.jpg"),
            url: "https://images.example.org/mug.jpg".into(),
            media_type: "image/jpeg".into(),
            width: 1200,
            height: 900,
            alt: "A blue mug on a wooden table".into(),
        }],
        price: Some(pb::Price {
            amount: 2_400,
            currency: "EUR".into(),
            divisibility: 2,
        }),
        options: vec![
            pb::VariantOption {
                name: "Glaze".into(),
                values: vec!["Celadon".into(), "Tenmoku".into()],
            },
            pb::VariantOption {
                name: "Handle".into(),
                values: vec!["Left".into(), "Right".into()],
            },
        ],
        skus: vec![
            pb::Sku {
                selection: vec![0, 1],
                code: "MUG-CEL-R".into(),
                surcharge: 0,
                quantity: Some(12),
            },
            pb::Sku {
                selection: vec![1, 0],
                code: "MUG-TEN-L".into(),
                surcharge: 300,
                quantity: Some(3),
            },
        ],
        shipping: vec![
            pb::ShippingOption {
                name: "Germany".into(),
                regions: vec!["DE".into()],
                services: vec![pb::ShippingService {
                    name: "DHL Paket".into(),
                    price: 499,
                    additional_item_price: 100,
                    estimated_delivery: "2-3 days".into(),
                }],
            },
            pb::ShippingOption {
                name: "Worldwide".into(),
                regions: vec!["ALL".into()],
                services: vec![pb::ShippingService {
                    name: "Registered mail".into(),
                    price: 1_500,
                    additional_item_price: 500,
                    estimated_delivery: "1-3 weeks".into(),
                }],
            },
        ],
        taxes: vec![pb::Tax {
            name: "MwSt".into(),
            regions: vec!["DE".into()],
            rate_bp: 1_900,
            applies_to_shipping: true,
        }],
        coupons: vec![
            pb::Coupon {
                title: "Ten percent off".into(),
                code_hash: crate::coupon_code_hash("WELCOME10").to_vec(),
                discount: Some(pb::coupon::Discount::PercentOffBp(1_000)),
            },
            pb::Coupon {
                title: "Two euros off".into(),
                code_hash: crate::coupon_code_hash("MINUS2").to_vec(),
                discount: Some(pb::coupon::Discount::AmountOff(200)),
            },
        ],
        tags: vec!["ceramics".into(), "mug".into(), "handmade".into()],
        category: "home/kitchen/drinkware".into(),
        condition: pb::Condition::New as i32,
        nsfw: false,
        accepted_moderators: moderator.map(|m| m.as_bytes().to_vec()).into_iter().collect(),
        escrow_timeout_blocks: 4_320,
        refund_policy: "Returns within 14 days of delivery.".into(),
        terms: "Made to order; allow a week before dispatch.".into(),
        language: "en".into(),
        expires_at: 0,
        max_quantity_per_order: 10,
    }
}

/// A digital listing priced in BTC (satoshis), with no shipping.
#[must_use]
pub fn digital_listing(created_at: u64, slug: &str) -> pb::Listing {
    pb::Listing {
        created_at,
        slug: slug.into(),
        r#type: pb::ListingType::Digital as i32,
        title: "Field recordings: Atlas mountains at dawn (FLAC)".into(),
        description: "Two hours of birdsong and wind, 24-bit/96 kHz.".into(),
        price: Some(pb::Price {
            amount: 25_000,
            currency: "BTC".into(),
            divisibility: 8,
        }),
        tags: vec!["audio".into(), "field-recording".into()],
        category: "digital/audio".into(),
        language: "en".into(),
        ..Default::default()
    }
}

/// A profile that also offers moderation.
#[must_use]
pub fn profile(created_at: u64) -> pb::Profile {
    pb::Profile {
        created_at,
        store_name: "Blue Clay Pottery".into(),
        handle: "blue-clay".into(),
        about: "Small studio in Leipzig. Everything is thrown by hand.".into(),
        avatar: Some(pb::ImageRef {
            sha256: sha256("avatar.png"),
            url: "https://images.example.org/avatar.png".into(),
            media_type: "image/png".into(),
            width: 256,
            height: 256,
            alt: "Studio logo".into(),
        }),
        header: None,
        location: Some(pb::Location {
            country: "DE".into(),
            region: "Saxony".into(),
            city: "Leipzig".into(),
        }),
        contacts: vec![pb::ContactLink {
            kind: "website".into(),
            value: "https://blueclay.example.org".into(),
        }],
        accepted_currencies: vec!["BTC".into()],
        inbox_servers: vec!["https://index.example.org".into()],
        moderator: Some(pb::ModeratorOffer {
            fee: Some(pb::ModeratorFee {
                r#type: pb::moderator_fee::FeeType::FixedPlusPercentage as i32,
                fixed: Some(pb::Price {
                    amount: 5_000,
                    currency: "BTC".into(),
                    divisibility: 8,
                }),
                percentage_bp: 150,
            }),
            languages: vec!["en".into(), "de".into()],
            terms: "I decide within 72 hours of receiving both sides' evidence.".into(),
            accepted_currencies: vec!["BTC".into()],
            description: "Ceramics and crafts disputes.".into(),
        }),
    }
}

/// A tombstone withdrawing `slug`.
#[must_use]
pub fn tombstone(created_at: u64, slug: &str) -> pb::Tombstone {
    pb::Tombstone {
        created_at,
        slug: slug.into(),
        reason: "Sold out for the season.".into(),
    }
}

/// A buyer's rating of `seller`, signed later by `rating_key`, with the seller's permit.
#[must_use]
pub fn rating(
    created_at: u64,
    order_id: [u8; 32],
    seller: &IdentityKey,
    rating_key: &PublicKey,
) -> pb::Rating {
    pb::Rating {
        created_at,
        order_id: order_id.to_vec(),
        subject: seller.public_key().as_bytes().to_vec(),
        role: pb::RatingRole::Seller as i32,
        proof: Some(seller.sign_rating_permit(&order_id, rating_key, pb::RatingRole::Seller)),
        overall: 5,
        quality: 5,
        description: 4,
        delivery: 5,
        service: 5,
        review: "Beautiful mug, well packed.".into(),
    }
}
