//! `App`: binds the listener, builds state and router, serves connections with hyper, and
//! runs the shutdown sequence. The only module that wires the others together.
//!
//! Connections are served by hyper-util directly rather than `axum::serve`, to own what
//! axum 0.8's server leaves open: a header-read timer (and a first-byte timer for clients
//! that connect and say nothing), an idle timer between requests, a ceiling on open
//! connections, TLS, and a drain with a deadline.
//!
//! Per connection: past `--max-connections` it is accepted and closed at once; otherwise
//! its first byte must come within `--header-read-timeout`; with TLS, a first byte that
//! is not a TLS handshake gets a plain-HTTP 400 saying to use https, and the handshake
//! must finish within the same timeout; then the HTTP/1 loop of [`http::h1`] answers the
//! hot requests itself and hands the connection to hyper, which serves HTTP/1.1 or
//! HTTP/2 (ALPN, or the HTTP/2 preface without TLS), at the first other request, until the client closes, the connection has seen no
//! byte in either direction for `--idle-timeout`, an HTTP/1 request's headers have taken
//! longer than `--header-read-timeout` from their first byte, or shutdown.
//!
//! Both timeouts are kept by one watchdog timer per connection that looks at the
//! connection's [`Activity`] (its last byte, whether a request's headers are arriving):
//! hyper's own header-read timer would be re-armed for every request. The watchdog wakes
//! at least every quarter of the header-read timeout, so a client that sends a request's
//! headers too slowly is closed between 1 and 1.25 times the timeout after their first
//! byte (hyper closed it at exactly 1 time).
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

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use anyhow::Context as _;
use axum::{
    http::{Request, Version},
    response::Response,
};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioExecutor, TokioIo, TokioTimer},
    server::conn::auto,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use crate::{
    access::Keyring,
    config::Config,
    http::{
        self,
        service::{HttpService, ResponseFuture},
    },
    limits::{Limit, OwnedPermit},
    metrics::{Metrics, TlsFailure, UPKEEP_INTERVAL},
    reload::{self, Reload, Reloader},
    state::{AppState, Lifecycle},
    store::Store,
    tls::Tls,
};

/// A built, bound, not yet serving application.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    local_addr: SocketAddr,
    service: HttpService,
    state: AppState,
    config: Config,
    tls: Option<Arc<Tls>>,
    reloader: Reloader,
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
    /// Reads the API keys file and the TLS files now: a server never starts with other
    /// keys or another certificate than the ones asked for. Warns when no API keys are
    /// configured (the API is then open to anyone who reaches the port).
    ///
    /// # Errors
    /// When the configuration is unusable, or the keys or TLS files cannot be used.
    pub fn build_with_listener(config: Config, listener: TcpListener) -> anyhow::Result<Self> {
        let local_addr = listener.local_addr().context("listener has no local address")?;
        let body_limit = usize::try_from(config.body_limit).context("body limit does not fit in memory")?;
        config.validate().map_err(anyhow::Error::msg)?;
        // rustls (Redis over TLS) needs a process-wide crypto provider; a second call
        // (several apps in one test process) finds it installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = Arc::new(Metrics::new());
        let store = Store::from_config(&config, Arc::clone(&metrics))?;
        let mut state = AppState::new(store, metrics, body_limit).with_max_in_flight(config.max_in_flight());
        match &config.api_keys_file {
            Some(path) => {
                let keys = Arc::new(Keyring::load(path)?);
                if keys.is_empty() {
                    tracing::warn!(file = %path.display(), "the API keys file holds no key: every route but /healthz and /livez answers 401");
                } else {
                    tracing::info!(keys = keys.len(), file = %path.display(), metrics_public = config.metrics_public, "API keys required");
                }
                state = state.with_keys(keys, config.metrics_public);
            }
            None => tracing::warn!(
                "no --api-keys-file (SENSOR_STATS_API_KEYS_FILE): the API is open, anyone who \
                 can reach the port may post, read and delete statistics"
            ),
        }
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(
                Tls::load(cert.clone(), key.clone()).map_err(anyhow::Error::msg)?,
            )),
            _ => None,
        };
        let router = http::router(state.clone(), config.request_timeout);
        let service = HttpService::new(state.clone(), router, config.request_timeout);
        Ok(Self {
            listener,
            local_addr,
            service,
            state,
            config,
            tls,
            reloader: Reloader::default(),
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

    /// A handle that reloads the API keys and the TLS certificate as SIGHUP does.
    pub fn reloader(&self) -> Reloader {
        self.reloader.clone()
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
        let mut reloadable: Vec<Arc<dyn Reload>> = Vec::new();
        if let Some(keys) = &self.state.keys {
            reloadable.push(Arc::clone(keys) as Arc<dyn Reload>);
        }
        if let Some(tls) = &self.tls {
            reloadable.push(Arc::clone(tls) as Arc<dyn Reload>);
        }
        background_tasks.spawn(reload::run(
            reloadable,
            self.config.reload_interval,
            self.reloader.clone(),
            Arc::clone(&self.state.metrics),
            background.clone(),
        ));

        let server = Server::new(
            &self.config,
            self.service.clone(),
            self.tls.as_ref().map(|t| t.acceptor()),
            Arc::clone(&self.state.metrics),
        );
        tracing::info!(
            addr = %self.local_addr,
            tls = self.tls.is_some(),
            max_in_flight = self.state.in_flight_limit.max(),
            max_connections = server.connection_limit.max(),
            idle_timeout = ?self.config.idle_timeout,
            "listening"
        );
        // Ready once the store has started (a durable store reads its data dir back
        // first); until then /healthz answers 503. A failed start stops the server.
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
    service: HttpService,
    builder: auto::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    idle_timeout: Duration,
    tls: Option<TlsAcceptor>,
    connection_limit: Arc<Limit>,
    metrics: Arc<Metrics>,
    connections: TaskTracker,
    /// Cancelled when draining starts: connections finish their request and close.
    drain: CancellationToken,
    /// Cancelled at the drain deadline: remaining connections are dropped.
    abort: CancellationToken,
}

/// What one connection's task needs of the server.
struct Connection {
    builder: auto::Builder<TokioExecutor>,
    service: HttpService,
    idle_timeout: Duration,
    header_read_timeout: Duration,
    metrics: Arc<Metrics>,
    drain: CancellationToken,
    abort: CancellationToken,
}

impl Server {
    fn new(config: &Config, service: HttpService, tls: Option<TlsAcceptor>, metrics: Arc<Metrics>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        // The header-read timeout is the connection watchdog's (see the module docs).
        // `writev(false)`: a response's head and body go out in one buffer and one `write`
        // instead of a `writev` of two (measured: 3-8 % more small requests per CPU-second).
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(None)
            .writev(false);
        builder.http2().timer(TokioTimer::new());
        Self {
            service,
            builder,
            header_read_timeout: config.header_read_timeout,
            idle_timeout: config.idle_timeout,
            tls,
            connection_limit: Arc::new(Limit::new(config.max_connections())),
            metrics,
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
                    Ok((stream, _peer)) => match self.connection_limit.try_acquire_owned() {
                        Some(permit) => self.serve(stream, permit),
                        // Accepted and closed at once: the client learns now instead of
                        // waiting in the backlog, and its descriptor is freed at once.
                        None => {
                            self.metrics.connection_refused();
                            drop(stream);
                        }
                    },
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

    fn serve(&self, stream: TcpStream, permit: OwnedPermit) {
        let _ = stream.set_nodelay(true);
        let connection = Connection {
            builder: self.builder.clone(),
            service: self.service.clone(),
            idle_timeout: self.idle_timeout,
            header_read_timeout: self.header_read_timeout,
            metrics: Arc::clone(&self.metrics),
            drain: self.drain.clone(),
            abort: self.abort.clone(),
        };
        let first_byte = self.header_read_timeout;
        let tls = self.tls.clone();
        self.connections.spawn(async move {
            let _permit = permit;
            let _open = connection.metrics.connection_opened();
            // hyper's header timer starts at the first byte; a client that connects and
            // sends nothing is closed here, and at once when draining.
            let mut probe = [0u8; 1];
            tokio::select! {
                peeked = tokio::time::timeout(first_byte, stream.peek(&mut probe)) => {
                    if !matches!(peeked, Ok(Ok(n)) if n > 0) {
                        return;
                    }
                }
                () = connection.drain.cancelled() => return,
            }
            let activity = Arc::new(Activity::new());
            let io = Tracked {
                inner: stream,
                activity: Arc::clone(&activity),
            };
            let Some(acceptor) = tls else {
                return connection.serve(io, &activity).await;
            };
            // A TLS connection starts with a handshake record (content type 22).
            if probe[0] != 0x16 {
                connection.metrics.tls_failure(TlsFailure::PlainHttp);
                refuse_plain_http(io).await;
                return;
            }
            let handshake = tokio::select! {
                done = tokio::time::timeout(first_byte, acceptor.accept(io)) => done,
                () = connection.drain.cancelled() => return,
            };
            match handshake {
                Ok(Ok(tls_stream)) => connection.serve(tls_stream, &activity).await,
                Ok(Err(e)) => {
                    connection.metrics.tls_failure(TlsFailure::Handshake);
                    tracing::debug!(error = %e, "TLS handshake failed");
                }
                Err(_) => connection.metrics.tls_failure(TlsFailure::Timeout),
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

impl Connection {
    /// Serves HTTP on `io` until the client closes, the connection idles past the idle
    /// timeout, a request's headers take longer than the header-read timeout, or
    /// shutdown; `activity` is what `io` and the service record of the connection.
    /// Requests go to the HTTP/1 loop of [`http::h1`] first, to hyper from the first
    /// request that loop does not take.
    async fn serve<I>(self, io: I, activity: &Arc<Activity>)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let fast = http::h1::serve(
            &self.service,
            io,
            || activity.request_started(Version::HTTP_11),
            &self.drain,
        );
        let check_every = (self.header_read_timeout / 4).max(Duration::from_millis(1));
        let watchdog = tokio::time::sleep(self.idle_timeout.min(check_every));
        tokio::pin!(fast, watchdog);
        let io = loop {
            tokio::select! {
                ended = fast.as_mut() => match ended {
                    http::h1::Ended::Handover(io) => break io,
                    http::h1::Ended::Closed => return,
                },
                () = self.abort.cancelled() => return,
                () = watchdog.as_mut() => match self.watch(activity, check_every) {
                    Watch::Wait(next) => watchdog.as_mut().reset(tokio::time::Instant::now() + next),
                    Watch::Idle | Watch::HeadersTooSlow => return,
                },
            }
        };
        let service = Watched {
            service: self.service.clone(),
            activity: Arc::clone(activity),
        };
        let connection = self.builder.serve_connection(TokioIo::new(io), service);
        tokio::pin!(connection);
        loop {
            tokio::select! {
                result = connection.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "connection ended with an error");
                    }
                    return;
                }
                () = self.drain.cancelled() => break,
                () = watchdog.as_mut() => match self.watch(activity, check_every) {
                    Watch::Wait(next) => watchdog.as_mut().reset(tokio::time::Instant::now() + next),
                    Watch::Idle => break,
                    Watch::HeadersTooSlow => return,
                },
            }
        }
        // HTTP/1: closes now when idle, after the response when a request is in flight;
        // HTTP/2: GOAWAY, open streams finish.
        connection.as_mut().graceful_shutdown();
        tokio::select! {
            _ = connection.as_mut() => {}
            () = self.abort.cancelled() => {}
        }
    }

    /// The watchdog's look at the connection: idle past the idle timeout (counted),
    /// a request's headers arriving for longer than the header-read timeout (closed
    /// without an answer, as hyper does on its own timeout), or when to look again.
    fn watch(&self, activity: &Activity, check_every: Duration) -> Watch {
        let quiet = activity.quiet_for();
        if quiet >= self.idle_timeout {
            self.metrics.connection_idle_closed();
            return Watch::Idle;
        }
        if activity
            .headers_arriving_for()
            .is_some_and(|t| t >= self.header_read_timeout)
        {
            tracing::debug!(timeout = ?self.header_read_timeout, "request headers took too long; closing");
            return Watch::HeadersTooSlow;
        }
        Watch::Wait((self.idle_timeout - quiet).min(check_every))
    }
}

/// What [`Connection::watch`] found.
enum Watch {
    Wait(Duration),
    Idle,
    HeadersTooSlow,
}

/// Answers a plain-HTTP client on the TLS port with a 400 it can read, then closes.
/// The request is read (briefly) after our half-close so the kernel closes with a FIN,
/// not a reset that would destroy the answer before the client reads it.
async fn refuse_plain_http<I: AsyncRead + AsyncWrite + Unpin>(mut io: I) {
    const BODY: &str = r#"{"error":"this port serves HTTPS: use https://","index":null}"#;
    let response = format!(
        "HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
         connection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let polite = async {
        io.write_all(response.as_bytes()).await?;
        io.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left: usize = 64 * 1024;
        while left > 0 {
            match io.read(&mut sink).await? {
                0 => break,
                n => left = left.saturating_sub(n),
            }
        }
        io::Result::Ok(())
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), polite).await;
}

/// What a connection is doing, for its watchdog: when it last moved a byte, how many of
/// its requests are being served, and since when the headers of the next request have
/// been arriving. Times in milliseconds since the connection was accepted, on the coarse
/// monotonic clock ([`coarse_ms`]).
struct Activity {
    origin_ms: u64,
    last_ms: AtomicU64,
    /// Requests whose headers are in and whose response is not yet produced.
    busy: AtomicU32,
    /// 1 + the time of the first byte read while no request was being served, until the
    /// next request's headers are in; 0 when no request is arriving.
    headers_since: AtomicU64,
    /// Set at the first HTTP/2 request: HTTP/2 has no header-read timeout (hyper never
    /// had one there), its control frames arrive between requests.
    http2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin_ms: coarse_ms(),
            last_ms: AtomicU64::new(0),
            busy: AtomicU32::new(0),
            headers_since: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn now_ms(&self) -> u64 {
        coarse_ms().saturating_sub(self.origin_ms)
    }

    fn wrote(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    fn read(&self) {
        let now = self.now_ms();
        self.last_ms.store(now, Ordering::Relaxed);
        if self.busy.load(Ordering::Relaxed) == 0
            && self.headers_since.load(Ordering::Relaxed) == 0
            && !self.http2.load(Ordering::Relaxed)
        {
            self.headers_since.store(now + 1, Ordering::Relaxed);
        }
    }

    /// A request's headers are in; it is served until the returned guard is dropped.
    fn request_started(self: &Arc<Self>, version: Version) -> Serving {
        if version == Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.busy.fetch_add(1, Ordering::Relaxed);
        self.headers_since.store(0, Ordering::Relaxed);
        Serving(Arc::clone(self))
    }

    fn quiet_for(&self) -> Duration {
        Duration::from_millis(self.now_ms().saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }

    /// How long the headers of the next request have been arriving (`None` when none is).
    fn headers_arriving_for(&self) -> Option<Duration> {
        match self.headers_since.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_millis(self.now_ms().saturating_sub(since - 1))),
        }
    }
}

/// Milliseconds on the coarse monotonic clock, which moves by the kernel's tick (1 to 4
/// ms): the watchdog's timeouts are seconds, and every read and write of a connection
/// reads it, where it costs a quarter of the precise clock (measured on this VM: 4.4
/// against 17.7 ns per read).
fn coarse_ms() -> u64 {
    let now = rustix::time::clock_gettime(rustix::time::ClockId::MonotonicCoarse);
    #[allow(clippy::cast_sign_loss)]
    let (secs, nanos) = (now.tv_sec as u64, now.tv_nsec as u64);
    secs * 1000 + nanos / 1_000_000
}

/// One request of a connection being served; see [`Activity::request_started`].
struct Serving(Arc<Activity>);

impl Drop for Serving {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The service of one connection: [`HttpService`], telling the connection's
/// [`Activity`] when each request starts and ends.
struct Watched {
    service: HttpService,
    activity: Arc<Activity>,
}

impl hyper::service::Service<Request<Incoming>> for Watched {
    type Response = Response;
    type Error = Infallible;
    type Future = WatchedFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let serving = self.activity.request_started(request.version());
        WatchedFuture {
            inner: self.service.handle(request),
            _serving: serving,
        }
    }
}

/// The future of [`Watched`]: the request's, holding it as served until it ends.
struct WatchedFuture {
    inner: ResponseFuture,
    _serving: Serving,
}

impl Future for WatchedFuture {
    type Output = Result<Response, Infallible>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

/// A socket that records its last read or written byte in an [`Activity`] (one coarse
/// clock read per I/O call), for the idle timeout.
struct Tracked<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Tracked<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.read();
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Tracked<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.wrote();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn is_connection_error(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), ConnectionRefused | ConnectionAborted | ConnectionReset)
}
