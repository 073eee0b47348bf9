//! `GET` and `DELETE /statistics/{sensor}`.
//!
//! The GET answer is written by hand into a per-thread buffer that answers share
//! ([`json`]), byte for byte what serde_json writes for [`StatisticsBody`] (tested):
//! no serializer, no `Vec` per answer.

use std::cell::RefCell;

use axum::{
    body::Body,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::Response,
};
use bytes::{BufMut as _, Bytes, BytesMut};
use serde::Serialize;

use crate::{
    domain::{SensorId, Summary, Timestamp},
    http::{error::ApiError, openapi},
    state::AppState,
};

/// The `{sensor}` path segment, percent-decoded (`%2F` is a `/` inside the id).
pub struct SensorPath(pub String);

impl<S: Send + Sync> FromRequestParts<S> for SensorPath {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(s)| Self(s))
            .map_err(|e| ApiError::Path(e.body_text()))
    }
}

/// The answer of `GET /statistics/{sensor}` (schema `Statistics` in the OpenAPI document).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[schema(as = Statistics)]
pub struct StatisticsBody {
    /// The greatest instant among the sensor's measurements (whatever order they arrived
    /// in), in UTC with `+00:00`: no fraction when it is zero, 6 digits for whole
    /// microseconds, 9 otherwise. `null` for an unknown sensor.
    #[schema(required = true, value_type = Option<String>, pattern = r"^([0-9]{4}|[+-][0-9]{4,})-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{6}|\.[0-9]{9})?\+00:00$", example = "2021-11-09T20:38:09+00:00")]
    pub last_measurement: Option<Timestamp>,
    /// How many measurements the sensor has; 0 for an unknown sensor.
    pub count: u64,
    /// The arithmetic mean of their values; `0.0` for an unknown sensor. `null` when the
    /// sum of the values has overflowed a 64-bit float (values near ±1.8e308; the sum is
    /// what the stores keep), until the sensor is deleted.
    #[schema(value_type = Option<f64>)]
    pub avg: f64,
}

/// Answers the sensor's statistics, or the empty form for an unknown sensor.
#[utoipa::path(
    get,
    path = "/statistics/{sensor}",
    tag = "statistics",
    operation_id = "get_statistics",
    summary = "A sensor's statistics",
    description = "Count, mean and latest instant of the sensor's measurements since it was first \
                   seen or last deleted. A reader never sees part of a batch.",
    params(openapi::SensorParam),
    responses(openapi::GetStatisticsResponses)
)]
pub async fn get_statistics(
    State(state): State<AppState>,
    SensorPath(sensor): SensorPath,
) -> Result<Response, ApiError> {
    statistics_of(&state, &sensor, HeaderMap::new()).await
}

/// What [`get_statistics`] answers for the (percent-decoded) sensor id, with the
/// response headers in `headers` (an empty map; the HTTP service passes the request's,
/// cleared, so the answer does not allocate a map of its own).
///
/// # Errors
/// An invalid sensor id, or a store that cannot answer.
pub async fn statistics_of(
    state: &AppState,
    sensor: &str,
    mut headers: HeaderMap,
) -> Result<Response, ApiError> {
    let summary = state.store.get(SensorId::parse(sensor)?).await?;
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = Response::new(Body::from(json(&summary)));
    *response.headers_mut() = headers;
    Ok(response)
}

/// Forgets the sensor; 204 whether or not it was known.
#[utoipa::path(
    delete,
    path = "/statistics/{sensor}",
    tag = "statistics",
    operation_id = "delete_statistics",
    summary = "Forget a sensor",
    description = "Clears the sensor on every replica. Idempotent: 204 for known and unknown \
                   sensors alike.",
    params(openapi::SensorParam),
    responses(openapi::DeleteStatisticsResponses)
)]
pub async fn delete_statistics(
    State(state): State<AppState>,
    SensorPath(sensor): SensorPath,
) -> Result<StatusCode, ApiError> {
    state.store.delete(SensorId::parse(&sensor)?).await?;
    state.metrics.deleted();
    Ok(StatusCode::NO_CONTENT)
}

/// Size of the per-thread output buffer: room for ~150 answers before the next one.
const OUTPUT_BUFFER: usize = 16 * 1024;
/// Longest answer: a timestamp of an out-of-range year with nine fraction digits, the
/// largest count and the longest float, with the keys.
const MAX_ANSWER: usize = 160;

thread_local! {
    static OUTPUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `{"last_measurement":...,"count":...,"avg":...}` as serde_json writes
/// [`StatisticsBody`] (a non-finite mean, which only a sum that overflowed can give, is
/// `null`, as serde_json writes it). The bytes share a per-thread buffer: a new one is
/// allocated only when the current one is full, and the old one is freed when its last
/// answer has been sent.
pub fn json(summary: &Summary) -> Bytes {
    OUTPUT.with_borrow_mut(|out| {
        if out.capacity() < MAX_ANSWER {
            *out = BytesMut::with_capacity(OUTPUT_BUFFER);
        }
        out.put_slice(br#"{"last_measurement":"#);
        match summary.last_measurement {
            // The timestamp's text is digits, `-`, `:`, `T`, `.` and `+`: nothing to escape.
            Some(at) => {
                out.put_u8(b'"');
                out.put_slice(at.text().as_str().as_bytes());
                out.put_u8(b'"');
            }
            None => out.put_slice(b"null"),
        }
        out.put_slice(br#","count":"#);
        out.put_slice(itoa::Buffer::new().format(summary.count).as_bytes());
        out.put_slice(br#","avg":"#);
        // serde_json's own float formatting (shortest round-trip; `null` when not finite).
        let _ = serde_json::to_writer((&mut *out).writer(), &summary.avg());
        out.put_u8(b'}');
        out.split().freeze()
    })
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn serde(summary: &Summary) -> Vec<u8> {
        serde_json::to_vec(&StatisticsBody {
            last_measurement: summary.last_measurement,
            count: summary.count,
            avg: summary.avg(),
        })
        .unwrap()
    }

    #[test]
    fn unknown_and_awkward_sensors_read_as_serde_json_writes_them() {
        let at = |s| Some(Timestamp::parse(s).unwrap());
        for summary in [
            Summary::default(),
            Summary {
                last_measurement: at("2021-11-09T21:38:11Z"),
                count: 4,
                sum: 7.300000000000001,
            },
            Summary {
                last_measurement: at("0000-01-01T00:30:00+01:00"),
                count: u64::MAX,
                sum: f64::MAX,
            },
            Summary {
                last_measurement: at("9999-12-31T23:59:59.123456789-01:00"),
                count: 1,
                sum: f64::INFINITY,
            },
            Summary {
                last_measurement: at("2021-11-09T21:38:11.5Z"),
                count: 3,
                sum: -1e-300,
            },
        ] {
            assert_eq!(json(&summary), serde(&summary), "{summary:?}");
        }
    }

    #[test]
    fn answers_stay_intact_while_the_buffer_is_reused() {
        let summary = |count| Summary {
            last_measurement: None,
            count,
            sum: count as f64,
        };
        let answers: Vec<Bytes> = (0..1000).map(|n| json(&summary(n))).collect();
        for (n, answer) in answers.iter().enumerate() {
            assert_eq!(answer[..], serde(&summary(n as u64))[..]);
        }
    }

    proptest! {
        #[test]
        fn any_summary_reads_as_serde_json_writes_it(
            bits in any::<u64>(), count in any::<u64>(), secs in -62_135_596_800i64..253_402_300_799,
            nanos in 0u32..1_000_000_000, known in any::<bool>(),
        ) {
            let at = chrono::DateTime::from_timestamp(secs, nanos).map(Timestamp::from_datetime);
            let summary = Summary {
                last_measurement: at.filter(|_| known),
                count,
                sum: f64::from_bits(bits),
            };
            prop_assert_eq!(&json(&summary)[..], &serde(&summary)[..]);
        }
    }
}
