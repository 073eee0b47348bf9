//! Heap allocations on the hot paths, counted exactly:
//!
//! - decode + fold + apply of batches of 10, 1 000 and 100 000 measurements over the same
//!   sensors make about the same number of allocations (none per measurement);
//! - a whole request, as the server sees it over a real socket (the HTTP/1 loop, the
//!   edge, the handler, the store), makes at most a fixed number: W2 (`POST` of one measurement)
//!   and W3 (`GET /statistics/{sensor}`). The bounds are today's counts; a change that
//!   adds an allocation per request fails here.
//!
//! A separate test binary because counting needs its own global allocator
//! (`allocation-counter`, thread-local counts), which must not sit under the other tests.

#![allow(missing_docs)]

#[path = "../examples/support/client.rs"]
mod client;

use std::{net::SocketAddr, sync::mpsc, thread};

use bytes::Bytes;
use hyper::StatusCode;
use sensor_stats::{App, Config, config::LogFormat, ingest::decode, store::MemoryStore, telemetry, workload};

fn allocations_for(measurements: usize, store: &MemoryStore) -> u64 {
    let mut body = workload::batch(measurements, 10, 3).into_bytes();
    allocation_counter::measure(|| {
        let batch = decode(&mut body).expect("valid batch");
        store.record_batch(&batch);
    })
    .count_total
}

#[test]
fn decode_fold_apply_allocations_do_not_grow_with_the_number_of_measurements() {
    let store = MemoryStore::default();
    allocations_for(10, &store); // the 10 sensors now exist: no inserts below

    let small = allocations_for(10, &store);
    let w1 = allocations_for(1_000, &store);
    let large = allocations_for(100_000, &store);
    eprintln!("allocations: 10 -> {small}, 1000 -> {w1}, 100000 -> {large}");

    // A per-measurement allocation would add at least 990 and 99 990 here. The slack
    // covers buffers that grow geometrically with the body (a handful of reallocations).
    assert!(w1 <= small + 4, "10 -> {small}, 1000 -> {w1}");
    assert!(large <= small + 8, "10 -> {small}, 100000 -> {large}");
}

/// The store's own heap per sensor, counted exactly (live bytes, so the map's old tables
/// freed while it grows do not count; the load test's MEM row shows RSS, allocator
/// included).
#[test]
fn a_million_sensors_with_16_byte_ids_take_at_most_128_heap_bytes_each() {
    const SENSORS: usize = 1_000_000;
    let ids: Vec<String> = (0..SENSORS).map(workload::sensor_id).collect();
    let at = sensor_stats::domain::Timestamp::parse("2021-11-08T21:38:09Z").unwrap();
    let store = MemoryStore::default();
    let info = allocation_counter::measure(|| {
        for chunk in ids.chunks(10_000) {
            let mut batch = sensor_stats::domain::Batch::with_capacity(chunk.len());
            for id in chunk {
                batch.push(sensor_stats::domain::SensorId::parse(id).unwrap(), 1.5, at);
            }
            store.record_batch(&batch);
        }
    });
    assert_eq!(store.len(), SENSORS);
    let per_sensor = info.bytes_current as f64 / SENSORS as f64;
    eprintln!("heap held by the store: {per_sensor:.1} bytes per sensor");
    assert!(per_sensor <= 128.0, "{per_sensor:.1} bytes per sensor");
}

#[derive(Clone, Copy, Debug)]
enum Workload {
    /// `POST /data` with one measurement.
    W2,
    /// `GET /statistics/{sensor}` of a known sensor.
    W3,
}

const CONNECTIONS: usize = 4;

/// Allocations the server thread makes while serving `requests` requests of `workload`
/// (after the same warm-up), start-up and shutdown included: the app runs on a
/// current-thread runtime on a thread of its own, counted from start to stop.
fn server_allocations(workload: Workload, requests: usize) -> u64 {
    // As in production: the subscriber at the default level.
    let _ = telemetry::init_with_writer("info", LogFormat::Text, std::io::sink);
    let (addr_tx, addr_rx) = mpsc::channel::<SocketAddr>();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let config = Config {
            host: [127, 0, 0, 1].into(),
            port: 0,
            ..Config::default()
        };
        let listener = rt
            .block_on(tokio::net::TcpListener::bind((config.host, 0)))
            .unwrap();
        let app = App::build_with_listener(config, listener).unwrap();
        addr_tx.send(app.local_addr()).unwrap();
        allocation_counter::measure(|| {
            rt.block_on(app.run_until(async {
                let _ = stop_rx.await;
            }))
            .unwrap();
        })
        .count_total
    });
    let addr = addr_rx.recv().unwrap();

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async {
        let mut clients = Vec::new();
        for _ in 0..CONNECTIONS {
            clients.push(client::Client::connect(addr).await.unwrap());
        }
        let body = Bytes::from(workload::batch(1, 1, 1));
        assert_eq!(clients[0].post(body.clone()).await, StatusCode::NO_CONTENT);
        let path = format!("/statistics/{}", workload::sensor_id(0));
        for i in 0..requests {
            let client = &mut clients[i % CONNECTIONS];
            match workload {
                Workload::W2 => assert_eq!(client.post(body.clone()).await, StatusCode::NO_CONTENT),
                Workload::W3 => assert_eq!(client.get(&path).await.0, StatusCode::OK),
            }
        }
    });
    stop_tx.send(()).unwrap();
    server.join().unwrap()
}

/// Allocations per request in steady state: the difference between two runs that differ
/// only in the number of requests.
fn per_request(workload: Workload) -> f64 {
    let few = server_allocations(workload, 200);
    let many = server_allocations(workload, 2200);
    (many as f64 - few as f64) / 2000.0
}

#[test]
fn a_get_of_statistics_makes_at_most_today_s_allocations() {
    let n = per_request(Workload::W3);
    eprintln!("W3 GET /statistics: {n:.2} allocations per request");
    // 3.7 when hyper served it; the HTTP/1 loop's buffers are the connection's, and the
    // answer shares a per-thread buffer (a new one every ~150 answers).
    assert!(n <= 0.05, "{n:.2} allocations per GET");
}

#[test]
fn a_one_measurement_post_makes_at_most_today_s_allocations() {
    let n = per_request(Workload::W2);
    eprintln!("W2 POST one measurement: {n:.2} allocations per request");
    // 6.0 when hyper served it.
    assert!(n <= 1.1, "{n:.2} allocations per POST");
}
