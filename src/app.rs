//! `App`: binds the listener, builds state and router, serves connections with hyper, and
//! runs the shutdown sequence. The only module that wires the others together.
//!
//! Connections are served by hyper directly rather than `axum::serve`, to own what axum
//! 0.8's server leaves open: a limit on silent, slow and idle clients, and a drain with a
//! deadline. A connection is HTTP/2 when it starts with the HTTP/2 preface (read with
//! `peek`, so nothing is buffered in between) and HTTP/1 otherwise. An HTTP/1 connection
//! has one watchdog timer for its whole life instead of hyper's header-read timer per
//! request (see [`Activity`]).
//!
//! Shutdown, when the future given to [`App::run_until`] resolves:
//! 1. `/healthz` answers 503 and responses carry `Connection: close`, while the listener
//!    keeps accepting for the configured grace period (load balancers notice and stop);
//! 2. the listener closes; idle connections close at once, busy ones after their current
//!    response; after the drain deadline the rest are closed;
//! 3. background tasks stop and `run_until` returns.

use std::{
    future::Future,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use hyper::server::conn::{http1, http2};
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::graceful::GracefulConnection,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    http::{Activity, HttpService},
    metrics::{Metrics, UPKEEP_INTERVAL},
    state::{AppState, Lifecycle},
    store::Store,
};

/// A built, bound, not yet serving application.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: HttpService,
    state: AppState,
    config: Config,
}

impl App {
    /// Binds `config.host:config.port` and builds the app.
    ///
    /// # Errors
    /// When the address cannot be bound or the configuration is unusable.
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((config.host, config.port))
            .await
            .with_context(|| format!("cannot listen on {}:{}", config.host, config.port))?;
        Self::build_with_listener(config, listener)
    }

    /// Builds the app on a listener bound by the caller (tests bind `127.0.0.1:0`).
    ///
    /// # Errors
    /// When the configuration is unusable.
    pub fn build_with_listener(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr().context("listener has no local address")?;
        let body_limit = usize::try_from(config.body_limit).context("body limit does not fit in memory")?;
        config.validate().map_err(anyhow::Error::msg)?;
        // rustls (Redis over TLS) needs a process-wide crypto provider; a second call
        // (several apps in one test process) finds it installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let store = Store::from_config(&config, Arc::clone(&metrics))?;
        let state = AppState::new(store, metrics, body_limit).with_request_timeout(config.request_timeout);
        let service = HttpService::new(state.clone());
        Ok(Self {
            listener,
            local_addr,
            service,
            state,
            config,
        })
    }

    /// The address the listener is bound to (the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The lifecycle flags, so callers can watch readiness.
    pub fn lifecycle(&self) -> Arc<Lifecycle> {
        Arc::clone(&self.state.lifecycle)
    }

    /// Serves until `shutdown` resolves, then drains (see the module docs) and returns.
    ///
    /// # Errors
    /// Only for failures of the server itself; request errors are answered, not returned.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        let background_tasks = TaskTracker::new();
        background_tasks.spawn(upkeep(Arc::clone(&self.state.metrics), background.clone()));
        background_tasks.spawn(self.state.store.clone().run_upkeep(background.clone()));

        let server = Server::new(&self.config, self.service.clone());
        self.state.lifecycle.set_ready();
        tracing::info!(addr = %self.local_addr, "listening");

        server.accept_until(&self.listener, shutdown).await;

        self.state.lifecycle.start_draining();
        if !self.config.shutdown_grace.is_zero() {
            tracing::info!(grace = ?self.config.shutdown_grace, "draining: /healthz answers 503, still accepting");
            server
                .accept_until(&self.listener, tokio::time::sleep(self.config.shutdown_grace))
                .await;
        }
        drop(self.listener);
        server.drain(self.config.drain_timeout).await;

        background.cancel();
        background_tasks.close();
        background_tasks.wait().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Keeps histogram memory bounded when nobody scrapes (see the metrics exporter docs).
async fn upkeep(metrics: Arc<Metrics>, stop: CancellationToken) {
    let mut tick = tokio::time::interval(UPKEEP_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => metrics.run_upkeep(),
        }
    }
}

/// The connection side: accepts, serves each connection on its own task, drains.
struct Server {
    service: HttpService,
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    connections: TaskTracker,
    /// Cancelled when draining starts: connections finish their request and close.
    drain: CancellationToken,
    /// Cancelled at the drain deadline: remaining connections are dropped.
    abort: CancellationToken,
}

/// What a connection speaks, from its first bytes.
enum Protocol {
    Http1,
    Http2,
    /// Closed (or failed) before saying anything.
    Closed,
}

/// The first bytes of every HTTP/2 connection with prior knowledge (RFC 9113 §3.4).
const H2_PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl Server {
    fn new(config: &Config, service: HttpService) -> Self {
        let mut http1 = http1::Builder::new();
        // No per-request header-read timer in hyper: the connection's watchdog enforces
        // the same limit with one timer per connection.
        http1.header_read_timeout(None);
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Self {
            service,
            http1,
            http2,
            header_read_timeout: config.header_read_timeout,
            connections: TaskTracker::new(),
            drain: CancellationToken::new(),
            abort: CancellationToken::new(),
        }
    }

    async fn accept_until(&self, listener: &TcpListener, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => return,
                accepted = listener.accept() => match accepted {
                    Ok((stream, _peer)) => self.serve(stream),
                    // Per-connection failures (reset before accept) are the client's.
                    Err(e) if is_connection_error(&e) => {}
                    // Out of file descriptors and the like: back off instead of spinning.
                    Err(e) => {
                        tracing::error!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
            }
        }
    }

    fn serve(&self, stream: TcpStream) {
        let _ = stream.set_nodelay(true);
        let opened = Instant::now();
        let service = self.service.for_connection();
        let http1 = self.http1.clone();
        let http2 = self.http2.clone();
        let timeout = self.header_read_timeout;
        let drain = self.drain.clone();
        let abort = self.abort.clone();
        self.connections.spawn(async move {
            // A client that connects and says nothing is closed after the header-read
            // timeout, and at once when draining.
            let protocol = tokio::select! {
                protocol = sniff(&stream) => protocol,
                () = tokio::time::sleep_until((opened + timeout).into()) => return,
                () = drain.cancelled() => return,
            };
            match protocol {
                Protocol::Closed => {}
                Protocol::Http1 => {
                    let watched = service.clone();
                    let connection = http1.serve_connection(TokioIo::new(stream), service);
                    let watchdog = watchdog(watched.activity(), opened, timeout);
                    run(connection, watchdog, &drain, &abort).await;
                }
                Protocol::Http2 => {
                    let connection = http2.serve_connection(TokioIo::new(stream), service);
                    run(connection, std::future::pending(), &drain, &abort).await;
                }
            }
        });
    }

    async fn drain(&self, deadline: Duration) {
        self.drain.cancel();
        self.connections.close();
        if tokio::time::timeout(deadline, self.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                open = self.connections.len(),
                ?deadline,
                "drain deadline passed; closing remaining connections"
            );
            self.abort.cancel();
            self.connections.wait().await;
        }
    }
}

/// Reads (without consuming) as much of the connection's start as tells HTTP/2 from
/// HTTP/1: one byte that differs from the preface is enough.
async fn sniff(stream: &TcpStream) -> Protocol {
    let mut start = [0u8; H2_PREFACE.len()];
    loop {
        match stream.peek(&mut start).await {
            Ok(0) | Err(_) => return Protocol::Closed,
            Ok(n) if start[..n] != H2_PREFACE[..n] => return Protocol::Http1,
            Ok(n) if n == H2_PREFACE.len() => return Protocol::Http2,
            // A strict prefix of the preface so far (clients send it in one piece; this
            // is a very slow or odd one): look again shortly.
            Ok(_) => tokio::time::sleep(Duration::from_millis(5)).await,
        }
    }
}

/// Serves `connection` until it ends or `watchdog` resolves (then it is closed); from
/// `drain` on, it finishes its current request and closes, or is dropped at `abort`.
async fn run<C>(
    connection: C,
    watchdog: impl Future<Output = ()>,
    drain: &CancellationToken,
    abort: &CancellationToken,
) where
    C: GracefulConnection<Error = hyper::Error>,
{
    tokio::pin!(connection, watchdog);
    tokio::select! {
        biased;
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            return;
        }
        () = &mut watchdog => return,
        () = drain.cancelled() => connection.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        () = abort.cancelled() => {}
    }
}

/// Resolves when the HTTP/1 connection opened at `opened` has gone `timeout` without a
/// request being handled: since it was opened, or since its last response. That closes
/// silent clients, clients too slow to send a request's headers, and idle keep-alive
/// connections, with one timer for the connection's life (re-armed at most once per
/// `timeout`), where hyper's own header-read timeout arms and disarms one per request.
async fn watchdog(activity: &Activity, opened: Instant, timeout: Duration) {
    let sleep = tokio::time::sleep_until((opened + timeout).into());
    tokio::pin!(sleep);
    loop {
        sleep.as_mut().await;
        let now = Instant::now();
        let next = match activity.idle_deadline(opened, timeout) {
            Some(deadline) if deadline <= now => return,
            Some(deadline) => deadline,
            // A request is being handled (its own timeout bounds it): look again later.
            None => now + timeout,
        };
        sleep.as_mut().reset(next.into());
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
