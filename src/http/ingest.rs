//! `POST /data`: checks the media type and the `Idempotency-Key`, reads the
//! (decompressed) body within the limit, decodes it with `ingest::decode` and applies the
//! batch, with the key's record in the same store step.

use std::{borrow::Cow, error::Error as StdError};

use axum::{
    Extension,
    body::{Body, HttpBody},
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Limited};

use crate::{
    domain::{Fingerprint, IdempotencyKey},
    http::{access::Caller, error::ApiError, openapi},
    ingest,
    state::AppState,
    store::{Claim, ClaimToken, Completion, Store, StoreError},
};

/// The request header that makes a retry count once.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks an answer replayed from an idempotency record.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Takes a batch; 204 when every measurement was applied, 4xx with nothing applied otherwise.
/// Records `measurements` and `sensors` on the request span. With API keys, an
/// Idempotency-Key belongs to the key that sent it (`"<key name> <idempotency key>"`: a
/// space is in neither, so two clients' keys never meet). The request body's schema and
/// examples are added by `openapi::finish_paths` (the body is decoded by hand).
#[utoipa::path(
    post,
    path = "/data",
    tag = "ingest",
    operation_id = "post_data",
    summary = "Ingest a batch of measurements",
    description = "Takes a JSON array of measurements of any number of sensors, all or nothing: 204 \
                   when every measurement was applied, an error with the index of the first invalid \
                   one and nothing applied otherwise.",
    params(openapi::IdempotencyKeyHeader),
    responses(openapi::PostDataResponses)
)]
pub async fn post_data(
    State(state): State<AppState>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    ingest(&state, caller.as_ref().map(|Extension(c)| c), &headers, body).await
}

/// What [`post_data`] does, on any body (the HTTP service calls it with hyper's body
/// for an uncompressed batch, the router with the decompressed one).
///
/// # Errors
/// The [`ApiError`] to answer with; nothing was applied unless it says so.
pub async fn ingest<B>(
    state: &AppState,
    caller: Option<&Caller>,
    headers: &HeaderMap,
    body: B,
) -> Result<Response, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    check_content_type(headers.get(header::CONTENT_TYPE).map(HeaderValue::as_bytes))?;
    let Some(raw_key) = headers.get(&IDEMPOTENCY_KEY) else {
        let mut body = read_body(body, state.body_limit).await?;
        apply(state, &mut body, None).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    // Rare: boxed, so the common request's future does not carry this one's size.
    Box::pin(idempotent(state, caller, raw_key, body)).await
}

/// [`ingest`] of a request without an `Idempotency-Key`, whose Content-Type has passed
/// [`check_content_type`] and whose whole, uncompressed body is in `body` (the HTTP/1
/// loop of [`super::h1`] reads it straight from the socket).
///
/// # Errors
/// The [`ApiError`] to answer with; nothing was applied.
pub async fn ingest_plain(state: &AppState, body: &mut Vec<u8>) -> Result<(), ApiError> {
    apply(state, body, None).await
}

async fn idempotent<B>(
    state: &AppState,
    caller: Option<&Caller>,
    raw_key: &HeaderValue,
    body: B,
) -> Result<Response, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let key = IdempotencyKey::parse(raw_key.as_bytes())?.as_str();
    let key = match caller {
        Some(Caller(api_key)) => Cow::Owned(format!("{} {key}", api_key.name)),
        None => Cow::Borrowed(key),
    };
    let key = key.as_ref();
    match state.store.claim(key).await? {
        Claim::InProgress => Err(ApiError::IdempotencyInProgress),
        Claim::Completed(fingerprint) => {
            let body = read_body(body, state.body_limit).await?;
            if Fingerprint::of(&body) != fingerprint {
                return Err(ApiError::IdempotencyReused);
            }
            state.metrics.idempotent_replay();
            let mut response = StatusCode::NO_CONTENT.into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
            Ok(response)
        }
        Claim::Claimed(token) => {
            // Released unless the batch is applied, also when the client goes away.
            let claim = Held {
                store: state.store.clone(),
                key: key.to_owned(),
                token,
                applied: false,
            };
            let result = claimed(state, body, claim).await;
            result.map(|()| StatusCode::NO_CONTENT.into_response())
        }
    }
}

async fn claimed<B>(state: &AppState, body: B, mut claim: Held) -> Result<(), ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut body = read_body(body, state.body_limit).await?;
    let completion = Completion {
        key: &claim.key,
        token: &claim.token,
        fingerprint: Fingerprint::of(&body),
    };
    apply(state, &mut body, Some(completion)).await?;
    claim.applied = true;
    Ok(())
}

/// Decodes `body` and applies it (with `completion`'s record), counting what was taken.
/// Bodies from this size up (about half a millisecond of decoding) are decoded with the
/// runtime worker handed over to another thread, so the requests queued on it are not
/// held up by one big batch.
pub const DECODE_OFF_WORKER_BYTES: usize = 512 * 1024;

async fn apply(
    state: &AppState,
    body: &mut Vec<u8>,
    completion: Option<Completion<'_>>,
) -> Result<(), ApiError> {
    state.metrics.body_bytes(body.len());
    let batch = if body.len() >= DECODE_OFF_WORKER_BYTES && on_multi_thread_runtime() {
        // The worker's queue moves to another thread while this one decodes (tokio's
        // `block_in_place`); below the threshold that hand-over costs more than it saves.
        tokio::task::block_in_place(|| ingest::decode(body))?
    } else {
        ingest::decode(body)?
    };
    state
        .store
        .record_batch(&batch, completion)
        .await
        .inspect_err(|e| {
            if matches!(e, StoreError::SensorCap(_)) {
                state.metrics.sensor_cap_refused();
            }
        })?;
    state.metrics.batch_accepted(batch.measurements());
    let span = tracing::Span::current();
    span.record("measurements", batch.measurements());
    span.record("sensors", batch.sensors());
    Ok(())
}

/// `block_in_place` needs the multi-thread runtime (the server's; tests may run the app
/// on a current-thread one, where big bodies are decoded in place).
fn on_multi_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
}

/// An Idempotency-Key claim held by this request; released on drop unless applied.
struct Held {
    store: Store,
    key: String,
    token: ClaimToken,
    applied: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.applied {
            return;
        }
        let store = self.store.clone();
        let key = std::mem::take(&mut self.key);
        let token = self.token.clone();
        // Drop may run outside a request (a cancelled future); the release is best effort.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { store.release(&key, &token).await });
        }
    }
}

/// Accepts `application/json` with any parameters, or no Content-Type at all.
pub(super) fn check_content_type(value: Option<&[u8]>) -> Result<(), ApiError> {
    let Some(value) = value else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value);
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.chars().take(100).collect()))
    }
}

/// Collects the body into one owned, mutable buffer (simd-json parses in place), with
/// room for the parser's padding so decoding does not copy it again.
async fn read_body<B>(body: B, limit: usize) -> Result<Vec<u8>, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let body = Limited::new(body, limit);
    tokio::pin!(body);
    let hint = usize::try_from(body.size_hint().lower())
        .unwrap_or(limit)
        .min(limit);
    let mut buf = Vec::with_capacity(hint + ingest::PADDING);
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            if is_length_limit(e.as_ref()) {
                ApiError::TooLarge(limit)
            } else {
                ApiError::Body(e.to_string())
            }
        })?;
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
    }
    Ok(buf)
}

/// Whether a body error, however wrapped (decompression wraps in `io::Error`), is a
/// length limit.
fn is_length_limit(mut e: &(dyn StdError + 'static)) -> bool {
    loop {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        let next = match e.downcast_ref::<std::io::Error>() {
            Some(io) => io.get_ref().map(|inner| inner as &(dyn StdError + 'static)),
            None => e.source(),
        };
        match next {
            Some(n) => e = n,
            None => return false,
        }
    }
}
