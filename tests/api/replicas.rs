//! Several replicas sharing one real `redis-server` answer as one process would
//! (CONTRACT.md, "Several replicas"), and the Redis store gives the memory store's
//! answers to the bit.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use proptest::prelude::*;
use reqwest::{Method, StatusCode};
use sensor_stats::{
    Config,
    config::{RedisUrl, StoreKind},
    domain::{Batch, SensorId, Timestamp},
    metrics::Metrics,
    store::Store,
};
use tokio_util::sync::CancellationToken;

use crate::helpers::{RedisServer, TestApp, measurement, spawn_app_on, spawn_app_unready};

async fn two_replicas() -> (Arc<RedisServer>, TestApp, TestApp) {
    let redis = Arc::new(RedisServer::start());
    let a = spawn_app_on(Some(Arc::clone(&redis)), |_| {}).await;
    let b = spawn_app_on(Some(Arc::clone(&redis)), |_| {}).await;
    (redis, a, b)
}

#[tokio::test]
async fn a_post_on_one_replica_is_read_on_the_other_and_a_delete_clears_both() {
    let (_redis, a, b) = two_replicas().await;
    a.post_data(
        format!(
            "[{},{}]",
            measurement("shared", "2021-11-08T21:38:09+00:00", 2.0),
            measurement("shared", "2021-11-09T21:38:09+01:00", 4.0)
        ),
        StatusCode::NO_CONTENT,
    )
    .await;
    b.post_data(
        format!("[{}]", measurement("shared", "2021-01-01T00:00:00Z", 6.0)),
        StatusCode::NO_CONTENT,
    )
    .await;
    for app in [&a, &b] {
        let s = app.statistics("shared").await;
        assert_eq!(s["count"], 3);
        assert_eq!(s["avg"], 4.0);
        assert_eq!(s["last_measurement"], "2021-11-09T20:38:09+00:00");
    }
    b.request(
        Method::DELETE,
        "/statistics/shared",
        &[],
        "",
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(a.statistics("shared").await, crate::helpers::unknown_form());
}

#[tokio::test]
async fn writers_on_both_replicas_at_once_give_exact_counts() {
    let (_redis, a, b) = two_replicas().await;
    let (a, b) = (Arc::new(a), Arc::new(b));
    let mut tasks = Vec::new();
    for w in 0..8u32 {
        let app = if w % 2 == 0 {
            Arc::clone(&a)
        } else {
            Arc::clone(&b)
        };
        tasks.push(tokio::spawn(async move {
            for i in 0..50u32 {
                let body = format!(
                    "[{},{}]",
                    measurement("hot", "2021-11-08T21:38:09Z", 0.5),
                    measurement(
                        &format!("own-{w}"),
                        &format!("2021-11-08T21:{:02}:00Z", i % 60),
                        1.0
                    )
                );
                app.post_data(body, StatusCode::NO_CONTENT).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let hot = b.statistics("hot").await;
    assert_eq!(hot["count"], 400);
    assert_eq!(hot["avg"], 0.5);
    assert_eq!(a.statistics("own-3").await["count"], 50);
    let metrics = a.request(Method::GET, "/metrics", &[], "", StatusCode::OK).await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("sensor_stats_sensors_tracked 9"), "{text}");
    assert!(text.contains("sensor_stats_store_flush_requests_count"), "{text}");
}

#[tokio::test]
async fn readers_on_one_replica_never_see_a_torn_batch_written_on_the_other() {
    let (_redis, a, b) = two_replicas().await;
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = Arc::clone(&stop);
        let client = a.client.clone();
        let url = a.url("/data");
        tokio::spawn(async move {
            // Each batch moves both sensors by 2.0 twice: a reader that saw half a batch
            // would see an average other than 2.0 or unequal counts.
            let body = format!(
                "[{},{},{},{}]",
                measurement("left", "2021-11-08T21:38:09Z", 2.0),
                measurement("right", "2021-11-08T21:38:09Z", 2.0),
                measurement("left", "2021-11-08T21:38:10Z", 2.0),
                measurement("right", "2021-11-08T21:38:10Z", 2.0)
            );
            while !stop.load(Ordering::Relaxed) {
                let r = client.post(&url).body(body.clone()).send().await.unwrap();
                assert_eq!(r.status(), StatusCode::NO_CONTENT);
            }
        })
    };
    let mut seen = 0;
    while seen < 300 {
        let s = b.statistics("left").await;
        if s["count"].as_u64().unwrap() > 0 {
            assert_eq!(s["avg"], 2.0, "torn read: {s}");
            assert_eq!(s["count"].as_u64().unwrap() % 2, 0, "half a batch: {s}");
            seen += 1;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.await.unwrap();
    assert_eq!(
        b.statistics("left").await["count"],
        b.statistics("right").await["count"]
    );
}

#[tokio::test]
async fn a_replica_with_another_bucket_count_refuses_to_become_ready() {
    let redis = Arc::new(RedisServer::start());
    let _first = spawn_app_on(Some(Arc::clone(&redis)), |_| {}).await;
    let other = spawn_app_unready(Some(Arc::clone(&redis)), |c| c.redis_buckets = 7).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let reply = other
        .request(Method::GET, "/healthz", &[], "", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert!(reply.error().0.contains("store"));
    let reply = other
        .request(
            Method::POST,
            "/data",
            &[],
            format!("[{}]", measurement("x", "2021-11-08T21:38:09Z", 1.0)),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert!(reply.headers.contains_key("retry-after"));
    assert_eq!(redis.cli(&["HLEN", "{sensor-stats:b0}"]), "0");
}

#[tokio::test]
async fn sensor_ids_with_any_characters_and_awkward_sums_round_trip_through_redis() {
    let redis = Arc::new(RedisServer::start());
    let app = spawn_app_on(Some(redis), |_| {}).await;
    let memory = spawn_app_on(None, |_| {}).await;
    let id = "a sensor/with spaces, \"quotes\" and ünïcode 🌡";
    let values = [0.1, 0.2, 1e-300, 1_152_921_504_606_846_977.0, -0.0, 5e-324, 3.3];
    for (i, v) in values.iter().enumerate() {
        let body = format!(
            "[{}]",
            measurement(id, &format!("2021-11-08T21:38:{i:02}.123456789Z"), *v)
        );
        app.post_data(body.clone(), StatusCode::NO_CONTENT).await;
        memory.post_data(body, StatusCode::NO_CONTENT).await;
    }
    let encoded: String = url_encode(id);
    let got = app.statistics(&encoded).await;
    assert_eq!(got, memory.statistics(&encoded).await);
    assert_eq!(got["last_measurement"], "2021-11-08T21:38:06.123456789+00:00");
}

fn url_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[derive(Debug, Clone)]
enum Op {
    Record(Vec<(u8, f64, (i64, u32))>),
    Delete(u8),
}

fn op() -> impl Strategy<Value = Op> {
    let value = prop_oneof![
        any::<i16>().prop_map(f64::from),
        (-1e6f64..1e6),
        Just(0.1),
        Just(1e-300),
        Just(-0.0),
    ];
    // Instants across years 0000..=9999, nanoseconds included.
    let instant = (
        -62_167_219_200i64..=253_402_300_799,
        prop_oneof![Just(0u32), 0u32..1_000_000_000],
    );
    prop_oneof![
        4 => proptest::collection::vec((0u8..6, value, instant), 0..12).prop_map(Op::Record),
        1 => (0u8..6).prop_map(Op::Delete),
    ]
}

fn at((secs, nanos): (i64, u32)) -> Timestamp {
    Timestamp::from_datetime(chrono::DateTime::from_timestamp(secs, nanos).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random batches and deletes give bit-identical summaries in both stores.
    #[test]
    fn the_redis_store_answers_exactly_as_the_memory_store(ops in proptest::collection::vec(op(), 1..25)) {
        let runtime = tokio::runtime::Runtime::new().unwrap();
        runtime.block_on(async {
            let redis = RedisServer::start();
            let config = Config {
                store: StoreKind::Redis,
                redis_url: Some(RedisUrl(redis.url())),
                ..Config::default()
            };
            let shared = Store::from_config(&config, Arc::new(Metrics::new())).unwrap();
            let stop = CancellationToken::new();
            tokio::spawn(shared.clone().run_upkeep(stop.clone()));
            while !shared.is_ready() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            let memory = Store::memory();
            let names: Vec<String> = (0..6).map(|i| format!("sensor {i}")).collect();
            let mut touched: HashMap<u8, ()> = HashMap::new();
            for op in &ops {
                match op {
                    Op::Record(items) => {
                        let mut batch = Batch::default();
                        for &(s, v, t) in items {
                            batch.push(SensorId::parse(&names[usize::from(s)]).unwrap(), v, at(t));
                            touched.insert(s, ());
                        }
                        shared.record_batch(&batch, None).await.unwrap();
                        memory.record_batch(&batch, None).await.unwrap();
                    }
                    Op::Delete(s) => {
                        let id = SensorId::parse(&names[usize::from(*s)]).unwrap();
                        shared.delete(id).await.unwrap();
                        memory.delete(id).await.unwrap();
                    }
                }
            }
            for name in &names {
                let id = SensorId::parse(name).unwrap();
                let (r, m) = (shared.get(id).await.unwrap(), memory.get(id).await.unwrap());
                assert_eq!((r.count, r.last_measurement), (m.count, m.last_measurement), "{name}");
                assert_eq!(r.sum.to_bits(), m.sum.to_bits(), "{name}: {} vs {}", r.sum, m.sum);
            }
            assert_eq!(shared.sensors_tracked().await, memory.sensors_tracked().await);
            stop.cancel();
        });
    }
}
