//! The REST error type. Every error body is `{"error": {"code": "...", "message": "..."}}` with a
//! stable `code`; internal causes are logged, never sent. Handlers return
//! `Result<_, ApiError>`; lower layers' errors (`StoreError`, `IngestError`, `SearchError`)
//! convert into it here and nowhere else.

use std::sync::Arc;

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use souk_protocol::ObjectId;

use crate::ingest::IngestError;
use crate::mailbox::MailboxError;
use crate::search::SearchError;
use crate::store::StoreError;

/// An error as the API reports it.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
    /// For `stale`: the object id (hex) of the version that stays current.
    pub current: Option<String>,
}

/// The error body.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// Code and message of an error.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    /// Stable machine-readable code, for example `invalid_parameter` or `bad_signature`.
    pub code: String,
    /// What went wrong, for people.
    pub message: String,
    /// Only with `stale` (409): the object id (hex) of the stored version that stays current, a
    /// newer version or the withdrawal of the same object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
}

impl ApiError {
    /// An error with this status, code and message.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            current: None,
        }
    }

    /// 409 `stale`: `id` is older than the stored version `current` (or the object was
    /// withdrawn); the body names `current` in a field of its own, not only in the message.
    pub fn stale(id: &ObjectId, current: &ObjectId) -> Self {
        Self {
            current: Some(current.to_string()),
            ..Self::new(
                StatusCode::CONFLICT,
                "stale",
                format!(
                    "{id} is older than the stored version {current} (or the listing was withdrawn)"
                ),
            )
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 404 `not_found`.
    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", what)
    }

    /// 500 `internal`; the cause goes to the log only.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error; see the server log",
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.to_string(),
                message: self.message.clone(),
                current: self.current.clone(),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        // For the layers outside the handlers: `/ob/` answers errors in its own shape.
        response.extensions_mut().insert(self);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        if error.is_storage_full() {
            tracing::error!(%error, "storage full: refusing writes, serving reads");
            return Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "the server cannot store anything right now (storage full); reads still work",
            );
        }
        match &error {
            StoreError::Database(
                sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed,
            ) => {
                tracing::error!(%error, "database unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_unavailable",
                    "the database is unavailable; try again",
                )
            }
            _ => Self::internal(&error),
        }
    }
}

impl From<Arc<IngestError>> for ApiError {
    fn from(error: Arc<IngestError>) -> Self {
        match &*error {
            IngestError::Store(inner) if inner.is_storage_full() => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_full",
                "the server cannot store anything right now (storage full); reads still work",
            ),
            IngestError::ShuttingDown => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the server is shutting down",
            ),
            IngestError::Search(_) => {
                tracing::error!(%error, "ingest stored but not indexed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_indexed",
                    "the envelopes were stored, but the search index could not take them; \
                     they become searchable when the index catches up (at the latest when the \
                     server restarts); publishing them again is safe",
                )
            }
            IngestError::Store(_) => {
                tracing::error!(%error, "ingest failed");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "ingest_failed",
                    "the envelopes could not be stored; nothing was stored; try again",
                )
            }
        }
    }
}

impl From<MailboxError> for ApiError {
    fn from(error: MailboxError) -> Self {
        let error = match error {
            MailboxError::Store(inner) => return inner.into(),
            other => other,
        };
        let status = match &error {
            MailboxError::Store(_) => StatusCode::INTERNAL_SERVER_ERROR,
            MailboxError::Message(souk_protocol::MessageError::TooLarge { .. }) => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            MailboxError::Message(_) | MailboxError::BadRequest(_) => StatusCode::BAD_REQUEST,
            MailboxError::Full { .. } => StatusCode::INSUFFICIENT_STORAGE,
            MailboxError::BadChallenge | MailboxError::BadAnswer | MailboxError::Unauthorized => {
                StatusCode::UNAUTHORIZED
            }
            MailboxError::Busy => StatusCode::SERVICE_UNAVAILABLE,
        };
        Self::new(status, error.code(), error.to_string())
    }
}

impl From<SearchError> for ApiError {
    fn from(error: SearchError) -> Self {
        Self::internal(&error)
    }
}
