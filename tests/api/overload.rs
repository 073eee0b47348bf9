//! Overload protection: `--max-in-flight` (503 at once, probes and the scrape still
//! served, recovery), `--max-connections` (accept and close), `--idle-timeout`,
//! `--header-read-timeout` (kept by the connection watchdog), and `--max-sensors` (507,
//! nothing applied, known sensors still accepted).

use std::{
    num::{NonZeroU64, NonZeroUsize},
    time::{Duration, Instant},
};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use reqwest::{Method, StatusCode};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
    task::JoinHandle,
};

use crate::helpers::{TestApp, eventually, measurement, metric, spawn_app_with};

fn batch(sensors: &[&str]) -> String {
    let items: Vec<String> = sensors
        .iter()
        .map(|s| measurement(s, "2021-11-08T21:38:09Z", 1.0))
        .collect();
    format!("[{}]", items.join(","))
}

async fn metrics_text(app: &TestApp) -> String {
    let body = app
        .request(Method::GET, "/metrics", &[], "", StatusCode::OK)
        .await
        .body;
    String::from_utf8(body).unwrap()
}

/// Resident memory of this process (the server runs in it), in bytes.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// A client that sent the headers of a `POST /data` with a 1000-byte body and one byte
/// of it, and holds the request open.
async fn slow_post(app: &TestApp) -> TcpStream {
    let mut stream = TcpStream::connect(app.addr).await.unwrap();
    stream
        .write_all(
            b"POST /data HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n\
              content-length: 1000\r\n\r\n[",
        )
        .await
        .unwrap();
    stream
}

#[tokio::test]
async fn past_max_in_flight_requests_get_503_at_once_and_the_service_recovers() {
    // Arrange: four slow clients hold the four slots.
    let app = spawn_app_with(|c| c.max_in_flight = NonZeroUsize::new(4)).await;
    let rss_before = rss_bytes();
    let mut slow = Vec::new();
    for _ in 0..4 {
        slow.push(slow_post(&app).await);
    }
    eventually(Duration::from_secs(10), "four requests in flight", || async {
        // The scrape counts itself: 4 held + 1.
        metric(&metrics_text(&app).await, "sensor_stats_http_requests_in_flight") == Some(5.0)
    })
    .await;

    // Act + Assert: the next requests are refused at once, with nothing applied.
    let started = Instant::now();
    let refused = app
        .request(
            Method::GET,
            "/statistics/s",
            &[],
            "",
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(refused.headers["retry-after"], "1");
    let (message, index) = refused.error();
    assert!(message.contains("nothing was applied"), "{message}");
    assert!(index.is_null());
    let post = app
        .post_data(batch(&["refused"]), StatusCode::SERVICE_UNAVAILABLE)
        .await;
    assert_eq!(post.headers["retry-after"], "1");
    app.request(
        Method::DELETE,
        "/statistics/s",
        &[],
        "",
        StatusCode::SERVICE_UNAVAILABLE,
    )
    .await;
    // Probes and the scrape are never refused for load.
    app.request(Method::GET, "/healthz", &[], "", StatusCode::NO_CONTENT)
        .await;
    app.request(Method::GET, "/livez", &[], "", StatusCode::NO_CONTENT)
        .await;
    // A flood of refused requests keeps nothing: memory stays flat, the process stays up.
    for _ in 0..2_000 {
        let r = app.client.get(app.url("/statistics/s")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
    let text = metrics_text(&app).await;
    assert_eq!(metric(&text, "sensor_stats_requests_shed_total"), Some(2_003.0));
    let grown = rss_bytes().saturating_sub(rss_before);
    assert!(
        grown < 64 << 20,
        "RSS grew by {grown} bytes under a flood of refusals"
    );

    // Once the load goes, the service answers normally.
    drop(slow);
    eventually(Duration::from_secs(10), "the slots are given back", || async {
        app.client
            .get(app.url("/statistics/refused"))
            .send()
            .await
            .unwrap()
            .status()
            == StatusCode::OK
    })
    .await;
    assert_eq!(
        app.statistics("refused").await["count"],
        0,
        "the refused POST applied nothing"
    );
    app.post_data(batch(&["after"]), StatusCode::NO_CONTENT).await;
    assert_eq!(app.statistics("after").await["count"], 1);
}

/// One HTTP/1.1 connection driven by hyper's client, so the test decides which requests
/// share it.
struct Connection {
    sender: hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    driver: JoinHandle<hyper::Result<()>>,
}

impl Connection {
    async fn open(app: &TestApp) -> Self {
        let stream = TcpStream::connect(app.addr).await.unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        Self {
            sender,
            driver: tokio::spawn(connection),
        }
    }

    /// `GET path`; the status and body, or the error when the server closed the connection.
    async fn get(&mut self, path: &str) -> Result<(u16, String), hyper::Error> {
        self.sender.ready().await?;
        let request = hyper::Request::get(path)
            .header("host", "test")
            .body(Empty::new())
            .unwrap();
        let response = self.sender.send_request(request).await?;
        let status = response.status().as_u16();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    /// Whether the server closed the connection within `limit`.
    async fn closed_within(self, limit: Duration) -> bool {
        drop(self.sender);
        tokio::time::timeout(limit, self.driver).await.is_ok()
    }
}

#[tokio::test]
async fn past_max_connections_new_connections_are_closed_at_once_and_counted() {
    // Arrange: two connections at most. The helper's own pooled connection (from the
    // readiness check) idles out first.
    let app = spawn_app_with(|c| {
        c.max_connections = NonZeroUsize::new(2);
        c.idle_timeout = Duration::from_secs(2);
    })
    .await;
    eventually(
        Duration::from_secs(10),
        "only the probe's connection is open",
        || async {
            let mut probe = Connection::open(&app).await;
            let open = match probe.get("/metrics").await {
                Ok((200, text)) => metric(&text, "sensor_stats_connections_open"),
                _ => None,
            };
            drop(probe);
            tokio::time::sleep(Duration::from_millis(100)).await;
            open == Some(1.0)
        },
    )
    .await;
    let mut a = Connection::open(&app).await;
    let mut b = Connection::open(&app).await;
    assert_eq!(a.get("/livez").await.unwrap().0, 204);
    assert_eq!(b.get("/livez").await.unwrap().0, 204);

    // Act: a third connection.
    let mut c = Connection::open(&app).await;
    let started = Instant::now();
    let refused = c.get("/livez").await;

    // Assert: closed at once, without an answer; the two others still work.
    assert!(refused.is_err(), "{refused:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(a.get("/livez").await.unwrap().0, 204);
    drop(a);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut d = Connection::open(&app).await;
    let (status, text) = d.get("/metrics").await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(metric(&text, "sensor_stats_connections_refused_total"), Some(1.0));
    assert_eq!(metric(&text, "sensor_stats_connections_open"), Some(2.0));
    assert_eq!(b.get("/livez").await.unwrap().0, 204);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_busy_one_is_not() {
    let app = spawn_app_with(|c| c.idle_timeout = Duration::from_secs(1)).await;
    let mut idle = Connection::open(&app).await;
    let mut busy = Connection::open(&app).await;
    assert_eq!(idle.get("/livez").await.unwrap().0, 204);

    // The busy one sends a request every 100 ms for 2.5 s: never a second quiet.
    for _ in 0..25 {
        assert_eq!(busy.get("/livez").await.unwrap().0, 204);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        idle.closed_within(Duration::from_secs(3)).await,
        "idle connection still open"
    );
    let (_, text) = busy.get("/metrics").await.unwrap();
    assert!(metric(&text, "sensor_stats_connections_idle_closed_total") >= Some(1.0));
}

#[tokio::test]
async fn headers_sent_too_slowly_close_the_connection_and_a_quiet_keep_alive_one_stays_open() {
    let app = spawn_app_with(|c| {
        c.header_read_timeout = Duration::from_secs(1);
        c.idle_timeout = Duration::from_secs(60);
    })
    .await;
    // Served once, then silent: no request is arriving on it.
    let mut quiet = Connection::open(&app).await;
    assert_eq!(quiet.get("/livez").await.unwrap().0, 204);

    // Act: a request whose headers never end, one more byte every 100 ms (the connection
    // is never idle).
    let slow = TcpStream::connect(app.addr).await.unwrap();
    let (mut reader, mut writer) = slow.into_split();
    writer
        .write_all(b"GET /livez HTTP/1.1\r\nhost: test\r\nx-slow: ")
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if writer.write_all(b"x").await.is_err() {
                return;
            }
        }
    });
    let mut buf = [0u8; 256];
    let closed = tokio::time::timeout(Duration::from_secs(4), reader.read(&mut buf)).await;
    trickle.abort();

    // Assert: closed without an answer; the quiet connection, silent for longer than the
    // header-read timeout, still serves.
    assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
    assert_eq!(quiet.get("/livez").await.unwrap().0, 204);
}

#[tokio::test]
async fn a_batch_past_max_sensors_is_refused_whole_with_507_and_known_sensors_still_fit() {
    let app = spawn_app_with(|c| c.max_sensors = NonZeroU64::new(3)).await;
    app.post_data(batch(&["s1", "s2"]), StatusCode::NO_CONTENT).await;

    // Two new sensors would make four: refused whole.
    let refused = app
        .post_data(batch(&["s1", "s3", "s4"]), StatusCode::INSUFFICIENT_STORAGE)
        .await;
    let (message, index) = refused.error();
    assert!(
        message.contains("more than 3 sensors") && message.contains("nothing was applied"),
        "{message}"
    );
    assert!(index.is_null());
    assert_eq!(app.statistics("s1").await["count"], 1, "nothing of it applied");
    assert_eq!(app.statistics("s3").await["count"], 0);

    // Exactly at the cap, and known sensors afterwards, are accepted.
    app.post_data(batch(&["s1", "s2", "s3"]), StatusCode::NO_CONTENT)
        .await;
    app.post_data(batch(&["s1", "s3"]), StatusCode::NO_CONTENT).await;
    app.post_data(batch(&["s5"]), StatusCode::INSUFFICIENT_STORAGE)
        .await;

    // A refused batch with an Idempotency-Key leaves the key free; after a DELETE it fits.
    let with_key = |expected| {
        app.request(
            Method::POST,
            "/data",
            &[("content-type", "application/json"), ("idempotency-key", "cap-1")],
            batch(&["s6"]),
            expected,
        )
    };
    with_key(StatusCode::INSUFFICIENT_STORAGE).await;
    app.request(Method::DELETE, "/statistics/s2", &[], "", StatusCode::NO_CONTENT)
        .await;
    let accepted = with_key(StatusCode::NO_CONTENT).await;
    assert!(accepted.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.statistics("s6").await["count"], 1);
    assert_eq!(app.statistics("s1").await["count"], 3);

    let text = metrics_text(&app).await;
    assert_eq!(
        metric(&text, "sensor_stats_ingest_sensor_cap_refusals_total"),
        Some(3.0)
    );
    assert_eq!(metric(&text, "sensor_stats_sensors_tracked"), Some(3.0));
}
