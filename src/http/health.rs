//! `GET /healthz` (readiness: may this replica take requests?) and `GET /livez`
//! (liveness: is the process serving HTTP at all?).

use axum::{
    extract::State,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};

use crate::{
    http::{
        error::{RETRY_AFTER_SECONDS, error_response},
        openapi,
    },
    state::AppState,
};

/// 204 when ready to take requests; 503 while starting up, while the store cannot be
/// reached, or while draining at shutdown.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    summary = "Readiness",
    description = "Whether this replica may take requests: for readiness probes and load balancers.",
    responses(openapi::HealthzResponses)
)]
pub async fn healthz(State(state): State<AppState>) -> Response {
    let message = if state.lifecycle.is_draining() {
        "shutting down"
    } else if !state.lifecycle.is_ready() {
        "starting up"
    } else if !state.store.is_ready() {
        "the statistics store cannot be reached"
    } else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message, None);
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from_static(RETRY_AFTER_SECONDS));
    response
}

/// 204 whenever the process serves HTTP, also while draining or while the store is
/// down: a liveness probe must not restart a pod because of a dependency.
#[utoipa::path(
    get,
    path = "/livez",
    tag = "operations",
    operation_id = "livez",
    summary = "Liveness",
    description = "Whether the process serves HTTP at all: for liveness probes, which must not \
                   restart a pod because of a dependency.",
    responses(openapi::LivezResponses)
)]
pub async fn livez() -> StatusCode {
    StatusCode::NO_CONTENT
}
