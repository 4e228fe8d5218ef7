//! The REST API: one state struct, a router per module composed in [`router`], an OpenAPI 3.1
//! document generated from the handlers' annotations and served at `/api/v1/openapi.json`.
//!
//! Errors: handlers return [`ApiError`]; the body is always `{"error":{"code","message"}}`,
//! except under `/ob/`, where OpenBazaar clients expect `{"reason"}` ([`ob`]).

pub mod envelopes;
pub mod error;
pub mod inbox;
pub mod listings;
pub mod network;
pub mod ob;
pub mod ops;
pub mod page;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderName, HeaderValue, Method};
use base64::Engine;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnResponse, TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

pub use error::ApiError;

use crate::config::Config;
use crate::ingest::Ingestor;
use crate::search::SearchIndex;
use crate::store::Store;

/// Everything a request handler needs. One per server, shared behind an `Arc`.
#[derive(Debug)]
pub struct AppState {
    /// The resolved configuration.
    pub config: Config,
    /// The database.
    pub store: Store,
    /// The search index.
    pub search: Arc<SearchIndex>,
    /// The threads that compute searches.
    pub search_pool: crate::search::SearchPool,
    /// The one ingest path.
    pub ingestor: Ingestor,
    /// Renders the Prometheus metrics.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// When the server started.
    pub started: Instant,
    /// The peer-to-peer network (None when switched off).
    pub network: Option<crate::p2p::Network>,
    /// The inboxes of sealed private messages.
    pub mailbox: Arc<crate::mailbox::Mailbox>,
    /// Decoded listings by id, for search hits.
    pub listings: Arc<crate::service::ListingCache>,
    /// Reads search hits on the search threads (SQLite files; `None` reads through the pool).
    pub envelopes: Option<Arc<crate::store::EnvelopeReader>>,
}

/// Shared state.
pub type SharedState = Arc<AppState>;

/// The OpenAPI document's frame; paths and schemas come from the routers.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Souk index server",
        description = "Public REST API of a Souk index server: publish signed envelopes, search listings, read stores, moderators and ratings. Every object comes with its signed envelope so that clients verify what they are shown.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "envelopes", description = "Publishing signed objects"),
        (name = "listings", description = "Search and read listings"),
        (name = "stores", description = "Profiles, moderators and ratings"),
        (name = "network", description = "The peer-to-peer network: status and inbox records"),
        (name = "inbox", description = "Sealed private messages held for their recipients"),
        (name = "operations", description = "Health, readiness, metrics, status")
    ),
    modifiers(&BearerScheme)
)]
struct ApiDoc;

/// Declares the `bearer` security scheme (inbox session tokens).
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An inbox session token from POST /api/v1/inbox/{person}/session",
                    ))
                    .build(),
            ),
        );
    }
}

/// Base64 (standard alphabet, with padding) as used for envelope bytes in JSON.
pub(crate) fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The API router with its OpenAPI document.
pub fn api_router() -> (Router<SharedState>, utoipa::openapi::OpenApi) {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(envelopes::router())
        .merge(listings::router())
        .merge(ops::router())
        .merge(network::router())
        .merge(inbox::router())
        .merge(ob::router())
        .split_for_parts()
}

/// The whole application without rate limiting: [`routes`] inside [`edge`].
pub fn router(state: SharedState) -> Router {
    edge(routes(&state), state)
}

/// The API routes, the OpenAPI document, the status page, the body limit, and JSON errors for
/// a path no route serves (404 `not_found`) or a method a path does not take (405
/// `method_not_allowed`). [`crate::server::app`] puts the rate limit around these, inside
/// [`edge`].
pub fn routes(state: &SharedState) -> Router<SharedState> {
    let (api, doc) = api_router();
    let _ = ops::OPENAPI.set(doc);
    api.merge(page::router())
        .fallback(no_route)
        .method_not_allowed_fallback(no_method)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
}

/// The layers every request and reply passes, outermost: a request id (`x-request-id`, kept
/// from the client or made up), a log span carrying it with one line per reply (at `info`),
/// the id copied to the reply, CORS, and the OpenBazaar error shape under `/ob/`
/// (`ob::errors_with_reason`). A reply from any layer inside, a rate-limited one
/// included, gets all of them; a CORS preflight is answered here and never reaches the limit.
pub fn edge(inner: Router<SharedState>, state: SharedState) -> Router {
    let origins = state.config.cors_origins.clone();
    with_edge(inner.with_state(state), &origins)
}

/// The layers of [`edge`] around a router that needs no state: the API's, and what answers
/// while the server opens (`crate::server::run`), so that a `503 starting` carries a request
/// id and CORS headers like any other reply.
pub fn with_edge(inner: Router, cors_origins: &[String]) -> Router {
    let cors = cors(cors_origins);
    let x_request_id = HeaderName::from_static("x-request-id");
    inner
        .layer(axum::middleware::from_fn(ob::errors_with_reason))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|request: &axum::http::Request<_>| {
                    let id = request
                        .headers()
                        .get("x-request-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-")
                        .to_string();
                    tracing::info_span!("request", method = %request.method(), path = %request.uri().path(), request_id = %id)
                })
                .on_response(DefaultOnResponse::new().level(tracing::Level::INFO)),
        )
        .layer(SetRequestIdLayer::new(x_request_id, MakeRequestUuid))
}

/// A path no route serves.
async fn no_route(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no such path: {}", uri.path()))
}

/// A method the path does not take.
async fn no_method(method: Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

fn cors(origins: &[String]) -> CorsLayer {
    let layer = CorsLayer::new()
        .allow_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
        ])
        .max_age(Duration::from_secs(3600));
    if origins.iter().any(|o| o == "*") {
        layer.allow_origin(AllowOrigin::any())
    } else {
        let list: Vec<HeaderValue> = origins
            .iter()
            .filter_map(|o| HeaderValue::from_str(o).ok())
            .collect();
        layer.allow_origin(list)
    }
}
