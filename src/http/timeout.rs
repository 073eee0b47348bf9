//! The request timeout of `POST /data` (`--request-timeout`), armed only when a request
//! waits: a request whose body has already arrived is answered at its first poll and
//! never touches the runtime's timer. A slow upload gets a timer at its first wait and
//! a 408 when it runs out.
//!
//! tower-http's `TimeoutLayer` registers a timer for every request and removes it again
//! at the answer; on a one-measurement POST that is a measurable share of the request.

use std::{
    future::Future,
    pin::Pin,
    task::{Context, Poll},
    time::Duration,
};

use axum::http::{Request, Response, StatusCode};
use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower::{Layer, Service};

/// Wraps a service in [`LazyTimeout`].
#[derive(Debug, Clone, Copy)]
pub struct LazyTimeoutLayer {
    timeout: Duration,
}

impl LazyTimeoutLayer {
    /// Requests that have waited `timeout` since their first wait are answered 408.
    pub fn new(timeout: Duration) -> Self {
        Self { timeout }
    }
}

impl<S> Layer<S> for LazyTimeoutLayer {
    type Service = LazyTimeout<S>;

    fn layer(&self, inner: S) -> Self::Service {
        LazyTimeout {
            inner,
            timeout: self.timeout,
        }
    }
}

/// A service whose requests are cut off with an empty 408 after the timeout.
#[derive(Debug, Clone, Copy)]
pub struct LazyTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S, B, R> Service<Request<B>> for LazyTimeout<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    R: Default,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = TimeoutFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        lazy(self.timeout, self.inner.call(request))
    }
}

/// `future` (a service's future) with the timeout, armed at its first wait.
pub fn lazy<F>(timeout: Duration, future: F) -> TimeoutFuture<F> {
    TimeoutFuture {
        inner: within(timeout, future),
    }
}

/// `future`'s output, or `None` when it has waited `timeout` since its first wait.
pub fn within<F>(timeout: Duration, future: F) -> Within<F> {
    Within {
        inner: future,
        timeout,
        sleep: None,
    }
}

pin_project! {
    /// The future of [`within`]: the inner future, and a timer once it has waited.
    pub struct Within<F> {
        #[pin]
        inner: F,
        timeout: Duration,
        // Boxed: only requests that wait pay for it.
        sleep: Option<Pin<Box<Sleep>>>,
    }
}

impl<F: Future> Future for Within<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(done) = this.inner.poll(cx) {
            return Poll::Ready(Some(done));
        }
        let timeout = *this.timeout;
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        sleep.as_mut().poll(cx).map(|()| None)
    }
}

pin_project! {
    /// The future of [`LazyTimeout`]: [`Within`], an empty 408 when it runs out.
    pub struct TimeoutFuture<F> {
        #[pin]
        inner: Within<F>,
    }
}

impl<F, R, E> Future for TimeoutFuture<F>
where
    F: Future<Output = Result<Response<R>, E>>,
    R: Default,
{
    type Output = Result<Response<R>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(|done| {
            done.unwrap_or_else(|| {
                let mut response = Response::new(R::default());
                *response.status_mut() = StatusCode::REQUEST_TIMEOUT;
                Ok(response)
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::ServiceExt as _;

    use super::*;

    type Answer = Result<Response<String>, Infallible>;

    /// The status of a request to a service that answers after `wait`, behind the layer.
    /// The tests keep a thousandfold margin between the wait and the timeout, so the
    /// outcome does not depend on how busy the machine is.
    async fn serve(wait: Duration, timeout: Duration) -> StatusCode {
        let service = tower::service_fn(move |_: Request<()>| async move {
            if !wait.is_zero() {
                tokio::time::sleep(wait).await;
            }
            Answer::Ok(Response::new("done".to_owned()))
        });
        let response = LazyTimeoutLayer::new(timeout)
            .layer(service)
            .oneshot(Request::new(()))
            .await
            .unwrap();
        response.status()
    }

    #[tokio::test]
    async fn a_request_that_waits_past_the_timeout_is_answered_408() {
        assert_eq!(
            serve(Duration::from_secs(10), Duration::from_millis(10)).await,
            StatusCode::REQUEST_TIMEOUT
        );
    }

    #[tokio::test]
    async fn a_request_that_waits_less_than_the_timeout_is_answered() {
        assert_eq!(
            serve(Duration::from_millis(10), Duration::from_secs(10)).await,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn a_request_ready_at_once_is_answered_even_with_a_zero_timeout() {
        assert_eq!(serve(Duration::ZERO, Duration::ZERO).await, StatusCode::OK);
    }
}
