//! GET /metrics: counters move with traffic; labels stay bounded.

use reqwest::{Method, StatusCode};

use crate::helpers::{measurement, spawn_app};

#[tokio::test]
async fn metrics_count_requests_measurements_and_rejections_without_raw_paths() {
    let app = spawn_app().await;
    let body = format!(
        "[{},{}]",
        measurement("secret-sensor-id", "2021-11-08T21:38:09Z", 1.0),
        measurement("other", "2021-11-08T21:38:09Z", 1.0)
    );
    app.post_data(body, StatusCode::NO_CONTENT).await;
    app.post_data("nope", StatusCode::BAD_REQUEST).await;
    app.statistics("secret-sensor-id").await;
    app.request(Method::GET, "/no/such/raw/path", &[], "", StatusCode::NOT_FOUND)
        .await;

    let reply = app
        .request(Method::GET, "/metrics", &[], "", StatusCode::OK)
        .await;
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = String::from_utf8(reply.body).unwrap();
    for line in [
        "sensor_stats_ingest_measurements_total 2",
        "sensor_stats_ingest_batches_total 1",
        "sensor_stats_sensors_tracked 2",
        r#"sensor_stats_requests_rejected_total{reason="malformed_json"} 1"#,
        r#"sensor_stats_requests_rejected_total{reason="not_found"} 1"#,
        r#"sensor_stats_http_requests_total{route="/data",method="POST",status="204"} 1"#,
        r#"sensor_stats_http_requests_total{route="/statistics/{sensor}",method="GET",status="200"} 1"#,
        r#"sensor_stats_http_requests_total{route="unmatched",method="GET",status="404"} 1"#,
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(text.contains("sensor_stats_http_request_duration_seconds_bucket{"));
    assert!(text.contains("# HELP sensor_stats_ingest_measurements_total"));
    assert!(
        !text.contains("secret-sensor-id") && !text.contains("/no/such"),
        "{text}"
    );
}
