//! Reloading the API keys without a restart: when the file changes, on the in-process
//! equivalent of SIGHUP, and on a real SIGHUP; a broken file keeps the keys in force.

use std::time::Duration;

use reqwest::{Method, StatusCode};

use crate::helpers::{KeysFile, TestApp, bearer, eventually, metric, spawn_app_with};

const WITHIN: Duration = Duration::from_secs(10);

async fn keyed_app(keys: &KeysFile, interval: Duration) -> TestApp {
    let path = keys.path.clone();
    spawn_app_with(move |c| {
        c.api_keys_file = Some(path);
        c.reload_interval = interval;
    })
    .await
}

/// The status `GET /statistics/probe` gets with `token`.
async fn status_with(app: &TestApp, token: &str) -> StatusCode {
    app.client
        .get(app.url("/statistics/probe"))
        .header("authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("request sent")
        .status()
}

async fn reloads(app: &TestApp, token: &str, result: &str) -> f64 {
    let (k, v) = bearer(token);
    let text = app
        .request(Method::GET, "/metrics", &[(k, v.as_str())], "", StatusCode::OK)
        .await
        .body;
    let series = format!("sensor_stats_reloads_total{{what=\"api_keys\",result=\"{result}\"}}");
    metric(&String::from_utf8(text).unwrap(), &series).expect("reload series")
}

#[tokio::test]
async fn a_changed_file_adds_and_removes_keys_and_a_broken_one_keeps_the_old_keys() {
    // Arrange: polling every 50 ms; one key.
    let mut keys = KeysFile::new(&[("old", "read,metrics")]);
    let app = keyed_app(&keys, Duration::from_millis(50)).await;
    assert_eq!(status_with(&app, keys.token("old")).await, StatusCode::OK);

    // A key added to the file works without a restart.
    keys.write(&[("old", "read,metrics"), ("new", "read,metrics")]);
    let new = keys.token("new").to_owned();
    eventually(WITHIN, "the added key works", || async {
        status_with(&app, &new).await == StatusCode::OK
    })
    .await;

    // A key removed from the file stops working.
    keys.write(&[("new", "read,metrics")]);
    let old = keys.token("old").to_owned();
    eventually(WITHIN, "the removed key is refused", || async {
        status_with(&app, &old).await == StatusCode::UNAUTHORIZED
    })
    .await;

    // A broken file is reported and the keys in force stay.
    let errors_before = reloads(&app, &new, "error").await;
    keys.write_raw("new read,metrics sha256:not-hex\n");
    eventually(WITHIN, "the broken file is reported", || async {
        reloads(&app, &new, "error").await > errors_before
    })
    .await;
    assert_eq!(status_with(&app, &new).await, StatusCode::OK);
    assert_eq!(status_with(&app, &old).await, StatusCode::UNAUTHORIZED);
    // ...also when the file disappears.
    std::fs::remove_file(&keys.path).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(status_with(&app, &new).await, StatusCode::OK);
    assert!(reloads(&app, &new, "ok").await >= 2.0);
}

#[tokio::test]
async fn the_sighup_equivalent_reloads_a_file_that_polling_would_not() {
    // Arrange: no polling, so only a reload request can pick up changes.
    let mut keys = KeysFile::new(&[("old", "read,metrics")]);
    let app = keyed_app(&keys, Duration::ZERO).await;
    keys.write(&[("new", "read,metrics")]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        status_with(&app, keys.token("new")).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(status_with(&app, keys.token("old")).await, StatusCode::OK);

    // Act
    app.reloader.reload().await;

    // Assert: the file is in force at once.
    assert_eq!(status_with(&app, keys.token("new")).await, StatusCode::OK);
    assert_eq!(
        status_with(&app, keys.token("old")).await,
        StatusCode::UNAUTHORIZED
    );

    // A broken file on reload keeps the keys in force.
    keys.write_raw("this is not a keys file\n");
    app.reloader.reload().await;
    assert_eq!(status_with(&app, keys.token("new")).await, StatusCode::OK);
    assert_eq!(reloads(&app, keys.token("new"), "error").await, 1.0);
    assert_eq!(reloads(&app, keys.token("new"), "ok").await, 1.0);
}

#[cfg(unix)]
#[tokio::test]
async fn a_real_sighup_reloads_the_keys() {
    let mut keys = KeysFile::new(&[("old", "read")]);
    let app = keyed_app(&keys, Duration::ZERO).await;
    keys.write(&[("old", "read"), ("added", "read")]);
    assert_eq!(
        status_with(&app, keys.token("added")).await,
        StatusCode::UNAUTHORIZED
    );

    // Every app in this process hears it (nextest runs each test in its own process).
    let sent = std::process::Command::new("kill")
        .args(["-HUP", &std::process::id().to_string()])
        .status()
        .expect("kill runs");
    assert!(sent.success());

    let added = keys.token("added").to_owned();
    eventually(WITHIN, "the key added before SIGHUP works", || async {
        status_with(&app, &added).await == StatusCode::OK
    })
    .await;
    assert_eq!(status_with(&app, keys.token("old")).await, StatusCode::OK);
}
