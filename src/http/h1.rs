//! The HTTP/1.1 loop every connection starts in: it reads requests straight from the
//! socket with `httparse` (hyper's own parser), answers the two hot requests itself and
//! hands the connection to hyper, with every byte it has read, at the first request it
//! does not take.
//!
//! It takes `GET /statistics/{sensor}` (an id of plain path characters, no query) and
//! `POST /data` with a `Content-Length` body within the limit and no `Idempotency-Key`,
//! from HTTP/1.1 requests whose `Connection` header, if any, is `keep-alive` and that
//! carry no `Transfer-Encoding`, `Content-Encoding`, `Expect` or `Upgrade`. Everything
//! else (HTTP/2's preface, HTTP/1.0, chunked or compressed bodies, other routes and
//! methods, heads over [`MAX_HEAD`] bytes or [`MAX_HEADERS`] headers, bytes that do not
//! parse) is served by hyper and the router from that request on, as before this loop.
//!
//! The hot requests get what [`super::service`] gives them: the edge ([`Edge`]: request
//! id, debug-level span, in-flight count, [`access::admit_raw`], metrics, the JSON error
//! shape, `Connection: close` while draining), the same handler code
//! ([`statistics::json`], [`ingest::ingest_plain`]) and the same request timeout. What it
//! skips is hyper's per-request machinery: a header map, a body channel, a response
//! object, the request's boxed future. A success at the default log level is written
//! straight into the connection's output buffer, byte for byte what hyper writes for the
//! same response (tested); an error, or any answer while the request span is on (debug
//! level), is built as a response, finished by the edge and written as hyper would.
//! Pipelined requests are answered in order, the answers written together.

use std::{
    cell::RefCell,
    io,
    ops::Range,
    pin::Pin,
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use axum::{
    body::Body,
    http::{HeaderValue, Method, StatusCode, header},
    response::{IntoResponse as _, Response},
};
use bytes::{Buf as _, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;

use super::{
    Edge, access,
    error::ApiError,
    ingest, request_id,
    service::{HttpService, sensor_in},
    statistics, timeout,
};
use crate::{domain::SensorId, state::AppState};

/// Most headers a request the loop answers may have (hyper takes up to 100).
pub const MAX_HEADERS: usize = 32;
/// Longest request head (request line and headers) the loop reads before handing over.
pub const MAX_HEAD: usize = 16 * 1024;
/// Bytes the loop asks the socket for at a time.
const READ_BUFFER: usize = 8 * 1024;
/// A body buffer grown beyond this for one request is freed after it.
const KEEP_BODY_BUFFER: usize = 1024 * 1024;

/// How the loop ended.
pub enum Ended<I> {
    /// The client closed, the connection failed, or it was closed after an answer
    /// (draining, a timed-out upload, a refused upload whose body had not arrived).
    Closed,
    /// A request the loop does not take: serve the connection with hyper from here on,
    /// starting with the bytes already read.
    Handover(Rewind<I>),
}

/// A connection whose first bytes were already read: they are read again first.
pub struct Rewind<I> {
    prefix: Bytes,
    inner: I,
}

impl<I> Rewind<I> {
    /// `inner`, with `prefix` to be read before its own bytes.
    pub fn new(prefix: Bytes, inner: I) -> Self {
        Self { prefix, inner }
    }
}

/// Serves `io` until it closes or a request needs hyper. `request_started` is called
/// when a request's head is in; what it returns is dropped when its answer is written.
/// While no request is arriving, a cancelled `drain` closes the connection.
pub async fn serve<I, G>(
    service: &HttpService,
    mut io: I,
    request_started: impl Fn() -> G,
    drain: &CancellationToken,
) -> Ended<I>
where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let state = service.state();
    let mut buf = BytesMut::with_capacity(READ_BUFFER);
    let mut out = Vec::with_capacity(1024);
    let mut body = Vec::new();
    loop {
        let head = match parse(&buf, state.body_limit) {
            Parsed::Hot(head) => head,
            Parsed::Other => {
                if write_out(&mut io, &mut out).await.is_err() {
                    return Ended::Closed;
                }
                return Ended::Handover(Rewind::new(buf.freeze(), io));
            }
            Parsed::Partial => {
                // Answers to pipelined requests do not wait for the next request's bytes.
                if write_out(&mut io, &mut out).await.is_err() {
                    return Ended::Closed;
                }
                buf.reserve(READ_BUFFER);
                let read = if buf.is_empty() {
                    // Between requests: draining closes an idle connection at once.
                    tokio::select! {
                        biased;
                        () = drain.cancelled() => return Ended::Closed,
                        read = io.read_buf(&mut buf) => read,
                    }
                } else {
                    io.read_buf(&mut buf).await
                };
                match read {
                    Ok(0) | Err(_) => return Ended::Closed,
                    Ok(_) => continue,
                }
            }
        };
        let serving = request_started();
        let start = Instant::now();
        let request_id = match &head.request_id {
            Some(range) => HeaderValue::from_bytes(&buf[range.clone()])
                .expect("httparse admits only bytes a header value may hold"),
            None => request_id::generate(),
        };
        let authorization = head.authorization.clone().map(|r| &buf[r]);
        let close = match head.route {
            Route::Statistics { ref sensor } => {
                let edge = Edge::begin(state, start, STATISTICS, "GET", request_id);
                let admitted = admit(state, &edge, STATISTICS, &Method::GET, authorization);
                let answer = match admitted.map_err(|refusal| Answer::Other(refusal.into_response())) {
                    Ok(permit) => {
                        let sensor = std::str::from_utf8(&buf[sensor.clone()]).unwrap_or_default();
                        let answer = in_span(&edge, statistics_of(state, sensor)).await;
                        drop(permit);
                        answer
                    }
                    Err(refusal) => refusal,
                };
                buf.advance(head.len);
                respond(state, edge, answer, &mut out).await
            }
            Route::Data { length } => {
                let edge = Edge::begin(state, start, DATA, "POST", request_id);
                let total = head.len + length;
                let content_type = head.content_type.clone().map(|r| &buf[r]);
                let checked = admit(state, &edge, DATA, &Method::POST, authorization)
                    .and_then(|permit| ingest::check_content_type(content_type).map(|()| permit))
                    .map_err(|refusal| Answer::Other(refusal.into_response()));
                let (answer, close) = match checked {
                    Ok(permit) => {
                        let post = post(state, &mut io, &mut buf, &mut body, head.len, total);
                        let timed = timeout::within(service.request_timeout(), post);
                        let answer = match in_span(&edge, timed).await {
                            Some(Ok(answer)) => (answer, false),
                            Some(Err(BodyCut)) => return Ended::Closed,
                            // As the router's timeout does: an empty 408 the edge makes JSON;
                            // the rest of the body is not read, so the connection closes.
                            None => (Answer::Other(StatusCode::REQUEST_TIMEOUT.into_response()), true),
                        };
                        drop(permit);
                        answer
                    }
                    // Refused before its body was read: skip the body if it is here,
                    // close the connection after the answer if it is not.
                    Err(refusal) if buf.len() >= total => {
                        buf.advance(total);
                        (refusal, false)
                    }
                    Err(refusal) => (refusal, true),
                };
                if body.capacity() > KEEP_BODY_BUFFER {
                    body = Vec::new();
                }
                respond(state, edge, answer, &mut out).await || close
            }
        };
        drop(serving);
        if close {
            let _ = write_out(&mut io, &mut out).await;
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Route labels, as the router's `MatchedPath` gives them.
const STATISTICS: &str = "/statistics/{sensor}";
const DATA: &str = "/data";

/// A request the loop answers: where its head ends and what the answer needs of it, as
/// ranges of the read buffer.
struct Head {
    route: Route,
    len: usize,
    request_id: Option<Range<usize>>,
    authorization: Option<Range<usize>>,
    content_type: Option<Range<usize>>,
}

enum Route {
    Statistics { sensor: Range<usize> },
    Data { length: usize },
}

enum Parsed {
    /// The buffer holds no whole head yet (perhaps no byte at all).
    Partial,
    Hot(Head),
    /// hyper's: another request, or bytes that are not an HTTP/1.1 request.
    Other,
}

/// Reads the request head at the start of `buf`.
fn parse(buf: &[u8], body_limit: usize) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Parsed::Partial,
        Ok(httparse::Status::Partial) | Err(_) => return Parsed::Other,
    };
    let (Some(1), Some(method), Some(path)) = (request.version, request.method, request.path) else {
        return Parsed::Other;
    };
    if !path.bytes().all(is_plain_path_byte) {
        return Parsed::Other;
    }
    let at = |part: &[u8]| {
        let start = part.as_ptr() as usize - buf.as_ptr() as usize;
        start..start + part.len()
    };
    let mut length = None;
    let mut lengths = 0;
    let (mut request_id, mut authorization, mut content_type) = (None, None, None);
    for h in request.headers.iter() {
        let name = h.name.as_bytes();
        let is = |known: &str| name.eq_ignore_ascii_case(known.as_bytes());
        if is("content-length") {
            lengths += 1;
            length = parse_length(h.value);
            if length.is_none() {
                return Parsed::Other;
            }
        } else if is("x-request-id") {
            request_id.get_or_insert_with(|| at(h.value));
        } else if is("authorization") {
            authorization.get_or_insert_with(|| at(h.value));
        } else if is("content-type") {
            content_type.get_or_insert_with(|| at(h.value));
        } else if is("connection") {
            if !h.value.trim_ascii().eq_ignore_ascii_case(b"keep-alive") {
                return Parsed::Other;
            }
        } else if is("transfer-encoding")
            || is("content-encoding")
            || is("expect")
            || is("upgrade")
            || is("idempotency-key")
        {
            return Parsed::Other;
        }
    }
    if lengths > 1 {
        return Parsed::Other;
    }
    let route = match (method, length) {
        ("GET", None | Some(0)) => match sensor_in(path) {
            Some(sensor) => Route::Statistics {
                sensor: at(sensor.as_bytes()),
            },
            None => return Parsed::Other,
        },
        ("POST", Some(length)) if path == "/data" && length <= body_limit => Route::Data { length },
        _ => return Parsed::Other,
    };
    Parsed::Hot(Head {
        route,
        len,
        request_id,
        authorization,
        content_type,
    })
}

/// A path byte the loop takes as it is: RFC 3986's unreserved and sub-delims, `:`, `@`
/// and `/`; no `%` (the router percent-decodes), no `?` (a query), nothing `http::Uri`
/// might refuse.
fn is_plain_path_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// A `Content-Length` of digits only (as hyper reads it); `None` for anything else.
fn parse_length(value: &[u8]) -> Option<usize> {
    let digits = value.trim_ascii();
    if digits.is_empty() || digits.len() > 15 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(digits.iter().fold(0, |n, d| n * 10 + usize::from(d - b'0')))
}

/// What a request is answered with.
enum Answer {
    /// 200 with the statistics' JSON.
    Statistics(Bytes),
    /// 204: the batch was applied.
    Accepted,
    /// Anything else (an error), as a response.
    Other(Response),
}

/// The permit of an admitted request (in the request span), or the refusal.
fn admit<'s>(
    state: &'s AppState,
    edge: &Edge,
    route: &'static str,
    method: &Method,
    authorization: Option<&[u8]>,
) -> Result<Option<crate::limits::Permit<'s>>, ApiError> {
    let _entered = edge.span.enter();
    access::admit_raw(state, route, method, authorization).map(|(permit, _caller)| permit)
}

/// `future` inside the request span when it is on.
async fn in_span<F: Future>(edge: &Edge, future: F) -> F::Output {
    if edge.span.is_disabled() {
        future.await
    } else {
        future.instrument(edge.span.clone()).await
    }
}

async fn statistics_of(state: &AppState, sensor: &str) -> Answer {
    let summary = match SensorId::parse(sensor) {
        Ok(sensor) => state.store.get(sensor).await,
        Err(e) => return Answer::Other(ApiError::from(e).into_response()),
    };
    match summary {
        Ok(summary) => Answer::Statistics(statistics::json(&summary)),
        Err(e) => Answer::Other(ApiError::from(e).into_response()),
    }
}

/// The client went away before the whole body arrived.
struct BodyCut;

/// Reads the body of the request whose head is `head_len` bytes and which ends at
/// `total` in the stream (the part in `buf` first, the rest straight from `io`, never
/// beyond the body) into `body`, and ingests it.
async fn post<I: AsyncRead + Unpin>(
    state: &AppState,
    io: &mut I,
    buf: &mut BytesMut,
    body: &mut Vec<u8>,
    head_len: usize,
    total: usize,
) -> Result<Answer, BodyCut> {
    body.clear();
    body.reserve(total - head_len + crate::ingest::PADDING);
    let here = buf.len().min(total);
    body.extend_from_slice(&buf[head_len..here]);
    buf.advance(here);
    let missing = total - here;
    if missing > 0 {
        let mut rest = io.take(missing as u64);
        while body.len() < total - head_len {
            match rest.read_buf(body).await {
                Ok(0) | Err(_) => return Err(BodyCut),
                Ok(_) => {}
            }
        }
    }
    Ok(match ingest::ingest_plain(state, body).await {
        Ok(()) => Answer::Accepted,
        Err(e) => Answer::Other(e.into_response()),
    })
}

/// Writes the answer into `out` (what the edge makes of it); whether the connection
/// closes after it (`Connection: close` while draining).
async fn respond(state: &AppState, edge: Edge, answer: Answer, out: &mut Vec<u8>) -> bool {
    if edge.span.is_disabled() {
        let draining = state.lifecycle.is_draining();
        match answer {
            Answer::Statistics(json) => {
                let id = edge.finish_plain(state, 200);
                out.extend_from_slice(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n");
                plain_tail(out, draining, &id, Some(json.len()));
                out.extend_from_slice(&json);
                return draining;
            }
            Answer::Accepted => {
                let id = edge.finish_plain(state, 204);
                out.extend_from_slice(b"HTTP/1.1 204 No Content\r\n");
                plain_tail(out, draining, &id, None);
                return draining;
            }
            Answer::Other(_) => {}
        }
    }
    let response = match answer {
        Answer::Statistics(json) => {
            let mut response = Response::new(Body::from(json));
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
            response
        }
        Answer::Accepted => StatusCode::NO_CONTENT.into_response(),
        Answer::Other(response) => response,
    };
    write_response(out, edge.finish(state, response)).await
}

/// The headers the edge adds to a success, then the length and the date, as hyper
/// orders them.
fn plain_tail(out: &mut Vec<u8>, draining: bool, request_id: &HeaderValue, length: Option<usize>) {
    if draining {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"x-request-id: ");
    out.extend_from_slice(request_id.as_bytes());
    out.extend_from_slice(b"\r\n");
    if let Some(length) = length {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(length).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    put_date(out);
    out.extend_from_slice(b"\r\n");
}

/// Writes `response` as hyper's HTTP/1 server does: the status line, its headers in
/// order, `content-length` (unless it has one, or is a 204 or 304) and `date` (unless
/// it has one); whether it asks to close the connection.
async fn write_response(out: &mut Vec<u8>, response: Response) -> bool {
    let (parts, body) = response.into_parts();
    // Answers built here have their body in memory; a body that fails to collect is empty.
    let body = axum::body::to_bytes(body, usize::MAX).await.unwrap_or_default();
    let status = parts.status;
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in &parts.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let bodiless = status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED;
    if !bodiless && !parts.headers.contains_key(header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: ");
        out.extend_from_slice(itoa::Buffer::new().format(body.len()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if !parts.headers.contains_key(header::DATE) {
        put_date(out);
    }
    out.extend_from_slice(b"\r\n");
    if !bodiless {
        out.extend_from_slice(&body);
    }
    parts
        .headers
        .get(header::CONNECTION)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// `date: <IMF-fixdate>\r\n`, formatted once a second per thread (as hyper caches it).
fn put_date(out: &mut Vec<u8>) {
    thread_local! {
        static DATE: RefCell<(u64, [u8; 29])> = const { RefCell::new((u64::MAX, [0; 29])) };
    }
    let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
    let secs = u64::try_from(now.tv_sec).unwrap_or(0);
    DATE.with_borrow_mut(|(at, text)| {
        if *at != secs {
            let date = httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            if date.len() == text.len() {
                text.copy_from_slice(date.as_bytes());
                *at = secs;
            }
        }
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&text[..]);
        out.extend_from_slice(b"\r\n");
    });
}

/// Writes and empties `out`.
async fn write_out<I: AsyncWrite + Unpin>(io: &mut I, out: &mut Vec<u8>) -> io::Result<()> {
    if out.is_empty() {
        return Ok(());
    }
    io.write_all(out).await?;
    io.flush().await?;
    out.clear();
    Ok(())
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        let n = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix[..n]);
        self.prefix.advance(n);
        Poll::Ready(Ok(()))
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn route(request: &str) -> Option<&'static str> {
        match parse(request.as_bytes(), 100) {
            Parsed::Hot(Head {
                route: Route::Statistics { .. },
                ..
            }) => Some("stats"),
            Parsed::Hot(Head {
                route: Route::Data { .. },
                ..
            }) => Some("data"),
            Parsed::Partial => Some("partial"),
            Parsed::Other => None,
        }
    }

    #[test]
    fn only_plain_http11_hot_requests_are_taken() {
        let taken = [
            ("GET /statistics/s-1 HTTP/1.1\r\nhost: x\r\n\r\n", "stats"),
            ("GET /statistics/s HTTP/1.1\r\ncontent-length: 0\r\n\r\n", "stats"),
            (
                "GET /statistics/s HTTP/1.1\r\nConnection: Keep-Alive\r\n\r\n",
                "stats",
            ),
            ("POST /data HTTP/1.1\r\ncontent-length: 100\r\n\r\n", "data"),
            (
                "POST /data HTTP/1.1\r\nContent-Length:  7 \r\ncontent-type: application/json\r\n\r\n",
                "data",
            ),
            ("", "partial"),
            ("GET /statistics/s HTTP/1.1\r\nhost:", "partial"),
            ("PRI * HTT", "partial"),
        ];
        for (request, want) in taken {
            assert_eq!(route(request), Some(want), "{request:?}");
        }
        let handed_over = [
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /statistics/s HTTP/1.0\r\n\r\n",
            "GET /statistics/a%2Fb HTTP/1.1\r\n\r\n",
            "GET /statistics/a/b HTTP/1.1\r\n\r\n",
            "GET /statistics/ HTTP/1.1\r\n\r\n",
            "GET /statistics/s?x=1 HTTP/1.1\r\n\r\n",
            "GET /statistics/s\"x HTTP/1.1\r\n\r\n",
            "GET http://h/statistics/s HTTP/1.1\r\n\r\n",
            "HEAD /statistics/s HTTP/1.1\r\n\r\n",
            "DELETE /statistics/s HTTP/1.1\r\n\r\n",
            "GET /statistics/s HTTP/1.1\r\ncontent-length: 1\r\n\r\nx",
            "GET /statistics/s HTTP/1.1\r\nconnection: close\r\n\r\n",
            "GET /statistics/s HTTP/1.1\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n",
            "GET /metrics HTTP/1.1\r\n\r\n",
            "POST /data HTTP/1.1\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: 101\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: +1\r\n\r\n",
            "POST /data HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: 1\r\ncontent-encoding: gzip\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: 1\r\nexpect: 100-continue\r\n\r\n",
            "POST /data HTTP/1.1\r\ncontent-length: 1\r\nidempotency-key: k\r\n\r\n",
            "POST /data?x HTTP/1.1\r\ncontent-length: 1\r\n\r\n",
            "POST /data/ HTTP/1.1\r\ncontent-length: 1\r\n\r\n",
            "not http at all\r\n\r\n",
        ];
        for request in handed_over {
            assert_eq!(route(request), None, "{request:?}");
        }
    }

    #[test]
    fn heads_too_long_or_with_too_many_headers_are_handed_over() {
        let long = format!("GET /statistics/s HTTP/1.1\r\nx-pad: {}", "a".repeat(MAX_HEAD));
        assert_eq!(route(&long), None);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-h{i}: v\r\n")).collect();
        assert_eq!(route(&format!("GET /statistics/s HTTP/1.1\r\n{many}\r\n")), None);
    }

    #[test]
    fn lengths_are_plain_digits() {
        assert_eq!(parse_length(b"0"), Some(0));
        assert_eq!(parse_length(b" 42 "), Some(42));
        for bad in [&b""[..], b"-1", b"1e3", b"0x10", b"1 2", b"9999999999999999"] {
            assert_eq!(parse_length(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_date_is_an_imf_fixdate() {
        let mut out = Vec::new();
        put_date(&mut out);
        let text = std::str::from_utf8(&out).unwrap();
        let date = text.strip_prefix("date: ").unwrap().strip_suffix("\r\n").unwrap();
        assert!(httpdate::parse_http_date(date).is_ok(), "{date}");
    }
}
