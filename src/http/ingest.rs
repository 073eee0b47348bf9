//! `POST /data`: checks the media type and the `Idempotency-Key`, reads the
//! (decompressed) body within the limit, decodes it with `ingest::decode` and applies the
//! batch, with the key's record in the same store step, all within the request timeout.
//!
//! Uncompressed bodies come straight from [`super::HttpService`]; compressed ones through
//! the axum route, which adds the decompression layer. Both run [`ingest`].

use std::{
    error::Error as StdError,
    future::{Future, poll_fn},
    pin::pin,
    task::Poll,
    time::Instant,
};

use axum::{
    body::{Body, HttpBody},
    extract::State,
    http::{HeaderMap, HeaderName, HeaderValue, header},
    response::{IntoResponse as _, Response},
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Either, Limited};
use tokio::runtime::{Handle, RuntimeFlavor};

use crate::{
    domain::{Batch, Fingerprint, IdempotencyKey},
    http::{
        error::ApiError,
        service::{self, HttpResponse},
    },
    ingest::{self, DecodeError},
    state::AppState,
    store::{Claim, ClaimToken, Completion, Store},
};

/// The request header that makes a retry count once.
pub static IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");
/// The response header that marks an answer replayed from an idempotency record.
pub static IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Bodies from this size on are decoded off the runtime's worker (about 1.5 ms of
/// decoding and up): a 100k-measurement body takes tens of milliseconds, during which
/// the other connections of that worker would wait.
pub const OFF_WORKER_BYTES: usize = 512 * 1024;

type BoxError = Box<dyn StdError + Send + Sync>;

/// What a successful `POST /data` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingested {
    /// The batch was applied.
    Applied,
    /// A retry answered from its Idempotency-Key record, not applied again.
    Replayed,
}

/// Takes a (compressed) batch; 204 when every measurement was applied, 4xx with nothing
/// applied otherwise.
pub async fn post_data(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    let outcome = ingest(&state, &headers, body, Instant::now()).await;
    respond(outcome, HeaderMap::new()).map(Body::new)
}

/// The answer to [`ingest`]'s outcome: 204 (in `headers`, an empty recycled map), or the
/// error.
pub(crate) fn respond(outcome: Result<Ingested, ApiError>, headers: HeaderMap) -> HttpResponse {
    match outcome {
        Ok(ingested) => {
            let mut response = service::no_content(headers);
            if ingested == Ingested::Replayed {
                response
                    .headers_mut()
                    .insert(IDEMPOTENT_REPLAYED.clone(), HeaderValue::from_static("true"));
            }
            response
        }
        Err(e) => e.into_response().map(Either::Right),
    }
}

/// Takes a batch within the request timeout counted from `started`. Records
/// `measurements` and `sensors` on the request span when there is one.
///
/// The timer is armed only when the request does not finish on its first poll: a small
/// body that came with the headers, applied to the in-memory store, never touches the
/// timer wheel.
///
/// # Errors
/// [`ApiError`] for a rejected batch (nothing applied), a failed store, or the timeout.
pub async fn ingest<B>(
    state: &AppState,
    headers: &HeaderMap,
    body: B,
    started: Instant,
) -> Result<Ingested, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // Pinned here rather than in a helper taking the future as an argument: an `async fn`
    // keeps its arguments for its whole life, so a helper would hold the future twice.
    let future = untimed(state, headers, body);
    let mut future = pin!(future);
    if let Poll::Ready(outcome) = poll_fn(|cx| Poll::Ready(future.as_mut().poll(cx))).await {
        return outcome;
    }
    // Boxed: the timer is for the few requests that wait, it need not sit in every one.
    let deadline = started + state.request_timeout;
    Box::pin(tokio::time::timeout_at(deadline.into(), future))
        .await
        .unwrap_or(Err(ApiError::Timeout))
}

async fn untimed<B>(state: &AppState, headers: &HeaderMap, body: B) -> Result<Ingested, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    check_content_type(headers)?;
    match headers.get(&IDEMPOTENCY_KEY) {
        None => {
            let mut body = read_body(body, state.body_limit).await?;
            apply(state, &mut body, None).await?;
            Ok(Ingested::Applied)
        }
        // Boxed: its claim and release keep the common request's future small.
        Some(raw_key) => Box::pin(with_key(state, raw_key, body)).await,
    }
}

/// A batch with an `Idempotency-Key`: claimed, then applied with its record, or
/// answered from the record of an earlier success.
async fn with_key<B>(state: &AppState, raw_key: &HeaderValue, body: B) -> Result<Ingested, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let key = IdempotencyKey::parse(raw_key.as_bytes())?.as_str();
    match state.store.claim(key).await? {
        Claim::InProgress => Err(ApiError::IdempotencyInProgress),
        Claim::Completed(fingerprint) => {
            let body = read_body(body, state.body_limit).await?;
            if Fingerprint::of(&body) != fingerprint {
                return Err(ApiError::IdempotencyReused);
            }
            state.metrics.idempotent_replay();
            Ok(Ingested::Replayed)
        }
        Claim::Claimed(token) => {
            // Released unless the batch is applied, also when the client goes away.
            let claim = Held {
                store: state.store.clone(),
                key: key.to_owned(),
                token,
                applied: false,
            };
            claimed(state, body, claim).await?;
            Ok(Ingested::Applied)
        }
    }
}

async fn claimed<B>(state: &AppState, body: B, mut claim: Held) -> Result<(), ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
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
async fn apply(
    state: &AppState,
    body: &mut Vec<u8>,
    completion: Option<Completion<'_>>,
) -> Result<(), ApiError> {
    state.metrics.body_bytes(body.len());
    let batch = decode(body)?;
    state.store.record_batch(&batch, completion).await?;
    state.metrics.batch_accepted(batch.measurements());
    if service::request_spans_on() {
        let span = tracing::Span::current();
        span.record("measurements", batch.measurements());
        span.record("sensors", batch.sensors());
    }
    Ok(())
}

/// Decodes `body`; a large one on this thread taken out of the runtime's workers
/// (`block_in_place`: the worker's other tasks move to a fresh worker meanwhile), so the
/// connections it serves are not stalled. Inline on a current-thread runtime.
fn decode(body: &mut Vec<u8>) -> Result<Batch<'_>, DecodeError> {
    let multi_thread = Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::MultiThread);
    if body.len() >= OFF_WORKER_BYTES && multi_thread {
        tokio::task::block_in_place(|| ingest::decode(body))
    } else {
        ingest::decode(body)
    }
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
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let bytes = value.as_bytes();
    let essence = bytes
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if essence.eq_ignore_ascii_case(b"application/json") {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(bytes);
        Err(ApiError::UnsupportedMediaType(text.chars().take(100).collect()))
    }
}

/// Collects the body into one owned, mutable buffer (simd-json parses in place), with
/// room for the parser's padding so decoding does not copy it again.
async fn read_body<B>(body: B, limit: usize) -> Result<Vec<u8>, ApiError>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    // A declared length over the limit is refused before anything is read.
    if body.size_hint().lower() > limit as u64 {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = pin!(Limited::new(body, limit));
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
