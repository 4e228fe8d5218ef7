//! Validation rules, one behaviour per case: take a valid sample, break one thing, expect one
//! stable code on one field.

use souk_protocol::limits::*;
use souk_protocol::samples::{self, SAMPLE_TIME};
use souk_protocol::{IdentityKey, Object, ValidationContext, ValidationError, pb};

fn ctx() -> ValidationContext {
    ValidationContext::at(SAMPLE_TIME)
}

fn moderator() -> souk_protocol::PublicKey {
    IdentityKey::from_secret_bytes(&[3; 32]).public_key()
}

fn valid_listing() -> pb::Listing {
    samples::listing(SAMPLE_TIME, "mug", Some(&moderator()))
}

fn outcome(object: Object) -> Result<(), (&'static str, Option<&'static str>)> {
    object
        .validate(&ctx())
        .map_err(|e: ValidationError| (e.code(), e.field()))
}

/// Breaks a valid listing with `mutate` and expects `code` on `field`.
fn check_listing(mutate: impl FnOnce(&mut pb::Listing), code: &str, field: &str) {
    let mut listing = valid_listing();
    mutate(&mut listing);
    assert_eq!(outcome(Object::Listing(listing)), Err((code, Some(field))));
}

fn check_profile(mutate: impl FnOnce(&mut pb::Profile), code: &str, field: &str) {
    let mut profile = samples::profile(SAMPLE_TIME);
    mutate(&mut profile);
    assert_eq!(outcome(Object::Profile(profile)), Err((code, Some(field))));
}

fn rating() -> pb::Rating {
    let seller = IdentityKey::from_secret_bytes(&[5; 32]);
    let rating_key = IdentityKey::from_secret_bytes(&[6; 32]).public_key();
    samples::rating(SAMPLE_TIME, [8; 32], &seller, &rating_key)
}

fn check_rating(mutate: impl FnOnce(&mut pb::Rating), code: &str, field: &str) {
    let mut r = rating();
    mutate(&mut r);
    assert_eq!(outcome(Object::Rating(r)), Err((code, Some(field))));
}

#[test]
fn the_samples_are_valid() {
    assert_eq!(outcome(Object::Listing(valid_listing())), Ok(()));
    assert_eq!(
        outcome(Object::Listing(samples::digital_listing(SAMPLE_TIME, "x"))),
        Ok(())
    );
    assert_eq!(
        outcome(Object::Profile(samples::profile(SAMPLE_TIME))),
        Ok(())
    );
    assert_eq!(outcome(Object::Rating(rating())), Ok(()));
    assert_eq!(
        outcome(Object::Tombstone(samples::tombstone(SAMPLE_TIME, "mug"))),
        Ok(())
    );
}

#[test]
fn timestamps_must_lie_between_the_epoch_and_the_clock_plus_skew() {
    let future = SAMPLE_TIME + MAX_FUTURE_SKEW_SECS + 1;
    check_listing(
        |l| l.created_at = future,
        "timestamp_in_future",
        "created_at",
    );
    check_listing(
        |l| l.created_at = PROTOCOL_EPOCH - 1,
        "timestamp_before_epoch",
        "created_at",
    );
    let mut at_the_edge = valid_listing();
    at_the_edge.created_at = SAMPLE_TIME + MAX_FUTURE_SKEW_SECS;
    assert_eq!(
        outcome(Object::Listing(at_the_edge)),
        Ok(()),
        "skew is inclusive"
    );
    check_profile(
        |p| p.created_at = future,
        "timestamp_in_future",
        "created_at",
    );
}

#[test]
fn slugs_are_lower_case_words_joined_by_hyphens() {
    for bad in ["", "Mug", "mug!", "-mug", "mug-", "mug cup", "müg"] {
        let expected = if bad.is_empty() {
            "missing_field"
        } else {
            "bad_format"
        };
        check_listing(|l| l.slug = bad.into(), expected, "listing.slug");
    }
    check_listing(
        |l| l.slug = "a".repeat(MAX_SLUG_BYTES + 1),
        "too_long",
        "listing.slug",
    );
}

#[test]
fn text_fields_have_byte_limits() {
    check_listing(
        |l| l.title = "t".repeat(MAX_TITLE_BYTES + 1),
        "too_long",
        "listing.title",
    );
    check_listing(
        |l| l.description = "d".repeat(MAX_DESCRIPTION_BYTES + 1),
        "too_long",
        "listing.description",
    );
    check_listing(
        |l| l.terms = "t".repeat(MAX_TERMS_BYTES + 1),
        "too_long",
        "listing.terms",
    );
    check_profile(
        |p| p.about = "a".repeat(MAX_ABOUT_BYTES + 1),
        "too_long",
        "profile.about",
    );
    // Limits count bytes, not characters: 67 three-byte characters are 201 bytes.
    check_listing(|l| l.title = "€".repeat(67), "too_long", "listing.title");
}

#[test]
fn single_line_fields_refuse_control_characters_and_paragraphs_allow_newlines() {
    check_listing(
        |l| l.title = "Mug\nfor you".into(),
        "control_character",
        "listing.title",
    );
    check_listing(
        |l| l.description = "bell \u{7}".into(),
        "control_character",
        "listing.description",
    );
    let mut multi_line = valid_listing();
    multi_line.description = "Line one\r\n\tLine two".into();
    assert_eq!(outcome(Object::Listing(multi_line)), Ok(()));
}

#[test]
fn required_fields_are_required() {
    check_listing(|l| l.title = "   ".into(), "missing_field", "listing.title");
    check_listing(|l| l.price = None, "missing_field", "listing.price");
    check_listing(|l| l.r#type = 0, "missing_field", "listing.type");
    check_listing(|l| l.shipping.clear(), "missing_field", "listing.shipping");
    check_listing(|l| l.condition = 0, "missing_field", "listing.condition");
    check_profile(
        |p| p.store_name.clear(),
        "missing_field",
        "profile.store_name",
    );
}

#[test]
fn unknown_enum_values_are_refused() {
    check_listing(|l| l.r#type = 9, "bad_format", "listing.type");
    check_listing(|l| l.condition = 42, "bad_format", "listing.condition");
}

#[test]
fn prices_are_positive_bounded_and_in_a_real_unit() {
    let price = |amount, currency: &'static str, divisibility| {
        move |l: &mut pb::Listing| {
            l.price = Some(pb::Price {
                amount,
                currency: currency.into(),
                divisibility,
            });
        }
    };
    check_listing(price(0, "EUR", 2), "out_of_range", "listing.price");
    check_listing(
        price(MAX_AMOUNT + 1, "BTC", 8),
        "out_of_range",
        "listing.price",
    );
    check_listing(price(100, "BTC", 2), "inconsistent", "listing.price");
    check_listing(price(100, "EUR", 5), "out_of_range", "listing.price");
    check_listing(price(100, "eur", 2), "bad_format", "listing.price");
    check_listing(price(100, "EURO", 2), "bad_format", "listing.price");
    // A surcharge may not lift a variant above the largest amount either.
    check_listing(
        price(MAX_AMOUNT, "BTC", 8),
        "out_of_range",
        "listing.skus.surcharge",
    );
    let mut ok = valid_listing();
    price(MAX_AMOUNT, "BTC", 8)(&mut ok);
    ok.skus.clear();
    assert_eq!(outcome(Object::Listing(ok)), Ok(()));
}

#[test]
fn list_fields_have_count_limits() {
    check_listing(
        |l| l.tags = (0..=MAX_TAGS).map(|i| format!("t{i}")).collect(),
        "too_many",
        "listing.tags",
    );
    check_listing(
        |l| l.images = vec![l.images[0].clone(); MAX_IMAGES + 1],
        "too_many",
        "listing.images",
    );
    check_listing(
        |l| l.accepted_moderators = vec![vec![0; 32]; MAX_ACCEPTED_MODERATORS + 1],
        "too_many",
        "listing.accepted_moderators",
    );
    check_listing(
        |l| l.shipping = vec![l.shipping[0].clone(); MAX_SHIPPING_OPTIONS + 1],
        "too_many",
        "listing.shipping",
    );
    check_listing(
        |l| l.options = vec![l.options[0].clone(); MAX_OPTIONS + 1],
        "too_many",
        "listing.options",
    );
    check_profile(
        |p| {
            p.inbox_servers = (0..=MAX_INBOX_SERVERS)
                .map(|i| format!("https://s{i}.org"))
                .collect()
        },
        "too_many",
        "profile.inbox_servers",
    );
}

#[test]
fn duplicates_are_refused_where_entries_must_be_distinct() {
    check_listing(|l| l.tags.push("mug".into()), "duplicate", "listing.tags");
    check_listing(
        |l| {
            let again = l.accepted_moderators[0].clone();
            l.accepted_moderators.push(again);
        },
        "duplicate",
        "listing.accepted_moderators",
    );
    check_listing(
        |l| l.options[0].values.push("Celadon".into()),
        "duplicate",
        "listing.options.values",
    );
    check_listing(
        |l| l.skus[1].selection = vec![0, 1],
        "duplicate",
        "listing.skus.selection",
    );
}

#[test]
fn tags_are_lower_case() {
    check_listing(
        |l| l.tags[0] = "Ceramics".into(),
        "bad_format",
        "listing.tags",
    );
}

#[test]
fn skus_must_match_the_options() {
    check_listing(
        |l| l.skus[0].selection = vec![0],
        "inconsistent",
        "listing.skus.selection",
    );
    check_listing(
        |l| l.skus[0].selection = vec![0, 2],
        "inconsistent",
        "listing.skus.selection",
    );
    check_listing(
        |l| l.skus[0].surcharge = -2_400,
        "out_of_range",
        "listing.skus.surcharge",
    );
    let mut cheaper = valid_listing();
    cheaper.skus[0].surcharge = -2_399;
    assert_eq!(
        outcome(Object::Listing(cheaper)),
        Ok(()),
        "a price of 1 base unit is fine"
    );
}

#[test]
fn only_physical_goods_ship_and_have_a_condition() {
    check_listing(
        |l| {
            l.r#type = pb::ListingType::Digital as i32;
            l.shipping.clear();
        },
        "inconsistent",
        "listing.condition",
    );
    let mut digital = samples::digital_listing(SAMPLE_TIME, "x");
    digital.shipping = valid_listing().shipping;
    assert_eq!(
        outcome(Object::Listing(digital)),
        Err(("inconsistent", Some("listing.shipping")))
    );
}

#[test]
fn shipping_regions_are_country_codes_or_all() {
    check_listing(
        |l| l.shipping[0].regions = vec!["Germany".into()],
        "bad_format",
        "listing.shipping.regions",
    );
    check_listing(
        |l| l.shipping[0].regions.clear(),
        "missing_field",
        "listing.shipping.regions",
    );
    check_listing(
        |l| l.shipping[0].services.clear(),
        "missing_field",
        "listing.shipping.services",
    );
    check_listing(
        |l| l.shipping[0].services[0].price = MAX_AMOUNT + 1,
        "out_of_range",
        "listing.shipping.services.price",
    );
}

#[test]
fn taxes_and_coupons_are_bounded_rates() {
    check_listing(
        |l| l.taxes[0].rate_bp = MAX_BASIS_POINTS + 1,
        "out_of_range",
        "listing.taxes.rate_bp",
    );
    check_listing(
        |l| l.taxes[0].rate_bp = 0,
        "out_of_range",
        "listing.taxes.rate_bp",
    );
    check_listing(
        |l| l.coupons[0].discount = Some(pb::coupon::Discount::PercentOffBp(MAX_BASIS_POINTS + 1)),
        "out_of_range",
        "listing.coupons.percent_off_bp",
    );
    check_listing(
        |l| l.coupons[0].discount = None,
        "missing_field",
        "listing.coupons.discount",
    );
    check_listing(
        |l| l.coupons[0].code_hash = b"WELCOME10".to_vec(),
        "bad_format",
        "listing.coupons.code_hash",
    );
    check_listing(
        |l| l.coupons[1].code_hash = l.coupons[0].code_hash.clone(),
        "duplicate",
        "listing.coupons.code_hash",
    );
}

#[test]
fn coupon_codes_hash_case_insensitively() {
    assert_eq!(
        souk_protocol::coupon_code_hash(" welcome10 "),
        souk_protocol::coupon_code_hash("WELCOME10")
    );
    assert_ne!(
        souk_protocol::coupon_code_hash("WELCOME10"),
        souk_protocol::coupon_code_hash("WELCOME11")
    );
}

#[test]
fn categories_are_paths_of_identifiers() {
    check_listing(
        |l| l.category = "Home/Kitchen".into(),
        "bad_format",
        "listing.category",
    );
    check_listing(
        |l| l.category = "home//kitchen".into(),
        "bad_format",
        "listing.category",
    );
    check_listing(
        |l| l.category = "a/b/c/d/e/f/g".into(),
        "too_many",
        "listing.category",
    );
}

#[test]
fn moderators_are_valid_keys() {
    check_listing(
        |l| l.accepted_moderators = vec![vec![1; 31]],
        "bad_format",
        "listing.accepted_moderators",
    );
}

#[test]
fn escrow_timeouts_are_zero_or_within_what_bip68_can_express() {
    check_listing(
        |l| l.escrow_timeout_blocks = MIN_ESCROW_TIMEOUT_BLOCKS - 1,
        "out_of_range",
        "listing.escrow_timeout_blocks",
    );
    check_listing(
        |l| l.escrow_timeout_blocks = MAX_ESCROW_TIMEOUT_BLOCKS + 1,
        "out_of_range",
        "listing.escrow_timeout_blocks",
    );
    let mut default = valid_listing();
    default.escrow_timeout_blocks = 0;
    assert_eq!(outcome(Object::Listing(default)), Ok(()));
}

#[test]
fn expiry_is_after_creation_within_the_lifetime_and_not_past() {
    check_listing(
        |l| l.expires_at = l.created_at,
        "out_of_range",
        "listing.expires_at",
    );
    check_listing(
        |l| l.expires_at = l.created_at + MAX_LISTING_LIFETIME_SECS + 1,
        "out_of_range",
        "listing.expires_at",
    );
    let mut expired = valid_listing();
    expired.created_at = SAMPLE_TIME - 100;
    expired.expires_at = SAMPLE_TIME;
    assert_eq!(
        outcome(Object::Listing(expired)),
        Err(("expired", Some("listing.expires_at")))
    );
}

#[test]
fn languages_are_bcp47_tags() {
    check_listing(
        |l| l.language = "english language".into(),
        "bad_format",
        "listing.language",
    );
    check_listing(
        |l| l.language = "e".into(),
        "bad_format",
        "listing.language",
    );
    let mut regional = valid_listing();
    regional.language = "pt-BR".into();
    assert_eq!(outcome(Object::Listing(regional)), Ok(()));
}

#[test]
fn profile_links_and_handles_have_a_shape() {
    check_profile(
        |p| p.handle = "Blue Clay".into(),
        "bad_format",
        "profile.handle",
    );
    check_profile(
        |p| p.inbox_servers = vec!["ftp://x.org".into()],
        "bad_format",
        "profile.inbox_servers",
    );
    check_profile(
        |p| p.inbox_servers = vec!["https://a.org".into(), "https://a.org".into()],
        "duplicate",
        "profile.inbox_servers",
    );
    check_profile(
        |p| {
            p.location
                .as_mut()
                .map(|l| l.country = "DEU".into())
                .unwrap_or_default()
        },
        "bad_format",
        "profile.location.country",
    );
    check_profile(
        |p| {
            p.avatar
                .as_mut()
                .map(|a| a.sha256.truncate(16))
                .unwrap_or_default()
        },
        "bad_format",
        "profile.avatar",
    );
    check_profile(
        |p| {
            p.avatar
                .as_mut()
                .map(|a| a.url = "javascript:alert(1)".into())
                .unwrap_or_default()
        },
        "bad_format",
        "profile.avatar",
    );
    check_profile(
        |p| p.accepted_currencies = vec!["btc".into()],
        "bad_format",
        "profile.accepted_currencies",
    );
}

#[test]
fn moderator_fees_match_their_type() {
    use pb::moderator_fee::FeeType;
    let fee = |f: fn(&mut pb::ModeratorFee)| {
        move |p: &mut pb::Profile| {
            if let Some(fee) = p.moderator.as_mut().and_then(|m| m.fee.as_mut()) {
                f(fee);
            }
        }
    };
    check_profile(
        fee(|f| f.r#type = FeeType::Percentage as i32),
        "inconsistent",
        "profile.moderator.fee.fixed",
    );
    check_profile(
        fee(|f| f.r#type = FeeType::Unspecified as i32),
        "missing_field",
        "profile.moderator.fee.type",
    );
    check_profile(
        fee(|f| f.fixed = None),
        "missing_field",
        "profile.moderator.fee.fixed",
    );
    check_profile(
        fee(|f| f.percentage_bp = MAX_BASIS_POINTS + 1),
        "out_of_range",
        "profile.moderator.fee.percentage_bp",
    );
    check_profile(
        fee(|f| {
            f.r#type = FeeType::Fixed as i32;
        }),
        "inconsistent",
        "profile.moderator.fee.percentage_bp",
    );
    check_profile(
        |p| {
            p.moderator
                .as_mut()
                .map(|m| m.fee = None)
                .unwrap_or_default()
        },
        "missing_field",
        "profile.moderator.fee",
    );
    check_profile(
        |p| {
            p.moderator
                .as_mut()
                .map(|m| m.languages.clear())
                .unwrap_or_default()
        },
        "missing_field",
        "profile.moderator.languages",
    );
}

#[test]
fn rating_scores_run_from_one_to_five() {
    check_rating(|r| r.overall = 0, "out_of_range", "rating.overall");
    check_rating(|r| r.quality = 6, "out_of_range", "rating.quality");
    check_rating(|r| r.role = 0, "missing_field", "rating.role");
    check_rating(|r| r.order_id.truncate(8), "bad_format", "rating.order_id");
    check_rating(|r| r.proof = None, "missing_field", "rating.proof");
    check_rating(
        |r| r.review = "r".repeat(MAX_REVIEW_BYTES + 1),
        "too_long",
        "rating.review",
    );
}

#[test]
fn moderators_are_rated_on_overall_and_service_only() {
    check_rating(
        |r| r.role = pb::RatingRole::Moderator as i32,
        "inconsistent",
        "rating.quality",
    );
}

#[test]
fn tombstones_name_a_valid_slug() {
    let mut t = samples::tombstone(SAMPLE_TIME, "mug");
    t.slug = "Not A Slug".into();
    assert_eq!(
        outcome(Object::Tombstone(t)),
        Err(("bad_format", Some("tombstone.slug")))
    );
}

#[test]
fn error_messages_name_the_field_and_the_limit() {
    let mut listing = valid_listing();
    listing.title = "t".repeat(MAX_TITLE_BYTES + 1);
    let message = Object::Listing(listing)
        .validate(&ctx())
        .expect_err("too long")
        .to_string();
    assert_eq!(
        message,
        "listing.title is 201 bytes, more than the limit of 200"
    );
}
