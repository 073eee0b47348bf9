//! Redis Cluster mode (`--store redis-cluster`) against a real 3-master, 3-replica cluster
//! of Debian's redis-server on loopback: the API, a batch over several shards, a master
//! killed under load, and a live reshard under load.

use std::{
    collections::HashMap,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use sensor_stats::config::{RedisUrl, StoreKind};

use crate::helpers::{TestApp, measurement, spawn_app_unready};

/// Six redis-server processes forming a cluster (3 masters with one replica each), in
/// one temp dir; every process is killed on drop.
pub struct RedisCluster {
    dir: tempfile::TempDir,
    nodes: Mutex<HashMap<u16, Option<Child>>>,
    ports: Vec<u16>,
}

/// A loopback port `p` with `p + 10000` (the cluster bus) free too.
fn cluster_port() -> u16 {
    loop {
        let p = crate::helpers::free_port();
        if p < 50_000 && std::net::TcpListener::bind(("127.0.0.1", p + 10_000)).is_ok() {
            return p;
        }
    }
}

impl RedisCluster {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let p = cluster_port();
            if !ports.contains(&p) {
                ports.push(p);
            }
        }
        let mut cluster = Self {
            dir,
            nodes: Mutex::new(HashMap::new()),
            ports: Vec::new(),
        };
        // Another test's process may take a chosen port (or its bus port) before this
        // node binds it; such a node exits at once, and gets another port.
        for mut p in ports {
            let mut attempts = 0;
            while !cluster.launch(p) {
                attempts += 1;
                assert!(attempts < 5, "no node started after {attempts} ports");
                p = loop {
                    let q = cluster_port();
                    if !cluster.ports.contains(&q) {
                        break q;
                    }
                };
            }
            cluster.ports.push(p);
        }
        let mut create = Command::new("redis-cli");
        create.args(["--cluster", "create"]);
        for p in &cluster.ports {
            create.arg(format!("127.0.0.1:{p}"));
        }
        let out = create
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            out.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        cluster.wait_ok(Duration::from_secs(20));
        cluster
    }

    /// Starts (again) the node on `port`, with its data dir and nodes.conf.
    pub fn run(&self, port: u16) {
        assert!(self.launch(port), "node {port} did not start");
    }

    /// Starts the node on `port` and waits for its PONG; false when the process exits
    /// first (its port was taken) or no PONG comes within 10 s.
    fn launch(&self, port: u16) -> bool {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"])
            .args([
                "--cluster-node-timeout",
                "1000",
                "--cluster-require-full-coverage",
                "no",
            ])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.nodes.lock().unwrap().insert(port, Some(child));
        let start = Instant::now();
        while self.cli(port, &["PING"]) != "PONG" {
            let exited = match self.nodes.lock().unwrap().get_mut(&port) {
                Some(Some(child)) => child.try_wait().is_ok_and(|status| status.is_some()),
                _ => true,
            };
            if exited || start.elapsed() > Duration::from_secs(10) {
                self.kill(port);
                self.nodes.lock().unwrap().remove(&port);
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        true
    }

    pub fn kill(&self, port: u16) {
        if let Some(Some(mut child)) = self.nodes.lock().unwrap().insert(port, None) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn cli(&self, port: u16, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli runs");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// Waits until every live node says `cluster_state:ok` and agrees on the masters.
    pub fn wait_ok(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let live: Vec<u16> = self
                .nodes
                .lock()
                .unwrap()
                .iter()
                .filter(|(_, c)| c.is_some())
                .map(|(p, _)| *p)
                .collect();
            let masters = self.masters();
            if live
                .iter()
                .all(|&p| self.cli(p, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
                && masters.len() == 3
                && masters.iter().all(|(p, _, _)| {
                    self.cli(*p, &["INFO", "replication"])
                        .contains("connected_slaves:1")
                })
            {
                return;
            }
            assert!(start.elapsed() < limit, "cluster not ok within {limit:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `(port, node id, slot ranges)` of each live master, as a live node sees them.
    pub fn masters(&self) -> Vec<(u16, String, String)> {
        let any = self
            .nodes
            .lock()
            .unwrap()
            .iter()
            .find(|(_, c)| c.is_some())
            .map(|(p, _)| *p)
            .unwrap();
        self.cli(any, &["CLUSTER", "NODES"])
            .lines()
            .filter(|l| l.contains("master") && !l.contains("fail") && !l.contains("noaddr"))
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let port = f[1].split([':', '@']).nth(1)?.parse().ok()?;
                Some((
                    port,
                    f[0].to_owned(),
                    f.get(8..).map(|s| s.join(" ")).unwrap_or_default(),
                ))
            })
            .collect()
    }

    /// The master port serving `slot`.
    pub fn master_of(&self, slot: u16) -> (u16, String) {
        for (port, id, ranges) in self.masters() {
            for range in ranges.split_whitespace() {
                let (a, b) = match range.split_once('-') {
                    Some((a, b)) => (a.parse::<u16>().unwrap_or(1), b.parse::<u16>().unwrap_or(0)),
                    None => match range.parse::<u16>() {
                        Ok(s) => (s, s),
                        Err(_) => continue,
                    },
                };
                if (a..=b).contains(&slot) {
                    return (port, id);
                }
            }
        }
        panic!("no master serves slot {slot}")
    }

    pub fn url(&self) -> String {
        self.ports
            .iter()
            .take(3)
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Moves `slot` with its keys from its master to `to` (by node id), the way
    /// `redis-cli --cluster reshard` does it, one key batch at a time.
    pub fn migrate_slot(&self, slot: u16, to_port: u16, to_id: &str) {
        let (from_port, from_id) = self.master_of(slot);
        if from_port == to_port {
            return;
        }
        let s = slot.to_string();
        assert_eq!(
            self.cli(to_port, &["CLUSTER", "SETSLOT", &s, "IMPORTING", &from_id]),
            "OK"
        );
        assert_eq!(
            self.cli(from_port, &["CLUSTER", "SETSLOT", &s, "MIGRATING", to_id]),
            "OK"
        );
        loop {
            let keys = self.cli(from_port, &["CLUSTER", "GETKEYSINSLOT", &s, "10"]);
            if keys.is_empty() {
                break;
            }
            let mut args = vec!["MIGRATE", "127.0.0.1"];
            let to = to_port.to_string();
            args.extend([to.as_str(), "", "0", "5000", "KEYS"]);
            args.extend(keys.lines());
            let out = self.cli(from_port, &args);
            assert!(out == "OK" || out == "NOKEY", "MIGRATE: {out}");
        }
        // As redis-cli does: the new owner first, then the old one, then every other master.
        let mut owners = vec![to_port, from_port];
        owners.extend(
            self.masters()
                .iter()
                .map(|m| m.0)
                .filter(|p| *p != to_port && *p != from_port),
        );
        for port in owners {
            assert_eq!(self.cli(port, &["CLUSTER", "SETSLOT", &s, "NODE", to_id]), "OK");
        }
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.nodes.lock().unwrap().values_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The hash slot of a key (CRC16/XMODEM of the hash tag), as Redis computes it.
fn slot_of(key: &str) -> u16 {
    let tag = key
        .find('{')
        .and_then(|a| {
            key[a + 1..]
                .find('}')
                .filter(|&len| len > 0)
                .map(|len| &key[a + 1..a + 1 + len])
        })
        .unwrap_or(key);
    let mut crc: u16 = 0;
    for &b in tag.as_bytes() {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc % 16384
}

pub async fn spawn_cluster_app(
    cluster: &RedisCluster,
    configure: impl FnOnce(&mut sensor_stats::Config),
) -> TestApp {
    let url = cluster.url();
    let app = spawn_app_unready(None, |c| {
        c.store = StoreKind::RedisCluster;
        c.redis_url = Some(RedisUrl(url));
        configure(c);
    })
    .await;
    app.wait_ready(Duration::from_secs(15)).await;
    app
}

fn batch_over_sensors(sensors: &[String], value: f64) -> String {
    let items: Vec<String> = sensors
        .iter()
        .map(|s| measurement(s, "2021-11-08T21:38:09Z", value))
        .collect();
    format!("[{}]", items.join(","))
}

#[tokio::test]
async fn the_api_works_over_a_cluster_and_a_batch_spreads_over_every_master() {
    let cluster = RedisCluster::start();
    let a = spawn_cluster_app(&cluster, |_| {}).await;
    let b = spawn_cluster_app(&cluster, |_| {}).await;
    let sensors: Vec<String> = (0..100).map(|i| format!("sensor-{i}")).collect();
    a.post_data(batch_over_sensors(&sensors, 2.0), StatusCode::NO_CONTENT)
        .await;
    b.post_data(batch_over_sensors(&sensors, 4.0), StatusCode::NO_CONTENT)
        .await;
    for s in ["sensor-0", "sensor-42", "sensor-99"] {
        let got = a.statistics(s).await;
        assert_eq!(
            (got["count"].as_u64(), got["avg"].as_f64()),
            (Some(2), Some(3.0)),
            "{s}"
        );
    }
    // The 16 buckets landed on all three masters.
    let with_data: usize = cluster
        .masters()
        .iter()
        .filter(|(port, _, _)| cluster.cli(*port, &["DBSIZE"]) != "0")
        .count();
    assert_eq!(with_data, 3);
    b.request(
        Method::DELETE,
        "/statistics/sensor-42",
        &[],
        "",
        StatusCode::NO_CONTENT,
    )
    .await;
    assert_eq!(a.statistics("sensor-42").await, crate::helpers::unknown_form());
    let metrics = a.request(Method::GET, "/metrics", &[], "", StatusCode::OK).await;
    assert!(
        String::from_utf8(metrics.body)
            .unwrap()
            .contains("sensor_stats_sensors_tracked 99")
    );
    // Idempotent replay across replicas.
    let body = batch_over_sensors(&sensors[..10], 1.0);
    for (app, replayed) in [(&a, false), (&b, true)] {
        let r = app
            .request(
                Method::POST,
                "/data",
                &[("idempotency-key", "cluster-1")],
                body.clone(),
                StatusCode::NO_CONTENT,
            )
            .await;
        assert_eq!(r.headers.contains_key("idempotent-replayed"), replayed);
    }
    assert_eq!(a.statistics("sensor-1").await["count"], 3);
}

#[tokio::test]
async fn the_sensor_cap_holds_over_a_cluster_across_replicas() {
    // Arrange: two replicas, a cap of 20 sensors spread over every bucket.
    let cluster = RedisCluster::start();
    let cap = |c: &mut sensor_stats::Config| c.max_sensors = std::num::NonZeroU64::new(20);
    let a = spawn_cluster_app(&cluster, cap).await;
    let b = spawn_cluster_app(&cluster, cap).await;
    let sensors: Vec<String> = (0..25).map(|i| format!("capped-{i}")).collect();
    a.post_data(batch_over_sensors(&sensors[..15], 1.0), StatusCode::NO_CONTENT)
        .await;

    // Act + Assert: six more would make 21: refused whole on the other replica.
    let refused = b
        .post_data(
            batch_over_sensors(&sensors[10..21], 1.0),
            StatusCode::INSUFFICIENT_STORAGE,
        )
        .await;
    assert!(refused.error().0.contains("more than 20 sensors"));
    assert_eq!(
        a.statistics("capped-10").await["count"],
        1,
        "nothing of it applied"
    );
    assert_eq!(a.statistics("capped-15").await["count"], 0);
    // Exactly up to the cap, and known sensors after it, are accepted.
    b.post_data(batch_over_sensors(&sensors[10..20], 1.0), StatusCode::NO_CONTENT)
        .await;
    a.post_data(batch_over_sensors(&sensors[..20], 1.0), StatusCode::NO_CONTENT)
        .await;
    a.post_data(
        batch_over_sensors(&sensors[20..], 1.0),
        StatusCode::INSUFFICIENT_STORAGE,
    )
    .await;
    assert_eq!(b.statistics("capped-12").await["count"], 3);
}

#[tokio::test]
async fn a_batch_over_shards_with_one_shard_paused_is_503_and_its_retry_counts_exactly_once() {
    let cluster = RedisCluster::start();
    let app = spawn_cluster_app(&cluster, |c| c.redis_timeout = Duration::from_millis(500)).await;
    let sensors: Vec<String> = (0..60).map(|i| format!("s{i}")).collect();
    let body = batch_over_sensors(&sensors, 1.0);
    // Pause writes, for longer than the store timeout, on a master that holds some of
    // the buckets but not the key's record (the claim would fail first, applying nothing).
    let (record_master, _) = cluster.master_of(slot_of("sensor-stats:idem:partial"));
    let paused = (0..16)
        .map(|b| cluster.master_of(slot_of(&format!("{{sensor-stats:b{b}}}"))).0)
        .find(|&port| port != record_master)
        .unwrap();
    assert_eq!(cluster.cli(paused, &["CLIENT", "PAUSE", "1500", "WRITE"]), "OK");
    let reply = app
        .request(
            Method::POST,
            "/data",
            &[("idempotency-key", "partial")],
            body.clone(),
            StatusCode::SERVICE_UNAVAILABLE,
        )
        .await;
    assert_eq!(reply.headers["retry-after"], "1");
    assert!(
        reply.error().0.contains("may have been applied"),
        "{:?}",
        reply.error()
    );
    // Retry with the same key until it is taken: every sensor counts exactly once.
    let start = Instant::now();
    loop {
        let r = app
            .client
            .post(app.url("/data"))
            .header("idempotency-key", "partial")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        match r.status() {
            StatusCode::NO_CONTENT => break,
            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                eprintln!(
                    "retry answered {}: {}",
                    r.status(),
                    r.text().await.unwrap_or_default()
                );
            }
            other => panic!("unexpected {other}"),
        }
        assert!(start.elapsed() < Duration::from_secs(10), "retry never succeeded");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for s in &sensors {
        assert_eq!(app.statistics(s).await["count"], 1, "{s}");
    }
}

/// Writers post distinct batches with their own keys and retry each until 204.
async fn writers_until(
    app: Arc<TestApp>,
    writers: usize,
    until: Instant,
) -> Vec<tokio::task::JoinHandle<(u64, u64)>> {
    (0..writers)
        .map(|w| {
            let app = Arc::clone(&app);
            tokio::spawn(async move {
                let (mut batches, mut retries) = (0u64, 0u64);
                while Instant::now() < until {
                    batches += 1;
                    let key = format!("w{w}-b{batches}");
                    let sensors: Vec<String> = (0..8)
                        .map(|i| format!("c{i}"))
                        .chain([format!("own-{w}")])
                        .collect();
                    let body = batch_over_sensors(&sensors, 1.0);
                    loop {
                        let started = Instant::now();
                        let r = app
                            .client
                            .post(app.url("/data"))
                            .header("idempotency-key", &key)
                            .body(body.clone())
                            .send()
                            .await
                            .unwrap();
                        assert!(started.elapsed() < Duration::from_secs(5), "a request hung");
                        assert!(
                            Instant::now() < until + Duration::from_secs(20),
                            "writer {w} could not get batch {batches} taken for 20 s"
                        );
                        match r.status() {
                            StatusCode::NO_CONTENT => break,
                            StatusCode::SERVICE_UNAVAILABLE | StatusCode::CONFLICT => {
                                retries += 1;
                                eprintln!(
                                    "writer {w} retries after {}: {}",
                                    r.status(),
                                    r.text().await.unwrap_or_default()
                                );
                            }
                            other => panic!("unexpected {other}: {:?}", r.text().await),
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
                (batches, retries)
            })
        })
        .collect()
}

#[tokio::test]
async fn a_master_killed_under_load_loses_no_acknowledged_batch() {
    let cluster = RedisCluster::start();
    let app = Arc::new(
        spawn_cluster_app(&cluster, |c| {
            c.redis_timeout = Duration::from_millis(500);
            c.redis_wait_replicas = 1;
            c.request_timeout = Duration::from_secs(3);
        })
        .await,
    );
    let until = Instant::now() + Duration::from_secs(8);
    let writers = writers_until(Arc::clone(&app), 4, until).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (victim, _) = cluster.master_of(slot_of("{sensor-stats:b1}"));
    cluster.kill(victim);
    // Its replica takes over; with one replica required per write, the shard takes writes
    // again once the old master is back, as the new master's replica.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let cluster = Arc::new(cluster);
    let restart = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || restart.run(victim))
        .await
        .unwrap();
    let (mut batches, mut retries) = (0, 0);
    for w in writers {
        let (b, r) = w.await.unwrap();
        batches += b;
        retries += r;
    }
    assert!(retries > 0, "the failover was not seen");
    for i in 0..8 {
        assert_eq!(
            app.statistics(&format!("c{i}")).await["count"].as_u64(),
            Some(batches),
            "c{i}"
        );
    }
}

#[tokio::test]
async fn a_live_reshard_under_load_causes_no_client_error() {
    let cluster = RedisCluster::start();
    let app = Arc::new(spawn_cluster_app(&cluster, |_| {}).await);
    let until = Instant::now() + Duration::from_secs(6);
    let writers = writers_until(Arc::clone(&app), 4, until).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    // Move every bucket's slot to the next master, keys and all, while writers post
    // (on a blocking thread: the app under test shares this test's runtime).
    let cluster = Arc::new(cluster);
    let mover = Arc::clone(&cluster);
    tokio::task::spawn_blocking(move || {
        let masters = mover.masters();
        for b in 0..16 {
            let slot = slot_of(&format!("{{sensor-stats:b{b}}}"));
            let (from, _) = mover.master_of(slot);
            let i = masters.iter().position(|m| m.0 == from).unwrap();
            let (to_port, to_id, _) = &masters[(i + 1) % masters.len()];
            mover.migrate_slot(slot, *to_port, to_id);
        }
    })
    .await
    .unwrap();
    let (mut batches, mut retries) = (0, 0);
    for w in writers {
        let (b, r) = w.await.unwrap();
        batches += b;
        retries += r;
    }
    assert_eq!(retries, 0, "clients saw errors during the reshard");
    for i in 0..8 {
        assert_eq!(
            app.statistics(&format!("c{i}")).await["count"].as_u64(),
            Some(batches),
            "c{i}"
        );
    }
}
