//! Instruction counts per request of a real server over a real socket, for comparisons
//! that do not depend on how busy the machine is.
//!
//! Starts the server binary (sensor-stats, or the naive server of `examples/naive.rs`)
//! under `valgrind --tool=callgrind` with instrumentation off, warms it up with
//! `--warmup` requests (W3: after loading 100 sensors), switches instrumentation on
//! (`callgrind_control -i on`), sends `--requests` requests over `--connections`
//! keep-alive connections, switches it off, stops the server with SIGTERM and prints the
//! user-space instructions the server executed per request (every thread: runtime,
//! hyper, middleware, handler). With `--keep DIR` the callgrind file stays for
//! `callgrind_annotate`.
//!
//! `--tool strace` runs the server as it is and attaches `strace -c -f` for the counted
//! requests instead (system calls per request: the kernel side, which callgrind does not
//! see); `--tool none` just reports the server's CPU time per request (as noisy as the
//! machine).
//!
//!     cargo build --release --bin sensor-stats --example naive --example http_profile
//!     target/release/examples/http_profile --server target/release/sensor-stats --workload w2
//!     target/release/examples/http_profile --server target/release/examples/naive --workload w3

#![allow(missing_docs, clippy::print_stdout)]

#[path = "support/client.rs"]
mod client;

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use bytes::Bytes;
use clap::Parser;
use client::{Client, free_port};
use hyper::StatusCode;
use sensor_stats::workload;

#[derive(Parser, Debug)]
struct Args {
    /// The server binary (takes `--host` and `--port`).
    #[arg(long, default_value = "target/release/sensor-stats")]
    server: String,
    /// `w1` (POST 1000-measurement batches over 100 sensors), `w2` (POST one
    /// measurement) or `w3` (GET /statistics over 100 sensors).
    #[arg(long, default_value = "w2")]
    workload: String,
    /// Requests counted.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests before counting starts (connections, buffers and caches warm).
    #[arg(long, default_value_t = 1000)]
    warmup: usize,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Keep the callgrind output in this directory.
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Extra arguments for the server, e.g. `--server-arg=--log-level=warn`.
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// Environment for the server, `NAME=value` (e.g. `RUST_LOG=warn`).
    #[arg(long = "server-env")]
    server_env: Vec<String>,
    /// `callgrind` (instructions), `strace` (system calls) or `none` (CPU time).
    #[arg(long, default_value = "callgrind")]
    tool: String,
    /// With `--tool none`: pin the server to this CPU (`taskset`).
    #[arg(long)]
    server_cpu: Option<usize>,
}

fn main() {
    let args = Args::parse();
    let dir = tempfile::tempdir().unwrap();
    let out = match &args.keep {
        Some(d) => {
            std::fs::create_dir_all(d).unwrap();
            let name = std::path::Path::new(&args.server)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            d.join(format!("{name}-{}.{}", args.workload, args.tool))
        }
        None => dir.path().join("profile.out"),
    };
    let port = free_port();
    let mut cmd = match args.tool.as_str() {
        "callgrind" => {
            let mut c = Command::new("valgrind");
            c.args(["--tool=callgrind", "--instr-atstart=no", "--dump-instr=no"])
                .arg(format!("--callgrind-out-file={}", out.display()))
                .arg(&args.server);
            c
        }
        "strace" | "none" => match args.server_cpu {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string(), &args.server]);
                c
            }
            None => Command::new(&args.server),
        },
        other => panic!("unknown tool {other}"),
    };
    cmd.args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(&args.server_args)
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    for kv in &args.server_env {
        let (k, v) = kv.split_once('=').expect("--server-env NAME=value");
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("server");
    let pid = child.id().to_string();
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let local = tokio::task::LocalSet::new();
    let mut cpu = (0.0, 0.0);
    local.block_on(&rt, async {
        wait_ready(addr).await;
        let mut clients = Vec::new();
        for _ in 0..args.connections {
            clients.push(Client::connect(addr).await.expect("connect"));
        }
        if args.workload == "w3" {
            let load = Bytes::from(workload::batch(1000, 100, 1));
            assert_eq!(clients[0].post(load).await, StatusCode::NO_CONTENT);
        }
        clients = drive(clients, &args.workload, args.warmup).await;
        let mut strace = None;
        match args.tool.as_str() {
            "callgrind" => control(&pid, "-i", "on"),
            "strace" => {
                let child = Command::new("strace")
                    .args(["-c", "-f", "-p", &pid, "-o"])
                    .arg(&out)
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("strace");
                // strace attaches to every thread before the first counted request.
                tokio::time::sleep(Duration::from_secs(1)).await;
                strace = Some(child);
            }
            _ => {}
        }
        let cpu_before = cpu_seconds(&pid);
        let started = Instant::now();
        clients = drive(clients, &args.workload, args.requests).await;
        let elapsed = started.elapsed();
        let cpu_after = cpu_seconds(&pid);
        cpu = (cpu_after.0 - cpu_before.0, cpu_after.1 - cpu_before.1);
        if args.tool == "callgrind" {
            control(&pid, "-i", "off");
        }
        if let Some(mut strace) = strace {
            let _ = Command::new("kill")
                .args(["-INT", &strace.id().to_string()])
                .status();
            let _ = strace.wait();
        }
        drop(clients);
        eprintln!("{} requests in {elapsed:?}", args.requests);
    });
    let _ = Command::new("kill").args(["-TERM", &pid]).status();
    let status = child.wait().unwrap();
    assert!(status.success(), "server exited with {status}");

    let per_request = |total: f64| total / args.requests as f64;
    match args.tool.as_str() {
        "callgrind" => {
            let text = std::fs::read_to_string(&out).expect("callgrind output");
            let total: u64 = text
                .lines()
                .find_map(|l| l.strip_prefix("totals: "))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .expect("callgrind totals line");
            println!(
                "{} {}: {total} instructions for {} requests = {:.0} per request",
                args.server,
                args.workload,
                args.requests,
                per_request(total as f64)
            );
        }
        "strace" => {
            let text = std::fs::read_to_string(&out).expect("strace output");
            println!("{} {}: system calls per request", args.server, args.workload);
            for line in text.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                // % time, seconds, usecs/call, calls, [errors], syscall
                if fields.len() >= 5 && fields[0].parse::<f64>().is_ok() {
                    let calls: f64 = fields[3].parse().unwrap_or(0.0);
                    let name = fields[fields.len() - 1];
                    println!("  {name:<16} {:.3}", per_request(calls));
                } else if fields.first() == Some(&"100.00") || line.contains("total") {
                    let calls: f64 = fields.get(3).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                    println!("  {:<16} {:.3}", "total", per_request(calls));
                }
            }
        }
        _ => println!(
            "{} {}: {:.1} us of server CPU per request ({:.1} user, {:.1} system)",
            args.server,
            args.workload,
            per_request(cpu.0 + cpu.1) * 1e6,
            per_request(cpu.0) * 1e6,
            per_request(cpu.1) * 1e6
        ),
    }
}

/// (user, system) CPU seconds of process `pid` so far.
fn cpu_seconds(pid: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 100.0;
    (ticks(11), ticks(12))
}

/// Sends `n` requests spread over the connections, all connections busy at once.
async fn drive(clients: Vec<Client>, workload: &str, n: usize) -> Vec<Client> {
    let per = n / clients.len();
    let extra = n % clients.len();
    let handles: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            let count = per + usize::from(c < extra);
            let workload = workload.to_owned();
            tokio::task::spawn_local(async move {
                for i in 0..count {
                    let seed = (i % 16) as u64 + 1;
                    match workload.as_str() {
                        "w1" => {
                            let body = Bytes::from(workload::batch(1000, 100, seed));
                            assert_eq!(client.post(body).await, StatusCode::NO_CONTENT);
                        }
                        "w2" => {
                            let body = Bytes::from(workload::batch(1, 1, seed));
                            assert_eq!(client.post(body).await, StatusCode::NO_CONTENT);
                        }
                        _ => {
                            let path = format!("/statistics/{}", workload::sensor_id((c + i) % 100));
                            assert_eq!(client.get(&path).await.0, StatusCode::OK);
                        }
                    }
                }
                client
            })
        })
        .collect();
    let mut clients = Vec::new();
    for h in handles {
        clients.push(h.await.expect("worker"));
    }
    clients
}

fn control(pid: &str, flag: &str, value: &str) {
    let status = Command::new("callgrind_control")
        .args([flag, value, pid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("callgrind_control");
    assert!(status.success(), "callgrind_control {flag} {value} failed");
}

async fn wait_ready(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Ok(mut c) = Client::connect(addr).await
            && c.get("/healthz").await.0 == StatusCode::NO_CONTENT
        {
            return;
        }
        assert!(Instant::now() < deadline, "server did not become ready");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
