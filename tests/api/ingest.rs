//! POST /data: accepted batches, every class of bad input, limits, encodings.

use std::io::Write as _;

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{measurement, sample, spawn_app, spawn_app_with, unknown_form};

const TS: &str = "2021-11-08T21:38:09+00:00";

#[tokio::test]
async fn post_data_accepts_the_samples_with_204_and_no_body() {
    let app = spawn_app().await;
    for name in ["post_data_ex1.json", "post_data_ex2.json", "post_data_ex3.json"] {
        let reply = app.post_data(sample(name), StatusCode::NO_CONTENT).await;
        assert!(reply.body.is_empty(), "{name}");
    }
    let s1 = app.statistics("sensor1").await;
    assert_eq!(s1["count"], 4);
    assert_eq!(s1["last_measurement"], "2021-11-09T21:38:11+00:00");
    let avg = s1["avg"].as_f64().unwrap();
    assert!((avg - (2.0 + 2.1 + 1.0 + 2.2) / 4.0).abs() < 1e-12, "{avg}");
    let s0 = app.statistics("sensor0").await;
    assert_eq!(
        s0,
        json!({"last_measurement": "2021-11-09T20:38:09+00:00", "count": 1, "avg": 3.0})
    );
}

#[tokio::test]
async fn post_data_accepts_json_with_parameters_or_no_content_type() {
    let app = spawn_app().await;
    let body = format!("[{}]", measurement("s", TS, 1.0));
    for headers in [
        &[("content-type", "application/json; charset=utf-8")][..],
        &[("content-type", "Application/JSON")][..],
        &[][..],
    ] {
        app.request(
            Method::POST,
            "/data",
            headers,
            body.clone(),
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    assert_eq!(app.statistics("s").await["count"], 3);
}

#[tokio::test]
async fn post_data_returns_415_for_other_content_types_and_applies_nothing() {
    let app = spawn_app().await;
    let body = format!("[{}]", measurement("s", TS, 1.0));
    for ct in [
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/jsonx",
    ] {
        let reply = app
            .request(
                Method::POST,
                "/data",
                &[("content-type", ct)],
                body.clone(),
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            )
            .await;
        let (message, index) = reply.error();
        assert!(message.contains("application/json"), "{message}");
        assert!(index.is_null());
    }
    assert_eq!(app.statistics("s").await, unknown_form());
}

/// Each case: a bad measurement placed after a valid one, so "nothing applied" is visible.
#[tokio::test]
async fn post_data_rejects_every_bad_measurement_with_400_its_index_and_applies_nothing() {
    let app = spawn_app().await;
    let good = measurement("probe", TS, 1.0);
    let long = "x".repeat(257);
    let cases: Vec<(String, &str)> = vec![
        (
            r#"{"timestamp":"2021-11-08T21:38:09Z","value":1}"#.into(),
            "sensor",
        ),
        (r#"{"sensor":"a","value":1}"#.into(), "timestamp"),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09Z"}"#.into(),
            "value",
        ),
        (
            r#"{"sensor":"","timestamp":"2021-11-08T21:38:09Z","value":1}"#.into(),
            "empty",
        ),
        (
            format!(r#"{{"sensor":"{long}","timestamp":"2021-11-08T21:38:09Z","value":1}}"#),
            "256",
        ),
        (
            r#"{"sensor":5,"timestamp":"2021-11-08T21:38:09Z","value":1}"#.into(),
            "sensor",
        ),
        (
            r#"{"sensor":null,"timestamp":"2021-11-08T21:38:09Z","value":1}"#.into(),
            "sensor",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-02-30T00:00:00Z","value":1}"#.into(),
            "calendar",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T25:00:00Z","value":1}"#.into(),
            "range",
        ),
        (
            r#"{"sensor":"a","timestamp":"yesterday","value":1}"#.into(),
            "RFC 3339",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08","value":1}"#.into(),
            "RFC 3339",
        ),
        (
            r#"{"sensor":"a","timestamp":1636407489,"value":1}"#.into(),
            "timestamp",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09.1234567891Z","value":1}"#.into(),
            "9 digits",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09+24:00","value":1}"#.into(),
            "offset",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":"1"}"#.into(),
            "number",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":null}"#.into(),
            "number",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":true}"#.into(),
            "number",
        ),
        (
            r#"{"sensor":"a","timestamp":"2021-11-08T21:38:09Z","value":[1]}"#.into(),
            "number",
        ),
        (
            r#"{"sensor":"a","sensor":"b","timestamp":"2021-11-08T21:38:09Z","value":1}"#.into(),
            "more than once",
        ),
        ("42".into(), "object"),
        (r#""text""#.into(), "object"),
        ("null".into(), "object"),
    ];
    for (bad, words) in &cases {
        let reply = app
            .post_data(format!("[{good},{bad}]"), StatusCode::BAD_REQUEST)
            .await;
        let (message, index) = reply.error();
        assert_eq!(index, 1, "case {bad}: {message}");
        assert!(
            message.contains(words),
            "case {bad}: {message:?} should mention {words:?}"
        );
    }
    // 1e400 overflows to infinity: rejected (by the parser or as not finite).
    let reply = app
        .post_data(
            format!(r#"[{good},{{"sensor":"a","timestamp":"{TS}","value":1e400}}]"#),
            StatusCode::BAD_REQUEST,
        )
        .await;
    reply.error();
    assert_eq!(app.statistics("probe").await, unknown_form());
    assert_eq!(app.statistics("a").await, unknown_form());
}

#[tokio::test]
async fn post_data_rejects_bodies_that_are_not_a_json_array_with_a_null_index() {
    let app = spawn_app().await;
    let good = measurement("probe", TS, 1.0);
    let deep = format!("[{}{}]", "[".repeat(64), "]".repeat(64));
    for body in [
        String::new(),
        "not json".into(),
        format!("[{good}"),
        format!("[{good},]"),
        good.clone(),
        r#"{"data": []}"#.into(),
        "null".into(),
        deep,
        format!("[{good}] trailing"),
    ] {
        let reply = app.post_data(body.clone(), StatusCode::BAD_REQUEST).await;
        let (message, index) = reply.error();
        assert!(index.is_null(), "body {body:?}: {message}");
    }
    assert_eq!(app.statistics("probe").await, unknown_form());
}

#[tokio::test]
async fn post_data_ignores_unknown_fields() {
    let app = spawn_app().await;
    let body = json!([{"sensor": "s", "timestamp": TS, "value": 1.5, "unit": "C", "meta": {"room": [1, 2]}}]);
    app.post_data(body.to_string(), StatusCode::NO_CONTENT).await;
    assert_eq!(app.statistics("s").await["avg"], 1.5);
}

#[tokio::test]
async fn post_data_accepts_every_timestamp_form_of_the_contract() {
    let app = spawn_app().await;
    let forms = [
        ("2021-11-08T21:38:09Z", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08t21:38:09z", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08 21:38:09", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08T22:38:09+01:00", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08T22:38:09+0100", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08T22:38:09+01", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08T20:38:09-01:00", "2021-11-08T21:38:09+00:00"),
        ("2021-11-08T21:38:09,5Z", "2021-11-08T21:38:09.500000+00:00"),
        (
            "2021-11-08T21:38:09.000000001Z",
            "2021-11-08T21:38:09.000000001+00:00",
        ),
    ];
    for (i, (input, want)) in forms.iter().enumerate() {
        let sensor = format!("form-{i}");
        app.post_data(
            format!("[{}]", measurement(&sensor, input, 1.0)),
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(
            app.statistics(&sensor).await["last_measurement"],
            *want,
            "input {input}"
        );
    }
}

#[tokio::test]
async fn post_data_accepts_gzip_and_zstd_bodies() {
    let app = spawn_app().await;
    let body = format!("[{}]", measurement("z", TS, 2.0));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(body.as_bytes(), 3).unwrap();
    for (encoding, bytes) in [("gzip", gz), ("zstd", zst)] {
        app.request(
            Method::POST,
            "/data",
            &[
                ("content-type", "application/json"),
                ("content-encoding", encoding),
            ],
            bytes,
            StatusCode::NO_CONTENT,
        )
        .await;
    }
    assert_eq!(app.statistics("z").await["count"], 2);
}

#[tokio::test]
async fn post_data_rejects_unknown_encodings_and_corrupt_compressed_bodies() {
    let app = spawn_app().await;
    let body = format!("[{}]", measurement("probe", TS, 2.0));
    let reply = app
        .request(
            Method::POST,
            "/data",
            &[("content-encoding", "br")],
            body.clone(),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        )
        .await;
    assert!(reply.error().0.contains("gzip"));
    let reply = app
        .request(
            Method::POST,
            "/data",
            &[("content-encoding", "gzip")],
            body,
            StatusCode::BAD_REQUEST,
        )
        .await;
    reply.error();
    assert_eq!(app.statistics("probe").await, unknown_form());
}

#[tokio::test]
async fn post_data_returns_413_over_the_limit_on_the_wire_chunked_or_decompressed() {
    let app = spawn_app_with(|c| c.body_limit = 4096).await;
    let big = format!("[{}]", vec![measurement("probe", TS, 1.0); 100].join(","));
    assert!(big.len() > 4096);

    // Content-Length over the limit.
    let reply = app.post_data(big.clone(), StatusCode::PAYLOAD_TOO_LARGE).await;
    assert!(reply.error().0.contains("4096"));

    // Chunked, no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.as_bytes().chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let stream = reqwest::Body::wrap_stream(futures_stream(chunks));
    app.post_data(stream, StatusCode::PAYLOAD_TOO_LARGE).await.error();

    // A small gzip body that inflates past the limit (a decompression bomb in miniature).
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(big.as_bytes()).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 4096);
    app.request(
        Method::POST,
        "/data",
        &[("content-encoding", "gzip")],
        gz,
        StatusCode::PAYLOAD_TOO_LARGE,
    )
    .await
    .error();

    assert_eq!(app.statistics("probe").await, unknown_form());
}

fn futures_stream(
    items: Vec<Result<Vec<u8>, std::io::Error>>,
) -> impl futures_core::Stream<Item = Result<Vec<u8>, std::io::Error>> + Send + 'static {
    tokio_stream::iter(items)
}

#[tokio::test]
async fn post_data_takes_a_100k_measurement_batch() {
    let app = spawn_app().await;
    let items: Vec<String> = (0..100_000)
        .map(|i| {
            measurement(
                &format!("bulk-{}", i % 100),
                &format!("2021-11-08T21:38:{:02}Z", (i / 100) % 60),
                2.0,
            )
        })
        .collect();
    app.post_data(format!("[{}]", items.join(",")), StatusCode::NO_CONTENT)
        .await;
    let s = app.statistics("bulk-7").await;
    assert_eq!(s["count"], 1000);
    assert_eq!(s["avg"], 2.0);
    assert_eq!(s["last_measurement"], "2021-11-08T21:38:59+00:00");
}

/// Bodies past `DECODE_OFF_WORKER_BYTES` are decoded with the runtime worker handed over
/// to another thread (tokio's `block_in_place`, which needs the multi-thread runtime the
/// server runs on): a valid one is applied whole, a bad one is refused with its index and
/// nothing applied, exactly as a small body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_past_the_off_worker_threshold_are_decoded_and_refused_like_small_ones() {
    let app = spawn_app().await;
    let items: Vec<String> = (0..20_000)
        .map(|i| measurement(&format!("big-{}", i % 50), TS, f64::from(i % 7)))
        .collect();
    let valid = format!("[{}]", items.join(","));
    assert!(valid.len() > sensor_stats::http::ingest::DECODE_OFF_WORKER_BYTES);
    app.post_data(valid, StatusCode::NO_CONTENT).await;
    let before = app.statistics("big-3").await;
    assert_eq!(before["count"], 400);

    // The last measurement is bad: the whole batch is refused, nothing of it applied.
    let mut bad_items = items.clone();
    bad_items[19_999] = r#"{"sensor":"big-3","timestamp":"not a time","value":1.0}"#.to_owned();
    let bad = format!("[{}]", bad_items.join(","));
    let reply = app.post_data(bad, StatusCode::BAD_REQUEST).await;
    let (message, index) = reply.error();
    assert_eq!(index, 19_999, "{message}");
    assert_eq!(app.statistics("big-3").await, before);
    assert_eq!(app.statistics("big-49").await["count"], 400);
}

#[tokio::test]
async fn concurrent_writers_and_a_reader_never_see_a_torn_average() {
    let app = spawn_app().await;
    let body = format!("[{}]", vec![measurement("torn", TS, 2.0); 10].join(","));
    let writers: Vec<_> = (0..4)
        .map(|_| {
            let client = app.client.clone();
            let url = app.url("/data");
            let body = body.clone();
            tokio::spawn(async move {
                for _ in 0..100 {
                    let r = client.post(&url).body(body.clone()).send().await.unwrap();
                    assert_eq!(r.status(), StatusCode::NO_CONTENT);
                }
            })
        })
        .collect();
    let mut reads = 0;
    while writers.iter().any(|w| !w.is_finished()) || reads < 50 {
        let s = app.statistics("torn").await;
        if s["count"].as_u64().unwrap() > 0 {
            assert_eq!(s["avg"], 2.0, "{s}");
        }
        reads += 1;
    }
    for w in writers {
        w.await.unwrap();
    }
    assert_eq!(app.statistics("torn").await["count"], 4000);
}

#[tokio::test]
async fn post_data_answers_408_when_the_body_takes_longer_than_the_request_timeout() {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    let app = spawn_app_with(|c| c.request_timeout = std::time::Duration::from_millis(200)).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(b"POST /data HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n[")
        .await
        .unwrap();
    let mut response = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), stream.read(&mut response))
        .await
        .expect("answered before the test's own deadline")
        .unwrap();
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""error":"request took too long"#), "{text}");
}
