//! `--idle-timeout`: a connection with no call open for that long is closed.
//!
//! Each connection has one [`Activity`]: how many of its calls are open, and since when none
//! is. [`CallsLayer`] (mounted once in `server.rs`) counts a call open from the moment it
//! reaches the services until its response body is done or dropped, so an open GetJob or Work
//! stream keeps its connection busy for as long as it lasts: a waiting worker is never idle.
//! HTTP/2 PINGs (keep-alive) are no calls and keep nothing open.
//!
//! The closing is done by the connection's own reads ([`IdleWatch`], polled by the listener's
//! `Connection::poll_read`), with one timer per connection and no task: when the timer fires
//! with no call open since the deadline, the read answers end of stream, and hyper closes the
//! connection as it does when a client goes away. A client's next call opens a new one (every
//! gRPC client reconnects by itself).

use std::{
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Frame;
use tokio::time::{Instant, Sleep};
use tonic::{Status, body::Body, codegen::http};
use tower_service::Service;

use super::Peer;

/// The calls of one connection: how many are open, and when the last one ended.
#[derive(Debug)]
pub struct Activity {
    open: AtomicUsize,
    /// When the connection last had a call open (or was accepted).
    last_busy: Mutex<Instant>,
}

impl Activity {
    pub(super) fn new() -> Arc<Self> {
        Arc::new(Self { open: AtomicUsize::new(0), last_busy: Mutex::new(Instant::now()) })
    }

    /// Calls open now.
    pub fn open_calls(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    /// None while a call is open; else since when none is.
    fn idle_since(&self) -> Option<Instant> {
        let last_busy = *self.last_busy.lock().unwrap_or_else(|e| e.into_inner());
        (self.open_calls() == 0).then_some(last_busy)
    }

    fn begin(self: &Arc<Self>) -> OpenCall {
        self.open.fetch_add(1, Ordering::SeqCst);
        OpenCall { activity: self.clone() }
    }
}

/// One open call; ends (and marks the connection busy until now) when dropped.
struct OpenCall {
    activity: Arc<Activity>,
}

impl Drop for OpenCall {
    fn drop(&mut self) {
        // The time first, then the count: a reader that sees no call open sees this end too.
        *self.activity.last_busy.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        self.activity.open.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What a connection's reads check: whether it has been idle for the timeout.
pub(super) struct IdleWatch {
    activity: Arc<Activity>,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    expired: bool,
}

impl IdleWatch {
    pub(super) fn new(activity: Arc<Activity>, timeout: Duration) -> Self {
        let timer = Box::pin(tokio::time::sleep(timeout));
        Self { activity, timeout, timer, expired: false }
    }

    /// Whether the connection is to be closed: no call open for the whole timeout. Registers
    /// the timer with `cx` otherwise, so the read is polled again when it may have expired.
    pub(super) fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        while !self.expired && self.timer.as_mut().poll(cx).is_ready() {
            let now = Instant::now();
            match self.activity.idle_since() {
                Some(since) if since + self.timeout <= now => self.expired = true,
                Some(since) => self.timer.as_mut().reset(since + self.timeout),
                None => self.timer.as_mut().reset(now + self.timeout),
            }
        }
        self.expired
    }
}

/// The layer that counts each call open on its connection (`Peer::activity`).
#[derive(Clone, Copy, Default)]
pub struct CallsLayer;

impl<S> tower_layer::Layer<S> for CallsLayer {
    type Service = CallsService<S>;

    fn layer(&self, inner: S) -> CallsService<S> {
        CallsService { inner }
    }
}

/// The services behind [`CallsLayer`].
#[derive(Clone)]
pub struct CallsService<S> {
    inner: S,
}

/// Whatever the inner services answer, with each response body holding its call open.
impl<S, E> Service<http::Request<Body>> for CallsService<S>
where
    S: Service<http::Request<Body>, Response = http::Response<Body>, Error = E>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = E;
    type Future = BoxFuture<'static, Result<http::Response<Body>, E>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), E>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // Counted from here: a call that waits on its handler is open too.
        let call = request.extensions().get::<Peer>().map(|peer| peer.activity.begin());
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(match call {
                None => response,
                Some(call) => response.map(|body| Body::new(Counted { inner: body, _call: call })),
            })
        })
    }
}

/// A response body that holds its call open until it is done or dropped.
struct Counted {
    inner: Body,
    _call: OpenCall,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
