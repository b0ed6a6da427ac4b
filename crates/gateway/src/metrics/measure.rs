//! The layer that counts and times every request on the gateway's port. A plain tower layer
//! rather than `axum::middleware::from_fn`, which boxes a future per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::Request;
use axum::response::Response;

use super::{Area, Metrics};

/// Counts each answer in `metrics` by area and status, and times it to its head.
#[derive(Debug, Clone)]
pub struct MeasureLayer {
    metrics: Arc<Metrics>,
}

impl MeasureLayer {
    /// Counts in `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> MeasureLayer {
        MeasureLayer { metrics }
    }
}

impl<S> tower::Layer<S> for MeasureLayer {
    type Service = Measure<S>;

    fn layer(&self, inner: S) -> Measure<S> {
        Measure {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`MeasureLayer`] wraps around the router.
#[derive(Debug, Clone)]
pub struct Measure<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S> tower::Service<Request> for Measure<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Measured<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        let area = Area::of(request.uri().path());
        Measured {
            inner: self.inner.call(request),
            area,
            started: Instant::now(),
            metrics: self.metrics.clone(),
        }
    }
}

pin_project_lite::pin_project! {
    /// A request being answered; counted once its response's head is ready.
    pub struct Measured<F> {
        #[pin]
        inner: F,
        area: Area,
        started: Instant,
        metrics: Arc<Metrics>,
    }
}

impl<F, E> Future for Measured<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let answered = std::task::ready!(this.inner.poll(cx));
        if let Ok(response) = &answered {
            this.metrics
                .observe_http(*this.area, response.status(), this.started.elapsed());
        }
        Poll::Ready(answered)
    }
}
