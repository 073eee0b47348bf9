//! Redis down, slow to come back, or not there at start (CONTRACT.md, "When the store is
//! unavailable"): 503 with `Retry-After` and the JSON error on store routes, `/healthz`
//! 503 and `/livez` 204 meanwhile, and service again without a restart.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};

use crate::helpers::{RedisServer, TestApp, measurement, spawn_app_on, spawn_app_unready};

fn body(value: f64) -> String {
    format!("[{}]", measurement("outage", "2021-11-08T21:38:09Z", value))
}

async fn assert_unavailable(app: &TestApp, method: Method, path: &str, body: String) {
    let reply = app
        .request(method, path, &[], body, StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(reply.headers["retry-after"], "1");
    let (message, index) = reply.error();
    assert!(message.contains("store"), "{message}");
    assert!(index.is_null());
}

#[tokio::test]
async fn store_routes_answer_503_while_redis_is_down_and_recover_without_a_restart() {
    let redis = Arc::new(RedisServer::start());
    let app = spawn_app_on(Some(Arc::clone(&redis)), |c| {
        c.redis_timeout = Duration::from_millis(300)
    })
    .await;
    app.post_data(body(1.0), StatusCode::NO_CONTENT).await;

    redis.kill();
    assert_unavailable(&app, Method::POST, "/data", body(2.0)).await;
    assert_unavailable(&app, Method::GET, "/statistics/outage", String::new()).await;
    assert_unavailable(&app, Method::DELETE, "/statistics/outage", String::new()).await;
    // Readiness follows within a ping interval; liveness does not depend on Redis.
    let start = Instant::now();
    loop {
        let status = app.client.get(app.url("/healthz")).send().await.unwrap().status();
        if status == StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(3), "healthz still {status}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    app.request(Method::GET, "/livez", &[], "", StatusCode::NO_CONTENT)
        .await;
    let metrics = app
        .request(Method::GET, "/metrics", &[], "", StatusCode::OK)
        .await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("sensor_stats_store_up 0"), "{text}");

    // Redis comes back with its AOF: ready again within about a second, nothing lost,
    // nothing from the refused requests applied.
    redis.run();
    let back = Instant::now();
    app.wait_ready(Duration::from_secs(3)).await;
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "took {:?}",
        back.elapsed()
    );
    let s = app.statistics("outage").await;
    assert_eq!((s["count"].as_u64(), s["avg"].as_f64()), (Some(1), Some(1.0)));
    app.post_data(body(3.0), StatusCode::NO_CONTENT).await;
    assert_eq!(app.statistics("outage").await["count"], 2);
}

#[tokio::test]
async fn a_replica_started_while_redis_is_down_becomes_ready_when_it_appears() {
    let redis = Arc::new(RedisServer::start());
    redis.kill();
    let app = spawn_app_unready(Some(Arc::clone(&redis)), |_| {}).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let reply = app
        .request(Method::GET, "/healthz", &[], "", StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(reply.headers["retry-after"], "1");
    app.request(Method::GET, "/livez", &[], "", StatusCode::NO_CONTENT)
        .await;
    assert_unavailable(&app, Method::POST, "/data", body(1.0)).await;

    redis.run();
    app.wait_ready(Duration::from_secs(3)).await;
    app.post_data(body(1.0), StatusCode::NO_CONTENT).await;
    assert_eq!(app.statistics("outage").await["count"], 1);
}

#[tokio::test]
async fn redis_stopped_mid_load_then_restarted_loses_no_acknowledged_measurement() {
    let redis = Arc::new(RedisServer::start());
    // A claim left by a flush that died with Redis expires after the request timeout.
    let app = Arc::new(
        spawn_app_on(Some(Arc::clone(&redis)), |c| {
            c.redis_timeout = Duration::from_millis(300);
            c.request_timeout = Duration::from_secs(2);
        })
        .await,
    );
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut writers = Vec::new();
    for w in 0..4 {
        let app = Arc::clone(&app);
        writers.push(tokio::spawn(async move {
            let (mut acked, mut refused) = (0u64, 0u64);
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                // Each measurement once: a 503 batch is retried with its key until taken.
                let key = format!("w{w}-{i}");
                loop {
                    let r = app
                        .client
                        .post(app.url("/data"))
                        .header("idempotency-key", &key)
                        .body(body(1.0))
                        .send()
                        .await
                        .unwrap();
                    match r.status() {
                        StatusCode::NO_CONTENT => {
                            acked += 1;
                            break;
                        }
                        StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                            if r.status() == StatusCode::SERVICE_UNAVAILABLE {
                                assert_eq!(r.headers()["retry-after"], "1");
                            }
                            refused += 1;
                            tokio::time::sleep(Duration::from_millis(50)).await;
                        }
                        other => panic!("unexpected {other}: {:?}", r.text().await),
                    }
                }
            }
            (acked, refused)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.kill();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    redis.run();
    let (mut acked, mut refused) = (0, 0);
    for w in writers {
        let (a, r) = w.await.unwrap();
        acked += a;
        refused += r;
    }
    assert!(refused > 0, "the outage was not seen");
    assert!(acked > 0);
    assert_eq!(app.statistics("outage").await["count"].as_u64(), Some(acked));
}
