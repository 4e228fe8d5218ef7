//! Checking what a server sends (no I/O): every envelope is opened with the protocol's own
//! checks, its id recomputed, and the server's summary compared with the one derived from the
//! signed listing. A server is an untrusted helper; nothing it says is shown unless it checks
//! out.

use base64::Engine;
use serde::Deserialize;
use souk_protocol::{ListingSummary, Object, ObjectId, PublicKey, ValidationContext, pb};

use crate::drafts::{ListingDraft, ProfileDraft};

/// Largest base64 text of a valid envelope.
const MAX_ENVELOPE_B64: usize = souk_protocol::limits::MAX_ENVELOPE_BYTES.div_ceil(3) * 4;

/// A listing that passed verification on this device.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct VerifiedListing {
    /// Object id, 64 hex digits (recomputed here from the bytes).
    pub id: String,
    /// The seller's address (`souk1…`), from the signature.
    pub seller: String,
    /// Unix time of this version.
    pub created_at: u64,
    /// The listing as signed.
    pub listing: ListingDraft,
    /// False when the server says a newer version replaced it or it was withdrawn (reported
    /// by the server; search hits are always current).
    pub current: bool,
    /// The envelope bytes, for re-publishing or checking elsewhere (base64 in JSON).
    #[serde(serialize_with = "crate::base64_bytes")]
    pub envelope: Vec<u8>,
}

/// A store profile that passed verification on this device.
#[derive(Debug, Clone, PartialEq, serde::Serialize, uniffi::Record)]
pub struct VerifiedStore {
    /// Object id of this profile version.
    pub id: String,
    /// The store's address.
    pub seller: String,
    /// Unix time of this version.
    pub created_at: u64,
    /// The profile as signed.
    pub profile: ProfileDraft,
    /// Number of ratings, as the server counts them (not verifiable yet).
    pub rating_count: u64,
    /// Average overall score, as the server computes it (not verifiable yet).
    pub rating_average: f64,
    /// The envelope bytes (base64 in JSON).
    #[serde(serialize_with = "crate::base64_bytes")]
    pub envelope: Vec<u8>,
}

/// A hit the client refused to show.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, uniffi::Record)]
pub struct DroppedHit {
    /// The id the server claimed.
    pub id: String,
    /// The server that sent it.
    pub server: String,
    /// What failed.
    pub reason: String,
}

#[derive(Debug, Deserialize)]
pub(crate) struct PriceJson {
    amount: String,
    currency: String,
    divisibility: u32,
}

#[derive(Debug, Deserialize)]
pub(crate) struct SummaryJson {
    seller: String,
    slug: String,
    title: String,
    #[serde(rename = "type")]
    kind: String,
    condition: String,
    price: PriceJson,
    category: String,
    tags: Vec<String>,
    ships_to: Vec<String>,
    moderated: bool,
    nsfw: bool,
    created_at: u64,
    expires_at: u64,
    image_url: Option<String>,
    image_sha256: Option<String>,
}

/// A listing as the server's JSON carries it (`ListingHit` in the OpenAPI document).
#[derive(Debug, Deserialize)]
pub(crate) struct HitJson {
    pub(crate) id: String,
    summary: SummaryJson,
    envelope: String,
    #[serde(default)]
    current: Option<bool>,
}

impl SummaryJson {
    fn to_summary(&self) -> Result<ListingSummary, String> {
        Ok(ListingSummary {
            seller: self.seller.clone(),
            slug: self.slug.clone(),
            title: self.title.clone(),
            listing_type: self.kind.clone(),
            condition: self.condition.clone(),
            price_amount: self
                .price
                .amount
                .parse()
                .map_err(|_| "the summary's price.amount is not a whole number".to_owned())?,
            price_currency: self.price.currency.clone(),
            price_divisibility: self.price.divisibility,
            category: self.category.clone(),
            tags: self.tags.clone(),
            ships_to: self.ships_to.clone(),
            moderated: self.moderated,
            nsfw: self.nsfw,
            created_at: self.created_at,
            expires_at: self.expires_at,
            image_url: self.image_url.clone(),
            image_sha256: self.image_sha256.clone(),
        })
    }
}

/// Decodes base64 envelope text, refusing oversize text before decoding it.
fn decode_envelope(text: &str) -> Result<Vec<u8>, String> {
    if text.len() > MAX_ENVELOPE_B64 {
        return Err(format!(
            "the envelope is larger than the protocol's {} bytes",
            souk_protocol::limits::MAX_ENVELOPE_BYTES
        ));
    }
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(|_| "the envelope is not valid base64".to_owned())
}

/// Opens `bytes` and checks that they are the object with id `claimed_id`.
fn open_claimed(
    bytes: &[u8],
    claimed_id: &str,
    ctx: &ValidationContext,
) -> Result<(PublicKey, Object), String> {
    check_claimed(bytes, claimed_id, souk_protocol::open(bytes, ctx))
}

/// Checks that `opened` (what opening `bytes` gave) is the object with id `claimed_id`.
fn check_claimed(
    bytes: &[u8],
    claimed_id: &str,
    opened: Result<souk_protocol::SignedObject, souk_protocol::EnvelopeError>,
) -> Result<(PublicKey, Object), String> {
    let opened = opened.map_err(|e| format!("the envelope does not verify: {e} ({})", e.code()))?;
    let id = ObjectId::of(bytes).to_string();
    if id != claimed_id.to_ascii_lowercase() {
        return Err(format!(
            "the server called it {claimed_id} but its bytes hash to {id}"
        ));
    }
    let signer = opened.signer();
    let (_, object) = opened.into_parts();
    Ok((signer, object))
}

/// Verifies one listing hit: envelope, id, kind, and that the summary matches.
pub(crate) fn verify_hit(
    hit: &HitJson,
    ctx: &ValidationContext,
) -> Result<VerifiedListing, String> {
    let bytes = decode_envelope(&hit.envelope)?;
    let opened = souk_protocol::open(&bytes, ctx);
    check_hit(hit, bytes, opened)
}

/// Verifies a page of listing hits, their signatures in one batch (the protocol's
/// `open_batch`, about half the work of one by one for a page of 20): for each hit, exactly
/// what [`verify_hit`] returns for it alone.
pub(crate) fn verify_hits(
    hits: &[HitJson],
    ctx: &ValidationContext,
) -> Vec<Result<VerifiedListing, String>> {
    let decoded: Vec<Result<Vec<u8>, String>> = hits
        .iter()
        .map(|hit| decode_envelope(&hit.envelope))
        .collect();
    let envelopes: Vec<&[u8]> = decoded
        .iter()
        .filter_map(|bytes| bytes.as_deref().ok())
        .collect();
    let mut opened = souk_protocol::open_batch(&envelopes, ctx).into_iter();
    hits.iter()
        .zip(decoded)
        .map(|(hit, bytes)| {
            let bytes = bytes?;
            // One result per decoded envelope, in order.
            let result = opened
                .next()
                .ok_or_else(|| "internal error: a hit lost its result".to_owned())?;
            check_hit(hit, bytes, result)
        })
        .collect()
}

/// The checks of a hit after its envelope was opened: id, kind, summary.
fn check_hit(
    hit: &HitJson,
    bytes: Vec<u8>,
    opened: Result<souk_protocol::SignedObject, souk_protocol::EnvelopeError>,
) -> Result<VerifiedListing, String> {
    let (signer, object) = check_claimed(&bytes, &hit.id, opened)?;
    let Object::Listing(listing) = object else {
        return Err(format!("it is a {:?}, not a listing", object.kind()));
    };
    let claimed = hit.summary.to_summary()?;
    let derived = ListingSummary::of(&signer, &listing);
    if let Some(field) = derived.first_difference(&claimed) {
        return Err(format!(
            "the summary's {field} does not match the signed listing"
        ));
    }
    verified_listing(
        &hit.id,
        signer,
        &listing,
        bytes,
        hit.current.unwrap_or(true),
    )
}

fn verified_listing(
    id: &str,
    signer: PublicKey,
    listing: &pb::Listing,
    envelope: Vec<u8>,
    current: bool,
) -> Result<VerifiedListing, String> {
    Ok(VerifiedListing {
        id: id.to_ascii_lowercase(),
        seller: signer.to_address(),
        created_at: listing.created_at,
        listing: ListingDraft::from_wire(listing).map_err(|e| e.to_string())?,
        current,
        envelope,
    })
}

/// A store profile as the server's JSON carries it (`StoreResponse`).
#[derive(Debug, Deserialize)]
pub(crate) struct StoreJson {
    id: String,
    seller: String,
    store_name: String,
    handle: String,
    about: String,
    moderator: bool,
    seller_ratings: RatingsJson,
    envelope: String,
}

#[derive(Debug, Deserialize)]
struct RatingsJson {
    count: i64,
    overall: f64,
}

/// Verifies a store profile, and that it is `expected_seller`'s.
pub(crate) fn verify_store(
    store: &StoreJson,
    expected_seller: &PublicKey,
    ctx: &ValidationContext,
) -> Result<VerifiedStore, String> {
    let bytes = decode_envelope(&store.envelope)?;
    let (signer, object) = open_claimed(&bytes, &store.id, ctx)?;
    if signer != *expected_seller {
        return Err(format!(
            "it is signed by {}, not by the store asked for",
            signer.to_address()
        ));
    }
    let Object::Profile(profile) = object else {
        return Err(format!("it is a {:?}, not a profile", object.kind()));
    };
    let mismatch = [
        ("seller", store.seller == signer.to_address()),
        ("store_name", store.store_name == profile.store_name),
        ("handle", store.handle == profile.handle),
        ("about", store.about == profile.about),
        ("moderator", store.moderator == profile.moderator.is_some()),
    ]
    .into_iter()
    .find(|(_, same)| !same);
    if let Some((field, _)) = mismatch {
        return Err(format!(
            "the {field} shown does not match the signed profile"
        ));
    }
    Ok(VerifiedStore {
        id: store.id.to_ascii_lowercase(),
        seller: signer.to_address(),
        created_at: profile.created_at,
        profile: ProfileDraft::from_wire(&profile),
        rating_count: u64::try_from(store.seller_ratings.count).unwrap_or(0),
        rating_average: store.seller_ratings.overall,
        envelope: bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use souk_protocol::{Keychain, Mnemonic, samples};

    fn signed_hit() -> (String, String, ListingSummary) {
        let mnemonic = Mnemonic::parse(samples::TEST_MNEMONIC).expect("mnemonic");
        let key = Keychain::from_mnemonic(&mnemonic, "").identity();
        let listing = samples::listing(samples::SAMPLE_TIME, "lamp", Some(&key.public_key()));
        let sealed = key
            .seal(
                &Object::Listing(listing.clone()),
                &ValidationContext::at(samples::SAMPLE_TIME),
            )
            .expect("seal");
        let b64 = base64::engine::general_purpose::STANDARD.encode(sealed.envelope().bytes());
        (
            sealed.id().to_string(),
            b64,
            ListingSummary::of(&key.public_key(), &listing),
        )
    }

    fn hit_json(id: &str, envelope: &str, s: &ListingSummary) -> HitJson {
        let json = serde_json::json!({
            "id": id,
            "envelope": envelope,
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
        });
        serde_json::from_value(json).expect("hit json")
    }

    fn ctx() -> ValidationContext {
        ValidationContext::at(samples::SAMPLE_TIME + 60)
    }

    /// The base64 envelope with its last byte (in the signature) changed.
    fn with_last_byte_flipped(b64: &str) -> String {
        let mut bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("b64");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    }

    #[test]
    fn an_honest_hit_verifies() {
        let (id, b64, summary) = signed_hit();
        let verified = verify_hit(&hit_json(&id, &b64, &summary), &ctx()).expect("verifies");
        assert_eq!(verified.id, id);
        assert_eq!(verified.listing.slug, "lamp");
        assert_eq!(verified.seller, summary.seller);
    }

    #[test]
    fn a_changed_summary_price_is_named() {
        let (id, b64, mut summary) = signed_hit();
        summary.price_amount -= 1;
        let err = verify_hit(&hit_json(&id, &b64, &summary), &ctx()).expect_err("refused");
        assert!(err.contains("price.amount"), "{err}");
    }

    #[test]
    fn a_changed_envelope_fails_its_signature() {
        let (id, b64, summary) = signed_hit();
        let forged = with_last_byte_flipped(&b64);
        let err = verify_hit(&hit_json(&id, &forged, &summary), &ctx()).expect_err("refused");
        assert!(err.contains("bad_signature"), "{err}");
    }

    /// A page verified together gives each hit what it gets alone: honest hits among a forged
    /// one, one with a wrong id, one with a changed summary and one that is not base64.
    #[test]
    fn a_page_verified_together_gives_each_hit_its_own_verdict() {
        let (id, b64, summary) = signed_hit();
        let forged = with_last_byte_flipped(&b64);
        let mut cheaper = summary.clone();
        cheaper.price_amount -= 1;
        let other = "00".repeat(32);
        let mut page: Vec<HitJson> = (0..8).map(|_| hit_json(&id, &b64, &summary)).collect();
        page[1] = hit_json(&id, &forged, &summary);
        page[3] = hit_json(&other, &b64, &summary);
        page[5] = hit_json(&id, &b64, &cheaper);
        page[6] = hit_json(&id, "not base64!", &summary);
        let together: Vec<Result<String, String>> = verify_hits(&page, &ctx())
            .into_iter()
            .map(|r| r.map(|v| v.id))
            .collect();
        let alone: Vec<Result<String, String>> = page
            .iter()
            .map(|hit| verify_hit(hit, &ctx()).map(|v| v.id))
            .collect();
        assert_eq!(together, alone);
        assert_eq!(alone.iter().filter(|r| r.is_ok()).count(), 4);
        assert!(verify_hits(&[], &ctx()).is_empty());
    }

    #[test]
    fn a_wrong_id_is_refused() {
        let (_, b64, summary) = signed_hit();
        let other = "00".repeat(32);
        let err = verify_hit(&hit_json(&other, &b64, &summary), &ctx()).expect_err("refused");
        assert!(err.contains("hash to"), "{err}");
    }

    #[test]
    fn oversize_or_garbage_envelopes_are_refused_before_decoding() {
        let (id, _, summary) = signed_hit();
        let huge = "A".repeat(MAX_ENVELOPE_B64 + 4);
        let err = verify_hit(&hit_json(&id, &huge, &summary), &ctx()).expect_err("refused");
        assert!(err.contains("larger"), "{err}");
        let err = verify_hit(&hit_json(&id, "%%%", &summary), &ctx()).expect_err("refused");
        assert!(err.contains("base64"), "{err}");
    }
}
