//! Compatibility with the search-provider API that OpenBazaar clients used (OBIP-2, with the
//! final clients' "v5" price shape), so existing OpenBazaar-style front ends can search Souk.
//!
//! `GET /ob/listings/search` runs the very same search as `/api/v1/listings/search`. The field
//! mapping is in the README ("OpenBazaar search-provider compatibility").

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use souk_protocol::{Object, Slot, pb};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::SharedState;
use super::error::ApiError;
use super::listings::{MAX_LIMIT, MAX_OFFSET, run_search};
use crate::search::{SearchQuery, Sort};
use crate::store::{StoreError, decode_stored};

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(ob_search))
        .routes(routes!(ob_logo))
}

/// The default search-provider logo (`logo` in the reply when `--public-url` is set and
/// `--ob-logo-url` is not).
const LOGO_SVG: &str = include_str!("ob_logo.svg");

/// The search provider's logo.
///
/// An SVG image; the search reply's `logo` points here when the server knows its public URL
/// (`--public-url`) and no other logo is configured (`--ob-logo-url`).
#[utoipa::path(
    get,
    path = "/ob/logo.svg",
    tag = "listings",
    responses((status = 200, description = "The logo", content_type = "image/svg+xml", body = String))
)]
pub async fn ob_logo() -> Response {
    (
        [
            (axum::http::header::CONTENT_TYPE, "image/svg+xml"),
            (axum::http::header::CACHE_CONTROL, "public, max-age=86400"),
        ],
        LOGO_SVG,
    )
        .into_response()
}

/// The reply's `links`: absolute when the server knows its public URL (OpenBazaar clients keep
/// a provider's links only when they are URLs), else paths on this server.
fn links(public_url: Option<&str>) -> Value {
    let search = format!("{}/ob/listings/search", public_url.unwrap_or_default());
    json!({ "self": search, "listings": search, "search": search })
}

/// An OpenBazaar-style error: `{"reason": "..."}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ObError {
    /// What is wrong.
    pub reason: String,
}

fn reason(status: StatusCode, text: impl Into<String>) -> Response {
    (
        status,
        Json(ObError {
            reason: text.into(),
        }),
    )
        .into_response()
}

/// Under `/ob/`, an error that a layer outside the handler answers in the API's own shape (a
/// 404 for a path no route serves, a 405, a 429 from the rate limit, a 413) is answered as
/// `{"reason": "..."}` instead, with the same status and headers (`retry-after` included), so an
/// OpenBazaar client finds its `reason` on every error. [`super::edge`] puts this inside CORS
/// and the request ids and outside the rate limit.
pub(crate) async fn errors_with_reason(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let ob = path == "/ob" || path.starts_with("/ob/");
    let response = next.run(request).await;
    if !ob {
        return response;
    }
    let Some(error) = response.extensions().get::<ApiError>().cloned() else {
        return response;
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let body = json!({ "reason": error.message }).to_string();
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// A store failure in the OpenBazaar shape: the status and message our own API gives it.
fn store_failed(error: StoreError) -> Response {
    let error = ApiError::from(error);
    reason(error.status, error.message)
}

/// The parsed OpenBazaar query.
struct ObQuery {
    search: SearchQuery,
    page: usize,
    page_size: usize,
    sort_key: &'static str,
    nsfw: bool,
    type_value: Option<String>,
    /// False when the requested payment coins exclude BTC or the type cannot exist here.
    possible: bool,
}

fn parse(raw: Option<&str>, now: u64) -> Result<ObQuery, String> {
    let mut q = ObQuery {
        search: SearchQuery {
            limit: 20,
            now,
            ..SearchQuery::default()
        },
        page: 0,
        page_size: 20,
        sort_key: "relevance",
        nsfw: false,
        type_value: None,
        possible: true,
    };
    let mut currencies: Vec<String> = Vec::new();
    for (key, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
        match key.as_ref() {
            "q" => q.search.text = value.into_owned(),
            "p" => {
                q.page = value
                    .parse()
                    .map_err(|_| "p must be a page number from 0")?
            }
            "ps" => {
                q.page_size = value.parse().map_err(|_| "ps must be a number")?;
                if !(1..=MAX_LIMIT).contains(&q.page_size) {
                    return Err(format!("ps must be between 1 and {MAX_LIMIT}"));
                }
            }
            "sortBy" => {
                let (key, sort) = match value.as_ref() {
                    "relevance" | "" => ("relevance", Sort::Relevance),
                    "price-asc" | "price_asc" => ("price-asc", Sort::PriceAsc),
                    "price-desc" | "price_desc" => ("price-desc", Sort::PriceDesc),
                    "date-desc" | "newest" => ("date-desc", Sort::Newest),
                    "rating-desc" | "rating" => ("rating-desc", Sort::Rating),
                    _ => return Err(
                        "sortBy must be relevance, price-asc, price-desc, date-desc or rating-desc"
                            .into(),
                    ),
                };
                q.sort_key = key;
                q.search.sort = Some(sort);
            }
            "nsfw" => {
                q.nsfw = value.parse().map_err(|_| "nsfw must be true or false")?;
                q.search.nsfw = q.nsfw;
            }
            "acceptedCurrencies" => currencies.push(value.to_ascii_uppercase()),
            "type" => {
                let kind = match value.as_ref() {
                    "physical_good" => Some("physical"),
                    "digital_good" => Some("digital"),
                    "service" => Some("service"),
                    "cryptocurrency" | "crowd_fund" => {
                        q.possible = false;
                        None
                    }
                    "" | "all" => None,
                    _ => return Err("type must be physical_good, digital_good, service, cryptocurrency or crowd_fund".into()),
                };
                q.type_value = Some(value.into_owned());
                q.search.kind = kind.map(str::to_string);
            }
            "network" => {
                if !matches!(value.as_ref(), "mainnet" | "testnet" | "") {
                    return Err("network must be mainnet or testnet".into());
                }
            }
            other => return Err(format!("unknown parameter {other}")),
        }
    }
    if !currencies.is_empty() && !currencies.iter().any(|c| c == "BTC" || c == "TBTC") {
        q.possible = false;
    }
    q.search.limit = q.page_size;
    q.search.offset = q
        .page
        .checked_mul(q.page_size)
        .filter(|o| *o <= MAX_OFFSET)
        .ok_or("p is too deep")?;
    Ok(q)
}

/// Whether a page after the one at `offset` can be fetched: it holds a match, and it is not
/// past the deepest page served ([`MAX_OFFSET`], where `p` is refused as too deep).
fn more_pages(offset: usize, page_size: usize, total: usize) -> bool {
    let next = offset.saturating_add(page_size);
    next < total && next <= MAX_OFFSET
}

fn contract_type(value: i32) -> &'static str {
    match pb::ListingType::try_from(value) {
        Ok(pb::ListingType::Digital) => "DIGITAL_GOOD",
        Ok(pb::ListingType::Service) => "SERVICE",
        _ => "PHYSICAL_GOOD",
    }
}

fn options(q: &ObQuery) -> Value {
    let radio = |label: &str, values: &[(&str, &str)], selected: Option<&str>, default: &str| {
        let chosen = selected.unwrap_or(default);
        json!({
            "type": "radio",
            "label": label,
            "options": values.iter().map(|(value, text)| json!({
                "value": value, "label": text, "checked": *value == chosen, "default": *value == default,
            })).collect::<Vec<_>>(),
        })
    };
    json!({
        "nsfw": radio("Adult content", &[("false", "Hide"), ("true", "Show")], Some(if q.nsfw { "true" } else { "false" }), "false"),
        "type": radio(
            "Type",
            &[("", "All"), ("physical_good", "Physical"), ("digital_good", "Digital"), ("service", "Service")],
            q.type_value.as_deref(),
            "",
        ),
    })
}

fn sort_by(selected: &str) -> Value {
    let entries = [
        ("relevance", "Relevance"),
        ("price-asc", "Price, low to high"),
        ("price-desc", "Price, high to low"),
        ("date-desc", "Newest"),
        ("rating-desc", "Seller rating"),
    ];
    let map: BTreeMap<&str, Value> = entries
        .iter()
        .map(|(key, label)| (*key, json!({ "label": label, "selected": *key == selected, "default": *key == "relevance" })))
        .collect();
    json!(map)
}

/// OpenBazaar-compatible search.
///
/// Parameters: `q`, `p` (0-based page), `ps` (page size, ≤ 100), `sortBy` (`relevance`,
/// `price-asc`, `price-desc`, `date-desc`, `rating-desc`), `nsfw`, repeated
/// `acceptedCurrencies`, `type` (`physical_good`, `digital_good`, `service`), `network`
/// (`mainnet`/`testnet`). Errors are `{"reason": "..."}`.
#[utoipa::path(
    get,
    path = "/ob/listings/search",
    tag = "listings",
    params(
        ("q" = Option<String>, Query, description = "Search text"),
        ("p" = Option<usize>, Query, description = "Page, from 0"),
        ("ps" = Option<usize>, Query, description = "Page size, 1-100"),
        ("sortBy" = Option<String>, Query, description = "relevance, price-asc, price-desc, date-desc, rating-desc"),
        ("nsfw" = Option<bool>, Query, description = "Include adult listings"),
        ("acceptedCurrencies" = Option<Vec<String>>, Query, description = "Payment coins; Souk takes BTC"),
        ("type" = Option<String>, Query, description = "physical_good, digital_good, service"),
        ("network" = Option<String>, Query, description = "mainnet or testnet")
    ),
    responses(
        (status = 200, description = "OpenBazaar search-provider response", body = Object),
        (status = 400, description = "Bad parameter", body = ObError),
        (status = 503, description = "The database failed or is unreachable", body = ObError)
    )
)]
pub async fn ob_search(State(state): State<SharedState>, RawQuery(raw): RawQuery) -> Response {
    let now = souk_protocol::ValidationContext::now().now;
    let q = match parse(raw.as_deref(), now) {
        Ok(q) => q,
        Err(text) => return reason(StatusCode::BAD_REQUEST, text),
    };
    let (total, hits) = if q.possible {
        match run_search(&state, q.search.clone()).await {
            Ok(page) => (page.total, page.hits),
            Err(error) => return reason(error.status, error.message),
        }
    } else {
        (0, Vec::new())
    };
    let mut results = Vec::with_capacity(hits.len());
    for hit in hits {
        let Ok(bytes) =
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &hit.envelope)
        else {
            continue;
        };
        let Ok((envelope, Object::Listing(listing))) = decode_stored(&bytes) else {
            continue;
        };
        let seller = envelope.signer();
        // A store that fails is an error (503), not a vendor without a name.
        let vendor_profile = match state.store.current(&seller, &Slot::Profile).await {
            Ok(Some(bytes)) => match decode_stored(&bytes) {
                Ok((_, Object::Profile(p))) => Some(p),
                _ => None,
            },
            Ok(None) => None,
            Err(error) => return store_failed(error),
        };
        let ratings = match state
            .store
            .rating_summary(&seller, pb::RatingRole::Seller)
            .await
        {
            Ok(ratings) => ratings,
            Err(error) => return store_failed(error),
        };
        let moderators: Vec<String> = listing
            .accepted_moderators
            .iter()
            .filter_map(|m| souk_protocol::PublicKey::from_bytes(m).ok())
            .map(|k| k.to_address())
            .collect();
        let image = listing
            .images
            .first()
            .map(|i| i.url.clone())
            .unwrap_or_default();
        let price = listing.price.clone().unwrap_or_default();
        let free_shipping: Vec<String> = listing
            .shipping
            .iter()
            .filter(|o| o.services.iter().any(|s| s.price == 0))
            .flat_map(|o| o.regions.clone())
            .collect();
        results.push(json!({
            "type": "listing",
            "relationships": {
                "vendor": { "data": {
                    "peerID": seller.to_address(),
                    "name": vendor_profile.as_ref().map(|p| p.store_name.clone()).unwrap_or_default(),
                    "handle": vendor_profile.as_ref().map(|p| p.handle.clone()).unwrap_or_default(),
                    "avatarHashes": { "small": vendor_profile.as_ref().and_then(|p| p.avatar.as_ref()).map(|a| a.url.clone()).unwrap_or_default() },
                }},
                "moderators": moderators,
            },
            "data": {
                "hash": hit.id,
                "slug": listing.slug,
                "title": listing.title,
                "categories": if listing.category.is_empty() { vec![] } else { vec![listing.category.clone()] },
                "nsfw": listing.nsfw,
                "contractType": contract_type(listing.r#type),
                "description": listing.description,
                "thumbnail": { "tiny": image, "small": image, "medium": image },
                "price": { "amount": price.amount.to_string(), "currency": { "code": price.currency, "divisibility": price.divisibility } },
                "shipsTo": hit.summary.ships_to,
                "freeShipping": free_shipping,
                "language": listing.language,
                "averageRating": ratings.overall,
                "ratingCount": ratings.count,
                "moderators": moderators,
                "acceptedCurrencies": ["BTC"],
                "coinType": "",
                "soukEnvelope": hit.envelope,
            },
        }));
    }
    let more_pages = more_pages(q.search.offset, q.page_size, total);
    Json(json!({
        "name": state.config.server_name,
        "logo": state.config.ob_logo_url.as_deref().unwrap_or_default(),
        "links": links(state.config.inbox.public_url.as_deref()),
        "options": options(&q),
        "sortBy": sort_by(q.sort_key),
        "results": { "total": total, "morePages": more_pages, "results": results },
    }))
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_pages_stops_at_the_last_match_and_at_the_deepest_page_served() {
        assert!(more_pages(0, 20, 21));
        assert!(!more_pages(0, 20, 20), "the next page would be empty");
        assert!(more_pages(MAX_OFFSET - 20, 20, 1_000_000));
        // The page after would be refused as too deep: not announced.
        assert!(!more_pages(MAX_OFFSET, 20, 1_000_000));
        assert!(!more_pages(MAX_OFFSET - 10, 20, 1_000_000));
    }
}
