//! The peer-to-peer network as seen from REST: its status, and inbox records looked up in the
//! DHT.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Serialize;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::listings::parse_key;
use super::{ApiError, SharedState, b64};
use crate::p2p::NetworkStatus;

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(network))
        .routes(routes!(inbox_record))
}

/// This server's place in the peer-to-peer network: its peer id and addresses, connected peers
/// with latency, gossip score and sync state, and gossip counters. With the network switched off
/// (`--p2p false`) `enabled` is false and the rest is empty.
#[utoipa::path(
    get,
    path = "/api/v1/network",
    tag = "network",
    responses((status = 200, description = "Network status", body = NetworkStatus))
)]
pub async fn network(State(state): State<SharedState>) -> Result<Json<NetworkStatus>, ApiError> {
    match &state.network {
        None => Ok(Json(NetworkStatus::disabled())),
        Some(network) => network.status().await.map(Json).ok_or_else(|| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the network task has stopped",
            )
        }),
    }
}

/// A person's inbox record.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct InboxRecordResponse {
    /// Whose inbox (souk1… address).
    pub person: String,
    /// Inbox servers in the person's order of preference.
    pub servers: Vec<String>,
    /// When the person signed the record (the profile's `created_at`).
    pub created_at: u64,
    /// The signed profile envelope it comes from (base64), so the caller can check it too.
    pub envelope: String,
}

/// Where a person's encrypted inbox is held, looked up in the Kademlia DHT. The record is the
/// person's signed profile; it was checked (signature, kind, signer) and the newest found wins.
#[utoipa::path(
    get,
    path = "/api/v1/network/inbox/{person}",
    tag = "network",
    params(("person" = String, Path, description = "The person's address (souk1… or hex)")),
    responses(
        (status = 200, description = "The newest valid record found", body = InboxRecordResponse),
        (status = 400, description = "Not an address", body = super::error::ErrorBody),
        (status = 404, description = "No valid record found", body = super::error::ErrorBody),
        (status = 503, description = "The network is switched off", body = super::error::ErrorBody)
    )
)]
pub async fn inbox_record(
    State(state): State<SharedState>,
    Path(person): Path<String>,
) -> Result<Json<InboxRecordResponse>, ApiError> {
    let person = parse_key(&person, "person")?;
    let network = state.network.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "p2p_disabled",
            "this server does not take part in the peer-to-peer network",
        )
    })?;
    let record = network
        .find_inbox(person)
        .await
        .ok_or_else(|| ApiError::not_found("no valid inbox record for that person was found"))?;
    Ok(Json(InboxRecordResponse {
        person: record.person.to_address(),
        servers: record.servers,
        created_at: record.created_at,
        envelope: b64(&record.envelope),
    }))
}
