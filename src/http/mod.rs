//! The HTTP edge: the route table and the middleware stack. Handlers are thin; decoding
//! lives in `ingest`, statistics in `store`. The only axum code besides `app`.
//!
//! Routes are registered through `utoipa_axum::routes!`, which takes each handler's
//! `#[utoipa::path]` description along: the OpenAPI document (`openapi`) lists exactly
//! the routes served. Connections start in the HTTP/1 loop of [`h1`], which answers the
//! two hot requests (`GET /statistics/{sensor}`, `POST /data`) straight from the socket
//! and hands the connection to hyper at the first other request; hyper serves it with
//! [`service::HttpService`], which answers the same two requests with the same edge
//! (`Edge`) and handler code, without the router, and passes every other request to it.

pub mod access;
pub mod docs;
pub mod error;
pub mod h1;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod openapi;
pub mod request_id;
pub mod service;
pub mod statistics;
pub mod timeout;

use std::{
    convert::Infallible,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, Method, header},
    middleware::{self, Next},
    response::{IntoResponse as _, Response},
    routing::MethodRouter,
};
use tower_http::{decompression::RequestDecompressionLayer, limit::RequestBodyLimitLayer};
use tracing::{Instrument as _, Span};
use utoipa::OpenApi as _;
use utoipa_axum::{
    router::{OpenApiRouter, UtoipaMethodRouterExt as _},
    routes,
};

use crate::{metrics::InFlight, state::AppState};

/// Every route with its OpenAPI description; `ingest_layers` wraps `POST /data` alone.
fn routes(
    ingest_layers: impl FnOnce(MethodRouter<AppState>) -> MethodRouter<AppState>,
) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(openapi::ApiDoc::openapi())
        .routes(routes!(ingest::post_data).map(ingest_layers))
        .routes(routes!(statistics::get_statistics, statistics::delete_statistics))
        .routes(routes!(health::healthz))
        .routes(routes!(health::livez))
        .routes(routes!(metrics::render_metrics))
        .routes(routes!(docs::get_openapi))
        .routes(routes!(docs::get_docs))
        .routes(routes!(docs::get_docs_file))
}

/// The OpenAPI 3.1 document of [`router`], complete.
pub fn openapi_document() -> utoipa::openapi::OpenApi {
    openapi::document(routes(|r| r).into_openapi())
}

/// The whole service: every route of the contract behind the middleware stack.
pub fn router(state: AppState, request_timeout: Duration) -> Router {
    // The wire limit sits outside decompression and `post_data` applies the same limit
    // to the decoded bytes, so neither a large upload nor a zstd/gzip bomb gets through.
    // The timeout is here, not around every route: a body upload is what a slow client can
    // stretch, while the other routes answer from memory at once (and a networked store
    // bounds its own calls). The timer is armed only when a request waits (a small POST
    // whose body came with its headers never does): a timer per request is not free.
    let body_limit = state.body_limit;
    let ingest_layers = move |route: MethodRouter<AppState>| {
        route
            .layer::<_, Infallible>(RequestDecompressionLayer::new().no_deflate().no_br())
            .layer::<_, Infallible>(RequestBodyLimitLayer::new(body_limit))
            .layer::<_, Infallible>(timeout::LazyTimeoutLayer::new(request_timeout))
    };

    let (router, _) = routes(ingest_layers).split_for_parts();
    router
        // `Router::layer` wraps each route (and the fallback) after routing, so the edge
        // sees the `MatchedPath`.
        .layer(middleware::from_fn_with_state(state.clone(), edge))
        .with_state(state)
}

/// `tracing` target of the request span and the per-request line.
pub const SPAN_TARGET: &str = "sensor_stats::request";

/// The one middleware around every route: gives the request its id (the caller's
/// `x-request-id`, or a counter-based one) and, at debug level, its span; sheds load
/// and checks API keys ([`access::admit`]); counts and times the request; gives framework
/// errors our JSON shape; and while draining asks clients to close the connection after
/// this response (so keep-alive clients reconnect to another replica). The hot requests
/// get the same from [`service::HttpService`] without the router.
///
/// One layer rather than several: each layer costs a future (a `from_fn` layer a boxed
/// one) per request.
pub async fn edge(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let route = metrics::route_label(request.extensions().get());
    let edge = Edge::start(&state, route, request.method(), request.headers());
    let admitted = {
        let _entered = edge.span.enter();
        access::admit(&state, route, &mut request)
    };
    let response = match admitted {
        Ok(permit) => {
            let response = if edge.span.is_disabled() {
                next.run(request).await
            } else {
                next.run(request).instrument(edge.span.clone()).await
            };
            drop(permit);
            response
        }
        Err(refusal) => refusal.into_response(),
    };
    edge.finish(&state, response)
}

/// One request at the edge, from its arrival to its answer: counted in flight until
/// finished or dropped (a cancelled request).
///
/// The request span is at debug level, the level of the per-request line: at the default
/// level it does not exist and nothing is formatted for it; the info-level lines of a
/// request (a sampled rejection) carry the request's route and id themselves.
struct Edge {
    start: Instant,
    route: &'static str,
    method: &'static str,
    request_id: HeaderValue,
    span: Span,
    in_flight: InFlight,
}

impl Edge {
    fn start(state: &AppState, route: &'static str, method: &Method, headers: &HeaderMap) -> Self {
        let start = Instant::now();
        Self::begin(
            state,
            start,
            route,
            metrics::method_label(method),
            request_id::of(headers),
        )
    }

    /// [`Edge::start`] of a request that arrived at `start`, with its method label and id.
    fn begin(
        state: &AppState,
        start: Instant,
        route: &'static str,
        method: &'static str,
        request_id: HeaderValue,
    ) -> Self {
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "request",
            method,
            route,
            request_id = request_id.to_str().unwrap_or(""),
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            measurements = tracing::field::Empty,
            sensors = tracing::field::Empty,
        );
        Self {
            start,
            route,
            method,
            request_id,
            span,
            in_flight: state.metrics.in_flight(),
        }
    }

    /// [`Edge::finish`] of a success that the HTTP/1 loop writes itself (only when the
    /// request span is off: with it on, the loop builds the response and calls `finish`);
    /// the request id, for the response.
    fn finish_plain(self, state: &AppState, status: u16) -> HeaderValue {
        debug_assert!(self.span.is_disabled());
        drop(self.in_flight);
        state
            .metrics
            .http_request(self.route, self.method, status, self.start.elapsed());
        self.request_id
    }

    /// The response as sent: JSON errors, `Connection: close` while draining, the
    /// request id; records the metrics and the per-request line.
    fn finish(self, state: &AppState, response: Response) -> Response {
        drop(self.in_flight);
        let mut response = error::jsonify(response, state.body_limit);
        if state.lifecycle.is_draining() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        metrics::record(
            state,
            self.route,
            self.method,
            self.start.elapsed(),
            &response,
            &self.request_id,
            &self.span,
        );
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), self.request_id);
        response
    }
}
