//! Whole requests through the router without a socket: `POST /data` (W1 body) and
//! `GET /statistics/{sensor}`, with the production middleware stack and with the bare
//! handlers, so the cost of metrics, tracing, request ids and error mapping shows; and the
//! production stack with API keys configured (`with_middleware_keyed`: every request
//! carries a bearer token that is hashed and looked up), against `with_middleware`
//! (keys off). The tracing subscriber is installed as in production (level info, output
//! discarded).

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{Request, StatusCode},
    middleware,
    routing::{get, post},
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use sensor_stats::{
    access::{self, KeySet, Keyring},
    config::LogFormat,
    http::{self, ingest::post_data, statistics::get_statistics},
    state::AppState,
    store::Store,
    telemetry, workload,
};
use tower::{ServiceBuilder, ServiceExt as _};
use tower_http::{
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};

fn state() -> AppState {
    let state = AppState::new(Store::memory(), Default::default(), 16 << 20);
    state.lifecycle.set_ready();
    state
}

fn bare() -> Router<AppState> {
    Router::new()
        .route("/data", post(post_data))
        .route("/statistics/{sensor}", get(get_statistics))
}

/// The production router with API keys (ten keys, as a small fleet would have), and the
/// token of one that may ingest and read.
fn keyed() -> (Router, String) {
    let mut lines = Vec::new();
    let mut token = String::new();
    for n in 0..10 {
        let key = access::generate(&format!("client-{n}"), &["ingest".into(), "read".into()]).unwrap();
        lines.push(key.line);
        token = key.token;
    }
    let keys = Keyring::from_keys(KeySet::parse(&lines.join("\n")).unwrap());
    let state = state().with_keys(Arc::new(keys), false);
    (
        http::router(state, Duration::from_secs(30)),
        format!("Bearer {token}"),
    )
}

/// The production router, the bare handlers, and the bare handlers with one of
/// production's layers each (the per-layer cost is its time minus `bare_handlers`).
fn routers() -> Vec<(&'static str, Router)> {
    let span = |request: &Request<Body>| {
        tracing::info_span!(
            "request",
            method = %request.method(),
            route = tracing::field::Empty,
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            request_id = "00000000-0000-0000-0000-000000000000",
        )
    };
    vec![
        ("with_middleware", http::router(state(), Duration::from_secs(30))),
        ("bare_handlers", bare().with_state(state())),
        (
            "only_trace_span",
            bare()
                .layer(TraceLayer::new_for_http().make_span_with(span).on_failure(()))
                .with_state(state()),
        ),
        (
            "only_request_id",
            bare()
                .layer(
                    ServiceBuilder::new()
                        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                        .layer(PropagateRequestIdLayer::x_request_id()),
                )
                .with_state(state()),
        ),
        ("only_edge_metrics_errors", {
            let s = state();
            bare()
                .layer(middleware::from_fn_with_state(s.clone(), http::edge))
                .with_state(s)
        }),
    ]
}

async fn call(router: &Router, request: Request<Body>, want: StatusCode) {
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), want);
    axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .unwrap();
}

fn bench_router(c: &mut Criterion) {
    // Production's subscriber at its default level, writing nowhere: spans cost what they
    // cost in the server.
    telemetry::init_with_writer("info", LogFormat::Text, std::io::sink).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w1 = bytes::Bytes::from(workload::batch(1000, 100, 1));
    let one = bytes::Bytes::from(workload::batch(1, 1, 1));

    let (keyed_router, token) = keyed();
    let mut variants: Vec<(&str, Router, Option<&str>)> =
        routers().into_iter().map(|(v, r)| (v, r, None)).collect();
    variants.insert(1, ("with_middleware_keyed", keyed_router, Some(token.as_str())));

    let mut group = c.benchmark_group("router");
    for (variant, router, auth) in variants {
        let request = |builder: axum::http::request::Builder| match auth {
            Some(auth) => builder.header("authorization", auth),
            None => builder,
        };
        group.throughput(Throughput::Elements(1000));
        group.bench_function(BenchmarkId::new("post_w1_batch", variant), |b| {
            b.to_async(&rt).iter(|| {
                let req = request(Request::post("/data"))
                    .body(Body::from(w1.clone()))
                    .unwrap();
                call(&router, req, StatusCode::NO_CONTENT)
            })
        });
        group.throughput(Throughput::Elements(1));
        group.bench_function(BenchmarkId::new("post_one_measurement", variant), |b| {
            b.to_async(&rt).iter(|| {
                let req = request(Request::post("/data"))
                    .body(Body::from(one.clone()))
                    .unwrap();
                call(&router, req, StatusCode::NO_CONTENT)
            })
        });
        group.bench_function(BenchmarkId::new("get_statistics", variant), |b| {
            b.to_async(&rt).iter(|| {
                let req = request(Request::get("/statistics/sensor-000000000"))
                    .body(Body::empty())
                    .unwrap();
                call(&router, req, StatusCode::OK)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
