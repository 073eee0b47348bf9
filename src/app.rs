//! `App`: binds the listener, builds state and router, serves connections with hyper, and
//! runs the shutdown sequence. The only module that wires the others together.
//!
//! Connections are served by hyper-util directly rather than `axum::serve`, to own what
//! axum 0.8's server leaves open: a header-read timer (and a first-byte timer for clients
//! that connect and say nothing), and a drain with a deadline.
//!
//! Start-up: the listener serves at once, `/healthz` answers 503 until the store has
//! started (a durable store reads its data dir back first); if that fails, `run_until`
//! returns the error.
//!
//! Shutdown, when the future given to [`App::run_until`] resolves:
//! 1. `/healthz` answers 503 and responses carry `Connection: close`, while the listener
//!    keeps accepting for the configured grace period (load balancers notice and stop);
//! 2. the listener closes; idle connections close at once, busy ones after their current
//!    response; after the drain deadline the rest are closed;
//! 3. background tasks stop, the store shuts down (a durable store writes a last
//!    snapshot and closes its log) and `run_until` returns.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context as _;
use axum::Router;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
    service::TowerToHyperService,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    config::Config,
    http,
    metrics::{Metrics, UPKEEP_INTERVAL},
    state::{AppState, Lifecycle},
    store::Store,
};

/// A built, bound, not yet serving application.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
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
        let state = AppState::new(store, metrics, body_limit);
        let router = http::router(state.clone(), config.request_timeout);
        Ok(Self {
            listener,
            local_addr,
            router,
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

    /// The store handle (tests look into the durable store through it).
    pub fn store(&self) -> Store {
        self.state.store.clone()
    }

    /// Serves until `shutdown` resolves, then drains (see the module docs) and returns.
    ///
    /// # Errors
    /// When the store cannot start (a data dir that cannot be read back), and failures of
    /// the server itself; request errors are answered, not returned.
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let background = CancellationToken::new();
        let background_tasks = TaskTracker::new();
        background_tasks.spawn(upkeep(Arc::clone(&self.state.metrics), background.clone()));

        let server = Server::new(&self.config, self.router.clone());
        tracing::info!(addr = %self.local_addr, "listening");
        let starting = {
            let store = self.state.store.clone();
            let lifecycle = Arc::clone(&self.state.lifecycle);
            let tasks = background_tasks.clone();
            let stop = background.clone();
            tokio::spawn(async move {
                store.start().await?;
                tasks.spawn(store.run_upkeep(stop));
                lifecycle.set_ready();
                anyhow::Ok(())
            })
        };
        let mut start_error = None;
        {
            let failed = async {
                match starting.await {
                    Ok(Ok(())) => std::future::pending().await,
                    Ok(Err(e)) => e,
                    Err(e) => anyhow::Error::new(e).context("start-up task failed"),
                }
            };
            server
                .accept_until(&self.listener, async {
                    tokio::select! {
                        () = shutdown => {}
                        e = failed => start_error = Some(e),
                    }
                })
                .await;
        }
        if let Some(e) = start_error {
            tracing::error!(error = format!("{e:#}"), "start-up failed; stopping");
            drop(self.listener);
            server.drain(Duration::ZERO).await;
            background.cancel();
            background_tasks.close();
            background_tasks.wait().await;
            return Err(e);
        }

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
        self.state.store.shutdown().await;
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
    router: Router,
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    connections: TaskTracker,
    /// Cancelled when draining starts: connections finish their request and close.
    drain: CancellationToken,
    /// Cancelled at the drain deadline: remaining connections are dropped.
    abort: CancellationToken,
}

impl Server {
    fn new(config: &Config, router: Router) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(config.header_read_timeout);
        builder.http2().timer(TokioTimer::new());
        Self {
            router,
            builder,
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
        let service = TowerToHyperService::new(self.router.clone());
        let builder = self.builder.clone();
        let first_byte = self.header_read_timeout;
        let drain = self.drain.clone();
        let abort = self.abort.clone();
        self.connections.spawn(async move {
            // hyper's header timer starts at the first byte; a client that connects and
            // sends nothing is closed here, and at once when draining.
            let mut probe = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(first_byte, stream.peek(&mut probe)) => {
                    if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                () = drain.cancelled() => return,
            }
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = drain.cancelled() => connection.as_mut().graceful_shutdown(),
            }
            tokio::select! {
                _ = connection.as_mut() => {}
                () = abort.cancelled() => {}
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

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
