//! `GET` and `DELETE /statistics/{sensor}`.
//!
//! The GET answer is written by hand (itoa, zmij, the timestamp's own formatter) into a
//! per-thread output buffer that the response body then shares, so answering allocates
//! nothing per request; the bytes are the ones serde_json writes for [`StatisticsBody`]
//! (tested).

use std::cell::RefCell;

use axum::{
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Response},
};
use bytes::{BufMut as _, Bytes, BytesMut};
use http_body_util::{Either, Full};
use serde::Serialize;

use crate::{
    domain::{SensorId, Summary, Timestamp},
    http::{error::ApiError, service::HttpResponse},
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

/// The answer of `GET /statistics/{sensor}`.
#[derive(Debug, Serialize)]
pub struct StatisticsBody {
    /// Greatest instant seen, in UTC; `null` for an unknown sensor.
    pub last_measurement: Option<Timestamp>,
    /// Number of measurements.
    pub count: u64,
    /// Mean of the values; `0.0` for an unknown sensor.
    pub avg: f64,
}

/// Answers the sensor's statistics, or the empty form for an unknown sensor. The route
/// of percent-encoded ids; plain ids are answered by [`super::HttpService`] directly.
pub async fn get_statistics(State(state): State<AppState>, SensorPath(sensor): SensorPath) -> Response {
    match answer(&state, &sensor).await {
        Ok(summary) => (
            [(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            json(&summary),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Forgets the sensor; 204 whether or not it was known.
pub async fn delete_statistics(
    State(state): State<AppState>,
    SensorPath(sensor): SensorPath,
) -> Result<StatusCode, ApiError> {
    state.store.delete(SensorId::parse(&sensor)?).await?;
    state.metrics.deleted();
    Ok(StatusCode::NO_CONTENT)
}

/// The statistics of `sensor` (the empty summary for an unknown sensor).
pub(crate) async fn answer(state: &AppState, sensor: &str) -> Result<Summary, ApiError> {
    Ok(state.store.get(SensorId::parse(sensor)?).await?)
}

/// [`answer`] without waiting, when the store can answer at once (memory); `None` when it
/// has to be asked over the network.
pub(crate) fn answer_now(state: &AppState, sensor: &str) -> Option<Result<Summary, ApiError>> {
    match SensorId::parse(sensor) {
        Ok(id) => state.store.get_now(id).map(Ok),
        Err(e) => Some(Err(e.into())),
    }
}

/// The 200 answer for `summary`, in `headers` (an empty, recycled map).
pub(crate) fn response(summary: &Summary, mut headers: HeaderMap) -> HttpResponse {
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    let mut response = HttpResponse::new(Either::Left(Full::new(json(summary))));
    *response.headers_mut() = headers;
    response
}

/// Size of the per-thread output buffer: room for ~130 answers before the next one.
const OUTPUT_BUFFER: usize = 16 * 1024;
/// Longest answer: a chrono-formatted out-of-range year with nine fraction digits, the
/// largest count and the longest float.
const MAX_ANSWER: usize = 160;

thread_local! {
    static OUTPUT: RefCell<BytesMut> = RefCell::new(BytesMut::new());
}

/// `{"last_measurement":...,"count":...,"avg":...}` as serde_json writes
/// [`StatisticsBody`] (a non-finite mean, which only a sum that overflowed can give, is
/// `null` as in serde_json). The bytes share a per-thread buffer: a new one is allocated
/// only when the current one is full (the old one is freed when its last answer is sent).
pub fn json(summary: &Summary) -> Bytes {
    OUTPUT.with_borrow_mut(|out| {
        if out.capacity() < MAX_ANSWER {
            *out = BytesMut::with_capacity(OUTPUT_BUFFER);
        }
        out.put_slice(br#"{"last_measurement":"#);
        match summary.last_measurement {
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
        let avg = summary.avg();
        if avg.is_finite() {
            out.put_slice(zmij::Buffer::new().format_finite(avg).as_bytes());
        } else {
            out.put_slice(b"null");
        }
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
