//! The naive server the load test compares sensor-stats with: what a first axum
//! implementation of the same API looks like. axum's own `serve`, serde_json through the
//! `Json` extractor, chrono for the timestamps, one `Mutex<HashMap>`, the system
//! allocator; no middleware, no metrics, no logs.
//!
//! It answers `POST /data` (all or nothing, 204), `GET /statistics/{sensor}`,
//! `DELETE /statistics/{sensor}` and `GET /healthz` (for the load test's readiness poll),
//! and stops on SIGTERM or Ctrl-C.
//!
//!     cargo build --release --example naive
//!     target/release/examples/naive --host 127.0.0.1 --port 8081

#![allow(missing_docs)]

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1")]
    host: IpAddr,
    #[arg(long, default_value_t = 8081)]
    port: u16,
}

#[derive(Deserialize)]
struct Measurement {
    sensor: String,
    timestamp: String,
    value: f64,
}

#[derive(Default)]
struct Stats {
    count: u64,
    sum: f64,
    last: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
struct StatsBody {
    last_measurement: Option<String>,
    count: u64,
    avg: f64,
}

type Db = Arc<Mutex<HashMap<String, Stats>>>;

async fn post_data(
    State(db): State<Db>,
    Json(batch): Json<Vec<Measurement>>,
) -> Result<StatusCode, (StatusCode, String)> {
    let mut parsed = Vec::with_capacity(batch.len());
    for m in batch {
        let at = DateTime::parse_from_rfc3339(&m.timestamp)
            .map_err(|e| (StatusCode::BAD_REQUEST, e.to_string()))?;
        if m.sensor.is_empty() || !m.value.is_finite() {
            return Err((StatusCode::BAD_REQUEST, "invalid measurement".into()));
        }
        parsed.push((m.sensor, at.with_timezone(&Utc), m.value));
    }
    let mut db = db.lock().unwrap();
    for (sensor, at, value) in parsed {
        let stats = db.entry(sensor).or_default();
        stats.count += 1;
        stats.sum += value;
        stats.last = stats.last.max(Some(at));
    }
    Ok(StatusCode::NO_CONTENT)
}

async fn get_statistics(State(db): State<Db>, Path(sensor): Path<String>) -> Json<StatsBody> {
    let db = db.lock().unwrap();
    let body = match db.get(&sensor) {
        Some(s) => StatsBody {
            last_measurement: s.last.map(|t| t.to_rfc3339_opts(SecondsFormat::AutoSi, false)),
            count: s.count,
            avg: s.sum / s.count as f64,
        },
        None => StatsBody {
            last_measurement: None,
            count: 0,
            avg: 0.0,
        },
    };
    Json(body)
}

async fn delete_statistics(State(db): State<Db>, Path(sensor): Path<String>) -> StatusCode {
    db.lock().unwrap().remove(&sensor);
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let db = Db::default();
    let app = Router::new()
        .route("/data", post(post_data))
        .route(
            "/statistics/{sensor}",
            get(get_statistics).delete(delete_statistics),
        )
        .route("/healthz", get(|| async { StatusCode::NO_CONTENT }))
        .with_state(db);
    let listener = tokio::net::TcpListener::bind((args.host, args.port))
        .await
        .expect("bind");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                .expect("SIGTERM handler");
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        })
        .await
        .expect("serve");
}
