//! `GET /metrics`, and the recording of every request (count, latency, rejections) with
//! bounded labels: the matched route template or `unmatched`, never the raw path.

use std::time::Duration;

use axum::{
    extract::State,
    http::{HeaderValue, Method, Response, header},
    response::IntoResponse,
};
use tracing::Span;

use crate::{
    http::{error::Rejection, service::SPAN_TARGET},
    metrics::{MethodLabel, RouteLabel},
    state::AppState,
};

/// Renders the Prometheus text exposition.
pub async fn render_metrics(State(state): State<AppState>) -> axum::response::Response {
    let text = state.metrics.render(state.store.sensors_tracked().await);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
        .into_response()
}

/// Records one finished request: count, latency, the span's status and latency fields
/// and per-request line (when the span is on, at debug level), and for a rejection its
/// counter and a sampled log line that carries the request's fields itself.
pub fn record<B>(
    state: &AppState,
    route: RouteLabel,
    method: MethodLabel,
    elapsed: Duration,
    response: &Response<B>,
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
        tracing::debug!(target: SPAN_TARGET, parent: span, "request finished");
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
                method = method.as_str(),
                route = route.as_str(),
                request_id = request_id.to_str().unwrap_or(""),
                "request rejected"
            );
        }
    }
}

/// The route template `path` matches in [`super::router`], as a label value;
/// `unmatched` when it matches none (the router answers 404). Worked out from the path
/// before routing, so the edge does not wait for axum's `MatchedPath`; a test checks it
/// against axum's matching.
pub fn route_label(path: &str) -> RouteLabel {
    match path {
        "/data" => RouteLabel::Data,
        "/healthz" => RouteLabel::Healthz,
        "/livez" => RouteLabel::Livez,
        "/metrics" => RouteLabel::Metrics,
        _ => match path.strip_prefix("/statistics/") {
            Some(sensor) if !sensor.is_empty() && !sensor.contains('/') => RouteLabel::Statistics,
            _ => RouteLabel::Unmatched,
        },
    }
}

/// The method as a label value; `other` for methods we do not serve.
pub fn method_label(method: &Method) -> MethodLabel {
    match *method {
        Method::GET => MethodLabel::Get,
        Method::POST => MethodLabel::Post,
        Method::DELETE => MethodLabel::Delete,
        Method::HEAD => MethodLabel::Head,
        Method::PUT => MethodLabel::Put,
        Method::PATCH => MethodLabel::Patch,
        Method::OPTIONS => MethodLabel::Options,
        _ => MethodLabel::Other,
    }
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, extract::MatchedPath, http::Request, middleware};
    use tower::ServiceExt as _;

    use super::*;
    use crate::store::Store;

    /// The label worked out from the path is the template axum matched, for every route
    /// and for paths that look close to one.
    #[tokio::test]
    async fn route_labels_match_axums_routing() {
        let state = AppState::new(Store::memory(), Default::default(), 1024);
        let router = super::super::router(state).layer(middleware::map_response(
            |matched: Option<MatchedPath>, mut response: axum::response::Response| async move {
                let label = matched.map_or("unmatched".to_owned(), |m| m.as_str().to_owned());
                response
                    .headers_mut()
                    .insert("x-matched", HeaderValue::from_str(&label).unwrap());
                response
            },
        ));
        for path in [
            "/",
            "/data",
            "/data/",
            "/datax",
            "//data",
            "/healthz",
            "/healthz/",
            "/livez",
            "/metrics",
            "/metrics/x",
            "/statistics",
            "/statistics/",
            "/statistics/a",
            "/statistics/a%2Fb",
            "/statistics/a/",
            "/statistics/a/b",
            "/statistics//",
            "/statistics/%20",
            "/Statistics/a",
            "/nope",
        ] {
            for method in ["GET", "POST", "DELETE", "PUT"] {
                let request = Request::builder()
                    .method(method)
                    .uri(path)
                    .body(Body::empty())
                    .unwrap();
                let response = router.clone().oneshot(request).await.unwrap();
                let matched = response.headers()["x-matched"].to_str().unwrap().to_owned();
                assert_eq!(route_label(path).as_str(), matched, "{method} {path}");
            }
        }
    }
}
