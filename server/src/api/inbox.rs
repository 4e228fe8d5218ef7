//! `/api/v1/inbox`: post sealed private messages, and fetch and acknowledge one's own after
//! proving the key. See [`crate::mailbox`] for the rules.

use std::str::FromStr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use serde::{Deserialize, Serialize};
use souk_protocol::ObjectId;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::listings::{parse_key, query_rejection};
use super::{ApiError, SharedState, b64};
use crate::mailbox::{MAX_PAGE, Posted};

pub(super) fn router() -> OpenApiRouter<SharedState> {
    OpenApiRouter::new()
        .routes(routes!(post_message))
        .routes(routes!(challenge))
        .routes(routes!(session))
        .routes(routes!(messages))
        .routes(routes!(ack))
        // Inbox bodies are small: a sealed message is at most 192 KiB (as JSON, 4/3 of that).
        .layer(axum::extract::DefaultBodyLimit::max(INBOX_BODY_LIMIT))
}

/// Largest inbox request body: a sealed message at its limit, base64 in JSON, with room.
pub const INBOX_BODY_LIMIT: usize = 300 * 1024;

/// A JSON body axum could not take, as the API's error shape (not axum's plain text).
fn json_rejection(rejection: &JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send the body as application/json",
        ),
        other if other.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            other.body_text(),
        ),
        other => ApiError::bad_request("invalid_json", other.body_text()),
    }
}

/// Lower-case hex of a 32-byte value (ids, challenges, tokens), written as object ids are.
fn hex(bytes: &[u8; 32]) -> String {
    ObjectId(*bytes).to_string()
}

fn parse_hex32(text: &str, name: &str) -> Result<[u8; 32], ApiError> {
    ObjectId::from_str(text).map(|id| id.0).map_err(|_| {
        ApiError::bad_request("invalid_parameter", format!("{name} must be 64 hex digits"))
    })
}

fn bearer(headers: &HeaderMap) -> Result<[u8; 32], ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a session token is required: Authorization: Bearer <token> (POST …/session)",
            )
        })?;
    parse_hex32(value.trim(), "the bearer token").map_err(|_| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the bearer token must be 64 hex digits",
        )
    })
}

/// JSON form of a post: the sealed message as base64.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PostRequest {
    /// The `SealedMessage` bytes, base64 (standard alphabet).
    pub sealed: String,
}

/// Where a post stands.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PostResponse {
    /// The message id: SHA-256 of the sealed bytes, hex.
    pub id: String,
    /// The recipient (souk1… address).
    pub recipient: String,
    /// `stored` (held from now on), `duplicate` (already held) or `delivered` (already fetched
    /// and acknowledged by the recipient; not held again).
    pub status: String,
    /// When the server deletes it unfetched (Unix seconds); absent when delivered.
    pub expires_at: Option<i64>,
}

/// Query of a post.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct PostQuery {
    /// Set by inbox servers copying a message to each other; such a copy is not copied on.
    #[serde(default)]
    pub replica: bool,
}

/// Post a sealed private message for its recipient. The body is the `SealedMessage` in protobuf
/// (`Content-Type: application/x-protobuf`) or JSON `{"sealed": base64}`. The server checks
/// size, shape and recipient only (it cannot read the message), stores it durably before
/// answering, and copies it to the recipient's other inbox servers.
#[utoipa::path(
    post,
    path = "/api/v1/inbox",
    tag = "inbox",
    params(PostQuery),
    request_body(content = PostRequest, description = "JSON, or the raw SealedMessage as application/x-protobuf"),
    responses(
        (status = 201, description = "Stored", body = PostResponse),
        (status = 200, description = "Already held, or already delivered", body = PostResponse),
        (status = 400, description = "Malformed message or recipient", body = super::error::ErrorBody),
        (status = 413, description = "Larger than 196,608 bytes", body = super::error::ErrorBody),
        (status = 507, description = "The recipient's inbox is full", body = super::error::ErrorBody)
    )
)]
pub async fn post_message(
    State(state): State<SharedState>,
    query: Result<Query<PostQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|r| query_rejection(&r))?;
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                format!(
                    "the request body is over the server's limit; a sealed message is at most {} bytes",
                    souk_protocol::limits::MAX_SEALED_MESSAGE_BYTES
                ),
            )
        } else {
            ApiError::bad_request("unreadable_body", rejection.body_text())
        }
    })?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let bytes = if content_type.starts_with("application/json") {
        let request: PostRequest = serde_json::from_slice(&body).map_err(|e| {
            ApiError::bad_request("invalid_json", format!("body is not a post request: {e}"))
        })?;
        // Refuse before decoding something far too large (base64 is 4/3 of the bytes).
        if request.sealed.len() > souk_protocol::limits::MAX_SEALED_MESSAGE_BYTES / 3 * 4 + 4 {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "message_too_large",
                "sealed message is larger than 196,608 bytes",
            ));
        }
        base64::engine::general_purpose::STANDARD
            .decode(request.sealed.as_bytes())
            .map_err(|_| ApiError::bad_request("invalid_base64", "sealed is not base64"))?
    } else if content_type.starts_with("application/x-protobuf")
        || content_type.starts_with("application/octet-stream")
    {
        body.to_vec()
    } else {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "send application/x-protobuf (the SealedMessage) or application/json",
        ));
    };
    let outcome = state.mailbox.post(bytes, query.replica).await?;
    let status = if outcome.status == Posted::Stored {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((
        status,
        Json(PostResponse {
            id: hex(&outcome.id),
            recipient: outcome.recipient.to_address(),
            status: outcome.status.as_str().to_string(),
            expires_at: outcome.expires_at,
        }),
    )
        .into_response())
}

/// A challenge to sign.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChallengeResponse {
    /// 32 random bytes, hex. Sign `SHA-256("souk/v1/inbox-auth\0" || challenge || person)` with
    /// the person's identity key (SPEC.md, "Private messages").
    pub challenge: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
}

/// Ask for a single-use challenge, the first step of opening one's inbox.
#[utoipa::path(
    post,
    path = "/api/v1/inbox/{person}/challenge",
    tag = "inbox",
    params(("person" = String, Path, description = "The inbox owner's address (souk1… or hex)")),
    responses(
        (status = 200, description = "A challenge", body = ChallengeResponse),
        (status = 400, description = "Not an address", body = super::error::ErrorBody),
        (status = 503, description = "Too many pending sessions", body = super::error::ErrorBody)
    )
)]
pub async fn challenge(
    State(state): State<SharedState>,
    Path(person): Path<String>,
) -> Result<Json<ChallengeResponse>, ApiError> {
    let person = parse_key(&person, "person")?;
    let (challenge, expires_at) = state.mailbox.challenge(person)?;
    Ok(Json(ChallengeResponse {
        challenge: hex(&challenge),
        expires_at,
    }))
}

/// An answered challenge.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The challenge, hex, as received.
    pub challenge: String,
    /// The 64-byte ed25519 signature, hex.
    pub signature: String,
}

/// A session.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionResponse {
    /// Send as `Authorization: Bearer <token>` to list and acknowledge messages.
    pub token: String,
    /// When it stops being accepted (Unix seconds).
    pub expires_at: i64,
}

/// Answer a challenge and get a session token for this inbox.
#[utoipa::path(
    post,
    path = "/api/v1/inbox/{person}/session",
    tag = "inbox",
    params(("person" = String, Path, description = "The inbox owner's address (souk1… or hex)")),
    request_body = SessionRequest,
    responses(
        (status = 200, description = "A session", body = SessionResponse),
        (status = 400, description = "Malformed request", body = super::error::ErrorBody),
        (status = 401, description = "Unknown or expired challenge, or a wrong signature", body = super::error::ErrorBody)
    )
)]
pub async fn session(
    State(state): State<SharedState>,
    Path(person): Path<String>,
    request: Result<Json<SessionRequest>, JsonRejection>,
) -> Result<Json<SessionResponse>, ApiError> {
    let Json(request) = request.map_err(|r| json_rejection(&r))?;
    let person = parse_key(&person, "person")?;
    let challenge = parse_hex32(&request.challenge, "challenge")?;
    let signature = request
        .signature
        .as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .filter(|s| s.len() == 64)
        .ok_or_else(|| {
            ApiError::bad_request("invalid_parameter", "signature must be 128 hex digits")
        })?;
    let (token, expires_at) = state.mailbox.open_session(person, &challenge, &signature)?;
    Ok(Json(SessionResponse {
        token: hex(&token),
        expires_at,
    }))
}

/// Paging through an inbox.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct MessagesQuery {
    /// Only messages after this position (`next` of the previous page). [default: 0]
    #[serde(default)]
    pub after: i64,
    /// Most messages in this page, 1 to 50. [default: 20]
    pub limit: Option<u32>,
}

/// One held message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct HeldMessage {
    /// Message id (SHA-256 of the sealed bytes), hex.
    pub id: String,
    /// Position in the inbox (arrival order).
    pub seq: i64,
    /// The `SealedMessage`, base64.
    pub sealed: String,
    /// When it arrived (Unix seconds).
    pub received_at: i64,
    /// When it will be deleted unfetched (Unix seconds).
    pub expires_at: i64,
}

/// A page of messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagesResponse {
    /// Messages in arrival order.
    pub messages: Vec<HeldMessage>,
    /// Pass as `after` for the next page; absent when this page was the last.
    pub next: Option<i64>,
}

/// List one's held messages (needs a session token for this inbox).
#[utoipa::path(
    get,
    path = "/api/v1/inbox/{person}/messages",
    tag = "inbox",
    params(("person" = String, Path, description = "The inbox owner's address (souk1… or hex)"), MessagesQuery),
    responses(
        (status = 200, description = "A page of messages", body = MessagesResponse),
        (status = 401, description = "No valid session token for this inbox", body = super::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn messages(
    State(state): State<SharedState>,
    Path(person): Path<String>,
    query: Result<Query<MessagesQuery>, QueryRejection>,
    headers: HeaderMap,
) -> Result<Json<MessagesResponse>, ApiError> {
    let Query(query) = query.map_err(|r| query_rejection(&r))?;
    let person = parse_key(&person, "person")?;
    let token = bearer(&headers)?;
    let limit = query.limit.unwrap_or(20);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::bad_request(
            "invalid_parameter",
            "limit must be between 1 and 50",
        ));
    }
    let page = state
        .mailbox
        .fetch(&person, &token, query.after.max(0), limit)
        .await?;
    let next = (page.len() == limit as usize)
        .then(|| page.last().map(|m| m.seq))
        .flatten();
    Ok(Json(MessagesResponse {
        messages: page
            .into_iter()
            .map(|m| HeldMessage {
                id: hex(&m.id),
                seq: m.seq,
                sealed: b64(&m.bytes),
                received_at: m.received_at,
                expires_at: m.expires_at,
            })
            .collect(),
        next,
    }))
}

/// Messages the recipient has safely stored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    /// Message ids (hex), at most 1,000.
    pub ids: Vec<String>,
}

/// The result of an acknowledgement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AckResponse {
    /// How many of them were held here and are now deleted.
    pub deleted: u64,
}

/// Acknowledge messages: they are deleted, and later copies of them are not delivered again.
#[utoipa::path(
    post,
    path = "/api/v1/inbox/{person}/ack",
    tag = "inbox",
    params(("person" = String, Path, description = "The inbox owner's address (souk1… or hex)")),
    request_body = AckRequest,
    responses(
        (status = 200, description = "Acknowledged", body = AckResponse),
        (status = 400, description = "Malformed ids or too many", body = super::error::ErrorBody),
        (status = 401, description = "No valid session token for this inbox", body = super::error::ErrorBody)
    ),
    security(("bearer" = []))
)]
pub async fn ack(
    State(state): State<SharedState>,
    Path(person): Path<String>,
    headers: HeaderMap,
    request: Result<Json<AckRequest>, JsonRejection>,
) -> Result<Json<AckResponse>, ApiError> {
    let Json(request) = request.map_err(|r| json_rejection(&r))?;
    let person = parse_key(&person, "person")?;
    let token = bearer(&headers)?;
    if request.ids.len() > crate::mailbox::MAX_ACK_IDS {
        return Err(ApiError::bad_request(
            "too_many",
            "at most 1,000 ids per acknowledgement",
        ));
    }
    let ids = request
        .ids
        .iter()
        .map(|id| parse_hex32(id, "every id"))
        .collect::<Result<Vec<_>, _>>()?;
    let deleted = state.mailbox.ack(&person, &token, &ids).await?;
    Ok(Json(AckResponse { deleted }))
}
