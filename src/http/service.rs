//! [`HttpService`]: what every request goes through, as one hyper service per connection.
//!
//! The edge (request id, metrics, in-flight count, request span, draining, the JSON
//! error shape) is done here once for every route. The two hot routes are dispatched
//! here too, without axum's router: `POST /data` with an uncompressed body, and
//! `GET /statistics/{sensor}` with a plain (not percent-encoded) id. Everything else
//! (compressed bodies, percent-encoded ids, `DELETE`, `/healthz`, `/livez`, `/metrics`,
//! 404 and 405) goes to the axum [`Router`] of [`super::router`], which calls the same
//! handler code.
//!
//! Per request this costs one boxed future at most: a `GET` answered from memory is
//! answered inside `call` and needs none; the others are one `async` block. A request
//! that ends with no log line formats nothing: the request span is at debug level (the
//! level of the per-request line) and is not created otherwise.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        Arc, LazyLock,
        atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::{Body, HttpBody},
    http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, header},
    response::IntoResponse as _,
};
use bytes::Bytes;
use http_body_util::{Either, Full};
use tower::ServiceExt as _;
use tracing::Span;

use super::{error, ingest, metrics, request_id, statistics};
use crate::{
    metrics::{MethodLabel, RouteLabel},
    state::AppState,
};

/// The body of every response: bytes we wrote ourselves, or whatever axum answered.
pub type ResponseBody = Either<Full<Bytes>, Body>;
/// A response of [`HttpService`].
pub type HttpResponse = Response<ResponseBody>;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// `tracing` target of the request span and the per-request line.
pub const SPAN_TARGET: &str = "sensor_stats::request";

/// The service of one connection (cheap to make: one `Arc` for the app, one for the
/// connection's [`Activity`]).
#[derive(Clone)]
pub struct HttpService {
    conn: Arc<Connection>,
}

struct Connection {
    app: Arc<App>,
    activity: Activity,
}

struct App {
    state: AppState,
    router: Router,
    in_flight: Arc<AtomicI64>,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService").finish_non_exhaustive()
    }
}

impl HttpService {
    /// The service of the whole API over `state` (for one connection; see
    /// [`HttpService::for_connection`] for the next ones).
    pub fn new(state: AppState) -> Self {
        let in_flight = state.metrics.in_flight_counter();
        let router = super::router(state.clone());
        let app = Arc::new(App {
            state,
            router,
            in_flight,
        });
        Self::on(app)
    }

    fn on(app: Arc<App>) -> Self {
        Self {
            conn: Arc::new(Connection {
                app,
                activity: Activity::default(),
            }),
        }
    }

    /// A service for a new connection, sharing the app, with its own [`Activity`].
    pub fn for_connection(&self) -> Self {
        Self::on(Arc::clone(&self.conn.app))
    }

    /// What this connection is doing, for its idle and header-read watchdog.
    pub fn activity(&self) -> &Activity {
        &self.conn.activity
    }

    fn handle<B>(&self, request: Request<B>) -> ResponseFuture
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let (mut parts, body) = request.into_parts();
        let route = metrics::route_label(parts.uri.path());
        let method = metrics::method_label(&parts.method);
        let request_id = request_id::of(&parts.headers);
        let span = tracing::debug_span!(
            target: SPAN_TARGET,
            "request",
            method = method.as_str(),
            route = route.as_str(),
            request_id = request_id.to_str().unwrap_or(""),
            status = tracing::field::Empty,
            latency_us = tracing::field::Empty,
            measurements = tracing::field::Empty,
            sensors = tracing::field::Empty,
        );
        let edge = Edge::start(Arc::clone(&self.conn), start, route, method, request_id);
        let app = &self.conn.app;

        // A GET answered from memory needs no future: answered here, in `call`.
        if parts.method == Method::GET
            && let Some(sensor) = plain_sensor(parts.uri.path())
        {
            let _entered = span.enter();
            if let Some(answer) = statistics::answer_now(&app.state, sensor) {
                let response = match answer {
                    Ok(summary) => statistics::response(&summary, recycle(&mut parts.headers)),
                    Err(e) => e.into_response().map(Either::Right),
                };
                return ResponseFuture::Ready(Some(edge.finish(response, &span)));
            }
        }

        let instrument_with = (!span.is_disabled()).then(|| span.clone());
        // An `async` block rather than an `async fn`: an `async fn` keeps a second copy
        // of its arguments in its future, and the request's parts are most of the size.
        let future = async move {
            let app = &*edge.conn.app;
            let state = &app.state;
            let path = parts.uri.path();
            let response =
                if parts.method == Method::POST && path == "/data" && !has_content_encoding(&parts.headers) {
                    let outcome = ingest::ingest(state, &parts.headers, body, edge.start).await;
                    ingest::respond(outcome, recycle(&mut parts.headers))
                } else if let Some(sensor) = plain_sensor(path).filter(|_| parts.method == Method::GET) {
                    match statistics::answer(state, sensor).await {
                        Ok(summary) => statistics::response(&summary, recycle(&mut parts.headers)),
                        Err(e) => e.into_response().map(Either::Right),
                    }
                } else {
                    // Boxed: the router's future is only for the rare routes.
                    let request = Request::from_parts(parts, Body::new(body));
                    let response = match Box::pin(app.router.clone().oneshot(request)).await {
                        Ok(response) => response,
                        Err(never) => match never {},
                    };
                    error::jsonify(response, state.body_limit).map(Either::Right)
                };
            edge.finish(response, &span)
        };
        ResponseFuture::Pending(match instrument_with {
            None => Box::pin(future),
            Some(span) => Box::pin(tracing::Instrument::instrument(future, span)),
        })
    }
}

/// Whether debug-level spans can be on at all, from one atomic load (the global level
/// filter): when false, no request span exists and nothing needs recording into one.
pub fn request_spans_on() -> bool {
    tracing::level_filters::LevelFilter::current() >= tracing::Level::DEBUG
}

/// The request's header map, emptied, for the response: hyper hands a response's map
/// back as the next request's, so a connection reuses one map instead of allocating two
/// per request.
fn recycle(headers: &mut HeaderMap) -> HeaderMap {
    let mut map = std::mem::take(headers);
    map.clear();
    map
}

fn has_content_encoding(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_ENCODING)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The sensor id of `/statistics/{sensor}` when it needs no percent-decoding.
fn plain_sensor(path: &str) -> Option<&str> {
    let sensor = path.strip_prefix("/statistics/")?;
    (!sensor.is_empty() && !sensor.contains(['/', '%'])).then_some(sensor)
}

/// The bookkeeping of one request from `call` to its response: counted in flight and as
/// busy on its connection until finished or dropped (a cancelled request).
struct Edge {
    conn: Arc<Connection>,
    start: Instant,
    route: RouteLabel,
    method: MethodLabel,
    request_id: HeaderValue,
}

impl Edge {
    fn start(
        conn: Arc<Connection>,
        start: Instant,
        route: RouteLabel,
        method: MethodLabel,
        request_id: HeaderValue,
    ) -> Self {
        conn.app.in_flight.fetch_add(1, Ordering::Relaxed);
        conn.activity.busy.fetch_add(1, Ordering::Relaxed);
        Self {
            conn,
            start,
            route,
            method,
            request_id,
        }
    }

    /// Adds the request id and, while draining, `Connection: close`; records the metrics,
    /// the span's fields and (for rejections) the sampled log line.
    fn finish(self, mut response: HttpResponse, span: &Span) -> HttpResponse {
        let state = &self.conn.app.state;
        if state.lifecycle.is_draining() {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        metrics::record(
            state,
            self.route,
            self.method,
            elapsed,
            &response,
            &self.request_id,
            span,
        );
        response
            .headers_mut()
            .insert(request_id::X_REQUEST_ID.clone(), self.request_id.clone());
        self.conn.activity.finished(now);
        response
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.conn.app.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.conn.activity.busy.fetch_sub(1, Ordering::Release);
    }
}

/// What a connection is doing: how many of its requests are being handled and when the
/// last one finished. The connection's watchdog reads it to close connections that sit
/// idle, or take too long to send a request's headers, without a timer per request.
#[derive(Debug, Default)]
pub struct Activity {
    busy: AtomicU32,
    /// Nanoseconds since [`EPOCH`] when the last request finished; 0 before the first.
    last_done: AtomicU64,
}

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

impl Activity {
    fn finished(&self, at: Instant) {
        let nanos = at.saturating_duration_since(*EPOCH).as_nanos() as u64;
        self.last_done.store(nanos.max(1), Ordering::Relaxed);
    }

    /// When this connection, opened at `opened`, has been idle for `timeout`: `timeout`
    /// after its last request finished (or after it was opened); `None` while a request
    /// is being handled.
    pub fn idle_deadline(&self, opened: Instant, timeout: Duration) -> Option<Instant> {
        if self.busy.load(Ordering::Acquire) > 0 {
            return None;
        }
        let last = match self.last_done.load(Ordering::Relaxed) {
            0 => opened,
            nanos => (*EPOCH + Duration::from_nanos(nanos)).max(opened),
        };
        Some(last + timeout)
    }
}

/// The future of one request: answered already, or one boxed `async` block.
pub enum ResponseFuture {
    /// Answered inside `call`.
    Ready(Option<HttpResponse>),
    /// Being served.
    Pending(Pin<Box<dyn Future<Output = HttpResponse> + Send>>),
}

impl Future for ResponseFuture {
    type Output = Result<HttpResponse, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            Self::Ready(response) => Poll::Ready(Ok(response.take().expect("polled after completion"))),
            Self::Pending(future) => future.as_mut().poll(cx).map(Ok),
        }
    }
}

impl<B> hyper::service::Service<Request<B>> for HttpService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<B>) -> Self::Future {
        self.handle(request)
    }
}

impl<B> tower::Service<Request<B>> for HttpService
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = HttpResponse;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        self.handle(request)
    }
}

/// 204 with the given (recycled) header map.
pub fn no_content(headers: HeaderMap) -> HttpResponse {
    let mut response = Response::new(Either::Left(Full::new(Bytes::new())));
    *response.status_mut() = StatusCode::NO_CONTENT;
    *response.headers_mut() = headers;
    response
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    /// The one allocation of a request that needs a future is this future: keep it small
    /// (an `async fn` layer that takes the request by value, or an unboxed rare path,
    /// easily doubles it).
    #[test]
    fn the_request_future_stays_under_a_kilobyte() {
        let service = HttpService::new(AppState::new(Store::memory(), Default::default(), 1024));
        let request = Request::post("/data").body(Body::empty()).unwrap();
        let ResponseFuture::Pending(future) = service.handle(request) else {
            panic!("a POST needs a future");
        };
        let size = std::mem::size_of_val(&*future);
        assert!(size <= 1024, "{size} bytes");
    }
}
