//! Whole requests without a socket: `POST /data` (W1 body and one measurement) and
//! `GET /statistics/{sensor}`, through the production service (edge and hot routes) and
//! through the axum router alone (the handlers the service falls back to, no edge), so
//! the cost of the edge and of axum's routing shows. The tracing subscriber is installed
//! as in production (level info, output discarded).

#![allow(missing_docs)] // criterion_group! generates undocumented public functions

use axum::{
    body::Body,
    http::{Request, Response, StatusCode},
};
use bytes::Bytes;
use criterion::{
    BenchmarkGroup, BenchmarkId, Criterion, Throughput, criterion_group, criterion_main,
    measurement::WallTime,
};
use http_body_util::BodyExt as _;
use sensor_stats::{
    config::LogFormat,
    http::{self, HttpService},
    state::AppState,
    store::Store,
    telemetry, workload,
};
use tokio::runtime::Runtime;
use tower::{Service, ServiceExt as _};

fn state() -> AppState {
    let state = AppState::new(Store::memory(), Default::default(), 16 << 20);
    state.lifecycle.set_ready();
    state
}

async fn call<S, B>(service: &S, request: Request<Body>, want: StatusCode)
where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: axum::body::HttpBody,
    B::Error: std::fmt::Debug,
{
    let response = service.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), want);
    response.into_body().collect().await.unwrap();
}

fn bench_routes<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    rt: &Runtime,
    variant: &str,
    service: S,
    w1: &Bytes,
    one: &Bytes,
) where
    S: Service<Request<Body>, Response = Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: axum::body::HttpBody,
    B::Error: std::fmt::Debug,
{
    group.throughput(Throughput::Elements(1000));
    group.bench_function(BenchmarkId::new("post_w1_batch", variant), |b| {
        b.to_async(rt).iter(|| {
            let req = Request::post("/data").body(Body::from(w1.clone())).unwrap();
            call(&service, req, StatusCode::NO_CONTENT)
        })
    });
    group.throughput(Throughput::Elements(1));
    group.bench_function(BenchmarkId::new("post_one_measurement", variant), |b| {
        b.to_async(rt).iter(|| {
            let req = Request::post("/data").body(Body::from(one.clone())).unwrap();
            call(&service, req, StatusCode::NO_CONTENT)
        })
    });
    group.bench_function(BenchmarkId::new("get_statistics", variant), |b| {
        b.to_async(rt).iter(|| {
            let req = Request::get("/statistics/sensor-000000000")
                .body(Body::empty())
                .unwrap();
            call(&service, req, StatusCode::OK)
        })
    });
}

fn bench_router(c: &mut Criterion) {
    // Production's subscriber at its default level, writing nowhere: spans cost what they
    // cost in the server.
    telemetry::init_with_writer("info", LogFormat::Text, std::io::sink).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let w1 = Bytes::from(workload::batch(1000, 100, 1));
    let one = Bytes::from(workload::batch(1, 1, 1));

    let mut group = c.benchmark_group("router");
    bench_routes(&mut group, &rt, "service", HttpService::new(state()), &w1, &one);
    bench_routes(
        &mut group,
        &rt,
        "axum_router_only",
        http::router(state()),
        &w1,
        &one,
    );
    group.finish();
}

criterion_group!(benches, bench_router);
criterion_main!(benches);
