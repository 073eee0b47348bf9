//! The HTTP edge: the route table and the middleware stack. Handlers are thin; decoding
//! lives in `ingest`, statistics in `store`. The only axum code besides `app`.

pub mod access;
pub mod error;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod statistics;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
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
    // The timeout is here, not around every route: a body upload is what a slow client can
    // stretch, while the other routes answer from memory at once (and a networked store
    // bounds its own calls). A timer per request is not free on the hot GET path.
    let ingest = post(ingest::post_data)
        .layer::<_, Infallible>(RequestDecompressionLayer::new().no_deflate().no_br())
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(state.body_limit))
        .layer::<_, Infallible>(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ));

    let request_span = |request: &Request| {
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        tracing::info_span!(
            "request",
            method = metrics::method_label(request.method()),
            route = metrics::route_label(request.extensions().get()),
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            measurements = tracing::field::Empty,
            sensors = tracing::field::Empty,
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
        .route("/livez", get(health::livez))
        .route("/metrics", get(metrics::render_metrics))
        // `Router::layer` wraps each route (and the fallback) after routing, so these
        // layers see the `MatchedPath`. Outermost first: the request id is set before the
        // span is made so the span has it.
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
                .layer(middleware::from_fn_with_state(state.clone(), edge)),
        )
        .with_state(state)
}

/// The one middleware of ours around every route: sheds load and checks API keys
/// ([`access::admit`]), counts and times the request, gives framework errors our JSON
/// shape, and while draining asks clients to close the connection after this response
/// (so keep-alive clients reconnect to another replica). One layer rather than several:
/// each `from_fn` layer costs a boxed future per request.
pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let route = metrics::route_label(request.extensions().get());
    let method = metrics::method_label(request.method());
    let in_flight = state.metrics.in_flight();
    let response = match access::admit(&state, route, &mut request) {
        Ok(permit) => {
            let response = next.run(request).await;
            drop(permit);
            response
        }
        Err(refusal) => refusal.into_response(),
    };
    drop(in_flight);
    let mut response = error::jsonify(response, state.body_limit);
    if state.lifecycle.is_draining() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    metrics::record(&state, route, method, start.elapsed(), &response);
    response
}
