//! `POST /api/v1/envelopes`: publish one envelope or a batch.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::{ApiError, SharedState};
use crate::ingest::IngestResult;

/// Content type of a batch in protobuf: an `EnvelopeBatch` message (field 1: repeated bytes).
pub const BATCH_CONTENT_TYPE: &str = "application/x-protobuf; proto=souk.v1.EnvelopeBatch";

/// A batch of envelopes in protobuf: `message EnvelopeBatch { repeated bytes envelopes = 1; }`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EnvelopeBatch {
    /// Each element is one envelope's bytes.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub envelopes: Vec<Vec<u8>>,
}

/// JSON request: exactly one of `envelope` or `envelopes`, each the base64 of envelope bytes.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    /// One envelope (base64).
    pub envelope: Option<String>,
    /// A batch of envelopes (base64 each).
    pub envelopes: Option<Vec<String>>,
}

/// The result for one envelope.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum EnvelopeResult {
    /// Stored and searchable.
    Accepted {
        /// Object id (hex).
        id: String,
        /// Ingest sequence.
        seq: i64,
    },
    /// Already stored; nothing changed.
    Duplicate {
        /// Object id (hex).
        id: String,
    },
    /// A newer version, or a withdrawal, of the same object is stored.
    Stale {
        /// Object id (hex) of the refused envelope.
        id: String,
        /// Object id (hex) of the version that stays current.
        current: String,
    },
    /// Refused by the protocol's checks.
    Rejected {
        /// Why.
        error: super::error::ErrorDetail,
    },
}

/// Reply to a publish request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PublishResponse {
    /// One result per envelope, in request order.
    pub results: Vec<EnvelopeResult>,
    /// How many were accepted.
    pub accepted: usize,
    /// How many were already stored.
    pub duplicates: usize,
    /// How many were stale.
    pub stale: usize,
    /// How many were rejected.
    pub rejected: usize,
}

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new().routes(routes!(publish))
}

fn is_batch_protobuf(content_type: &str) -> bool {
    content_type
        .replace(' ', "")
        .to_ascii_lowercase()
        .contains("proto=souk.v1.envelopebatch")
}

/// Publish signed envelopes.
///
/// Each envelope goes through size check → decode → validate → verify → store → index before
/// the reply. Bodies: `application/json` (`{"envelope": base64}` or `{"envelopes": [base64…]}`),
/// `application/x-protobuf` (one `Envelope`), or
/// `application/x-protobuf; proto=souk.v1.EnvelopeBatch`. A single envelope is answered with a
/// status that says what happened (201 accepted, 200 duplicate, 409 stale, 400/413/422 refused);
/// a batch with 200 and one result per envelope.
#[utoipa::path(
    post,
    path = "/api/v1/envelopes",
    tag = "envelopes",
    request_body(content = PublishRequest, description = "Envelopes as JSON (base64), or protobuf bytes", content_type = "application/json"),
    responses(
        (status = 201, description = "The single envelope was accepted", body = PublishResponse),
        (status = 200, description = "A batch was processed, or the single envelope was a duplicate", body = PublishResponse),
        (status = 400, description = "Malformed request or envelope", body = super::error::ErrorBody),
        (status = 409, description = "The single envelope is stale; `error.current` is the id of the version that stays current", body = super::error::ErrorBody),
        (status = 413, description = "Body or batch too large", body = super::error::ErrorBody),
        (status = 415, description = "Unsupported content type", body = super::error::ErrorBody),
        (status = 422, description = "The single envelope breaks a protocol rule", body = super::error::ErrorBody),
        (status = 429, description = "Rate limited", body = super::error::ErrorBody),
        (status = 503, description = "Storage unavailable or shutting down (nothing stored), or `not_indexed`: stored, but not yet searchable", body = super::error::ErrorBody)
    )
)]
pub async fn publish(
    State(state): State<SharedState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the request body is over {} bytes",
                    state.config.max_body_bytes
                ),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    // Each envelope's bytes, or (in a JSON batch) why its base64 could not be read: that
    // envelope alone is refused, in its place among the results.
    let (envelopes, single): (Vec<Result<Vec<u8>, ()>>, bool) = if content_type
        .starts_with("application/json")
    {
        let request: PublishRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request(
                "invalid_json",
                format!("the body is not a valid publish request: {e}"),
            )
        })?;
        let decode = |s: &str| base64::engine::general_purpose::STANDARD.decode(s);
        match (request.envelope, request.envelopes) {
            (Some(one), None) => (
                vec![Ok(decode(&one).map_err(|_| {
                    ApiError::bad_request("invalid_base64", "the envelope is not valid base64")
                })?)],
                true,
            ),
            (None, Some(many)) => (
                many.iter().map(|s| decode(s).map_err(|_| ())).collect(),
                false,
            ),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid_json",
                    "give exactly one of \"envelope\" or \"envelopes\"",
                ));
            }
        }
    } else if content_type.starts_with("application/x-protobuf") && is_batch_protobuf(&content_type)
    {
        let batch = <EnvelopeBatch as prost::Message>::decode(body).map_err(|e| {
            ApiError::bad_request(
                "invalid_protobuf",
                format!("the body is not an EnvelopeBatch: {e}"),
            )
        })?;
        (batch.envelopes.into_iter().map(Ok).collect(), false)
    } else if content_type.starts_with("application/x-protobuf")
        || content_type.starts_with("application/octet-stream")
    {
        (vec![Ok(body.to_vec())], true)
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/json, application/x-protobuf, or application/x-protobuf; proto=souk.v1.EnvelopeBatch",
        ));
    };
    if envelopes.is_empty() {
        return Err(ApiError::bad_request(
            "empty_batch",
            "the batch holds no envelopes",
        ));
    }
    if envelopes.len() > state.config.max_batch {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "batch_too_large",
            format!(
                "{} envelopes in one request; the limit is {}",
                envelopes.len(),
                state.config.max_batch
            ),
        ));
    }
    let unreadable: Vec<bool> = envelopes.iter().map(Result::is_err).collect();
    let readable: Vec<Vec<u8>> = envelopes.into_iter().filter_map(Result::ok).collect();
    let mut ingested = if readable.is_empty() {
        Vec::new()
    } else {
        state.ingestor.ingest(readable).await?
    }
    .into_iter();
    let mut results = Vec::with_capacity(unreadable.len());
    for unreadable in unreadable {
        results.push(if unreadable {
            IngestResult::Rejected {
                code: "invalid_base64",
                message: "this envelope is not valid base64".into(),
            }
        } else {
            ingested.next().ok_or_else(|| {
                ApiError::internal(&"the ingest path answered fewer results than envelopes")
            })?
        });
    }
    if single && let Some(result) = results.first() {
        match result {
            IngestResult::Rejected { code, message } => {
                let status = match *code {
                    "envelope_too_large" => StatusCode::PAYLOAD_TOO_LARGE,
                    "envelope_malformed"
                    | "envelope_not_canonical"
                    | "payload_malformed"
                    | "unknown_kind" => StatusCode::BAD_REQUEST,
                    _ => StatusCode::UNPROCESSABLE_ENTITY,
                };
                return Err(ApiError::new(status, code, message.clone()));
            }
            IngestResult::Stale { id, current } => {
                return Err(ApiError::stale(id, current));
            }
            IngestResult::Accepted { .. } | IngestResult::Duplicate { .. } => {}
        }
    }
    let response = tally(results);
    let status = if single && response.accepted == 1 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(response)).into_response())
}

fn tally(results: Vec<IngestResult>) -> PublishResponse {
    let mut response = PublishResponse {
        results: Vec::with_capacity(results.len()),
        accepted: 0,
        duplicates: 0,
        stale: 0,
        rejected: 0,
    };
    for result in results {
        response.results.push(match result {
            IngestResult::Accepted { id, seq } => {
                response.accepted += 1;
                EnvelopeResult::Accepted {
                    id: id.to_string(),
                    seq,
                }
            }
            IngestResult::Duplicate { id } => {
                response.duplicates += 1;
                EnvelopeResult::Duplicate { id: id.to_string() }
            }
            IngestResult::Stale { id, current } => {
                response.stale += 1;
                EnvelopeResult::Stale {
                    id: id.to_string(),
                    current: current.to_string(),
                }
            }
            IngestResult::Rejected { code, message } => {
                response.rejected += 1;
                EnvelopeResult::Rejected {
                    error: super::error::ErrorDetail {
                        code: code.to_string(),
                        message,
                        current: None,
                    },
                }
            }
        });
    }
    response
}
