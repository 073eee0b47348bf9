//! `GET /healthz`: the readiness answer a load balancer polls.

use axum::{
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};

use crate::{http::error::error_response, state::AppState};

/// 204 when ready to take requests; 503 while starting up or draining at shutdown.
pub async fn healthz(State(state): State<AppState>) -> Response {
    if state.lifecycle.is_ready() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let message = if state.lifecycle.is_draining() {
            "shutting down"
        } else {
            "starting up"
        };
        error_response(StatusCode::SERVICE_UNAVAILABLE, "not_ready", message, None)
    }
}
