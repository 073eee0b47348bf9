//! Unknown routes and wrong methods answer with the JSON error shape.

use reqwest::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn unknown_routes_are_404_with_a_json_error() {
    let app = spawn_app().await;
    for path in ["/", "/nope", "/statistics", "/statistics/", "/data/extra"] {
        let reply = app
            .request(Method::GET, path, &[], "", StatusCode::NOT_FOUND)
            .await;
        let (_, index) = reply.error();
        assert!(index.is_null());
    }
}

#[tokio::test]
async fn wrong_methods_are_405_with_a_json_error_and_allow_header() {
    let app = spawn_app().await;
    for (method, path) in [
        (Method::GET, "/data"),
        (Method::PUT, "/data"),
        (Method::POST, "/statistics/s"),
        (Method::PATCH, "/statistics/s"),
        (Method::POST, "/healthz"),
        (Method::DELETE, "/metrics"),
    ] {
        let reply = app
            .request(method.clone(), path, &[], "", StatusCode::METHOD_NOT_ALLOWED)
            .await;
        let (message, _) = reply.error();
        assert!(reply.headers.contains_key("allow"), "{method} {path}");
        assert!(message.contains("allowed"), "{message}");
    }
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_keeps_the_callers() {
    let app = spawn_app().await;
    let reply = app
        .request(
            Method::GET,
            "/healthz",
            &[("x-request-id", "abc-123")],
            "",
            StatusCode::NO_CONTENT,
        )
        .await;
    assert_eq!(reply.headers["x-request-id"], "abc-123");
    let reply = app
        .request(Method::GET, "/healthz", &[], "", StatusCode::NO_CONTENT)
        .await;
    assert!(!reply.headers["x-request-id"].is_empty());
}
