//! `GET` and `DELETE /statistics/{sensor}`.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
};
use serde::Serialize;

use crate::{
    domain::{SensorId, Timestamp},
    http::error::ApiError,
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

/// Answers the sensor's statistics, or the empty form for an unknown sensor.
pub async fn get_statistics(
    State(state): State<AppState>,
    SensorPath(sensor): SensorPath,
) -> Result<Json<StatisticsBody>, ApiError> {
    let summary = state.store.get(SensorId::parse(&sensor)?).await?;
    Ok(Json(StatisticsBody {
        last_measurement: summary.last_measurement,
        count: summary.count,
        avg: summary.avg(),
    }))
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
