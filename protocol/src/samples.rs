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
            escrow_xpub: test_moderation_xpub(),
        }),
    }
}

/// The regtest moderation xpub of [`TEST_MNEMONIC`] (computed once).
#[must_use]
pub fn test_moderation_xpub() -> String {
    static XPUB: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    XPUB.get_or_init(|| {
        crate::Mnemonic::parse(TEST_MNEMONIC)
            .ok()
            .and_then(|m| {
                crate::Keychain::from_mnemonic(&m, "")
                    .moderation_xpub(bitcoin::Network::Regtest)
                    .ok()
            })
            .map(|x| x.to_string())
            .unwrap_or_default()
    })
    .clone()
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

/// One valid private message of every body type, from a buyer's or seller's point of view as the
/// body requires, addressed to `recipient` at [`SAMPLE_TIME`]. `listing` is the signed listing
/// envelope an order refers to; addresses are regtest.
#[must_use]
pub fn messages(recipient: &PublicKey, listing: &[u8]) -> Vec<pb::Message> {
    use pb::message::Body;
    const ADDRESS: &str = "bcrt1q6rz28mcfaxtmd6v789l9rrlrusdprr9pz3cppk";
    const TXID: [u8; 32] = [0xab; 32];
    const PSBT: &[u8] = b"psbt\xff\x01\x00";
    let order_id = vec![0x0d; 32];
    let key = |n: u8| IdentityKey::from_secret_bytes(&[n; 32]).public_key();
    let bodies = vec![
        Body::Order(pb::OrderRequest {
            listing: listing.to_vec(),
            items: vec![pb::OrderItem {
                sku: 0,
                quantity: 1,
            }],
            shipping_option: "Germany".into(),
            shipping_service: "DHL Paket".into(),
            shipping_address: "Hauptstrasse 1\n10115 Berlin".into(),
            payment: pb::PaymentMethod::Moderated as i32,
            moderator: key(3).as_bytes().to_vec(),
            buyer_escrow_key: {
                let mut k = vec![0x02];
                k.extend_from_slice(&[
                    0x79, 0xbe, 0x66, 0x7e, 0xf9, 0xdc, 0xbb, 0xac, 0x55, 0xa0, 0x62, 0x95, 0xce,
                    0x87, 0x0b, 0x07, 0x02, 0x9b, 0xfc, 0xdb, 0x2d, 0xce, 0x28, 0xd9, 0x59, 0xf2,
                    0x81, 0x5b, 0x16, 0xf8, 0x17, 0x98,
                ]);
                k
            },
            refund_address: ADDRESS.into(),
            amount_sats: 150_000,
            rating_key: key(4).as_bytes().to_vec(),
            reply_inbox_servers: vec!["https://inbox.example.org".into()],
            network: "regtest".into(),
            memo: "Gift wrap, please.".into(),
            moderator_profile: listing.to_vec(),
        }),
        Body::Confirmation(pb::OrderConfirmation {
            seller_escrow_key: Vec::new(),
            payment_address: ADDRESS.into(),
            amount_sats: 150_000,
            escrow_timeout_blocks: 0,
            payout_address: ADDRESS.into(),
            rating_permit: vec![7; 64],
        }),
        Body::Decline(pb::OrderDecline {
            reason: "Sold out, sorry.".into(),
        }),
        Body::Payment(pb::PaymentNotice {
            txid: TXID.to_vec(),
            vout: 1,
            amount_sats: 150_000,
        }),
        Body::Fulfillment(pb::Fulfillment {
            note: "Posted today.".into(),
            carrier: "DHL".into(),
            tracking: "00340434161094042557".into(),
            release_psbt: PSBT.to_vec(),
        }),
        Body::Completion(pb::Completion {
            txid: TXID.to_vec(),
            note: "Arrived, thank you!".into(),
        }),
        Body::Cancel(pb::Cancellation {
            reason: "Changed my mind.".into(),
            refund_psbt: Vec::new(),
            refund_txid: Vec::new(),
        }),
        Body::Dispute(pb::DisputeOpen {
            reason: "Never arrived.".into(),
            order: b"quoted order".to_vec(),
            confirmation: b"quoted confirmation".to_vec(),
            funding_txid: TXID.to_vec(),
            funding_vout: 0,
            funding_sats: 150_000,
        }),
        Body::Evidence(pb::Evidence {
            text: "The tracking page says returned to sender.".into(),
            messages: vec![b"quoted message".to_vec()],
            attachments: Vec::new(),
        }),
        Body::Decision(pb::Decision {
            buyer_share_bps: 7_000,
            moderator_fee_sats: 5_000,
            payout_psbt: PSBT.to_vec(),
            rating_permit: vec![9; 64],
            reason: "Seller shipped late; 70/30.".into(),
            fee_address: ADDRESS.into(),
        }),
        Body::Psbt(pb::PsbtToSign {
            purpose: pb::PsbtPurpose::Refund as i32,
            psbt: PSBT.to_vec(),
        }),
        Body::Chat(pb::Chat {
            text: "Is the blue one still available?".into(),
        }),
    ];
    bodies
        .into_iter()
        .map(|body| pb::Message {
            created_at: SAMPLE_TIME,
            recipient: recipient.as_bytes().to_vec(),
            order_id: if matches!(body, Body::Order(_) | Body::Chat(_)) {
                Vec::new()
            } else {
                order_id.clone()
            },
            body: Some(body),
        })
        .collect()
}
