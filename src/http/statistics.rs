//! `GET` and `DELETE /statistics/{sensor}`.

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
};
use serde::Serialize;

use crate::{
    domain::{SensorId, Timestamp},
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
) -> Result<Json<StatisticsBody>, ApiError> {
    let summary = state.store.get(SensorId::parse(&sensor)?).await?;
    Ok(Json(StatisticsBody {
        last_measurement: summary.last_measurement,
        count: summary.count,
        avg: summary.avg(),
    }))
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
