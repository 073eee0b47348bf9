//! `Idempotency-Key` on `POST /data` (CONTRACT.md, "Idempotency-Key"), in the suite's
//! store mode: a retry counts once, another body is refused, a request in progress
//! blocks its key, a failed request leaves no key behind.

use std::time::Duration;

use bytes::Bytes;
use reqwest::{Method, StatusCode};

use crate::helpers::{TestApp, measurement, spawn_app};

fn batch(value: f64) -> String {
    format!("[{}]", measurement("idem", "2021-11-08T21:38:09Z", value))
}

async fn post_with_key(
    app: &TestApp,
    key: &str,
    body: String,
    expected: StatusCode,
) -> crate::helpers::Reply {
    app.request(
        Method::POST,
        "/data",
        &[("content-type", "application/json"), ("idempotency-key", key)],
        body,
        expected,
    )
    .await
}

#[tokio::test]
async fn a_retry_with_the_same_key_and_body_is_answered_204_and_not_applied_again() {
    let app = spawn_app().await;
    let first = post_with_key(&app, "batch-1", batch(2.0), StatusCode::NO_CONTENT).await;
    assert!(first.headers.get("idempotent-replayed").is_none());
    for _ in 0..3 {
        let again = post_with_key(&app, "batch-1", batch(2.0), StatusCode::NO_CONTENT).await;
        assert_eq!(again.headers["idempotent-replayed"], "true");
        assert!(again.body.is_empty());
    }
    assert_eq!(app.statistics("idem").await["count"], 1);

    // Another key is another batch.
    post_with_key(&app, "batch-2", batch(2.0), StatusCode::NO_CONTENT).await;
    assert_eq!(app.statistics("idem").await["count"], 2);

    let metrics = app
        .request(Method::GET, "/metrics", &[], "", StatusCode::OK)
        .await;
    let text = String::from_utf8(metrics.body).unwrap();
    assert!(text.contains("sensor_stats_idempotent_replays_total 3"), "{text}");
}

#[tokio::test]
async fn the_same_key_with_another_body_is_422_and_applies_nothing() {
    let app = spawn_app().await;
    post_with_key(&app, "k", batch(2.0), StatusCode::NO_CONTENT).await;
    let reply = post_with_key(&app, "k", batch(3.0), StatusCode::UNPROCESSABLE_ENTITY).await;
    let (message, index) = reply.error();
    assert!(message.contains("different request body"), "{message}");
    assert!(index.is_null());
    let stats = app.statistics("idem").await;
    assert_eq!(
        (stats["count"].as_u64(), stats["avg"].as_f64()),
        (Some(1), Some(2.0))
    );
}

#[tokio::test]
async fn a_failed_request_leaves_no_key_behind() {
    let app = spawn_app().await;
    let bad = format!(
        "[{}, {{\"sensor\": \"idem\", \"timestamp\": \"yesterday\", \"value\": 1}}]",
        measurement("idem", "2021-11-08T21:38:09Z", 1.0)
    );
    let reply = post_with_key(&app, "k", bad, StatusCode::BAD_REQUEST).await;
    assert_eq!(reply.error().1, 1);
    assert_eq!(app.statistics("idem").await["count"], 0);
    // The client fixes the batch and retries with the same key: it is processed.
    let fixed = post_with_key(&app, "k", batch(5.0), StatusCode::NO_CONTENT).await;
    assert!(fixed.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.statistics("idem").await["count"], 1);
}

#[tokio::test]
async fn invalid_keys_are_400_with_the_json_error_and_nothing_applied() {
    let app = spawn_app().await;
    let long = "k".repeat(256);
    for key in ["", "has space", "tab\there", long.as_str()] {
        let reply = app
            .client
            .post(app.url("/data"))
            .header(
                "idempotency-key",
                reqwest::header::HeaderValue::from_str(key).unwrap(),
            )
            .body(batch(1.0))
            .send()
            .await
            .unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_REQUEST, "{key:?}");
        let body: serde_json::Value = reply.json().await.unwrap();
        assert!(
            body["error"].as_str().unwrap().contains("Idempotency-Key"),
            "{body}"
        );
        assert!(body["index"].is_null());
    }
    // Non-ASCII bytes in the header value.
    let reply = app
        .client
        .post(app.url("/data"))
        .header(
            "idempotency-key",
            reqwest::header::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
        )
        .body(batch(1.0))
        .send()
        .await
        .unwrap();
    assert_eq!(reply.status(), StatusCode::BAD_REQUEST);
    assert_eq!(app.statistics("idem").await["count"], 0);
    // The longest valid key works.
    post_with_key(&app, &"k".repeat(255), batch(1.0), StatusCode::NO_CONTENT).await;
}

#[tokio::test]
async fn a_key_whose_first_request_is_still_in_progress_gets_409() {
    let app = spawn_app().await;
    // The first request sends its headers and half its body, then waits.
    let body = batch(4.0);
    let (head, tail) = body.split_at(10);
    let (head, tail, len) = (head.to_owned(), tail.to_owned(), body.len());
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tx.send(Ok(Bytes::copy_from_slice(head.as_bytes())))
        .await
        .unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let client = app.client.clone();
    let url = app.url("/data");
    let first = tokio::spawn(async move {
        client
            .post(url)
            .header("idempotency-key", "slow")
            .header("content-length", len.to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .unwrap()
            .status()
    });
    // The server claims the key as soon as it has the headers.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let conflict = app
        .client
        .post(app.url("/data"))
        .header("idempotency-key", "slow")
        .body(batch(4.0))
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);
    assert!(conflict.headers().get("retry-after").is_none());
    let json: serde_json::Value = conflict.json().await.unwrap();
    assert!(
        json["error"].as_str().unwrap().contains("still being processed"),
        "{json}"
    );
    assert_eq!(app.statistics("idem").await["count"], 0);

    tx.send(Ok(Bytes::copy_from_slice(tail.as_bytes())))
        .await
        .unwrap();
    drop(tx);
    assert_eq!(first.await.unwrap(), StatusCode::NO_CONTENT);
    assert_eq!(app.statistics("idem").await["count"], 1);
    // And now the same key and body replay.
    let replay = post_with_key(&app, "slow", batch(4.0), StatusCode::NO_CONTENT).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    assert_eq!(app.statistics("idem").await["count"], 1);
}

#[tokio::test]
async fn a_client_that_goes_away_mid_body_releases_its_key() {
    let app = spawn_app().await;
    let body = batch(4.0);
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(2);
    tx.send(Ok(Bytes::copy_from_slice(&body.as_bytes()[..10])))
        .await
        .unwrap();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = app.url("/data");
    let first = tokio::spawn(async move {
        client
            .post(url)
            .header("idempotency-key", "gone")
            .header("content-length", body.len().to_string())
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    first.abort();
    drop(tx);
    // The claim is released when the server sees the connection close.
    let mut status = StatusCode::CONFLICT;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = app
            .client
            .post(app.url("/data"))
            .header("idempotency-key", "gone")
            .body(batch(4.0))
            .send()
            .await
            .unwrap()
            .status();
        if status != StatusCode::CONFLICT {
            break;
        }
    }
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(app.statistics("idem").await["count"], 1);
}
