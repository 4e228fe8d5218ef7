//! Search and read: listings, stores, moderators, ratings. Every object is returned with its
//! signed envelope (base64) so the client verifies it; summaries are derived only from the
//! signed bytes, so a client can check that a summary matches its envelope.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use serde::{Deserialize, Serialize};
use souk_protocol::{PublicKey, Slot, pb};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, SharedState, b64};
use crate::search::SearchQuery;
use crate::service::{self, ModeratorQuery, Page, StoredListing, parse_id};
pub use crate::service::{MAX_LIMIT, MAX_OFFSET, SearchParams, parse_key, parse_search};
use crate::store::RatingSummary;

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

impl From<&StoredListing> for ListingHit {
    fn from(l: &StoredListing) -> Self {
        Self {
            id: l.id.to_string(),
            summary: ListingSummary::from(l.summary()),
            envelope: b64(&l.bytes),
        }
    }
}

fn listing_hit(bytes: Vec<u8>) -> Result<ListingHit, ApiError> {
    Ok(ListingHit::from(&StoredListing::decode(bytes)?))
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

pub(crate) fn query_rejection(rejection: &QueryRejection) -> ApiError {
    let text = rejection.body_text();
    if text.contains("unknown field") {
        ApiError::bad_request("unknown_parameter", text)
    } else {
        ApiError::bad_request("invalid_parameter", text)
    }
}

/// Runs a search through the service layer and renders it for REST.
///
/// # Errors
/// [`ApiError`].
pub async fn run_search(
    state: &SharedState,
    query: SearchQuery,
) -> Result<SearchResponse, ApiError> {
    let page = service::search(state, query).await?;
    Ok(SearchResponse {
        total: page.total,
        hits: page.hits.iter().map(ListingHit::from).collect(),
        facets: page.facets,
        next_cursor: page.next_cursor,
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
    let (listing, current) = service::listing(&state, &parse_id(&id)?).await?;
    Ok(Json(ListingResponse {
        hit: ListingHit::from(&listing),
        current,
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
    let stored = service::profile(&state, &seller).await.map_err(|e| {
        if e.code == "not_found" {
            ApiError::not_found("this server has no profile for that store")
        } else {
            e
        }
    })?;
    Ok(Json(StoreResponse {
        id: stored.id.to_string(),
        seller: seller.to_address(),
        store_name: stored.profile.store_name,
        handle: stored.profile.handle,
        about: stored.profile.about,
        moderator: stored.profile.moderator.is_some(),
        seller_ratings: state
            .store
            .rating_summary(&seller, pb::RatingRole::Seller)
            .await?,
        envelope: b64(&stored.bytes),
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
    let page = Page::new(params.limit, 20, params.cursor.as_deref())?;
    let rows = state
        .store
        .listings_of(&seller, page.fetch(), page.skip())
        .await?;
    let (rows, next_cursor) = page.cut(rows);
    let hits = rows
        .into_iter()
        .map(listing_hit)
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Json(ListingPage { hits, next_cursor }))
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
    Ok(Json(listing_hit(bytes)?))
}

/// Moderator filters.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ModeratorParams {
    /// Only moderators who work in this language (BCP 47 tag; `en` also matches `en-US`, as
    /// RFC 4647 basic filtering does).
    pub language: Option<String>,
    /// Only moderators whose percentage fee is at most this many basis points.
    pub max_fee_bp: Option<u32>,
    /// How many, 1-100 (default 50).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// A page of moderators.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModeratorsResponse {
    /// Moderators, cheapest first (percentage fee, then fixed fee, then address).
    pub moderators: Vec<ModeratorView>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
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
        (status = 200, description = "A page of moderators", body = ModeratorsResponse),
        (status = 400, description = "Bad parameter", body = super::error::ErrorBody)
    )
)]
pub async fn moderators(
    State(state): State<SharedState>,
    params: Result<Query<ModeratorParams>, QueryRejection>,
) -> Result<Json<ModeratorsResponse>, ApiError> {
    let Query(params) = params.map_err(|r| query_rejection(&r))?;
    let page = service::moderators(
        &state,
        ModeratorQuery {
            language: params.language,
            max_fee_bp: params.max_fee_bp,
            limit: params.limit,
            cursor: params.cursor,
        },
    )
    .await?;
    let mut out = Vec::with_capacity(page.profiles.len());
    for stored in page.profiles {
        let Some(offer) = stored.profile.moderator else {
            continue;
        };
        let fee = offer.fee.unwrap_or_default();
        out.push(ModeratorView {
            id: stored.id.to_string(),
            moderator: stored.person.to_address(),
            name: stored.profile.store_name,
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
                .rating_summary(&stored.person, pb::RatingRole::Moderator)
                .await?,
            envelope: b64(&stored.bytes),
        });
    }
    Ok(Json(ModeratorsResponse {
        moderators: out,
        next_cursor: page.next_cursor,
    }))
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
    /// A page of the ratings' envelopes (base64), newest first.
    pub ratings: Vec<String>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which ratings.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RatingParams {
    /// How many rating envelopes, 1-100 (default 100).
    pub limit: Option<usize>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

/// Ratings of a person, with aggregates.
#[utoipa::path(
    get,
    path = "/api/v1/ratings/{subject}",
    tag = "stores",
    params(("subject" = String, Path, description = "Address of the rated person"), RatingParams),
    responses(
        (status = 200, description = "Aggregates and a page of ratings", body = RatingsResponse),
        (status = 400, description = "Bad address or parameter", body = super::error::ErrorBody)
    )
)]
pub async fn ratings(
    State(state): State<SharedState>,
    Path(subject): Path<String>,
    params: Result<Query<RatingParams>, QueryRejection>,
) -> Result<Json<RatingsResponse>, ApiError> {
    let Query(params) = params.map_err(|r| query_rejection(&r))?;
    let subject = parse_key(&subject, "subject")?;
    let ratings =
        service::ratings(&state, &subject, params.limit, params.cursor.as_deref()).await?;
    Ok(Json(RatingsResponse {
        subject: subject.to_address(),
        seller: ratings.seller,
        moderator: ratings.moderator,
        ratings: ratings.ratings.iter().map(|(b, _)| b64(b)).collect(),
        next_cursor: ratings.next_cursor,
    }))
}
