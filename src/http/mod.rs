//! The HTTP edge: the route table and the middleware stack. Handlers are thin; decoding
//! lives in `ingest`, statistics in `store`. The only axum code besides `app`.

pub mod error;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod statistics;

use std::{convert::Infallible, time::Duration};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::Response,
    routing::{get, post},
};
use tower::ServiceBuilder;
use tower_http::{
    decompression::RequestDecompressionLayer,
    limit::RequestBodyLimitLayer,
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    timeout::TimeoutLayer,
    trace::{DefaultOnResponse, TraceLayer},
};
use tracing::Level;

use crate::state::AppState;

/// The whole service: every route of the contract behind the middleware stack.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    // The wire limit sits outside decompression and `post_data` applies the same limit
    // to the decoded bytes, so neither a large upload nor a zstd/gzip bomb gets through.
    let ingest = post(ingest::post_data)
        .layer::<_, Infallible>(RequestDecompressionLayer::new().no_deflate().no_br())
        .layer(RequestBodyLimitLayer::new(state.body_limit));

    let request_span = |request: &Request| {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            request_id,
        )
    };

    Router::new()
        .route("/data", ingest)
        .route(
            "/statistics/{sensor}",
            get(statistics::get_statistics).delete(statistics::delete_statistics),
        )
        .route("/healthz", get(health::healthz))
        .route("/metrics", get(metrics::render_metrics))
        .route_layer(middleware::from_fn(metrics::tag_route))
        // Outermost first. Request ids are set before the span is made so the span has one;
        // `json_errors` sits inside the metrics layer so rejections it marks are counted.
        .layer(
            ServiceBuilder::new()
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(
                    TraceLayer::new_for_http()
                        .make_span_with(request_span)
                        .on_response(
                            DefaultOnResponse::new()
                                .level(Level::DEBUG)
                                .latency_unit(tower_http::LatencyUnit::Micros),
                        )
                        // Server errors are logged once, where they are mapped.
                        .on_failure(()),
                )
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(middleware::from_fn_with_state(state.clone(), metrics::track_http))
                .layer(middleware::from_fn_with_state(state.clone(), close_when_draining))
                .layer(middleware::from_fn_with_state(
                    state.body_limit,
                    error::json_errors,
                ))
                .layer(TimeoutLayer::with_status_code(
                    StatusCode::REQUEST_TIMEOUT,
                    request_timeout,
                )),
        )
        .with_state(state)
}

/// While draining, asks clients to close the connection after this response, so
/// keep-alive clients reconnect to another replica.
async fn close_when_draining(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    if state.lifecycle.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}
