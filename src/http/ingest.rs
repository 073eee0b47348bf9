//! `POST /data`: checks the media type, reads the (decompressed) body within the limit,
//! decodes it with `ingest::decode` and applies the batch.

use std::error::Error as StdError;

use axum::{
    body::{Body, HttpBody as _},
    extract::State,
    http::{HeaderMap, StatusCode, header},
};

use http_body_util::{BodyExt as _, Limited};

use crate::{http::error::ApiError, ingest, state::AppState};

/// Takes a batch; 204 when every measurement was applied, 4xx with nothing applied otherwise.
/// Records `measurements` and `sensors` on the request span.
pub async fn post_data(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<StatusCode, ApiError> {
    check_content_type(&headers)?;
    let mut body = read_body(body, state.body_limit).await?;
    state.metrics.body_bytes(body.len());
    let batch = ingest::decode(&mut body)?;
    state.store.record_batch(&batch).await?;
    state.metrics.batch_accepted(batch.measurements());
    let span = tracing::Span::current();
    span.record("measurements", batch.measurements());
    span.record("sensors", batch.sensors());
    Ok(StatusCode::NO_CONTENT)
}

/// Accepts `application/json` with any parameters, or no Content-Type at all.
fn check_content_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let text = String::from_utf8_lossy(value.as_bytes());
    let essence = text.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(())
    } else {
        Err(ApiError::UnsupportedMediaType(text.chars().take(100).collect()))
    }
}

/// Collects the body into one owned, mutable buffer (simd-json parses in place), with
/// room for the parser's padding so decoding does not copy it again.
async fn read_body(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let mut body = Limited::new(body, limit);
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
