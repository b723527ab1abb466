//! Assembles the gRPC server: the queue and session services, health (tonic-health, SERVING
//! while Redis answers) and reflection (v1 and v1alpha), and runs it on a bound listener until
//! `shutdown` resolves. Taking a bound listener
//! and any shutdown future is what lets tests run the real server on port 0.
//!
//! With `ServerOptions::metrics`, it also serves Prometheus metrics on that (separately bound)
//! listener and has the engine refresh the per-queue gauges; the endpoint stays up through the
//! drain, so the drain itself can be watched, and stops last.
//!
//! Every call passes the auth layer first (`api/auth/`): with `ServerOptions::auth` it needs a
//! token of a role the method allows (health excepted); without, everything is let through,
//! which `jobwire serve` allows on loopback addresses only.
//!
//! With `ServerOptions::dashboard`, the same port also answers HTTP/1.1: the dashboard's assets
//! (`crate::ui`) and gRPC-web calls of the queue and session services, so the dashboard is
//! reached where the API is, under the same listener, TLS and tokens.
//!
//! `ReadyFile` is how a server started on port 0 tells its launcher where it listens
//! (`--ready-file`), without anyone parsing its log.
//!
//! Connections come from `crate::listener` (plain text, or TLS with `ServerOptions::tls`), so
//! every call carries the connection's `listener::Peer` as a request extension; a layer added
//! to the builder in `run` sees it on every request. The first layer counts each connection's
//! open calls, so that a connection idle for `ConnectionLimits::idle_timeout` is closed; the
//! other limits of `ConnectionLimits` are HTTP/2 settings of the transport and the auth layer's
//! count of streams per token.
//!
//! Shutdown order: health NOT_SERVING -> the engine drains (workers told, acks accepted for the
//! grace period, held jobs handed back) -> the transport stops (its connections closed, at most
//! `CLOSE_WAIT` later) -> the metrics endpoint stops -> background tasks are gone.

use std::{future::Future, io::Write, net::SocketAddr, path::Path, sync::Arc, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;
use tonic_health::{ServingStatus, server::HealthReporter};
use tonic_web::GrpcWebLayer;
use tower_layer::Layer;
use tracing::info;

use crate::{
    api::{AuthLayer, QueueApi, ScheduleApi, SessionApi},
    auth::Authority,
    listener::{CallsLayer, Incoming, ServerTls},
    proto::{
        queue_service_server::QueueServiceServer, schedule_service_server::ScheduleServiceServer,
        session_service_server::SessionServiceServer,
    },
    queue::Engine,
    telemetry::MetricsEndpoint,
};

/// The descriptor set `build.rs` writes, served by reflection.
const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("jobwire_descriptor");
/// Health reports these two names (and "", the server as a whole).
const SERVICE_NAME: &str = "jobwire.v1.QueueService";
const SESSION_SERVICE_NAME: &str = "jobwire.v1.SessionService";
const SCHEDULE_SERVICE_NAME: &str = "jobwire.v1.ScheduleService";

/// What [`run`] needs besides the listener and the engine; `jobwire serve` takes it from its
/// flags (`crate::config::ServeConfig`).
pub struct ServerOptions {
    /// Largest gRPC message, in bytes, either service decodes or encodes; past it the transport
    /// answers OUT_OF_RANGE (tonic's code for it) and the connection goes on.
    pub max_message: usize,
    /// An idle worker stream hears a ping after a random half to whole of this period.
    pub ping_every: Duration,
    /// On shutdown, how long acks are still accepted before held jobs are handed back.
    pub drain_grace: Duration,
    /// Serve Prometheus metrics here (off when None).
    pub metrics: Option<MetricsEndpoint>,
    /// How a silent peer is found out.
    pub keepalive: Keepalive,
    /// Serve TLS with this configuration (plain text when None); the caller keeps a clone to
    /// reload it (`ServerTls::reload`, on SIGHUP in `jobwire serve`).
    pub tls: Option<Arc<ServerTls>>,
    /// The tokens callers must present (`--auth-tokens`); None lets every call through.
    pub auth: Option<Arc<Authority>>,
    /// Serve the dashboard on the same port: its assets over HTTP/1.1 and the services over
    /// gRPC-web too (`crate::ui`).
    pub dashboard: bool,
    /// What one connection and one token may hold open.
    pub connections: ConnectionLimits,
}

/// What one connection and one token may hold open, and how big a call's headers may be: the
/// limits a broken or abusive client meets at the transport (the sizes of what a call carries
/// are `queue::Limits`, and the largest message `ServerOptions::max_message`).
#[derive(Clone, Copy, Debug)]
pub struct ConnectionLimits {
    /// Calls one HTTP/2 connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
    /// the client holds back its further calls until one ends.
    pub max_streams_per_connection: u32,
    /// With tokens, streams (GetJob, Work, WatchJob, Subscribe) one token may hold open on this
    /// instance; one more is refused RESOURCE_EXHAUSTED.
    pub max_streams_per_token: usize,
    /// Largest header block of a call (SETTINGS_MAX_HEADER_LIST_SIZE); a call with more is
    /// refused, and its connection goes on.
    pub max_header_bytes: u32,
    /// A connection with no call open for this long is closed.
    pub idle_timeout: Duration,
}

impl Default for ConnectionLimits {
    /// The defaults of `jobwire serve`: far above what a deployment uses.
    fn default() -> Self {
        Self {
            max_streams_per_connection: 200,
            max_streams_per_token: 10_000,
            max_header_bytes: 16 << 10,
            idle_timeout: Duration::from_secs(600),
        }
    }
}

/// The HTTP/2 keep-alive of every connection: a connection silent for `interval` is pinged, and
/// closed if the ping is not answered within `timeout`. This is what notices a worker behind a
/// dead network path (no FIN): its streams end and their jobs go back to ready.
#[derive(Clone, Copy, Debug)]
pub struct Keepalive {
    /// Silence after which a PING is sent.
    pub interval: Duration,
    /// How long a PING may go unanswered before the connection is closed.
    pub timeout: Duration,
}

/// The bound addresses, as `--ready-file` holds them: the gRPC address on line 1, the metrics
/// address (if served) on line 2.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ReadyFile {
    /// Where the gRPC services listen.
    pub grpc: SocketAddr,
    /// Where `/metrics` is served; None when metrics are off.
    pub metrics: Option<SocketAddr>,
}

impl ReadyFile {
    /// Writes a sibling temp file and renames it over `path`: readers see all or nothing.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut text = format!("{}\n", self.grpc);
        if let Some(metrics) = self.metrics {
            text.push_str(&format!("{metrics}\n"));
        }
        let mut temp = path.as_os_str().to_owned();
        temp.push(format!(".{}.tmp", std::process::id()));
        let mut file = std::fs::File::create(&temp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&temp, path)
    }

    /// Reads a ready file: None while it does not exist yet (or does not parse).
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut lines = text.lines();
        let grpc = lines.next()?.parse().ok()?;
        let metrics = match lines.next() {
            Some(line) => Some(line.parse().ok()?),
            None => None,
        };
        Some(Self { grpc, metrics })
    }
}

/// Keeps health in step with Redis: SERVING while it answers, NOT_SERVING otherwise.
async fn follow_redis(engine: Arc<Engine>, health: HealthReporter) {
    let mut up = engine.redis_up();
    loop {
        let status = if *up.borrow_and_update() { ServingStatus::Serving } else { ServingStatus::NotServing };
        for name in ["", SERVICE_NAME, SESSION_SERVICE_NAME, SCHEDULE_SERVICE_NAME] {
            health.set_service_status(name, status).await;
        }
        if up.changed().await.is_err() {
            return;
        }
    }
}

/// Serves gRPC on `listener` until `shutdown` resolves, then shuts down in the order above and
/// returns once the transport and the metrics endpoint have stopped. Errors are the transport's.
pub async fn run(
    listener: TcpListener,
    engine: Arc<Engine>,
    options: ServerOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (health, health_service) = tonic_health::server::health_reporter();
    for name in ["", SERVICE_NAME, SESSION_SERVICE_NAME, SCHEDULE_SERVICE_NAME] {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
    let follower = tokio::spawn(follow_redis(engine.clone(), health.clone()));
    let metrics_stop = CancellationToken::new();
    let metrics = options.metrics.map(|endpoint| {
        engine.start_gauges(endpoint.refresh());
        tokio::spawn(endpoint.serve(metrics_stop.clone()))
    });
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().expect("the embedded descriptor sets are valid");
    let reflection_v1alpha = reflection().build_v1alpha().expect("the embedded descriptor sets are valid");
    let queue = QueueServiceServer::new(QueueApi::new(engine.clone(), options.ping_every))
        .max_decoding_message_size(options.max_message)
        .max_encoding_message_size(options.max_message);
    let sessions = SessionServiceServer::new(SessionApi::new(engine.clone()))
        .max_decoding_message_size(options.max_message)
        .max_encoding_message_size(options.max_message);
    let schedules = ScheduleServiceServer::new(ScheduleApi::new(engine.clone()))
        .max_decoding_message_size(options.max_message)
        .max_encoding_message_size(options.max_message);

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let limits = options.connections;
    let incoming = Incoming::new(listener, options.tls).idle_timeout(limits.idle_timeout);
    // The dashboard's assets answer what no service does; the services also speak gRPC-web.
    let (routes, open) = if options.dashboard {
        (Routes::from(crate::ui::router()), crate::ui::is_asset as fn(&str) -> bool)
    } else {
        (Routes::default(), (|_| false) as fn(&str) -> bool)
    };
    let transport = tonic::transport::Server::builder()
        .accept_http1(options.dashboard)
        .layer(CallsLayer)
        .layer(AuthLayer::new(options.auth, open, limits.max_streams_per_token))
        .max_concurrent_streams(limits.max_streams_per_connection)
        .http2_max_header_list_size(limits.max_header_bytes)
        .http2_keepalive_interval(Some(options.keepalive.interval))
        .http2_keepalive_timeout(Some(options.keepalive.timeout))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(GrpcWebLayer::new().layer(queue))
        .add_service(GrpcWebLayer::new().layer(sessions))
        .add_service(GrpcWebLayer::new().layer(schedules))
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop_rx.await;
        });
    let transport = tokio::spawn(transport);

    shutdown.await;
    info!("shutting down");
    follower.abort();
    for name in ["", SERVICE_NAME, SESSION_SERVICE_NAME, SCHEDULE_SERVICE_NAME] {
        health.set_service_status(name, ServingStatus::NotServing).await;
    }
    engine.shutdown(options.drain_grace).await;
    let _ = stop_tx.send(());
    // The transport now sends GOAWAY and waits for its connections to close. A client that keeps
    // one open (a call it never ends) must not hold the exit: after CLOSE_WAIT it is dropped.
    let mut transport = transport;
    let served = match tokio::time::timeout(CLOSE_WAIT, &mut transport).await {
        Ok(served) => served,
        Err(_) => {
            tracing::warn!(wait = ?CLOSE_WAIT, "connections still open after the drain; closing them");
            transport.abort();
            Ok(Ok(()))
        }
    };
    metrics_stop.cancel();
    if let Some(metrics) = metrics {
        let _ = metrics.await;
    }
    match served {
        Ok(result) => result,
        Err(join) => panic!("the transport task panicked: {join}"),
    }
}

/// How long, once the engine has drained, the transport may wait for its connections to close.
const CLOSE_WAIT: Duration = Duration::from_secs(2);
