//! `GET /metrics`, and the recording of every request (count, latency, rejections) with
//! bounded labels: the matched route template or `unmatched`, never the raw path.

use std::time::Duration;

use axum::{
    extract::{MatchedPath, State},
    http::{HeaderValue, Method, header},
    response::{IntoResponse, Response},
};
use tracing::Span;

use crate::{
    http::{SPAN_TARGET, error::Rejection},
    state::AppState,
};

/// Renders the Prometheus text exposition.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "render_metrics",
    summary = "Prometheus metrics",
    description = "This replica's counters, gauges and histograms; no label holds a sensor id.",
    responses(crate::http::openapi::MetricsResponses)
)]
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

/// Records one finished request: count, latency, and when the request span is on (debug
/// level) its status and latency fields and the per-request line; for a rejection, its
/// counter and a sampled log line that carries the request's route and id itself.
pub fn record(
    state: &AppState,
    route: &'static str,
    method: &'static str,
    elapsed: Duration,
    response: &Response,
    request_id: &HeaderValue,
    span: &Span,
) {
    let status = response.status();
    state
        .metrics
        .http_request(route, method, status.as_u16(), elapsed);
    if !span.is_disabled() {
        span.record("status", status.as_u16());
        span.record("latency_us", elapsed.as_micros() as u64);
        tracing::debug!(target: SPAN_TARGET, parent: span, "finished processing request");
    }
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
                method,
                route,
                request_id = request_id.to_str().unwrap_or(""),
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
        Some("/openapi.json") => "/openapi.json",
        Some("/docs") => "/docs",
        Some("/docs/{file}") => "/docs/{file}",
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
