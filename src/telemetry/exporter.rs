//! The `/metrics` endpoint: a small HTTP/1.1 server (hyper, already in the tree through tonic)
//! on a listener bound by the caller, so tests can bind `127.0.0.1:0` and read the address
//! back, and the binary can report a bind failure before anything else starts.
//!
//! It answers `GET /metrics` with the Prometheus text format and nothing else. Each connection
//! is a task of its own, tracked in a `JoinSet`; when `serve`'s stop token fires, the accept
//! loop ends and the open connections are dropped.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio::{net::TcpListener, task::JoinSet};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::MetricsError;

const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A bound metrics listener with the recorder installed; hand it to `server::run`
/// (`ServerOptions::metrics`) to serve it.
pub struct MetricsEndpoint {
    listener: TcpListener,
    handle: PrometheusHandle,
    refresh: Duration,
}

impl MetricsEndpoint {
    /// Installs the recorder and binds `addr`.
    pub async fn bind(addr: SocketAddr) -> Result<Self, MetricsError> {
        let handle = super::install()?;
        let listener = TcpListener::bind(addr).await?;
        Ok(Self { listener, handle, refresh: super::DEFAULT_REFRESH })
    }

    /// Installs the recorder and serves on an already bound listener.
    pub fn from_listener(listener: TcpListener) -> Result<Self, MetricsError> {
        Ok(Self { listener, handle: super::install()?, refresh: super::DEFAULT_REFRESH })
    }

    /// How often the per-queue gauges are read from Redis (default 5 s).
    pub fn refresh_every(mut self, every: Duration) -> Self {
        self.refresh = every.max(Duration::from_millis(10));
        self
    }

    /// How often the per-queue gauges are read from Redis.
    pub fn refresh(&self) -> Duration {
        self.refresh
    }

    /// The address bound (with its port when port 0 was asked for).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop` fires.
    pub async fn serve(self, stop: CancellationToken) {
        if let Ok(addr) = self.listener.local_addr() {
            info!(%addr, "metrics listening");
        }
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                _ = stop.cancelled() => break,
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
                accepted = self.listener.accept() => accepted,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    warn!(error = %e, "metrics listener could not accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let handle = self.handle.clone();
            let stop = stop.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| {
                    let handle = handle.clone();
                    async move { Ok::<_, Infallible>(answer(&handle, &req)) }
                });
                let connection = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), service);
                tokio::select! {
                    _ = stop.cancelled() => {}
                    served = connection => if let Err(e) = served {
                        debug!(error = %e, "metrics connection ended with an error");
                    }
                }
            });
        }
        connections.shutdown().await;
    }
}

fn answer(handle: &PrometheusHandle, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, content_type: &'static str, body: Bytes| {
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
        response
    };
    if req.uri().path() != "/metrics" {
        return reply(StatusCode::NOT_FOUND, "text/plain", Bytes::from_static(b"metrics are at /metrics\n"));
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain", Bytes::from_static(b"use GET\n"));
    }
    reply(StatusCode::OK, CONTENT_TYPE, Bytes::from(super::render(handle)))
}
