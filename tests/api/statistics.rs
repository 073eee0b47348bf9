//! GET and DELETE /statistics/{sensor}.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{measurement, sample, spawn_app, unknown_form};

#[tokio::test]
async fn get_statistics_of_an_unknown_sensor_is_the_empty_form() {
    let app = spawn_app().await;
    let reply = app
        .request(Method::GET, "/statistics/nobody", &[], "", StatusCode::OK)
        .await;
    assert!(
        reply.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    assert_eq!(reply.json(), unknown_form());
}

#[tokio::test]
async fn get_statistics_reproduces_sample_ex2() {
    let app = spawn_app().await;
    let body = format!(
        "[{},{}]",
        measurement("s", "2021-01-01T01:01:00.000001+01:00", 2.1),
        measurement("s", "2021-01-01T00:00:00Z", 2.1),
    );
    app.post_data(body, StatusCode::NO_CONTENT).await;
    let want: serde_json::Value = serde_json::from_str(&sample("get_statistics_ex2.json")).unwrap();
    assert_eq!(app.statistics("s").await, want);
}

#[tokio::test]
async fn last_measurement_is_the_greatest_instant_whatever_the_arrival_order() {
    let app = spawn_app().await;
    for ts in [
        "2021-11-08T10:00:00Z",
        "2021-11-09T10:00:00+05:00",
        "2021-11-08T12:00:00Z",
        "2021-11-07T00:00:00Z",
    ] {
        app.post_data(format!("[{}]", measurement("s", ts, 1.0)), StatusCode::NO_CONTENT)
            .await;
    }
    // 2021-11-09T10:00+05:00 is 05:00 UTC on the 9th: the greatest instant, not the last sent.
    assert_eq!(
        app.statistics("s").await["last_measurement"],
        "2021-11-09T05:00:00+00:00"
    );
}

#[tokio::test]
async fn last_measurement_prints_zero_six_or_nine_fraction_digits() {
    let app = spawn_app().await;
    for (sensor, ts, want) in [
        ("a", "2021-11-08T21:38:09.000Z", "2021-11-08T21:38:09+00:00"),
        ("b", "2021-11-08T21:38:09.12Z", "2021-11-08T21:38:09.120000+00:00"),
        (
            "c",
            "2021-11-08T21:38:09.123456789Z",
            "2021-11-08T21:38:09.123456789+00:00",
        ),
        (
            "d",
            "2021-11-08T21:38:09.1234561Z",
            "2021-11-08T21:38:09.123456100+00:00",
        ),
    ] {
        app.post_data(
            format!("[{}]", measurement(sensor, ts, 1.0)),
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(app.statistics(sensor).await["last_measurement"], want);
    }
}

#[tokio::test]
async fn sensor_ids_with_spaces_unicode_and_slashes_round_trip() {
    let app = spawn_app().await;
    for (id, encoded) in [
        ("room 1", "room%201"),
        ("température/°C", "temp%C3%A9rature%2F%C2%B0C"),
        ("a/b", "a%2Fb"),
        ("100%", "100%25"),
    ] {
        app.post_data(
            format!("[{}]", measurement(id, "2021-11-08T21:38:09Z", 4.0)),
            StatusCode::NO_CONTENT,
        )
        .await;
        assert_eq!(app.statistics(encoded).await["count"], 1, "id {id:?}");
    }
    // The raw slash is a different path, not the sensor "a/b".
    app.request(Method::GET, "/statistics/a/b", &[], "", StatusCode::NOT_FOUND)
        .await
        .error();
}

#[tokio::test]
async fn count_and_avg_are_per_sensor() {
    let app = spawn_app().await;
    app.post_data(sample("post_data_ex1.json"), StatusCode::NO_CONTENT)
        .await;
    app.post_data(sample("post_data_ex2.json"), StatusCode::NO_CONTENT)
        .await;
    assert_eq!(app.statistics("sensor0").await["count"], 1);
    assert_eq!(app.statistics("sensor1").await["count"], 4);
}

#[tokio::test]
async fn delete_statistics_answers_204_and_later_data_starts_fresh() {
    let app = spawn_app().await;
    app.post_data(sample("post_data_ex2.json"), StatusCode::NO_CONTENT)
        .await;
    for _ in 0..2 {
        let reply = app
            .request(
                Method::DELETE,
                "/statistics/sensor1",
                &[],
                "",
                StatusCode::NO_CONTENT,
            )
            .await;
        assert!(reply.body.is_empty());
    }
    assert_eq!(app.statistics("sensor1").await, unknown_form());
    app.request(
        Method::DELETE,
        "/statistics/never-seen",
        &[],
        "",
        StatusCode::NO_CONTENT,
    )
    .await;

    app.post_data(
        format!("[{}]", measurement("sensor1", "2020-01-01T00:00:00Z", 7.0)),
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(
        app.statistics("sensor1").await,
        json!({"last_measurement": "2020-01-01T00:00:00+00:00", "count": 1, "avg": 7.0})
    );
}

#[tokio::test]
async fn a_sensor_id_over_256_bytes_in_the_path_is_a_400() {
    let app = spawn_app().await;
    let long = "x".repeat(257);
    for method in [Method::GET, Method::DELETE] {
        let reply = app
            .request(
                method,
                &format!("/statistics/{long}"),
                &[],
                "",
                StatusCode::BAD_REQUEST,
            )
            .await;
        assert!(reply.error().0.contains("256"));
    }
}
