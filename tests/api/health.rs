//! GET /healthz.

use reqwest::{Method, StatusCode};

use crate::helpers::spawn_app;

#[tokio::test]
async fn healthz_is_204_with_no_body_when_ready() {
    let app = spawn_app().await;
    let reply = app
        .request(Method::GET, "/healthz", &[], "", StatusCode::NO_CONTENT)
        .await;
    assert!(reply.body.is_empty());
}

#[tokio::test]
async fn healthcheck_subcommand_logic_sees_the_server() {
    let app = spawn_app().await;
    let port = app.addr.port();
    let result = tokio::task::spawn_blocking(move || {
        sensor_stats::healthcheck::check(port, std::time::Duration::from_secs(2))
    })
    .await
    .unwrap();
    assert_eq!(result, Ok(()));
}
