//! [`HttpService`]: the hyper service a connection is served with once the HTTP/1 loop
//! of [`super::h1`] has handed it over (HTTP/2, and HTTP/1 from the first request the
//! loop does not take). It answers the two hot requests itself, without axum's router,
//! and hands everything else to the router of [`super::router`].
//!
//! The hot requests are `GET /statistics/{sensor}` with an id that needs no
//! percent-decoding, and `POST /data` with an uncompressed body that does not announce
//! more bytes than the limit. They get exactly what the router's [`super::edge`] gives a
//! request (request id, debug-level span, in-flight count, [`access::admit`]: load
//! shedding and API keys, metrics, the JSON error shape, `Connection: close` while
//! draining) and call the same handler code (`ingest::ingest`,
//! `statistics::statistics_of`), so the answers are the same; what they skip is the
//! routing (path matching, the `MatchedPath` and URL-parameter extensions, a boxed
//! future per layer and per route). One boxed future per request. Every other request
//! (compressed or oversized bodies, percent-encoded ids, `HEAD`, `DELETE`, the probes,
//! `/metrics`, `/openapi.json`, `/docs`, 404 and 405) goes through the router, whose
//! routes are the ones the OpenAPI document describes.

use std::{convert::Infallible, future::Future, pin::Pin, sync::Arc, time::Duration};

use axum::{
    Router,
    body::Body,
    http::{HeaderMap, Method, Request, header},
    response::{IntoResponse as _, Response},
};
use hyper::body::Incoming;
use tower::ServiceExt as _;
use tracing::Instrument as _;

use super::{Edge, access, ingest, statistics, timeout};
use crate::state::AppState;

/// The service of one connection; cloning it (one per connection) is one `Arc` step.
#[derive(Clone)]
pub struct HttpService {
    shared: Arc<Shared>,
}

struct Shared {
    state: AppState,
    router: Router,
    request_timeout: Duration,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService").finish_non_exhaustive()
    }
}

/// The future of one request.
pub type ResponseFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// A request the service answers without the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Hot {
    /// `POST /data`, uncompressed, not announced larger than the limit.
    PostData,
    /// `GET /statistics/{sensor}`, the id as it is in the path.
    GetStatistics,
}

impl HttpService {
    /// The service over `state`, handing what it does not answer itself to `router`
    /// (the router of [`super::router`] over the same state, with the same
    /// `request_timeout`).
    pub fn new(state: AppState, router: Router, request_timeout: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                state,
                router,
                request_timeout,
            }),
        }
    }

    /// Answers one request (what hyper's `call` does).
    pub fn handle(&self, request: Request<Incoming>) -> ResponseFuture {
        let shared = Arc::clone(&self.shared);
        match hot(
            request.method(),
            request.uri().path(),
            request.headers(),
            shared.state.body_limit,
        ) {
            Some(hot) => Box::pin(async move { Ok(shared.answer(hot, request).await) }),
            None => Box::pin(async move {
                let request = request.map(Body::new);
                shared.router.clone().oneshot(request).await
            }),
        }
    }
}

impl HttpService {
    /// The state requests are answered from.
    pub(super) fn state(&self) -> &AppState {
        &self.shared.state
    }

    /// `--request-timeout`, for `POST /data`.
    pub(super) fn request_timeout(&self) -> Duration {
        self.shared.request_timeout
    }
}

impl Shared {
    /// What the router's edge and the route's handler would do, in one future.
    async fn answer(&self, hot: Hot, request: Request<Incoming>) -> Response {
        let state = &self.state;
        let route = match hot {
            Hot::PostData => "/data",
            Hot::GetStatistics => "/statistics/{sensor}",
        };
        let (mut parts, body) = request.into_parts();
        let edge = Edge::start(state, route, &parts.method, &parts.headers);
        let admitted = {
            let _entered = edge.span.enter();
            access::admit_parts(state, route, &parts.method, &parts.headers)
        };
        let response = match admitted {
            Ok((permit, caller)) => {
                // hyper gives each request a header map of its own: the answer reuses it
                // instead of allocating one (the request's headers are not needed any
                // more: the edge has the request id, admission is done; a POST's after
                // the batch is in).
                let recycled = match hot {
                    Hot::GetStatistics => {
                        let mut headers = std::mem::take(&mut parts.headers);
                        headers.clear();
                        headers
                    }
                    Hot::PostData => HeaderMap::new(),
                };
                let answer = async {
                    match hot {
                        // The router's ingest route has the same timeout around the handler.
                        Hot::PostData => {
                            let ingest = async {
                                Ok::<_, Infallible>(
                                    ingest::ingest(state, caller.as_ref(), &parts.headers, body)
                                        .await
                                        .into_response(),
                                )
                            };
                            let mut response = match timeout::lazy(self.request_timeout, ingest).await {
                                Ok(response) => response,
                                Err(never) => match never {},
                            };
                            // The 204's headers (the request id) go into the request's map.
                            if response.headers().is_empty() {
                                let mut headers = std::mem::take(&mut parts.headers);
                                headers.clear();
                                *response.headers_mut() = headers;
                            }
                            response
                        }
                        Hot::GetStatistics => {
                            let sensor = sensor_in(parts.uri.path()).unwrap_or_default();
                            statistics::statistics_of(state, sensor, recycled)
                                .await
                                .into_response()
                        }
                    }
                };
                let response = if edge.span.is_disabled() {
                    answer.await
                } else {
                    answer.instrument(edge.span.clone()).await
                };
                drop(permit);
                response
            }
            Err(refusal) => refusal.into_response(),
        };
        edge.finish(state, response)
    }
}

/// Which hot request this is, if any.
fn hot(method: &Method, path: &str, headers: &HeaderMap, body_limit: usize) -> Option<Hot> {
    if *method == Method::GET {
        return sensor_in(path).map(|_| Hot::GetStatistics);
    }
    let announced_too_large = || {
        headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
            .is_some_and(|n| n > body_limit as u64)
    };
    (*method == Method::POST
        && path == "/data"
        && !headers.contains_key(header::CONTENT_ENCODING)
        && !announced_too_large())
    .then_some(Hot::PostData)
}

/// The sensor id of `/statistics/{sensor}` when it is one segment needing no
/// percent-decoding (the router decodes the others).
pub(super) fn sensor_in(path: &str) -> Option<&str> {
    let sensor = path.strip_prefix("/statistics/")?;
    (!sensor.is_empty() && !sensor.contains(['/', '%'])).then_some(sensor)
}

impl hyper::service::Service<Request<Incoming>> for HttpService {
    type Response = Response;
    type Error = Infallible;
    type Future = ResponseFuture;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.handle(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (header::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn only_plain_gets_and_uncompressed_posts_within_the_limit_skip_the_router() {
        let none = HeaderMap::new();
        let cases = [
            (
                Method::GET,
                "/statistics/sensor-1",
                &none,
                Some(Hot::GetStatistics),
            ),
            (Method::GET, "/statistics/a%2Fb", &none, None),
            (Method::GET, "/statistics/", &none, None),
            (Method::GET, "/statistics/a/b", &none, None),
            (Method::GET, "/statistics", &none, None),
            (Method::HEAD, "/statistics/a", &none, None),
            (Method::DELETE, "/statistics/a", &none, None),
            (Method::POST, "/data", &none, Some(Hot::PostData)),
            (Method::POST, "/data/", &none, None),
            (Method::GET, "/data", &none, None),
            (Method::PUT, "/data", &none, None),
            (Method::GET, "/metrics", &none, None),
            (Method::GET, "/openapi.json", &none, None),
        ];
        for (method, path, headers, want) in cases {
            assert_eq!(hot(&method, path, headers, 100), want, "{method} {path}");
        }
        let gzip = headers(&[("content-encoding", "gzip")]);
        assert_eq!(hot(&Method::POST, "/data", &gzip, 100), None);
        let identity = headers(&[("content-encoding", "identity")]);
        assert_eq!(hot(&Method::POST, "/data", &identity, 100), None);
        let small = headers(&[("content-length", "100")]);
        assert_eq!(hot(&Method::POST, "/data", &small, 100), Some(Hot::PostData));
        let large = headers(&[("content-length", "101")]);
        assert_eq!(hot(&Method::POST, "/data", &large, 100), None);
    }
}
