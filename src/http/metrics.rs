//! `GET /metrics`, and the recording of every request (count, latency, rejections) with
//! bounded labels: the matched route template or `unmatched`, never the raw path.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, State},
    http::{Method, header},
    response::{IntoResponse, Response},
};

use crate::{http::error::Rejection, state::AppState};

/// Renders the Prometheus text exposition.
pub async fn render_metrics(State(state): State<AppState>) -> Response {
    if let Some(keys) = &state.keys {
        state.metrics.api_keys(keys.len());
    }
    let text = state.metrics.render(state.store.sensors_tracked().await);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Records one finished request: count, latency, the span's status and latency fields,
/// and for a rejection its counter and a sampled log line.
pub fn record(
    state: &AppState,
    route: &'static str,
    method: &'static str,
    elapsed: Duration,
    response: &Response,
) {
    let status = response.status();
    state
        .metrics
        .http_request(route, method, status.as_u16(), elapsed);
    let span = tracing::Span::current();
    span.record("status", status.as_u16());
    span.record("latency_us", elapsed.as_micros() as u64);
    if let Some(rejection) = response.extensions().get::<Rejection>()
        && status.is_client_error()
    {
        state.metrics.rejected(rejection.reason);
        if let Some(suppressed) = state.rejection_log.admit() {
            tracing::info!(
                status = status.as_u16(),
                reason = rejection.reason,
                error = %rejection.message,
                suppressed_since_last = suppressed,
                "request rejected"
            );
        }
    }
}

/// The matched route template as a `'static` label value; `unmatched` without a match.
pub fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    match matched.map(MatchedPath::as_str) {
        None => "unmatched",
        Some("/data") => "/data",
        Some("/statistics/{sensor}") => "/statistics/{sensor}",
        Some("/healthz") => "/healthz",
        Some("/livez") => "/livez",
        Some("/metrics") => "/metrics",
        Some(_) => "other",
    }
}

/// The method as a `'static` label value; `other` for methods we do not serve.
pub fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::OPTIONS => "OPTIONS",
        _ => "other",
    }
}
