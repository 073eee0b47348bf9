//! API keys (CONTRACT.md, "Access control and overload"): every route with no token, a
//! malformed header, a wrong token and a token of each scope; nothing applied when
//! refused; probes always open; `--metrics-public`; idempotency keys per API key; the
//! open-API warning; `sensor-stats keys new`.

use std::sync::{Arc, Mutex};

use reqwest::{Method, StatusCode};
use sensor_stats::{App, Config};

use crate::helpers::{KeysFile, Reply, TestApp, bearer, measurement, metric, spawn_app_with};

const KEYS: [(&str, &str); 5] = [
    ("fleet", "ingest"),
    ("dashboard", "read"),
    ("janitor", "delete"),
    ("prometheus", "metrics"),
    ("ops", "ingest,read,delete,metrics"),
];

async fn keyed_app(keys: &KeysFile, configure: impl FnOnce(&mut Config)) -> TestApp {
    let path = keys.path.clone();
    spawn_app_with(move |c| {
        c.api_keys_file = Some(path);
        configure(c);
    })
    .await
}

fn one(sensor: &str, value: f64) -> String {
    format!("[{}]", measurement(sensor, "2021-11-08T21:38:09Z", value))
}

async fn call(app: &TestApp, method: Method, path: &str, auth: Option<&str>, expected: StatusCode) -> Reply {
    let header = auth.map(|a| ("authorization", a.to_owned()));
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    if let Some((k, v)) = &header {
        headers.push((k, v));
    }
    let body = if method == Method::POST {
        one("sensor1", 10.0)
    } else {
        String::new()
    };
    app.request(method, path, &headers, body, expected).await
}

fn assert_401(reply: &Reply) {
    assert_eq!(
        reply.headers.get("www-authenticate").map(|v| v.to_str().unwrap()),
        Some(r#"Bearer realm="sensor-stats""#)
    );
    let (message, index) = reply.error();
    assert!(index.is_null());
    assert!(message.contains("nothing was applied"), "{message}");
}

async fn count_of(app: &TestApp, keys: &KeysFile, sensor: &str) -> u64 {
    let auth = format!("Bearer {}", keys.token("ops"));
    call(
        app,
        Method::GET,
        &format!("/statistics/{sensor}"),
        Some(&auth),
        StatusCode::OK,
    )
    .await
    .json()["count"]
        .as_u64()
        .unwrap()
}

/// The protected routes and the scope each needs.
const ROUTES: [(Method, &str, &str, StatusCode); 4] = [
    (Method::POST, "/data", "fleet", StatusCode::NO_CONTENT),
    (Method::GET, "/statistics/sensor1", "dashboard", StatusCode::OK),
    (
        Method::DELETE,
        "/statistics/sensor1",
        "janitor",
        StatusCode::NO_CONTENT,
    ),
    (Method::GET, "/metrics", "prometheus", StatusCode::OK),
];

#[tokio::test]
async fn every_protected_route_answers_401_without_a_valid_token_and_applies_nothing() {
    // Arrange: a sensor with one measurement.
    let keys = KeysFile::new(&KEYS);
    let app = keyed_app(&keys, |_| {}).await;
    let ops = format!("Bearer {}", keys.token("ops"));
    call(&app, Method::POST, "/data", Some(&ops), StatusCode::NO_CONTENT).await;

    // Act + Assert: every protected route, every kind of bad credential.
    let wrong = "Bearer sst_0000000000000000000000000000000000000000000000000000000000000000".to_owned();
    let bad: [Option<&str>; 6] = [
        None,
        Some("Basic b3BzOm9wcw=="),
        Some("Bearer"),
        Some("Bearer two words"),
        Some(&wrong),
        Some(keys.token("ops")), // the token without the scheme
    ];
    for (method, path, _, _) in ROUTES {
        for auth in bad {
            let reply = call(&app, method.clone(), path, auth, StatusCode::UNAUTHORIZED).await;
            assert_401(&reply);
        }
    }

    // Nothing was applied: the POSTs added nothing, the DELETEs removed nothing.
    assert_eq!(count_of(&app, &keys, "sensor1").await, 1);
    let text = String::from_utf8(
        call(&app, Method::GET, "/metrics", Some(&ops), StatusCode::OK)
            .await
            .body,
    )
    .unwrap();
    let failures = |reason: &str| {
        metric(
            &text,
            &format!("sensor_stats_auth_failures_total{{reason=\"{reason}\"}}"),
        )
        .unwrap()
    };
    assert_eq!(failures("missing"), 4.0);
    assert_eq!(failures("malformed"), 16.0);
    assert_eq!(failures("unknown"), 4.0);
    assert_eq!(failures("forbidden"), 0.0);
    assert_eq!(metric(&text, "sensor_stats_api_keys"), Some(5.0));
}

#[tokio::test]
async fn each_scope_opens_its_route_only_and_a_missing_scope_is_403_with_nothing_applied() {
    let keys = KeysFile::new(&KEYS);
    let app = keyed_app(&keys, |_| {}).await;
    let ops = format!("Bearer {}", keys.token("ops"));
    call(&app, Method::POST, "/data", Some(&ops), StatusCode::NO_CONTENT).await;

    let mut forbidden = 0;
    for (name, _) in KEYS.iter().filter(|(n, _)| *n != "ops") {
        let auth = format!("Bearer {}", keys.token(name));
        for (method, path, scope_holder, _) in ROUTES {
            if *name == scope_holder {
                continue;
            }
            let reply = call(&app, method.clone(), path, Some(&auth), StatusCode::FORBIDDEN).await;
            assert!(reply.headers.get("www-authenticate").is_none());
            let (message, index) = reply.error();
            assert!(index.is_null());
            assert!(
                message.contains(&format!("API key \"{name}\"")) && message.contains("scope"),
                "{message}"
            );
            forbidden += 1;
        }
    }
    // A DELETE with a read-only (or any non-delete) token left the sensor; the POSTs
    // without the ingest scope added nothing.
    assert_eq!(count_of(&app, &keys, "sensor1").await, 1);

    // Each scope's own route works, in an order that leaves DELETE last.
    for (method, path, holder, ok) in ROUTES {
        let auth = format!("Bearer {}", keys.token(holder));
        call(&app, method.clone(), path, Some(&auth), ok).await;
        if method == Method::POST {
            assert_eq!(count_of(&app, &keys, "sensor1").await, 2);
        }
    }
    assert_eq!(
        count_of(&app, &keys, "sensor1").await,
        0,
        "deleted by the delete scope"
    );

    let text = String::from_utf8(
        call(&app, Method::GET, "/metrics", Some(&ops), StatusCode::OK)
            .await
            .body,
    )
    .unwrap();
    assert_eq!(
        metric(&text, r#"sensor_stats_auth_failures_total{reason="forbidden"}"#),
        Some(f64::from(forbidden))
    );
    assert_eq!(
        metric(
            &text,
            r#"sensor_stats_requests_rejected_total{reason="forbidden"}"#
        ),
        Some(f64::from(forbidden))
    );
}

#[tokio::test]
async fn probes_are_always_open_and_other_routes_are_not_revealed_to_strangers() {
    let keys = KeysFile::new(&KEYS);
    let app = keyed_app(&keys, |_| {}).await;
    let wrong = "Bearer nope".to_owned();
    let fleet = format!("Bearer {}", keys.token("fleet"));
    for path in ["/healthz", "/livez"] {
        for auth in [None, Some(wrong.as_str()), Some("garbage"), Some(fleet.as_str())] {
            call(&app, Method::GET, path, auth, StatusCode::NO_CONTENT).await;
        }
    }
    // Unknown routes and methods: 401 without a valid key, 404/405 with any key.
    assert_401(&call(&app, Method::GET, "/admin", None, StatusCode::UNAUTHORIZED).await);
    assert_401(&call(&app, Method::PUT, "/statistics/x", None, StatusCode::UNAUTHORIZED).await);
    call(&app, Method::GET, "/admin", Some(&fleet), StatusCode::NOT_FOUND).await;
    call(
        &app,
        Method::PUT,
        "/statistics/x",
        Some(&fleet),
        StatusCode::METHOD_NOT_ALLOWED,
    )
    .await;
}

#[tokio::test]
async fn metrics_public_serves_metrics_without_a_token_and_keeps_the_rest_closed() {
    let keys = KeysFile::new(&KEYS);
    let app = keyed_app(&keys, |c| c.metrics_public = true).await;
    let reply = call(&app, Method::GET, "/metrics", None, StatusCode::OK).await;
    assert!(String::from_utf8_lossy(&reply.body).contains("sensor_stats_build_info"));
    assert_401(
        &call(
            &app,
            Method::GET,
            "/statistics/sensor1",
            None,
            StatusCode::UNAUTHORIZED,
        )
        .await,
    );
    assert_401(&call(&app, Method::POST, "/data", None, StatusCode::UNAUTHORIZED).await);
}

#[tokio::test]
async fn idempotency_keys_belong_to_the_api_key_that_sent_them() {
    let keys = KeysFile::new(&[("north", "ingest"), ("south", "ingest"), ("ops", "read")]);
    let app = keyed_app(&keys, |_| {}).await;
    let post = |who: &'static str, value: f64, expected: StatusCode| {
        let (k, v) = bearer(keys.token(who));
        let app = &app;
        async move {
            app.request(
                Method::POST,
                "/data",
                &[(k, v.as_str()), ("idempotency-key", "batch-1")],
                one("shared", value),
                expected,
            )
            .await
        }
    };

    // The same Idempotency-Key from two clients, with different bodies: both applied.
    let first = post("north", 1.0, StatusCode::NO_CONTENT).await;
    assert!(first.headers.get("idempotent-replayed").is_none());
    let second = post("south", 3.0, StatusCode::NO_CONTENT).await;
    assert!(
        second.headers.get("idempotent-replayed").is_none(),
        "south's key must not meet north's"
    );
    // Each client's retry is a replay of its own batch; another body is its own 422.
    let replay = post("south", 3.0, StatusCode::NO_CONTENT).await;
    assert_eq!(replay.headers["idempotent-replayed"], "true");
    let reused = post("north", 3.0, StatusCode::UNPROCESSABLE_ENTITY).await;
    assert!(reused.error().0.contains("different request body"));

    let (k, v) = bearer(keys.token("ops"));
    let stats = app
        .request(
            Method::GET,
            "/statistics/shared",
            &[(k, v.as_str())],
            "",
            StatusCode::OK,
        )
        .await
        .json();
    assert_eq!(
        (stats["count"].as_u64(), stats["avg"].as_f64()),
        (Some(2), Some(2.0))
    );
}

#[tokio::test]
async fn an_open_server_warns_at_start_and_a_keyed_one_does_not() {
    let open = build_and_capture_log(Config::default());
    assert!(open.contains("WARN"), "{open}");
    assert!(open.contains("the API is open"), "{open}");

    let keys = KeysFile::new(&KEYS);
    let keyed = build_and_capture_log(Config {
        api_keys_file: Some(keys.path.clone()),
        ..Config::default()
    });
    assert!(!keyed.contains("the API is open"), "{keyed}");
    assert!(keyed.contains("API keys required"), "{keyed}");
}

#[tokio::test]
async fn a_broken_keys_file_stops_the_server_from_starting() {
    let keys = KeysFile::new(&KEYS);
    keys.write_raw("fleet ingest sha256:0123\n");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let config = Config {
        host: [127, 0, 0, 1].into(),
        api_keys_file: Some(keys.path.clone()),
        ..Config::default()
    };
    let err = App::build_with_listener(config, listener)
        .unwrap_err()
        .to_string();
    assert!(err.contains("line 1") && err.contains("64 hex digits"), "{err}");
    let missing = Config {
        api_keys_file: Some(keys.path.with_extension("absent")),
        ..Config::default()
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let err = App::build_with_listener(missing, listener)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot read the API keys file"), "{err}");
}

#[tokio::test]
async fn keys_new_prints_a_token_and_a_line_that_opens_the_api() {
    // Arrange: the real binary makes a key.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_sensor-stats"))
        .args(["keys", "new", "cli-made", "ingest", "read"])
        .env_clear()
        .output()
        .expect("the binary runs");
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    let [token, line] = lines[..] else {
        panic!("expected two lines, got {stdout:?}")
    };
    assert!(line.starts_with("cli-made ingest,read sha256:"), "{line}");
    assert!(!line.contains(&token[4..]));
    assert!(String::from_utf8_lossy(&output.stderr).contains("stored nowhere"));

    // Act: a server with that line in its keys file.
    let keys = KeysFile::new(&[]);
    keys.write_raw(&format!("{line}\n"));
    let app = keyed_app(&keys, |_| {}).await;

    // Assert: the token posts and reads, and may not delete.
    let auth = format!("Bearer {token}");
    call(&app, Method::POST, "/data", Some(&auth), StatusCode::NO_CONTENT).await;
    call(
        &app,
        Method::GET,
        "/statistics/sensor1",
        Some(&auth),
        StatusCode::OK,
    )
    .await;
    call(
        &app,
        Method::DELETE,
        "/statistics/sensor1",
        Some(&auth),
        StatusCode::FORBIDDEN,
    )
    .await;

    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_sensor-stats"))
        .args(["keys", "new", "x", "admin"])
        .env_clear()
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unknown scope"));
}

/// Builds an app with `config` (on 127.0.0.1:0) and returns what it logged meanwhile.
fn build_and_capture_log(config: Config) -> String {
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let listener = tokio::net::TcpListener::from_std(listener).unwrap();
    let config = Config {
        host: [127, 0, 0, 1].into(),
        ..config
    };
    tracing::subscriber::with_default(subscriber, || {
        App::build_with_listener(config, listener).expect("app builds");
    });
    let text = captured.0.lock().unwrap().clone();
    String::from_utf8(text).unwrap()
}
