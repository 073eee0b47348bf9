//! The real binary as separate replica processes sharing one real `redis-server`, behind a
//! real nginx doing round robin (CONTRACT.md, "Several replicas" and "Idempotency-Key"):
//! the API answers through the balancer as one process would, and a replica SIGKILLed
//! under load loses or doubles nothing when clients retry with their Idempotency-Key.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::io::AsyncWriteExt as _;

use crate::helpers::{RedisServer, Reply, free_port, measurement, sample, unknown_form};

/// The claim of a request on a replica that died expires after this (`--request-timeout`).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// Replica processes of the real binary on one Redis, each on its own loopback port;
/// every one still running is SIGKILLed on drop.
struct Replicas {
    redis: Arc<RedisServer>,
    procs: Vec<(SocketAddr, Option<Child>)>,
}

impl Replicas {
    /// `n` replicas, each answering `/healthz` 204 when this returns.
    async fn start(n: usize) -> Self {
        let mut replicas = Self {
            redis: Arc::new(RedisServer::start()),
            procs: Vec::new(),
        };
        for _ in 0..n {
            let replica = replicas.spawn_one().await;
            replicas.procs.push(replica);
        }
        replicas
    }

    /// One replica, ready; a new port when the free one was taken meanwhile.
    async fn spawn_one(&self) -> (SocketAddr, Option<Child>) {
        let http = client();
        for _attempt in 0..3 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut child = Command::new(env!("CARGO_BIN_EXE_sensor-stats"))
                .args(["--host", "127.0.0.1", "--port", &addr.port().to_string()])
                .args(["--store", "redis", "--redis-url", &self.redis.url()])
                .args(["--request-timeout", "3s", "--log-level", "warn"])
                .env_remove("RUST_LOG")
                .stdin(Stdio::null())
                .spawn()
                .expect("the sensor-stats binary starts");
            let start = Instant::now();
            let exited = loop {
                if let Some(status) = child.try_wait().unwrap() {
                    break Some(status);
                }
                if let Ok(r) = http.get(format!("http://{addr}/healthz")).send().await
                    && r.status() == StatusCode::NO_CONTENT
                {
                    // The 204 came from this child, not from another process on the port.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    match child.try_wait().unwrap() {
                        None => break None,
                        Some(status) => break Some(status),
                    }
                }
                assert!(
                    start.elapsed() < Duration::from_secs(15),
                    "replica on {addr} not ready within 15 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            match exited {
                None => return (addr, Some(child)),
                Some(status) => eprintln!("replica on {addr} exited at start ({status}); another port"),
            }
        }
        panic!("no replica could start");
    }

    fn addrs(&self) -> Vec<SocketAddr> {
        self.procs.iter().map(|(addr, _)| *addr).collect()
    }

    /// SIGKILLs replica `i`, as a crash or the OOM killer would, and reaps it.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.procs[i].1.take() {
            child.kill().expect("SIGKILL");
            child.wait().expect("reaped");
        }
    }
}

impl Drop for Replicas {
    fn drop(&mut self) {
        for i in 0..self.procs.len() {
            self.kill(i);
        }
    }
}

/// nginx (Debian's `/usr/sbin/nginx`) on a loopback port, round robin over `upstreams`,
/// everything it writes inside its own temp dir; SIGKILLed on drop.
struct Balancer {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    child: Child,
}

impl Balancer {
    async fn start(upstreams: &[SocketAddr]) -> Self {
        let http = client();
        for _attempt in 0..3 {
            let dir = tempfile::tempdir().expect("temp dir");
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let conf = nginx_conf(dir.path().to_str().unwrap(), addr, upstreams);
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let mut child = Command::new("/usr/sbin/nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .stdin(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start nginx ({e}): apt-get install nginx"));
            let start = Instant::now();
            loop {
                if let Some(status) = child.try_wait().unwrap() {
                    let log = std::fs::read_to_string(dir.path().join("error.log")).unwrap_or_default();
                    eprintln!("nginx on {addr} exited at start ({status}): {log}");
                    break;
                }
                if let Ok(r) = http.get(format!("http://{addr}/livez")).send().await
                    && r.status() == StatusCode::NO_CONTENT
                    && child.try_wait().unwrap().is_none()
                {
                    return Self { addr, dir, child };
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "nginx on {addr} not answering within 10 s"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("nginx could not start");
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single nginx process (no master, no daemon, so the test owns it and `kill` ends it).
/// `X-Upstream` tells the test which replica answered.
fn nginx_conf(dir: &str, listen: SocketAddr, upstreams: &[SocketAddr]) -> String {
    let servers: String = upstreams
        .iter()
        .map(|a| format!("        server {a} max_fails=1 fail_timeout=10s;\n"))
        .collect();
    format!(
        r#"daemon off;
master_process off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;

events {{
    worker_connections 256;
}}

http {{
    access_log {dir}/access.log;
    client_body_temp_path {dir}/client_body_temp;
    proxy_temp_path {dir}/proxy_temp;
    fastcgi_temp_path {dir}/fastcgi_temp;
    uwsgi_temp_path {dir}/uwsgi_temp;
    scgi_temp_path {dir}/scgi_temp;

    upstream replicas {{
{servers}        keepalive 16;
    }}

    server {{
        listen {listen};
        location / {{
            proxy_pass http://replicas;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_connect_timeout 1s;
            proxy_read_timeout 10s;
            # A POST already sent to a replica is never resent (no non_idempotent): the
            # client retries it with its Idempotency-Key instead.
            proxy_next_upstream error timeout;
            add_header X-Upstream $upstream_addr always;
        }}
    }}
}}
"#
    )
}

/// Sends one request through `url`; the reply and the replica that answered it.
async fn send(
    http: &reqwest::Client,
    method: Method,
    url: String,
    headers: &[(&str, &str)],
    body: String,
) -> (Reply, String) {
    let mut req = http.request(method, url).body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("request sent");
    let reply = Reply {
        status: resp.status(),
        headers: resp.headers().clone(),
        body: resp.bytes().await.expect("body read").to_vec(),
    };
    let upstream = reply
        .headers
        .get("x-upstream")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    (reply, upstream)
}

/// GETs `path` `times` times through the balancer: each answer, and who gave it.
async fn get_many(http: &reqwest::Client, lb: &Balancer, path: &str, times: usize) -> Vec<(Value, String)> {
    let mut answers = Vec::new();
    for _ in 0..times {
        let (reply, upstream) = send(http, Method::GET, lb.url(path), &[], String::new()).await;
        assert_eq!(
            reply.status,
            StatusCode::OK,
            "GET {path} via {upstream}: {:?}",
            String::from_utf8_lossy(&reply.body)
        );
        answers.push((reply.json(), upstream));
    }
    answers
}

fn upstreams_of(answers: &[(Value, String)]) -> BTreeSet<String> {
    answers.iter().map(|(_, u)| u.clone()).collect()
}

fn addr_set(addrs: &[SocketAddr]) -> BTreeSet<String> {
    addrs.iter().map(ToString::to_string).collect()
}

#[tokio::test]
async fn the_api_through_a_round_robin_balancer_answers_as_one_process() {
    let replicas = Replicas::start(2).await;
    let lb = Balancer::start(&replicas.addrs()).await;
    let http = client();
    let both = addr_set(&replicas.addrs());
    let json = [("content-type", "application/json")];

    let (reply, _) = send(
        &http,
        Method::POST,
        lb.url("/data"),
        &json,
        sample("post_data_ex2.json"),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);

    // Round robin: both replicas answer, each with the whole batch.
    let answers = get_many(&http, &lb, "/statistics/sensor1", 6).await;
    assert_eq!(
        upstreams_of(&answers),
        both,
        "round robin did not reach both replicas"
    );
    let first = &answers[0].0;
    assert_eq!(first["count"], 3, "{first}");
    assert_eq!(first["last_measurement"], "2021-11-09T21:38:11+00:00");
    let avg = first["avg"].as_f64().unwrap();
    assert!((avg - 5.3 / 3.0).abs() < 1e-12, "avg {avg}");
    for (answer, upstream) in &answers {
        assert_eq!(answer, first, "{upstream} answered otherwise");
    }

    // A retry with the key lands on the other replica and is not applied again.
    let keyed = [
        ("content-type", "application/json"),
        ("idempotency-key", "lb-once"),
    ];
    let one = format!("[{}]", measurement("sensor1", "2021-11-10T00:00:00Z", 5.0));
    let (reply, first_upstream) = send(&http, Method::POST, lb.url("/data"), &keyed, one.clone()).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert!(reply.headers.get("idempotent-replayed").is_none());
    let (reply, second_upstream) = send(&http, Method::POST, lb.url("/data"), &keyed, one).await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    assert_eq!(reply.headers["idempotent-replayed"], "true");
    assert_ne!(
        first_upstream, second_upstream,
        "round robin sent both to one replica"
    );
    for (answer, upstream) in get_many(&http, &lb, "/statistics/sensor1", 4).await {
        assert_eq!(answer["count"], 4, "{upstream}: {answer}");
        let avg = answer["avg"].as_f64().unwrap();
        assert!((avg - 10.3 / 4.0).abs() < 1e-12, "{upstream}: {answer}");
    }

    // A DELETE through the balancer clears the sensor for every later read on either.
    let (reply, _) = send(
        &http,
        Method::DELETE,
        lb.url("/statistics/sensor1"),
        &[],
        String::new(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NO_CONTENT);
    let answers = get_many(&http, &lb, "/statistics/sensor1", 6).await;
    assert_eq!(upstreams_of(&answers), both);
    for (answer, upstream) in &answers {
        assert_eq!(answer, &unknown_form(), "{upstream} still knows sensor1");
    }

    // A bad batch: 400 with the JSON error naming the measurement; nothing applied.
    let bad = format!(
        "[{},{}]",
        measurement("lb-bad", "2021-11-08T21:38:09Z", 1.0),
        measurement("lb-bad", "2021-02-30T00:00:00Z", 1.0)
    );
    let (reply, upstream) = send(&http, Method::POST, lb.url("/data"), &json, bad).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST, "via {upstream}");
    let (message, index) = reply.error();
    assert_eq!(index, 1, "{message}");
    let answers = get_many(&http, &lb, "/statistics/lb-bad", 4).await;
    assert_eq!(upstreams_of(&answers), both);
    for (answer, upstream) in &answers {
        assert_eq!(answer, &unknown_form(), "{upstream} applied part of a bad batch");
    }

    // Unknown routes: the service's JSON 404 (not nginx's HTML page), from both replicas.
    let mut seen = BTreeSet::new();
    for _ in 0..4 {
        let (reply, upstream) = send(&http, Method::GET, lb.url("/no/such/route"), &[], String::new()).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "via {upstream}");
        let (_, index) = reply.error();
        assert!(index.is_null());
        seen.insert(upstream);
    }
    assert_eq!(seen, both);
}

/// What one client saw: batches it got 204 for, and every other answer by kind.
#[derive(Default, Debug)]
struct Tally {
    batches: u64,
    replayed: u64,
    failures: BTreeMap<String, u64>,
}

impl Tally {
    fn merge(&mut self, other: &Self) {
        self.batches += other.batches;
        self.replayed += other.replayed;
        for (k, n) in &other.failures {
            *self.failures.entry(k.clone()).or_default() += n;
        }
    }

    fn retries(&self) -> u64 {
        self.failures.values().sum()
    }
}

/// POSTs `body` with `key` through the balancer until it is taken (204); every other
/// answer is tallied and retried after a short pause. Returns whether the 204 was a replay.
async fn post_until_taken(
    http: &reqwest::Client,
    url: &str,
    key: &str,
    body: &str,
    tally: &mut Tally,
) -> bool {
    let start = Instant::now();
    loop {
        let sent = http
            .post(url)
            .header("content-type", "application/json")
            .header("idempotency-key", key)
            .body(body.to_owned())
            .send()
            .await;
        match sent {
            Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                tally.batches += 1;
                let replayed = r.headers().get("idempotent-replayed").is_some();
                tally.replayed += u64::from(replayed);
                return replayed;
            }
            Ok(r) => {
                let status = r.status();
                let text = r.text().await.unwrap_or_default();
                if status.is_server_error() && status != StatusCode::BAD_GATEWAY {
                    eprintln!("{key}: {status} {text}");
                }
                *tally.failures.entry(status.as_u16().to_string()).or_default() += 1;
            }
            Err(e) => {
                eprintln!("{key}: {e}");
                *tally.failures.entry("connection error".to_owned()).or_default() += 1;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "{key} not taken within 15 s: {tally:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn load_batch(client: usize, i: u64) -> String {
    let minute = i % 60;
    format!(
        "[{},{},{}]",
        measurement("lb", &format!("2021-11-08T21:{minute:02}:00Z"), 1.0),
        measurement("lb", &format!("2021-11-08T21:{minute:02}:01Z"), 3.0),
        measurement(
            &format!("lb-own-{client}"),
            &format!("2021-11-08T22:{minute:02}:00Z"),
            client as f64
        )
    )
}

/// Waits until Redis holds the in-progress record of Idempotency-Key `key`.
async fn wait_for_claim(redis: &RedisServer, key: &str) {
    let start = Instant::now();
    loop {
        let found = redis.cli(&["--raw", "KEYS", &format!("*{key}*")]);
        if let Some(record) = found.lines().next().filter(|l| !l.is_empty()) {
            let value = redis.cli(&["--raw", "GET", record]);
            assert!(value.starts_with("p:"), "{record} holds {value:?}");
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "the replica took no claim for {key}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

// Several threads: the clients keep posting while the test blocks in the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_mid_load_loses_and_doubles_nothing_when_clients_retry_with_their_key() {
    const CLIENTS: usize = 4;
    let mut replicas = Replicas::start(2).await;
    let victim = replicas.addrs()[1];
    let lb = Arc::new(Balancer::start(&replicas.addrs()).await);
    let url = lb.url("/data");

    let started = Instant::now();
    let deadline = started + Duration::from_secs(3);
    let mut clients = Vec::new();
    for c in 0..CLIENTS {
        let url = url.clone();
        clients.push(tokio::spawn(async move {
            let http = client();
            let mut tally = Tally::default();
            let mut i = 0u64;
            while Instant::now() < deadline {
                i += 1;
                let key = format!("lb-{c}-{i}");
                post_until_taken(&http, &url, &key, &load_batch(c, i), &mut tally).await;
            }
            tally
        }));
    }

    // One request is surely in flight on the victim when it dies: its headers are in
    // (so its key is claimed, in Redis), half its body is not.
    tokio::time::sleep(Duration::from_millis(900)).await;
    let pinned_key = "lb-pinned-on-the-victim";
    let pinned = format!(
        "[{},{},{}]",
        measurement("lb", "2021-11-09T00:00:00Z", 1.0),
        measurement("lb", "2021-11-09T00:00:01Z", 3.0),
        measurement("lb-pinned", "2021-11-09T00:00:00Z", 7.0)
    );
    let mut stuck = tokio::net::TcpStream::connect(victim).await.unwrap();
    let head = format!(
        "POST /data HTTP/1.1\r\nhost: {victim}\r\ncontent-type: application/json\r\n\
         idempotency-key: {pinned_key}\r\ncontent-length: {}\r\n\r\n",
        pinned.len()
    );
    let pinned_at = Instant::now();
    stuck.write_all(head.as_bytes()).await.unwrap();
    stuck
        .write_all(&pinned.as_bytes()[..pinned.len() / 2])
        .await
        .unwrap();
    wait_for_claim(&replicas.redis, pinned_key).await;
    // Any replica sees the claim: the same key through the balancer is 409 meanwhile.
    let http = client();
    let (reply, upstream) = send(
        &http,
        Method::POST,
        url.clone(),
        &[("idempotency-key", pinned_key)],
        pinned.clone(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "via {upstream}");
    reply.error();

    replicas.kill(1);
    let killed_at = started.elapsed();
    assert!(
        pinned_at.elapsed() < REQUEST_TIMEOUT,
        "too slow: the pinned request may have timed out before the kill"
    );
    drop(stuck);

    // The dead replica's claim blocks the key until it expires, then the batch is taken
    // once, fresh (the dead replica never applied it).
    let mut pinned_tally = Tally::default();
    let replayed = post_until_taken(&http, &url, pinned_key, &pinned, &mut pinned_tally).await;
    let pinned_after = pinned_at.elapsed();
    assert!(!replayed, "the pinned batch was applied by the replica that died");
    assert!(
        pinned_after >= REQUEST_TIMEOUT - Duration::from_millis(100),
        "the dead replica's claim expired after {pinned_after:?}, before --request-timeout"
    );
    assert!(pinned_tally.failures.contains_key("409"), "{pinned_tally:?}");

    let mut load = Tally::default();
    let mut own = Vec::new();
    for c in clients {
        let tally = c.await.unwrap();
        own.push(tally.batches);
        load.merge(&tally);
    }
    eprintln!(
        "killed at {killed_at:?}; pinned batch taken after {pinned_after:?}; load: {} batches, \
         {} replayed, {} retries {:?}; pinned retries {:?}; took {:?}",
        load.batches,
        load.replayed,
        load.retries(),
        load.failures,
        pinned_tally.failures,
        started.elapsed()
    );
    let mut all = Tally::default();
    all.merge(&load);
    all.merge(&pinned_tally);
    for status in all.failures.keys() {
        assert!(
            ["502", "503", "409"].contains(&status.as_str()),
            "unexpected answer {status}: load {:?}, pinned {:?}",
            load.failures,
            pinned_tally.failures
        );
    }
    assert!(load.batches >= CLIENTS as u64, "{load:?}");

    // Exactly once: every batch taken counts once, read through the balancer (now only
    // the survivor) and on the survivor directly.
    let survivor = replicas.addrs()[0];
    let batches = load.batches + 1;
    for base in [lb.url(""), format!("http://{survivor}")] {
        let (reply, _) = send(
            &http,
            Method::GET,
            format!("{base}/statistics/lb"),
            &[],
            String::new(),
        )
        .await;
        assert_eq!(reply.status, StatusCode::OK);
        let lb_stats = reply.json();
        assert_eq!(
            lb_stats["count"].as_u64(),
            Some(2 * batches),
            "{base}: {lb_stats}"
        );
        assert_eq!(lb_stats["avg"], 2.0, "{base}: {lb_stats}");
        for (c, expected) in own.iter().enumerate() {
            let (reply, _) = send(
                &http,
                Method::GET,
                format!("{base}/statistics/lb-own-{c}"),
                &[],
                String::new(),
            )
            .await;
            let s = reply.json();
            assert_eq!(s["count"].as_u64(), Some(*expected), "{base}: client {c}: {s}");
            if *expected > 0 {
                assert_eq!(s["avg"], c as f64, "{base}: client {c}: {s}");
            }
        }
        let (reply, _) = send(
            &http,
            Method::GET,
            format!("{base}/statistics/lb-pinned"),
            &[],
            String::new(),
        )
        .await;
        assert_eq!(reply.json()["count"], 1, "{base}");
    }
    // nginx saw the victim fail.
    let log = lb.error_log();
    assert!(log.contains(&victim.to_string()), "nginx error log: {log}");
}
