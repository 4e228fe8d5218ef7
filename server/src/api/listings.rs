//! Search and read: listings, stores, moderators, ratings. Every object is returned with its
//! signed envelope (base64) so the client verifies it; summaries are derived only from the
//! signed bytes, so a client can check that a summary matches its envelope.

use std::collections::BTreeMap;
use std::str::FromStr;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use base64::Engine;
use serde::{Deserialize, Serialize};
use souk_protocol::{Object, ObjectId, PublicKey, Slot, pb};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, SharedState, b64};
use crate::search::{SearchQuery, Sort};
use crate::store::{RatingSummary, decode_stored};

/// Most hits per page.
pub const MAX_LIMIT: usize = 100;
/// Deepest offset a cursor may reach.
pub const MAX_OFFSET: usize = 10_000;

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(search))
        .routes(routes!(get_listing))
        .routes(routes!(get_store))
        .routes(routes!(store_listings))
        .routes(routes!(store_listing_by_slug))
        .routes(routes!(moderators))
        .routes(routes!(ratings))
}

/// A price as integer base units (a string, so that JavaScript loses nothing) and its unit.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct PriceView {
    /// Amount in base units, as a decimal string.
    pub amount: String,
    /// Currency code ("BTC" or ISO 4217).
    pub currency: String,
    /// Decimal places of the base unit.
    pub divisibility: u32,
}

impl From<&pb::Price> for PriceView {
    fn from(p: &pb::Price) -> Self {
        Self {
            amount: p.amount.to_string(),
            currency: p.currency.clone(),
            divisibility: p.divisibility,
        }
    }
}

/// What a search hit shows, taken only from the signed listing.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ListingSummary {
    /// Seller's address (`souk1…`).
    pub seller: String,
    /// The listing's slug.
    pub slug: String,
    /// Title.
    pub title: String,
    /// "physical", "digital" or "service".
    #[serde(rename = "type")]
    pub kind: String,
    /// Condition name ("new", "used_good", …, or "unspecified").
    pub condition: String,
    /// Base price.
    pub price: PriceView,
    /// Category path.
    pub category: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Regions shipped to (country codes or "ALL").
    pub ships_to: Vec<String>,
    /// Whether escrow with a moderator is accepted.
    pub moderated: bool,
    /// Not safe for work.
    pub nsfw: bool,
    /// Unix time of this version.
    pub created_at: u64,
    /// Unix time of expiry, 0 for none.
    pub expires_at: u64,
    /// URL of the main image, if any.
    pub image_url: Option<String>,
    /// SHA-256 (hex) of the main image, if any.
    pub image_sha256: Option<String>,
}

/// The summary of a listing signed by `seller` ([`souk_protocol::ListingSummary::of`], the
/// derivation clients repeat to check it).
#[must_use]
pub fn summarize(seller: &PublicKey, l: &pb::Listing) -> ListingSummary {
    ListingSummary::from(souk_protocol::ListingSummary::of(seller, l))
}

impl From<souk_protocol::ListingSummary> for ListingSummary {
    fn from(s: souk_protocol::ListingSummary) -> Self {
        Self {
            seller: s.seller,
            slug: s.slug,
            title: s.title,
            kind: s.listing_type,
            condition: s.condition,
            price: PriceView {
                amount: s.price_amount.to_string(),
                currency: s.price_currency,
                divisibility: s.price_divisibility,
            },
            category: s.category,
            tags: s.tags,
            ships_to: s.ships_to,
            moderated: s.moderated,
            nsfw: s.nsfw,
            created_at: s.created_at,
            expires_at: s.expires_at,
            image_url: s.image_url,
            image_sha256: s.image_sha256,
        }
    }
}

/// A listing with its signed envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListingHit {
    /// Object id (hex).
    pub id: String,
    /// Summary derived from the signed listing.
    pub summary: ListingSummary,
    /// The envelope bytes, base64: verify them, and check the summary against them.
    pub envelope: String,
}

fn listing_hit(bytes: &[u8]) -> Result<ListingHit, ApiError> {
    let (envelope, object) = decode_stored(bytes)?;
    match object {
        Object::Listing(listing) => Ok(ListingHit {
            id: envelope.id().to_string(),
            summary: summarize(&envelope.signer(), &listing),
            envelope: b64(bytes),
        }),
        _ => Err(ApiError::not_found("that object is not a listing")),
    }
}

/// Search parameters. Unknown parameters are refused (`unknown_parameter`), never ignored.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct SearchParams {
    /// Free text over title, tags and description; the last word also matches as a prefix.
    /// Empty: browse.
    pub q: Option<String>,
    /// Category path, e.g. `home/kitchen` (includes sub-categories).
    pub category: Option<String>,
    /// `physical`, `digital` or `service`.
    #[serde(rename = "type")]
    #[param(rename = "type")]
    pub kind: Option<String>,
    /// `new`, `used_like_new`, `used_good`, `used_fair`, `refurbished`, `for_parts`.
    pub condition: Option<String>,
    /// Currency code, e.g. `BTC`, `EUR`.
    pub currency: Option<String>,
    /// Lowest price in major units of the listing's currency (e.g. 12.5).
    pub price_min: Option<f64>,
    /// Highest price in major units.
    pub price_max: Option<f64>,
    /// Country code (ISO 3166-1 alpha-2) the listing must ship to.
    pub ships_to: Option<String>,
    /// Seller address (`souk1…` or hex).
    pub seller: Option<String>,
    /// Lowest average seller rating, 0-5.
    pub min_rating: Option<f64>,
    /// `true`: only listings that accept a moderator; `false`: only those that do not.
    pub moderated: Option<bool>,
    /// Include NSFW listings (default false).
    pub nsfw: Option<bool>,
    /// `relevance` (default with text), `price_asc`, `price_desc`, `newest` (default without
    /// text), `rating`.
    pub sort: Option<Sort>,
    /// Hits per page, 1-100 (default 20).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of search results.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SearchResponse {
    /// How many listings match in all.
    pub total: usize,
    /// This page's hits.
    pub hits: Vec<ListingHit>,
    /// Counts per value: `category` (children of the selected category), `type`, `condition`,
    /// `currency`.
    pub facets: BTreeMap<String, BTreeMap<String, u64>>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn invalid(name: &str, what: &str) -> ApiError {
    ApiError::bad_request("invalid_parameter", format!("{name}: {what}"))
}

/// A page size: `default` when absent, otherwise 1 to [`MAX_LIMIT`].
fn page_limit(value: Option<usize>, default: usize) -> Result<usize, ApiError> {
    let limit = value.unwrap_or(default);
    if (1..=MAX_LIMIT).contains(&limit) {
        Ok(limit)
    } else {
        Err(invalid("limit", "must be between 1 and 100"))
    }
}

pub(crate) fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    if text.contains("unknown field") {
        ApiError::bad_request("unknown_parameter", text)
    } else {
        ApiError::bad_request("invalid_parameter", text)
    }
}

fn encode_cursor(offset: usize) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("o:{offset}"))
}

fn decode_cursor(cursor: &str) -> Result<usize, ApiError> {
    let bad = || invalid("cursor", "not a cursor from this server");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let offset = text
        .strip_prefix("o:")
        .and_then(|n| n.parse().ok())
        .ok_or_else(bad)?;
    if offset > MAX_OFFSET {
        return Err(invalid("cursor", "too deep; narrow the search instead"));
    }
    Ok(offset)
}

/// Turns HTTP parameters into a search, refusing anything it cannot honour.
///
/// # Errors
/// `invalid_parameter` naming the parameter.
pub fn parse_search(p: SearchParams, now: u64) -> Result<SearchQuery, ApiError> {
    const TYPES: [&str; 3] = ["physical", "digital", "service"];
    const CONDITIONS: [&str; 6] = [
        "new",
        "used_like_new",
        "used_good",
        "used_fair",
        "refurbished",
        "for_parts",
    ];
    let kind = p.kind.map(|k| k.to_ascii_lowercase());
    if let Some(k) = &kind
        && !TYPES.contains(&k.as_str())
    {
        return Err(invalid("type", "must be physical, digital or service"));
    }
    let condition = p.condition.map(|c| c.to_ascii_lowercase());
    if let Some(c) = &condition
        && !CONDITIONS.contains(&c.as_str())
    {
        return Err(invalid(
            "condition",
            "must be new, used_like_new, used_good, used_fair, refurbished or for_parts",
        ));
    }
    let currency = p.currency.map(|c| c.to_ascii_uppercase());
    if let Some(c) = &currency
        && (c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid(
            "currency",
            "must be a three-letter code such as BTC or EUR",
        ));
    }
    let ships_to = p.ships_to.map(|c| c.to_ascii_uppercase());
    if let Some(c) = &ships_to
        && (c.len() != 2 || !c.bytes().all(|b| b.is_ascii_uppercase()))
    {
        return Err(invalid("ships_to", "must be a two-letter country code"));
    }
    let category = p
        .category
        .map(|c| c.trim_matches('/').to_ascii_lowercase())
        .filter(|c| !c.is_empty());
    if let Some(c) = &category
        && (c.len() > 128
            || !c
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'/'))
    {
        return Err(invalid("category", "must be a path like home/kitchen"));
    }
    for (name, value) in [("price_min", p.price_min), ("price_max", p.price_max)] {
        if value.is_some_and(|v| !v.is_finite() || v < 0.0) {
            return Err(invalid(name, "must be a non-negative number"));
        }
    }
    if let (Some(min), Some(max)) = (p.price_min, p.price_max)
        && min > max
    {
        return Err(invalid("price_min", "is above price_max"));
    }
    if p.min_rating.is_some_and(|r| !(0.0..=5.0).contains(&r)) {
        return Err(invalid("min_rating", "must be between 0 and 5"));
    }
    let seller = p
        .seller
        .map(|s| {
            PublicKey::from_str(&s)
                .map_err(|_| invalid("seller", "must be a souk1… address or 64 hex digits"))
        })
        .transpose()?;
    let limit = page_limit(p.limit, 20)?;
    let q = p.q.unwrap_or_default();
    if q.len() > 500 {
        return Err(invalid("q", "is longer than 500 bytes"));
    }
    Ok(SearchQuery {
        text: q,
        category,
        kind,
        condition,
        currency,
        price_min: p.price_min,
        price_max: p.price_max,
        ships_to,
        seller,
        min_rating: p.min_rating,
        moderated: p.moderated,
        nsfw: p.nsfw.unwrap_or(false),
        sort: p.sort,
        limit,
        offset: p
            .cursor
            .as_deref()
            .map(decode_cursor)
            .transpose()?
            .unwrap_or(0),
        now,
    })
}

/// Runs a search and loads the envelopes of its hits.
///
/// # Errors
/// [`ApiError`].
pub async fn run_search(
    state: &SharedState,
    query: SearchQuery,
) -> Result<SearchResponse, ApiError> {
    let started = std::time::Instant::now();
    let search = std::sync::Arc::clone(&state.search);
    let q = query.clone();
    let result = tokio::task::spawn_blocking(move || search.search(&q))
        .await
        .map_err(|e| ApiError::internal(&e))??;
    let stored = state.store.get_many(&result.ids).await?;
    let mut hits = Vec::with_capacity(result.ids.len());
    for id in &result.ids {
        if let Some(bytes) = stored.get(id) {
            hits.push(listing_hit(bytes)?);
        }
    }
    let next = query.offset + query.limit;
    metrics::histogram!("souk_search_seconds").record(started.elapsed().as_secs_f64());
    Ok(SearchResponse {
        total: result.total,
        hits,
        facets: result
            .facets
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect(),
        next_cursor: (next < result.total && next <= MAX_OFFSET).then(|| encode_cursor(next)),
    })
}

/// Search listings.
#[utoipa::path(
    get,
    path = "/api/v1/listings/search",
    tag = "listings",
    params(SearchParams),
    responses(
        (status = 200, description = "A page of hits with facet counts", body = SearchResponse),
        (status = 400, description = "Unknown or invalid parameter", body = super::error::ErrorBody)
    )
)]
pub async fn search(
    State(state): State<SharedState>,
    params: Result<Query<SearchParams>, QueryRejection>,
) -> Result<Json<SearchResponse>, ApiError> {
    let Query(params) = params.map_err(|r| query_rejection(&r))?;
    let query = parse_search(params, souk_protocol::ValidationContext::now().now)?;
    Ok(Json(run_search(&state, query).await?))
}

/// A listing by object id.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListingResponse {
    /// The listing.
    #[serde(flatten)]
    pub hit: ListingHit,
    /// False when a newer version replaced it or it was withdrawn.
    pub current: bool,
}

fn parse_id(id: &str) -> Result<ObjectId, ApiError> {
    ObjectId::from_str(id).map_err(|_| invalid("id", "must be 64 hex digits"))
}

pub(super) fn parse_key(text: &str, name: &str) -> Result<PublicKey, ApiError> {
    PublicKey::from_str(text)
        .map_err(|_| invalid(name, "must be a souk1… address or 64 hex digits"))
}

/// Get a listing by object id (any stored version).
#[utoipa::path(
    get,
    path = "/api/v1/listings/{id}",
    tag = "listings",
    params(("id" = String, Path, description = "Object id, 64 hex digits")),
    responses(
        (status = 200, description = "The listing", body = ListingResponse),
        (status = 400, description = "Bad id", body = super::error::ErrorBody),
        (status = 404, description = "Not stored here", body = super::error::ErrorBody)
    )
)]
pub async fn get_listing(
    State(state): State<SharedState>,
    Path(id): Path<String>,
) -> Result<Json<ListingResponse>, ApiError> {
    let id = parse_id(&id)?;
    let bytes = state
        .store
        .get(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no listing with that id here"))?;
    Ok(Json(ListingResponse {
        hit: listing_hit(&bytes)?,
        current: state.store.is_current(&id).await?,
    }))
}

/// A store's profile.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreResponse {
    /// Object id (hex) of the profile version.
    pub id: String,
    /// The store's address.
    pub seller: String,
    /// Store name.
    pub store_name: String,
    /// Handle.
    pub handle: String,
    /// About text.
    pub about: String,
    /// Whether the person offers moderation.
    pub moderator: bool,
    /// Seller rating aggregates.
    pub seller_ratings: RatingSummary,
    /// The profile envelope, base64.
    pub envelope: String,
}

/// Get a store's profile.
#[utoipa::path(
    get,
    path = "/api/v1/stores/{seller}",
    tag = "stores",
    params(("seller" = String, Path, description = "Store address (souk1… or hex)")),
    responses(
        (status = 200, description = "The profile", body = StoreResponse),
        (status = 404, description = "No profile here", body = super::error::ErrorBody)
    )
)]
pub async fn get_store(
    State(state): State<SharedState>,
    Path(seller): Path<String>,
) -> Result<Json<StoreResponse>, ApiError> {
    let seller = parse_key(&seller, "seller")?;
    let bytes = state
        .store
        .current(&seller, &Slot::Profile)
        .await?
        .ok_or_else(|| ApiError::not_found("this server has no profile for that store"))?;
    let (envelope, object) = decode_stored(&bytes)?;
    let Object::Profile(profile) = object else {
        return Err(ApiError::internal(&"profile slot holds another kind"));
    };
    Ok(Json(StoreResponse {
        id: envelope.id().to_string(),
        seller: seller.to_address(),
        store_name: profile.store_name,
        handle: profile.handle,
        about: profile.about,
        moderator: profile.moderator.is_some(),
        seller_ratings: state
            .store
            .rating_summary(&seller, pb::RatingRole::Seller)
            .await?,
        envelope: b64(&bytes),
    }))
}

/// Paging for lists.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Items per page, 1-100 (default 20).
    pub limit: Option<usize>,
    /// The `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of listings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ListingPage {
    /// The listings, newest first.
    pub hits: Vec<ListingHit>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A store's current listings, newest first.
#[utoipa::path(
    get,
    path = "/api/v1/stores/{seller}/listings",
    tag = "stores",
    params(("seller" = String, Path, description = "Store address"), PageParams),
    responses(
        (status = 200, description = "A page of listings", body = ListingPage),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody)
    )
)]
pub async fn store_listings(
    State(state): State<SharedState>,
    Path(seller): Path<String>,
    params: Result<Query<PageParams>, QueryRejection>,
) -> Result<Json<ListingPage>, ApiError> {
    let Query(params) = params.map_err(|r| query_rejection(&r))?;
    let seller = parse_key(&seller, "seller")?;
    let limit = page_limit(params.limit, 20)?;
    let offset = params
        .cursor
        .as_deref()
        .map(decode_cursor)
        .transpose()?
        .unwrap_or(0);
    let page = state
        .store
        .listings_of(
            &seller,
            i64::try_from(limit + 1).unwrap_or(101),
            i64::try_from(offset).unwrap_or(0),
        )
        .await?;
    let more = page.len() > limit;
    let hits = page
        .iter()
        .take(limit)
        .map(|b| listing_hit(b))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ListingPage {
        hits,
        next_cursor: more.then(|| encode_cursor(offset + limit)),
    }))
}

/// A store's current listing by slug.
#[utoipa::path(
    get,
    path = "/api/v1/stores/{seller}/listings/{slug}",
    tag = "stores",
    params(("seller" = String, Path, description = "Store address"), ("slug" = String, Path, description = "Listing slug")),
    responses(
        (status = 200, description = "The current version", body = ListingHit),
        (status = 404, description = "No such listing, or withdrawn", body = super::error::ErrorBody)
    )
)]
pub async fn store_listing_by_slug(
    State(state): State<SharedState>,
    Path((seller, slug)): Path<(String, String)>,
) -> Result<Json<ListingHit>, ApiError> {
    let seller = parse_key(&seller, "seller")?;
    let bytes = state
        .store
        .current(&seller, &Slot::Listing { slug })
        .await?
        .ok_or_else(|| {
            ApiError::not_found("no current listing with that slug (never published, or withdrawn)")
        })?;
    Ok(Json(listing_hit(&bytes)?))
}

/// Moderator filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModeratorParams {
    /// Only moderators who work in this language (BCP 47 tag, e.g. `en`).
    pub language: Option<String>,
    /// Only moderators whose percentage fee is at most this many basis points.
    pub max_fee_bp: Option<u32>,
    /// How many, 1-100 (default 50).
    pub limit: Option<usize>,
}

/// A moderator's offer.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeratorView {
    /// Object id (hex) of the profile.
    pub id: String,
    /// The moderator's address.
    pub moderator: String,
    /// Store name.
    pub name: String,
    /// "fixed", "percentage" or "fixed_plus_percentage".
    pub fee_type: String,
    /// Fixed part, if any.
    pub fee_fixed: Option<PriceView>,
    /// Percentage part in basis points.
    pub fee_percentage_bp: u32,
    /// Languages.
    pub languages: Vec<String>,
    /// Terms.
    pub terms: String,
    /// Ratings as moderator.
    pub ratings: RatingSummary,
    /// The profile envelope, base64.
    pub envelope: String,
}

/// List moderators, cheapest first.
#[utoipa::path(
    get,
    path = "/api/v1/moderators",
    tag = "stores",
    params(ModeratorParams),
    responses(
        (status = 200, description = "Moderators", body = Vec<ModeratorView>),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody)
    )
)]
pub async fn moderators(
    State(state): State<SharedState>,
    params: Result<Query<ModeratorParams>, QueryRejection>,
) -> Result<Json<Vec<ModeratorView>>, ApiError> {
    let Query(params) = params.map_err(|r| query_rejection(&r))?;
    let limit = page_limit(params.limit, 50)?;
    if let Some(language) = &params.language
        && (language.is_empty()
            || language.len() > 35
            || !language
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-'))
    {
        return Err(invalid(
            "language",
            "must be a BCP 47 tag such as en or pt-BR",
        ));
    }
    let rows = state
        .store
        .moderators(
            params.language.as_deref(),
            params.max_fee_bp,
            i64::try_from(limit).unwrap_or(50),
        )
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for bytes in rows {
        let (envelope, object) = decode_stored(&bytes)?;
        let Object::Profile(profile) = object else {
            continue;
        };
        let Some(offer) = profile.moderator else {
            continue;
        };
        let fee = offer.fee.unwrap_or_default();
        out.push(ModeratorView {
            id: envelope.id().to_string(),
            moderator: envelope.signer().to_address(),
            name: profile.store_name,
            fee_type: match pb::moderator_fee::FeeType::try_from(fee.r#type) {
                Ok(pb::moderator_fee::FeeType::Fixed) => "fixed",
                Ok(pb::moderator_fee::FeeType::Percentage) => "percentage",
                _ => "fixed_plus_percentage",
            }
            .into(),
            fee_fixed: fee.fixed.as_ref().map(PriceView::from),
            fee_percentage_bp: fee.percentage_bp,
            languages: offer.languages,
            terms: offer.terms,
            ratings: state
                .store
                .rating_summary(&envelope.signer(), pb::RatingRole::Moderator)
                .await?,
            envelope: b64(&bytes),
        });
    }
    Ok(Json(out))
}

/// A person's ratings.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RatingsResponse {
    /// The person's address.
    pub subject: String,
    /// As seller.
    pub seller: RatingSummary,
    /// As moderator.
    pub moderator: RatingSummary,
    /// The newest ratings' envelopes (base64), up to 100.
    pub ratings: Vec<String>,
}

/// Ratings of a person, with aggregates.
#[utoipa::path(
    get,
    path = "/api/v1/ratings/{subject}",
    tag = "stores",
    params(("subject" = String, Path, description = "Address of the rated person")),
    responses(
        (status = 200, description = "Aggregates and ratings", body = RatingsResponse),
        (status = 400, description = "Bad address", body = super::error::ErrorBody)
    )
)]
pub async fn ratings(
    State(state): State<SharedState>,
    Path(subject): Path<String>,
) -> Result<Json<RatingsResponse>, ApiError> {
    let subject = parse_key(&subject, "subject")?;
    Ok(Json(RatingsResponse {
        subject: subject.to_address(),
        seller: state
            .store
            .rating_summary(&subject, pb::RatingRole::Seller)
            .await?,
        moderator: state
            .store
            .rating_summary(&subject, pb::RatingRole::Moderator)
            .await?,
        ratings: state
            .store
            .ratings_of(&subject, 100)
            .await?
            .iter()
            .map(|b| b64(b))
            .collect(),
    }))
}
