//! The summary of a listing that index servers show beside each search hit.
//!
//! A server derives it from the signed listing with [`ListingSummary::of`]; a client that gets a
//! hit derives it again from the envelope it verified and compares the two. Both sides use this
//! one function, so "the summary matches the signed listing" is an equality test, and the API
//! names of listing types and conditions live here once.

use crate::{PublicKey, hex, pb};

/// The API name of a listing type: `physical`, `digital`, `service`, or `unspecified`.
#[must_use]
pub fn listing_type_name(value: i32) -> &'static str {
    match pb::ListingType::try_from(value) {
        Ok(pb::ListingType::Physical) => "physical",
        Ok(pb::ListingType::Digital) => "digital",
        Ok(pb::ListingType::Service) => "service",
        _ => "unspecified",
    }
}

/// The listing type with API name `name`, if there is one (`unspecified` is not).
#[must_use]
pub fn listing_type_from_name(name: &str) -> Option<pb::ListingType> {
    [
        pb::ListingType::Physical,
        pb::ListingType::Digital,
        pb::ListingType::Service,
    ]
    .into_iter()
    .find(|t| listing_type_name(*t as i32) == name)
}

/// The API name of a condition: `new`, `used_like_new`, `used_good`, `used_fair`,
/// `refurbished`, `for_parts`, or `unspecified`.
#[must_use]
pub fn condition_name(value: i32) -> &'static str {
    match pb::Condition::try_from(value) {
        Ok(pb::Condition::New) => "new",
        Ok(pb::Condition::UsedLikeNew) => "used_like_new",
        Ok(pb::Condition::UsedGood) => "used_good",
        Ok(pb::Condition::UsedFair) => "used_fair",
        Ok(pb::Condition::Refurbished) => "refurbished",
        Ok(pb::Condition::ForParts) => "for_parts",
        _ => "unspecified",
    }
}

/// The condition with API name `name`, if there is one (`unspecified` is not).
#[must_use]
pub fn condition_from_name(name: &str) -> Option<pb::Condition> {
    [
        pb::Condition::New,
        pb::Condition::UsedLikeNew,
        pb::Condition::UsedGood,
        pb::Condition::UsedFair,
        pb::Condition::Refurbished,
        pb::Condition::ForParts,
    ]
    .into_iter()
    .find(|c| condition_name(*c as i32) == name)
}

/// What a search hit shows of a listing, every field taken from the signed listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListingSummary {
    /// Seller's address (`souk1…`).
    pub seller: String,
    /// The listing's slug.
    pub slug: String,
    /// Title.
    pub title: String,
    /// [`listing_type_name`] of the type.
    pub listing_type: String,
    /// [`condition_name`] of the condition.
    pub condition: String,
    /// Base price in base units; zero with an empty currency when the listing has none.
    pub price_amount: u64,
    /// Currency code of the price.
    pub price_currency: String,
    /// Decimal places of the price's base unit.
    pub price_divisibility: u32,
    /// Category path.
    pub category: String,
    /// Tags, in the listing's order.
    pub tags: Vec<String>,
    /// Regions of all shipping options, sorted, without duplicates.
    pub ships_to: Vec<String>,
    /// Whether the listing accepts at least one moderator.
    pub moderated: bool,
    /// Not safe for work.
    pub nsfw: bool,
    /// Unix time of this version.
    pub created_at: u64,
    /// Unix time of expiry, 0 for none.
    pub expires_at: u64,
    /// URL of the first image, if any.
    pub image_url: Option<String>,
    /// SHA-256 (lower-case hex) of the first image, if any.
    pub image_sha256: Option<String>,
}

impl ListingSummary {
    /// The summary of `listing` as signed by `seller`.
    #[must_use]
    pub fn of(seller: &PublicKey, listing: &pb::Listing) -> Self {
        Self::of_key_bytes(seller.as_bytes(), listing)
    }

    /// [`of`](Self::of) with the seller's key as its 32 raw bytes, which must be a valid key
    /// (the signer of a checked envelope): the key is not decoded, only written as an address.
    #[must_use]
    pub fn of_key_bytes(seller: &[u8; 32], listing: &pb::Listing) -> Self {
        let mut ships_to: Vec<String> = listing
            .shipping
            .iter()
            .flat_map(|s| s.regions.iter().cloned())
            .collect();
        ships_to.sort();
        ships_to.dedup();
        let price = listing.price.clone().unwrap_or_default();
        let image = listing.images.first();
        Self {
            seller: crate::identity::address_of(seller),
            slug: listing.slug.clone(),
            title: listing.title.clone(),
            listing_type: listing_type_name(listing.r#type).into(),
            condition: condition_name(listing.condition).into(),
            price_amount: price.amount,
            price_currency: price.currency,
            price_divisibility: price.divisibility,
            category: listing.category.clone(),
            tags: listing.tags.clone(),
            ships_to,
            moderated: !listing.accepted_moderators.is_empty(),
            nsfw: listing.nsfw,
            created_at: listing.created_at,
            expires_at: listing.expires_at,
            image_url: image.map(|i| i.url.clone()),
            image_sha256: image.map(|i| hex(&i.sha256)),
        }
    }

    /// The first field in which `self` and `other` differ, by name, or `None` when equal.
    ///
    /// Clients use it to say *what* a server changed when a hit's summary does not match the
    /// signed listing.
    #[must_use]
    pub fn first_difference(&self, other: &Self) -> Option<&'static str> {
        let checks: [(&'static str, bool); 17] = [
            ("seller", self.seller == other.seller),
            ("slug", self.slug == other.slug),
            ("title", self.title == other.title),
            ("type", self.listing_type == other.listing_type),
            ("condition", self.condition == other.condition),
            ("price.amount", self.price_amount == other.price_amount),
            (
                "price.currency",
                self.price_currency == other.price_currency,
            ),
            (
                "price.divisibility",
                self.price_divisibility == other.price_divisibility,
            ),
            ("category", self.category == other.category),
            ("tags", self.tags == other.tags),
            ("ships_to", self.ships_to == other.ships_to),
            ("moderated", self.moderated == other.moderated),
            ("nsfw", self.nsfw == other.nsfw),
            ("created_at", self.created_at == other.created_at),
            ("expires_at", self.expires_at == other.expires_at),
            ("image_url", self.image_url == other.image_url),
            ("image_sha256", self.image_sha256 == other.image_sha256),
        ];
        checks.into_iter().find(|(_, same)| !same).map(|(n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unspecified_has_no_parse() {
        for t in [
            pb::ListingType::Physical,
            pb::ListingType::Digital,
            pb::ListingType::Service,
        ] {
            assert_eq!(listing_type_from_name(listing_type_name(t as i32)), Some(t));
        }
        for c in [
            pb::Condition::New,
            pb::Condition::UsedLikeNew,
            pb::Condition::UsedGood,
            pb::Condition::UsedFair,
            pb::Condition::Refurbished,
            pb::Condition::ForParts,
        ] {
            assert_eq!(condition_from_name(condition_name(c as i32)), Some(c));
        }
        assert_eq!(listing_type_from_name("unspecified"), None);
        assert_eq!(condition_from_name("unspecified"), None);
        assert_eq!(listing_type_name(99), "unspecified");
    }

    #[test]
    fn first_difference_names_the_changed_field() {
        let mnemonic = crate::Mnemonic::parse(crate::samples::TEST_MNEMONIC).expect("mnemonic");
        let key = crate::Keychain::from_mnemonic(&mnemonic, "")
            .identity()
            .public_key();
        let listing = crate::samples::listing(crate::samples::SAMPLE_TIME, "lamp", Some(&key));
        let a = ListingSummary::of(&key, &listing);
        assert_eq!(a.first_difference(&a.clone()), None);
        let mut b = a.clone();
        b.price_amount += 1;
        assert_eq!(a.first_difference(&b), Some("price.amount"));
        let mut c = a.clone();
        c.ships_to.push("ZZ".into());
        assert_eq!(a.first_difference(&c), Some("ships_to"));
    }
}
