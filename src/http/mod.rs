//! The HTTP edge: the route table, the request path every request takes
//! ([`HttpService`]: request id, metrics, span, draining, the error shape) and the
//! handlers. Handlers are thin; decoding lives in `ingest`, statistics in `store`. The
//! only axum code besides `app`.

pub mod error;
pub mod health;
pub mod ingest;
pub mod metrics;
pub mod request_id;
pub mod service;
pub mod statistics;

use std::convert::Infallible;

use axum::{
    Router,
    routing::{get, post},
};
pub use service::{Activity, HttpResponse, HttpService, ResponseBody};
use tower_http::{decompression::RequestDecompressionLayer, limit::RequestBodyLimitLayer};

use crate::state::AppState;

/// Every route of the contract, as axum handlers, without the edge: [`HttpService`] puts
/// the edge around it and answers the two hot routes itself when it can (an uncompressed
/// `POST /data`, a `GET` of a plain sensor id), so this router sees compressed bodies,
/// percent-encoded ids, `DELETE`, `/healthz`, `/livez`, `/metrics` and unknown routes.
pub fn router(state: AppState) -> Router {
    // The wire limit sits outside decompression and `ingest` applies the same limit to
    // the decoded bytes, so neither a large upload nor a zstd/gzip bomb gets through. The
    // request timeout is `ingest`'s own: a timer only when the request has to wait.
    let ingest = post(ingest::post_data)
        .layer::<_, Infallible>(RequestDecompressionLayer::new().no_deflate().no_br())
        .layer::<_, Infallible>(RequestBodyLimitLayer::new(state.body_limit));

    Router::new()
        .route("/data", ingest)
        .route(
            "/statistics/{sensor}",
            get(statistics::get_statistics).delete(statistics::delete_statistics),
        )
        .route("/healthz", get(health::healthz))
        .route("/livez", get(health::livez))
        .route("/metrics", get(metrics::render_metrics))
        .with_state(state)
}
