//! Plain records for what a person publishes, and their mapping onto the wire schema.
//!
//! The same records describe a draft to sign and a verified object received from a server
//! (`ListingDraft::from_wire` and `ProfileDraft::from_wire` go the other way), so an app edits a listing by fetching
//! it, changing the record and signing it again. They also (de)serialise with serde, which is
//! how the `souk` CLI reads listing files (TOML or JSON; `cli/examples/listing.toml`).

use serde::{Deserialize, Serialize};
use souk_protocol::{PublicKey, pb};
use std::str::FromStr;

use crate::error::WalletError;

/// What a listing sells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum ListingType {
    /// A thing that is shipped.
    Physical,
    /// A file or code delivered online.
    Digital,
    /// Work done for the buyer.
    Service,
}

/// The state of a physical item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// Never used.
    New,
    /// Used, indistinguishable from new.
    UsedLikeNew,
    /// Used, works well, light wear.
    UsedGood,
    /// Used, visible wear.
    UsedFair,
    /// Restored by a professional.
    Refurbished,
    /// Does not work; for parts or repair.
    ForParts,
}

/// How a moderator charges for settling a dispute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, uniffi::Enum)]
#[serde(rename_all = "snake_case")]
pub enum FeeType {
    /// A fixed amount.
    Fixed,
    /// A share of the order total.
    Percentage,
    /// Both.
    FixedPlusPercentage,
}

/// An amount of money in base units.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Amount in base units (satoshi for BTC, cents for EUR with divisibility 2).
    pub amount: u64,
    /// "BTC" or an ISO 4217 code.
    pub currency: String,
    /// Decimal places of the base unit: 8 for BTC, at most 4 for fiat.
    pub divisibility: u32,
}

/// A picture, by hash and where to fetch it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Image {
    /// SHA-256 of the image file, 64 hex digits (a client checks the downloaded file).
    pub sha256: String,
    /// Where to fetch it (https).
    pub url: String,
    /// e.g. "image/jpeg".
    #[uniffi(default)]
    pub media_type: String,
    /// Pixels.
    #[uniffi(default)]
    pub width: u32,
    /// Pixels.
    #[uniffi(default)]
    pub height: u32,
    /// Text for screen readers.
    #[uniffi(default)]
    pub alt: String,
}

/// One choice a buyer makes, such as size or colour.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct VariantOption {
    /// e.g. "Size".
    pub name: String,
    /// e.g. ["S", "M", "L"].
    pub values: Vec<String>,
}

/// A stock-keeping unit: one combination of option values.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Sku {
    /// One index into each option's values, in option order.
    pub selection: Vec<u32>,
    /// The seller's code for it.
    #[uniffi(default)]
    pub code: String,
    /// Added to (or, negative, taken from) the base price, in base units.
    #[uniffi(default)]
    pub surcharge: i64,
    /// Units in stock; `None` for unlimited.
    #[uniffi(default)]
    pub quantity: Option<u64>,
}

/// A delivery service within a shipping option.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct ShippingService {
    /// e.g. "Standard".
    pub name: String,
    /// Price for the first item, in the listing's base units.
    pub price: u64,
    /// Price for each further item.
    #[uniffi(default)]
    pub additional_item_price: u64,
    /// e.g. "3-5 days".
    #[uniffi(default)]
    pub estimated_delivery: String,
}

/// Where a listing ships, and how.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct ShippingOption {
    /// e.g. "Europe".
    pub name: String,
    /// ISO 3166-1 alpha-2 country codes, or "ALL".
    pub regions: Vec<String>,
    /// At least one service.
    pub services: Vec<ShippingService>,
}

/// A tax the seller charges in some regions.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Tax {
    /// e.g. "VAT".
    pub name: String,
    /// Country codes.
    pub regions: Vec<String>,
    /// Rate in basis points (2000 = 20 %).
    pub rate_bp: u32,
    /// Whether shipping is taxed too.
    #[uniffi(default)]
    pub applies_to_shipping: bool,
}

/// A discount code. Only its hash is published: give `code` when drafting, and a received
/// listing has `code_hash` (hex) instead. Exactly one of `percent_off_bp` and `amount_off`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Coupon {
    /// Shown to buyers.
    pub title: String,
    /// The code in clear (drafts only; hashed before signing).
    #[uniffi(default)]
    pub code: Option<String>,
    /// The published hash, 64 hex digits.
    #[uniffi(default)]
    pub code_hash: Option<String>,
    /// Discount in basis points of the price.
    #[uniffi(default)]
    pub percent_off_bp: Option<u32>,
    /// Discount in base units.
    #[uniffi(default)]
    pub amount_off: Option<u64>,
}

/// A listing to sign, or a verified listing received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, uniffi::Record)]
#[serde(deny_unknown_fields)]
pub struct ListingDraft {
    /// Stable name within the store (lower-case letters, digits and hyphens); publishing the
    /// same slug again replaces the listing.
    pub slug: String,
    /// What is sold.
    #[serde(rename = "type")]
    pub listing_type: ListingType,
    /// Title.
    pub title: String,
    /// Description (plain text or Markdown).
    #[serde(default)]
    #[uniffi(default)]
    pub description: String,
    /// Base price.
    pub price: Price,
    /// Pictures; the first is the main one.
    #[serde(default)]
    #[uniffi(default)]
    pub images: Vec<Image>,
    /// Choices such as size and colour.
    #[serde(default)]
    #[uniffi(default)]
    pub options: Vec<VariantOption>,
    /// Stock per combination of choices.
    #[serde(default)]
    #[uniffi(default)]
    pub skus: Vec<Sku>,
    /// Shipping options (physical listings).
    #[serde(default)]
    #[uniffi(default)]
    pub shipping: Vec<ShippingOption>,
    /// Taxes.
    #[serde(default)]
    #[uniffi(default)]
    pub taxes: Vec<Tax>,
    /// Discount codes.
    #[serde(default)]
    #[uniffi(default)]
    pub coupons: Vec<Coupon>,
    /// Search tags.
    #[serde(default)]
    #[uniffi(default)]
    pub tags: Vec<String>,
    /// Category path, e.g. "home/kitchen".
    #[serde(default)]
    #[uniffi(default)]
    pub category: String,
    /// Condition (physical listings).
    #[serde(default)]
    #[uniffi(default)]
    pub condition: Option<Condition>,
    /// Not safe for work.
    #[serde(default)]
    #[uniffi(default)]
    pub nsfw: bool,
    /// Moderators (addresses) the seller accepts for escrow; empty: direct payment only.
    #[serde(default)]
    #[uniffi(default)]
    pub accepted_moderators: Vec<String>,
    /// Blocks after which the seller may claim escrowed funds; 0 for the default (4,320).
    #[serde(default)]
    #[uniffi(default)]
    pub escrow_timeout_blocks: u32,
    /// Refund policy text.
    #[serde(default)]
    #[uniffi(default)]
    pub refund_policy: String,
    /// Terms of sale.
    #[serde(default)]
    #[uniffi(default)]
    pub terms: String,
    /// Language tag (BCP 47) of the text, e.g. "en".
    #[serde(default)]
    #[uniffi(default)]
    pub language: String,
    /// Unix time after which the listing is withdrawn; 0 for the longest allowed.
    #[serde(default)]
    #[uniffi(default)]
    pub expires_at: u64,
    /// Most units one order may take; 0 for no limit.
    #[serde(default)]
    #[uniffi(default)]
    pub max_quantity_per_order: u32,
}

/// Where a store is.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Location {
    /// ISO 3166-1 alpha-2.
    pub country: String,
    /// Region or state.
    #[uniffi(default)]
    pub region: String,
    /// City.
    #[uniffi(default)]
    pub city: String,
}

/// A way to reach the store outside Souk.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct Contact {
    /// e.g. "email", "website", "nostr".
    pub kind: String,
    /// The address.
    pub value: String,
}

/// A moderator's offer to settle disputes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, uniffi::Record)]
#[serde(deny_unknown_fields)]
pub struct ModeratorOffer {
    /// How the fee is computed.
    pub fee_type: FeeType,
    /// Fixed part of the fee.
    #[serde(default)]
    #[uniffi(default)]
    pub fee_fixed: Option<Price>,
    /// Percentage part, in basis points of the order total.
    #[serde(default)]
    #[uniffi(default)]
    pub fee_percentage_bp: u32,
    /// Languages spoken (BCP 47).
    #[serde(default)]
    #[uniffi(default)]
    pub languages: Vec<String>,
    /// Terms of moderation.
    #[serde(default)]
    #[uniffi(default)]
    pub terms: String,
    /// Currencies accepted for the fee.
    #[serde(default)]
    #[uniffi(default)]
    pub accepted_currencies: Vec<String>,
    /// About the moderator.
    #[serde(default)]
    #[uniffi(default)]
    pub description: String,
    /// The moderation account xpub (`Keychain::moderation_xpub`) from which buyers and sellers
    /// derive the moderator's escrow key of each order; required to be chosen for escrowed
    /// orders.
    #[serde(default)]
    #[uniffi(default)]
    pub escrow_xpub: String,
}

/// A store profile to sign, or a verified profile received.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, uniffi::Record)]
#[serde(default, deny_unknown_fields)]
pub struct ProfileDraft {
    /// Store name.
    pub store_name: String,
    /// Short handle (letters, digits, `_`).
    #[uniffi(default)]
    pub handle: String,
    /// About the store.
    #[uniffi(default)]
    pub about: String,
    /// Avatar.
    #[uniffi(default)]
    pub avatar: Option<Image>,
    /// Header picture.
    #[uniffi(default)]
    pub header: Option<Image>,
    /// Where the store is.
    #[uniffi(default)]
    pub location: Option<Location>,
    /// Other ways to reach the store.
    #[uniffi(default)]
    pub contacts: Vec<Contact>,
    /// Currencies the store accepts.
    #[uniffi(default)]
    pub accepted_currencies: Vec<String>,
    /// Index servers that hold the store's inbox (https URLs).
    #[uniffi(default)]
    pub inbox_servers: Vec<String>,
    /// Set to offer moderation.
    #[uniffi(default)]
    pub moderator: Option<ModeratorOffer>,
}

fn draft_error(field: &str, detail: impl Into<String>) -> WalletError {
    WalletError::InvalidDraft {
        code: "bad_format".into(),
        field: field.into(),
        detail: detail.into(),
    }
}

fn hex32(text: &str, field: &str) -> Result<Vec<u8>, WalletError> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(draft_error(field, "must be 64 hex digits (a SHA-256)"));
    }
    (0..32)
        .map(|i| {
            u8::from_str_radix(&text[2 * i..2 * i + 2], 16)
                .map_err(|_| draft_error(field, "must be 64 hex digits (a SHA-256)"))
        })
        .collect()
}

/// Lower-case hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl From<ListingType> for pb::ListingType {
    fn from(t: ListingType) -> Self {
        match t {
            ListingType::Physical => Self::Physical,
            ListingType::Digital => Self::Digital,
            ListingType::Service => Self::Service,
        }
    }
}

impl From<Condition> for pb::Condition {
    fn from(c: Condition) -> Self {
        match c {
            Condition::New => Self::New,
            Condition::UsedLikeNew => Self::UsedLikeNew,
            Condition::UsedGood => Self::UsedGood,
            Condition::UsedFair => Self::UsedFair,
            Condition::Refurbished => Self::Refurbished,
            Condition::ForParts => Self::ForParts,
        }
    }
}

impl ListingType {
    /// The API name (`physical`, `digital`, `service`).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        souk_protocol::summary::listing_type_name(pb::ListingType::from(self) as i32)
    }

    fn from_wire(value: i32) -> Option<Self> {
        match pb::ListingType::try_from(value).ok()? {
            pb::ListingType::Physical => Some(Self::Physical),
            pb::ListingType::Digital => Some(Self::Digital),
            pb::ListingType::Service => Some(Self::Service),
            pb::ListingType::Unspecified => None,
        }
    }
}

impl Condition {
    /// The API name (`new`, `used_like_new`, …).
    #[must_use]
    pub fn as_str(self) -> &'static str {
        souk_protocol::summary::condition_name(pb::Condition::from(self) as i32)
    }

    fn from_wire(value: i32) -> Option<Self> {
        match pb::Condition::try_from(value).ok()? {
            pb::Condition::New => Some(Self::New),
            pb::Condition::UsedLikeNew => Some(Self::UsedLikeNew),
            pb::Condition::UsedGood => Some(Self::UsedGood),
            pb::Condition::UsedFair => Some(Self::UsedFair),
            pb::Condition::Refurbished => Some(Self::Refurbished),
            pb::Condition::ForParts => Some(Self::ForParts),
            pb::Condition::Unspecified => None,
        }
    }
}

impl From<&Price> for pb::Price {
    fn from(p: &Price) -> Self {
        Self {
            amount: p.amount,
            currency: p.currency.clone(),
            divisibility: p.divisibility,
        }
    }
}

impl From<&pb::Price> for Price {
    fn from(p: &pb::Price) -> Self {
        Self {
            amount: p.amount,
            currency: p.currency.clone(),
            divisibility: p.divisibility,
        }
    }
}

impl Image {
    fn to_wire(&self, field: &str) -> Result<pb::ImageRef, WalletError> {
        Ok(pb::ImageRef {
            sha256: hex32(&self.sha256, field)?,
            url: self.url.clone(),
            media_type: self.media_type.clone(),
            width: self.width,
            height: self.height,
            alt: self.alt.clone(),
        })
    }

    fn from_wire(i: &pb::ImageRef) -> Self {
        Self {
            sha256: hex(&i.sha256),
            url: i.url.clone(),
            media_type: i.media_type.clone(),
            width: i.width,
            height: i.height,
            alt: i.alt.clone(),
        }
    }
}

impl ListingDraft {
    /// The wire listing for this draft, with `created_at` set by the signer.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] for what the schema cannot carry (bad hex, a coupon
    /// without a code, a moderator that is not an address). The protocol's own validation runs
    /// when the wallet seals it.
    pub fn to_wire(&self, created_at: u64) -> Result<pb::Listing, WalletError> {
        let images = self
            .images
            .iter()
            .enumerate()
            .map(|(i, image)| image.to_wire(&format!("images[{i}].sha256")))
            .collect::<Result<_, _>>()?;
        let coupons = self
            .coupons
            .iter()
            .enumerate()
            .map(|(i, c)| coupon_to_wire(c, i))
            .collect::<Result<_, _>>()?;
        let accepted_moderators = self
            .accepted_moderators
            .iter()
            .enumerate()
            .map(|(i, m)| {
                PublicKey::from_str(m.trim())
                    .map(|k| k.as_bytes().to_vec())
                    .map_err(|_| {
                        draft_error(
                            &format!("accepted_moderators[{i}]"),
                            "must be a souk1… address or 64 hex digits",
                        )
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(pb::Listing {
            created_at,
            slug: self.slug.clone(),
            r#type: pb::ListingType::from(self.listing_type) as i32,
            title: self.title.clone(),
            description: self.description.clone(),
            images,
            price: Some(pb::Price::from(&self.price)),
            options: self
                .options
                .iter()
                .map(|o| pb::VariantOption {
                    name: o.name.clone(),
                    values: o.values.clone(),
                })
                .collect(),
            skus: self
                .skus
                .iter()
                .map(|s| pb::Sku {
                    selection: s.selection.clone(),
                    code: s.code.clone(),
                    surcharge: s.surcharge,
                    quantity: s.quantity,
                })
                .collect(),
            shipping: self
                .shipping
                .iter()
                .map(|s| pb::ShippingOption {
                    name: s.name.clone(),
                    regions: s.regions.clone(),
                    services: s
                        .services
                        .iter()
                        .map(|v| pb::ShippingService {
                            name: v.name.clone(),
                            price: v.price,
                            additional_item_price: v.additional_item_price,
                            estimated_delivery: v.estimated_delivery.clone(),
                        })
                        .collect(),
                })
                .collect(),
            taxes: self
                .taxes
                .iter()
                .map(|t| pb::Tax {
                    name: t.name.clone(),
                    regions: t.regions.clone(),
                    rate_bp: t.rate_bp,
                    applies_to_shipping: t.applies_to_shipping,
                })
                .collect(),
            coupons,
            tags: self.tags.clone(),
            category: self.category.clone(),
            condition: self
                .condition
                .map_or(pb::Condition::Unspecified, pb::Condition::from)
                as i32,
            nsfw: self.nsfw,
            accepted_moderators,
            escrow_timeout_blocks: if self.escrow_timeout_blocks == 0 {
                souk_protocol::limits::DEFAULT_ESCROW_TIMEOUT_BLOCKS
            } else {
                self.escrow_timeout_blocks
            },
            refund_policy: self.refund_policy.clone(),
            terms: self.terms.clone(),
            language: self.language.clone(),
            expires_at: if self.expires_at == 0 {
                created_at.saturating_add(souk_protocol::limits::MAX_LISTING_LIFETIME_SECS)
            } else {
                self.expires_at
            },
            max_quantity_per_order: self.max_quantity_per_order,
        })
    }

    /// The record for a verified wire listing.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] when the listing has no type (validation refuses that, so
    /// only an unvalidated listing gets here).
    pub fn from_wire(l: &pb::Listing) -> Result<Self, WalletError> {
        Ok(Self {
            slug: l.slug.clone(),
            listing_type: ListingType::from_wire(l.r#type)
                .ok_or_else(|| draft_error("type", "unspecified listing type"))?,
            title: l.title.clone(),
            description: l.description.clone(),
            price: l.price.as_ref().map(Price::from).unwrap_or_default(),
            images: l.images.iter().map(Image::from_wire).collect(),
            options: l
                .options
                .iter()
                .map(|o| VariantOption {
                    name: o.name.clone(),
                    values: o.values.clone(),
                })
                .collect(),
            skus: l
                .skus
                .iter()
                .map(|s| Sku {
                    selection: s.selection.clone(),
                    code: s.code.clone(),
                    surcharge: s.surcharge,
                    quantity: s.quantity,
                })
                .collect(),
            shipping: l
                .shipping
                .iter()
                .map(|s| ShippingOption {
                    name: s.name.clone(),
                    regions: s.regions.clone(),
                    services: s
                        .services
                        .iter()
                        .map(|v| ShippingService {
                            name: v.name.clone(),
                            price: v.price,
                            additional_item_price: v.additional_item_price,
                            estimated_delivery: v.estimated_delivery.clone(),
                        })
                        .collect(),
                })
                .collect(),
            taxes: l
                .taxes
                .iter()
                .map(|t| Tax {
                    name: t.name.clone(),
                    regions: t.regions.clone(),
                    rate_bp: t.rate_bp,
                    applies_to_shipping: t.applies_to_shipping,
                })
                .collect(),
            coupons: l
                .coupons
                .iter()
                .map(|c| Coupon {
                    title: c.title.clone(),
                    code: None,
                    code_hash: Some(hex(&c.code_hash)),
                    percent_off_bp: match c.discount {
                        Some(pb::coupon::Discount::PercentOffBp(bp)) => Some(bp),
                        _ => None,
                    },
                    amount_off: match c.discount {
                        Some(pb::coupon::Discount::AmountOff(a)) => Some(a),
                        _ => None,
                    },
                })
                .collect(),
            tags: l.tags.clone(),
            category: l.category.clone(),
            condition: Condition::from_wire(l.condition),
            nsfw: l.nsfw,
            accepted_moderators: l
                .accepted_moderators
                .iter()
                .map(|m| {
                    PublicKey::from_bytes(m)
                        .map(|k| k.to_address())
                        .unwrap_or_else(|_| hex(m))
                })
                .collect(),
            escrow_timeout_blocks: l.escrow_timeout_blocks,
            refund_policy: l.refund_policy.clone(),
            terms: l.terms.clone(),
            language: l.language.clone(),
            expires_at: l.expires_at,
            max_quantity_per_order: l.max_quantity_per_order,
        })
    }
}

fn coupon_to_wire(c: &Coupon, i: usize) -> Result<pb::Coupon, WalletError> {
    let code_hash = match (&c.code, &c.code_hash) {
        (Some(code), None) => souk_protocol::coupon_code_hash(code).to_vec(),
        (None, Some(h)) => hex32(h, &format!("coupons[{i}].code_hash"))?,
        _ => {
            return Err(draft_error(
                &format!("coupons[{i}]"),
                "give exactly one of `code` (in clear, hashed before signing) and `code_hash`",
            ));
        }
    };
    let discount = match (c.percent_off_bp, c.amount_off) {
        (Some(bp), None) => pb::coupon::Discount::PercentOffBp(bp),
        (None, Some(a)) => pb::coupon::Discount::AmountOff(a),
        _ => {
            return Err(draft_error(
                &format!("coupons[{i}]"),
                "give exactly one of `percent_off_bp` and `amount_off`",
            ));
        }
    };
    Ok(pb::Coupon {
        title: c.title.clone(),
        code_hash,
        discount: Some(discount),
    })
}

impl ProfileDraft {
    /// The wire profile for this draft.
    ///
    /// # Errors
    /// [`WalletError::InvalidDraft`] for an image hash that is not hex.
    pub fn to_wire(&self, created_at: u64) -> Result<pb::Profile, WalletError> {
        Ok(pb::Profile {
            created_at,
            store_name: self.store_name.clone(),
            handle: self.handle.clone(),
            about: self.about.clone(),
            avatar: self
                .avatar
                .as_ref()
                .map(|i| i.to_wire("avatar.sha256"))
                .transpose()?,
            header: self
                .header
                .as_ref()
                .map(|i| i.to_wire("header.sha256"))
                .transpose()?,
            location: self.location.as_ref().map(|l| pb::Location {
                country: l.country.clone(),
                region: l.region.clone(),
                city: l.city.clone(),
            }),
            contacts: self
                .contacts
                .iter()
                .map(|c| pb::ContactLink {
                    kind: c.kind.clone(),
                    value: c.value.clone(),
                })
                .collect(),
            accepted_currencies: self.accepted_currencies.clone(),
            inbox_servers: self.inbox_servers.clone(),
            moderator: self.moderator.as_ref().map(|m| pb::ModeratorOffer {
                fee: Some(pb::ModeratorFee {
                    r#type: match m.fee_type {
                        FeeType::Fixed => pb::moderator_fee::FeeType::Fixed,
                        FeeType::Percentage => pb::moderator_fee::FeeType::Percentage,
                        FeeType::FixedPlusPercentage => {
                            pb::moderator_fee::FeeType::FixedPlusPercentage
                        }
                    } as i32,
                    fixed: m.fee_fixed.as_ref().map(pb::Price::from),
                    percentage_bp: m.fee_percentage_bp,
                }),
                languages: m.languages.clone(),
                terms: m.terms.clone(),
                accepted_currencies: m.accepted_currencies.clone(),
                description: m.description.clone(),
                escrow_xpub: m.escrow_xpub.clone(),
            }),
        })
    }

    /// The record for a verified wire profile.
    #[must_use]
    pub fn from_wire(p: &pb::Profile) -> Self {
        Self {
            store_name: p.store_name.clone(),
            handle: p.handle.clone(),
            about: p.about.clone(),
            avatar: p.avatar.as_ref().map(Image::from_wire),
            header: p.header.as_ref().map(Image::from_wire),
            location: p.location.as_ref().map(|l| Location {
                country: l.country.clone(),
                region: l.region.clone(),
                city: l.city.clone(),
            }),
            contacts: p
                .contacts
                .iter()
                .map(|c| Contact {
                    kind: c.kind.clone(),
                    value: c.value.clone(),
                })
                .collect(),
            accepted_currencies: p.accepted_currencies.clone(),
            inbox_servers: p.inbox_servers.clone(),
            moderator: p.moderator.as_ref().map(|m| {
                let fee = m.fee.clone().unwrap_or_default();
                ModeratorOffer {
                    fee_type: match pb::moderator_fee::FeeType::try_from(fee.r#type) {
                        Ok(pb::moderator_fee::FeeType::Fixed) => FeeType::Fixed,
                        Ok(pb::moderator_fee::FeeType::FixedPlusPercentage) => {
                            FeeType::FixedPlusPercentage
                        }
                        _ => FeeType::Percentage,
                    },
                    fee_fixed: fee.fixed.as_ref().map(Price::from),
                    fee_percentage_bp: fee.percentage_bp,
                    languages: m.languages.clone(),
                    terms: m.terms.clone(),
                    accepted_currencies: m.accepted_currencies.clone(),
                    description: m.description.clone(),
                    escrow_xpub: m.escrow_xpub.clone(),
                }
            }),
        }
    }
}
