//! `ApiError`: the one error type at the HTTP edge, and the JSON error body
//! `{"error": "...", "index": n|null}` that every 4xx/5xx of ours carries, including the
//! ones produced by axum and tower-http layers ([`jsonify`]).

use axum::{
    Json,
    body::Body,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;

use crate::{
    domain::{IdempotencyKeyError, SensorIdError},
    ingest::DecodeError,
    store::StoreError,
};

/// What `Retry-After` says on a 503: try again in a second.
pub const RETRY_AFTER_SECONDS: &str = "1";

/// Everything a handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body is not a valid batch.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// The sensor id in the path breaks a rule.
    #[error("invalid sensor id in path: {0}")]
    SensorId(#[from] SensorIdError),
    /// The path could not be read as a sensor id (bad percent-encoding).
    #[error("invalid sensor id in path: {0}")]
    Path(String),
    /// Content-Type other than JSON.
    #[error("unsupported Content-Type `{0}`; send `application/json`")]
    UnsupportedMediaType(String),
    /// The body (on the wire or decompressed) is over the limit.
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    /// The body could not be read or decompressed.
    #[error("request body could not be read: {0}")]
    Body(String),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The `Idempotency-Key` header breaks a rule.
    #[error("invalid Idempotency-Key header: {0}")]
    IdempotencyKey(#[from] IdempotencyKeyError),
    /// A request with the same `Idempotency-Key` is still being processed.
    #[error(
        "a request with this Idempotency-Key is still being processed; nothing was applied, \
         retry after it has been answered"
    )]
    IdempotencyInProgress,
    /// `POST /data` took longer than the request timeout (a slow upload, a slow store).
    #[error("request took too long and was cancelled")]
    Timeout,
    /// The `Idempotency-Key` was used before with another body.
    #[error(
        "this Idempotency-Key was already used with a different request body; nothing was \
         applied: use a new key for a new batch"
    )]
    IdempotencyReused,
}

/// Marks a response as a rejection: a bounded reason for the rejection counter and the
/// message sent to the client, for the (sampled) log line.
#[derive(Debug, Clone)]
pub struct Rejection {
    /// Bounded label value, e.g. `malformed_json`.
    pub reason: &'static str,
    /// What the client was told.
    pub message: String,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    index: Option<usize>,
}

/// Builds the JSON error response for `status`.
pub fn error_response(
    status: StatusCode,
    reason: &'static str,
    message: &str,
    index: Option<usize>,
) -> Response {
    let mut response = (
        status,
        Json(ErrorBody {
            error: message,
            index,
        }),
    )
        .into_response();
    response.extensions_mut().insert(Rejection {
        reason,
        message: message.to_owned(),
    });
    response
}

impl ApiError {
    fn status_and_reason(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Decode(e) => (StatusCode::BAD_REQUEST, e.reason()),
            Self::SensorId(_) | Self::Path(_) => (StatusCode::BAD_REQUEST, "invalid_sensor_id"),
            Self::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            Self::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            Self::Body(_) => (StatusCode::BAD_REQUEST, "unreadable_body"),
            Self::Store(StoreError::ClaimLost) | Self::IdempotencyInProgress => {
                (StatusCode::CONFLICT, "idempotency_key_in_use")
            }
            Self::IdempotencyReused | Self::Store(StoreError::KeyReused) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "idempotency_key_reused")
            }
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
            Self::IdempotencyKey(_) => (StatusCode::BAD_REQUEST, "invalid_idempotency_key"),
            Self::Timeout => (StatusCode::REQUEST_TIMEOUT, "timeout"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, reason) = self.status_and_reason();
        let index = match &self {
            Self::Decode(e) => e.index,
            _ => None,
        };
        // Rejections are counted and logged (sampled) by `http::metrics::record`.
        let mut response = error_response(status, reason, &self.to_string(), index);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
        }
        response
    }
}

/// Gives the plain error responses of axum and tower-http (404, 405, 413, 415, ...)
/// our JSON shape, keeping their status and headers. Responses that are already JSON, and
/// successes, pass untouched.
pub fn jsonify(response: Response, body_limit: usize) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(response.headers()) {
        return response;
    }
    let (reason, message) = match status {
        StatusCode::NOT_FOUND => (
            "not_found",
            "no such route; see the README for the API".to_owned(),
        ),
        // axum adds the `Allow` header after this layer has run (the route future sets
        // it), so the message points at the header rather than repeating it.
        StatusCode::METHOD_NOT_ALLOWED => (
            "method_not_allowed",
            "method not allowed on this route; the Allow header lists the allowed ones".to_owned(),
        ),
        StatusCode::PAYLOAD_TOO_LARGE => (
            "too_large",
            format!("request body is larger than the limit of {body_limit} bytes"),
        ),
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            "unsupported_media_type",
            "unsupported Content-Encoding; send gzip, zstd or an uncompressed body".to_owned(),
        ),
        other => (
            "other",
            other.canonical_reason().unwrap_or("error").to_lowercase(),
        ),
    };
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let json = serde_json::to_vec(&ErrorBody {
        error: &message,
        index: None,
    })
    .unwrap_or_default();
    let mut response = Response::from_parts(parts, Body::from(json));
    if status.is_client_error() {
        response.extensions_mut().insert(Rejection { reason, message });
    }
    response
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}
