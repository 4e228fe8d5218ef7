//! Operations: liveness, readiness, Prometheus metrics, status.

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, SharedState};
use crate::store::Counts;

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics))
        .routes(routes!(status))
        .routes(routes!(openapi))
}

/// The generated OpenAPI document, set once when the first router is built.
pub(super) static OPENAPI: std::sync::OnceLock<utoipa::openapi::OpenApi> =
    std::sync::OnceLock::new();

/// This API's OpenAPI 3.1 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "operations", responses((status = 200, description = "The OpenAPI 3.1 document", body = Object)))]
pub async fn openapi() -> Response {
    match OPENAPI.get() {
        Some(doc) => Json(doc.clone()).into_response(),
        None => ApiError::internal(&"OpenAPI document not built").into_response(),
    }
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive", body = String)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the database answers and the search index has caught up with the store.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = String),
        (status = 503, description = "Not ready yet, or the database is unreachable", body = super::error::ErrorBody)
    )
)]
pub async fn readyz(State(state): State<SharedState>) -> Result<&'static str, ApiError> {
    // A server still opening (migrations, an index rebuild) answers `not_ready` from
    // `server::run` before this router exists: here the index has caught up.
    state.store.counts().await?;
    Ok("ready")
}

/// Prometheus metrics (text format).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Metrics in the Prometheus text format", body = String)))]
pub async fn metrics(State(state): State<SharedState>) -> Response {
    if let Ok(counts) = state.store.counts().await {
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        {
            metrics::gauge!("souk_store_envelopes").set(counts.envelopes as f64);
            metrics::gauge!("souk_store_listings").set(counts.listings as f64);
            metrics::gauge!("souk_store_profiles").set(counts.profiles as f64);
            metrics::gauge!("souk_store_ratings").set(counts.ratings as f64);
        }
    }
    if let Ok(bytes) = state.store.size_bytes().await {
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        metrics::gauge!("souk_store_bytes").set(bytes as f64);
    }
    #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
    metrics::gauge!("souk_search_documents").set(state.search.num_docs() as f64);
    if let Some((free, total)) = disk_space(&state.config.data_dir) {
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        {
            metrics::gauge!("souk_data_disk_free_bytes").set(free as f64);
            metrics::gauge!("souk_data_disk_total_bytes").set(total as f64);
        }
    }
    if let Some(network) = &state.network
        && let Some(status) = network.status().await
    {
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        metrics::gauge!("souk_p2p_peers").set(status.peers.len() as f64);
        let now = souk_protocol::ValidationContext::now().now;
        let newest = status
            .peers
            .iter()
            .filter_map(|p| p.sync.last_success)
            .max();
        let age = match newest {
            Some(at) => now.saturating_sub(at),
            None => state.started.elapsed().as_secs(),
        };
        #[allow(clippy::cast_precision_loss, reason = "gauges are f64")]
        metrics::gauge!("souk_sync_last_round_age_seconds").set(age as f64);
    }
    let text = state
        .metrics
        .as_ref()
        .map(metrics_exporter_prometheus::PrometheusHandle::render)
        .unwrap_or_default();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Free (for unprivileged users) and total bytes of the filesystem holding `dir`.
fn disk_space(dir: &std::path::Path) -> Option<(u64, u64)> {
    let stats = rustix::fs::statvfs(dir).ok()?;
    Some((
        stats.f_bavail.saturating_mul(stats.f_frsize),
        stats.f_blocks.saturating_mul(stats.f_frsize),
    ))
}

/// What a server holds.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The server's name.
    pub name: String,
    /// Software version.
    pub version: String,
    /// `sqlite` or `postgres`.
    pub database: String,
    /// Stored objects.
    pub counts: Counts,
    /// Listings in the search index.
    pub indexed_listings: u64,
    /// Seconds since start.
    pub uptime_seconds: u64,
    /// This server's peer id (its libp2p public key) when it takes part in the network.
    pub peer_id: Option<String>,
}

/// Server status.
#[utoipa::path(get, path = "/api/v1/status", tag = "operations", responses((status = 200, description = "Status", body = Status)))]
pub async fn status(State(state): State<SharedState>) -> Result<Json<Status>, ApiError> {
    Ok(Json(Status {
        name: state.config.server_name.clone(),
        version: env!("CARGO_PKG_VERSION").to_string(),
        database: state.store.backend().to_string(),
        counts: state.store.counts().await?,
        indexed_listings: state.search.num_docs(),
        uptime_seconds: state.started.elapsed().as_secs(),
        peer_id: match &state.network {
            Some(network) => network.status().await.map(|s| s.peer_id),
            None => None,
        },
    }))
}
