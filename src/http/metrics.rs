//! `GET /metrics` and the middleware that measures every request (count, latency,
//! in-flight, rejections) with bounded labels: the matched route template or
//! `unmatched`, never the raw path.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::{Method, header},
    middleware::Next,
    response::{IntoResponse, Response},
};

use crate::{http::error::Rejection, state::AppState};

/// Renders the Prometheus text exposition.
pub async fn render_metrics(State(state): State<AppState>) -> Response {
    let text = state.metrics.render(state.store.sensors_tracked());
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// The route template a request matched, as a `'static` label value.
#[derive(Debug, Clone, Copy)]
pub struct RouteLabel(pub &'static str);

/// Runs inside routing (as a `route_layer`): copies the matched route onto the response
/// for [`track_http`], and into the request's span.
pub async fn tag_route(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |p| route_label(p.as_str()));
    tracing::Span::current().record("route", route);
    let mut response = next.run(request).await;
    response.extensions_mut().insert(RouteLabel(route));
    response
}

/// Outermost measuring layer: counts and times every request, routed or not.
pub async fn track_http(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = method_label(request.method());
    state.metrics.in_flight(1.0);
    let response = next.run(request).await;
    state.metrics.in_flight(-1.0);
    let route = response
        .extensions()
        .get::<RouteLabel>()
        .map_or("unmatched", |r| r.0);
    let status = response.status();
    let elapsed = start.elapsed();
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
    response
}

fn route_label(matched: &str) -> &'static str {
    match matched {
        "/data" => "/data",
        "/statistics/{sensor}" => "/statistics/{sensor}",
        "/healthz" => "/healthz",
        "/metrics" => "/metrics",
        _ => "other",
    }
}

fn method_label(method: &Method) -> &'static str {
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
