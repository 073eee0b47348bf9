//! Graceful shutdown: readiness turns 503 at once, the listener stays open for the grace
//! period, in-flight requests finish, and the server stops within its deadlines.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use tokio::{io::AsyncWriteExt as _, net::TcpStream};

use crate::helpers::{measurement, spawn_app_with};

#[tokio::test]
async fn shutdown_turns_healthz_503_and_keeps_serving_during_the_grace_period() {
    let mut app = spawn_app_with(|c| c.shutdown_grace = Duration::from_secs(2)).await;
    app.request(Method::GET, "/healthz", &[], "", StatusCode::NO_CONTENT)
        .await;

    app.trigger_shutdown();
    tokio::time::timeout(Duration::from_secs(1), async {
        while app.lifecycle.is_ready() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("readiness cleared");

    // A fresh client: new connections are still accepted during the grace period.
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    let resp = fresh.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()["connection"], "close");
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("shutting down"));

    let resp = fresh
        .post(app.url("/data"))
        .body(format!("[{}]", measurement("late", "2021-11-08T21:38:09Z", 1.0)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);

    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stops after grace")
        .unwrap()
        .unwrap();
    assert!(
        fresh.get(app.url("/healthz")).send().await.is_err(),
        "listener closed"
    );
}

#[tokio::test]
async fn an_in_flight_request_finishes_during_shutdown() {
    let mut app = spawn_app_with(|c| c.drain_timeout = Duration::from_secs(5)).await;
    // Send the head and half the body, then trigger shutdown, then finish the body.
    let body = format!("[{}]", measurement("in-flight", "2021-11-08T21:38:09Z", 3.0));
    let (first, rest) = body.split_at(10);
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    let head = format!(
        "POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{first}",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.trigger_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream.write_all(rest.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(
        Duration::from_secs(5),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut response),
    )
    .await
    .expect("response before the drain deadline")
    .unwrap();
    let text = String::from_utf8_lossy(&response);
    assert!(text.starts_with("HTTP/1.1 204"), "{text}");
    assert!(text.to_ascii_lowercase().contains("connection: close"), "{text}");

    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(5), server)
        .await
        .expect("stopped")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn idle_and_silent_connections_do_not_hold_shutdown_open() {
    let mut app = spawn_app_with(|c| c.drain_timeout = Duration::from_secs(30)).await;
    // One connection that never sends a byte, one idle keep-alive connection.
    let _silent = TcpStream::connect(app.addr).await.unwrap();
    app.request(Method::GET, "/healthz", &[], "", StatusCode::NO_CONTENT)
        .await;
    tokio::time::sleep(Duration::from_millis(50)).await;

    app.trigger_shutdown();
    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("stopped well before the 30 s drain deadline")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_stuck_request_is_cut_at_the_drain_deadline() {
    let mut app = spawn_app_with(|c| c.drain_timeout = Duration::from_millis(300)).await;
    // Headers promise a body that never comes: the request cannot finish by itself.
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;

    app.trigger_shutdown();
    let server = app.server.take().unwrap();
    tokio::time::timeout(Duration::from_secs(3), server)
        .await
        .expect("stopped at the deadline")
        .unwrap()
        .unwrap();
}
