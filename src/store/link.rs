//! The link to Redis: one node through the bb8 pool (`pool.rs`), or a Redis Cluster through the
//! redis crate's async cluster client, behind the one `Connection` type (`connection.rs`) that
//! every call of the store runs on. Nothing outside this file (and the few node-by-node
//! operations of `backend.rs`) knows which of the two it has.
//!
//! - **One node** (`redis://`, `rediss://`, `unix://`): pooled multiplexed connections, healed
//!   by dropping a connection whose call failed in transport (`pool.rs`).
//! - **A cluster** (`redis+cluster://host:port[,host:port...]`, the seed nodes, with a user
//!   and password as in `redis://`; `rediss+cluster://` for TLS to every node, with the CA and
//!   client certificate of `rediss://`): one cluster connection, cloned per call (a handle over the
//!   client's own multiplexed connection per node). It routes each command by the slot of its
//!   first key, follows `MOVED` and `ASK` at once, and refreshes the slot map and reconnects
//!   when a node fails or a replica is promoted; every call is still bounded by the configured
//!   timeout overall (retries included), so a slot without a master turns into `UNAVAILABLE`
//!   quickly. `TRYAGAIN` (a multi-key call whose keys are half moved while a slot migrates),
//!   `CLUSTERDOWN`, `MASTERDOWN` and `LOADING` are retried after a wait: the client's default
//!   wait is random between 1.28 s and 10·2^retry ms, longer than a usual timeout, so one
//!   `TRYAGAIN` during a resharding would run the call into it. The waits here are bounded
//!   ([`retry_waits`]): 10 ms at first, doubling, at most an eighth of the timeout, so a
//!   migration's `TRYAGAIN`s are retried several times within one call. A call that fails in transport renews the connection (at most once a
//!   second), so a master that died is forgotten once the cluster has promoted its replica.
//!   It connects in the background: the store is built while the cluster
//!   is down, and the first call that finds it up completes the connection.
//!
//! A blocking read (an event tailer's `XREAD BLOCK`) goes on a connection of its own: on a
//! cluster, to the one node of its key's slot, found by following `MOVED`
//! ([`Link::blocking_connection`]), so it costs one Redis connection rather than one per node.
//!
//! Pub/sub goes on a connection of its own speaking RESP3 (pushes arrive on a channel, and
//! subscribing goes on while messages flow): [`Link::subscriber`]. On a cluster, the client
//! sends each `SSUBSCRIBE` to the master of the channel's slot; on either, a lost node ends
//! the subscriber and the caller makes a new one (which learns the slot map afresh).

use std::time::Duration;

use bb8_redis::bb8;
use redis::{
    ErrorKind, PushInfo, RedisError, ServerErrorKind, Value,
    cluster::{ClusterClient, ClusterClientBuilder, ClusterConfig},
    cluster_async::ClusterConnection,
    cluster_routing::{MultipleNodeRoutingInfo, RoutingInfo},
};
use tokio::sync::mpsc;

use super::{
    Result, StoreConfig, StoreError,
    connect::{self, RedisAccess},
    connection::Connection,
    pool::Manager,
};

/// The URL scheme of a Redis Cluster: its seed nodes follow, comma-separated.
const CLUSTER_SCHEME: &str = "redis+cluster://";

/// The same over TLS to every node.
const TLS_CLUSTER_SCHEME: &str = "rediss+cluster://";

/// Whether `url` names a Redis Cluster (its seed nodes) rather than one Redis.
pub fn is_cluster_url(url: &str) -> bool {
    url.starts_with(CLUSTER_SCHEME) || url.starts_with(TLS_CLUSTER_SCHEME)
}

/// How the store reaches Redis (see the module doc).
#[expect(clippy::large_enum_variant, reason = "one per store, built once and never moved after")]
pub(super) enum Link {
    Node {
        pool: bb8::Pool<Manager>,
        /// For the connections that must not be pooled (blocking reads).
        client: redis::Client,
        /// The same node in RESP3, for the subscriber.
        pushes: redis::Client,
    },
    Cluster(Box<Cluster>),
}

/// What a call of the store runs on ([`Link::calls`]).
pub(super) enum Calls<'a> {
    /// A connection is taken from the pool for the call.
    Pool(&'a bb8::Pool<Manager>),
    /// The cluster connection, which routes the call.
    Cluster(ClusterConnection),
}

/// The cluster side of [`Link`].
pub(super) struct Cluster {
    /// The one cluster connection of the calls, cloned per call, and when it was made.
    conn: std::sync::Mutex<(ClusterConnection, std::time::Instant)>,
    client: ClusterClient,
    /// The same seeds in RESP3, for the subscriber.
    pushes: ClusterClient,
    timeout: Duration,
    /// How a single node is reached, as the seeds are: for the blocking reads.
    node: NodeAccess,
}

/// How the store reaches one node of a cluster on its own (a blocking read's connection): the
/// URL scheme, user and password of the seeds, and their TLS files.
struct NodeAccess {
    /// `redis` or `rediss`.
    scheme: &'static str,
    /// The seeds' `user[:password]`.
    userinfo: Option<String>,
    access: RedisAccess,
}

impl NodeAccess {
    /// How the nodes of the cluster `url` names are reached, and its comma-separated seeds.
    fn of_cluster_url<'u>(url: &'u str, access: &RedisAccess) -> Result<(Self, &'u str)> {
        let (scheme, userinfo, hosts) = split_cluster_url(url)?;
        Ok((Self { scheme, userinfo: userinfo.map(str::to_owned), access: access.clone() }, hosts))
    }

    /// Whether the nodes are reached through TLS.
    fn tls(&self) -> bool {
        self.scheme == "rediss"
    }

    /// The URL of the node at `address` (`host:port`, as Redis names it in `MOVED`).
    fn url(&self, address: &str) -> String {
        let address = match address.rsplit_once(':') {
            Some((host, port)) if host.contains(':') && !host.starts_with('[') => format!("[{host}]:{port}"),
            _ => address.to_owned(),
        };
        match &self.userinfo {
            Some(userinfo) => format!("{}://{userinfo}@{address}", self.scheme),
            None => format!("{}://{address}", self.scheme),
        }
    }
}

/// The most `MOVED` a blocking connection follows to find the master of its key's slot (one
/// suffices unless the slot moves meanwhile).
const MOVED_HOPS: usize = 3;

impl Cluster {
    /// A connection of its own to the master of `key`'s slot alone (see
    /// [`Link::blocking_connection`]).
    async fn connection_to_master_of(&self, key: &str, block: Duration, timeout: Duration) -> Result<Connection> {
        let mut calls = self.conn.lock().unwrap_or_else(|e| e.into_inner()).0.clone();
        let every_master = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
        let masters = calls.route_command(redis::cmd("PING"), every_master).await?;
        let first = match masters {
            Value::Map(masters) => masters.into_iter().next().map(|(address, _)| address),
            _ => None,
        };
        let mut address: String = match first {
            Some(address) => redis::from_redis_value(address)?,
            None => return Err(StoreError::Unavailable("no master in the cluster's slot map".into())),
        };
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(block + timeout));
        for _ in 0..MOVED_HOPS {
            let client = connect::client(&self.node.url(&address), &self.node.access, redis::ProtocolVersion::RESP2)?;
            let mut conn = Connection::Node(client.get_multiplexed_async_connection_with_config(&config).await?);
            match redis::cmd("EXISTS").arg(key).query_async::<i64>(&mut conn).await {
                Ok(_) => return Ok(conn),
                Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::Moved) => match e.redirect_node() {
                    Some((to, _)) => address = to.to_owned(),
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
        Err(StoreError::Unavailable(format!("the slot of {key} moved {MOVED_HOPS} times while connecting")))
    }
}

impl Link {
    /// The link `config.url` names, built without waiting for Redis.
    pub(super) fn new(config: &StoreConfig) -> Result<Self> {
        if is_cluster_url(&config.url) {
            let client = cluster_client(&config.url, &config.access, config.timeout, redis::ProtocolVersion::RESP2)?;
            let pushes = cluster_client(&config.url, &config.access, config.timeout, redis::ProtocolVersion::RESP3)?;
            let conn = client.get_pending_async_connection_with_config(call_config(config.timeout, config.timeout));
            let conn = std::sync::Mutex::new((conn, std::time::Instant::now()));
            let (node, _) = NodeAccess::of_cluster_url(&config.url, &config.access)?;
            return Ok(Self::Cluster(Box::new(Cluster { conn, client, pushes, timeout: config.timeout, node })));
        }
        let client = connect::client(&config.url, &config.access, redis::ProtocolVersion::RESP2)?;
        let pushes = connect::client(&config.url, &config.access, redis::ProtocolVersion::RESP3)?;
        let pool = Manager::new(&client, config.timeout)?.pool(config.pool_size);
        Ok(Self::Node { pool, client, pushes })
    }

    /// Whether this is a cluster.
    pub(super) fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }

    /// A connection outside the pool for blocking reads of `key`, whose responses may take
    /// `block` longer than `timeout` (a blocking read would stall every request multiplexed on
    /// a shared connection). On a cluster, to the master of `key`'s slot alone, not a whole
    /// cluster connection (one per node), so each blocking reader costs one Redis connection:
    /// it asks a master of the slot map and follows its `MOVED`. A read that later meets
    /// `MOVED` (the slot moved, or a replica took over) fails, and the caller's next connection
    /// finds the new master; a slot mid-move answers `ASK` until the move ends, which fails
    /// the connect the same way (`Unavailable`), for the caller to retry.
    pub(super) async fn blocking_connection(
        &self,
        key: &str,
        block: Duration,
        timeout: Duration,
    ) -> Result<Connection> {
        match self {
            Self::Node { client, .. } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(block + timeout));
                Ok(Connection::Node(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Self::Cluster(cluster) => cluster.connection_to_master_of(key, block, timeout).await,
        }
    }

    /// A RESP3 connection whose pushes (messages, subscription confirmations, disconnections)
    /// arrive on the returned receiver.
    pub(super) async fn subscriber(
        &self,
        timeout: Duration,
    ) -> Result<(Connection, mpsc::UnboundedReceiver<PushInfo>)> {
        let (tx, rx) = mpsc::unbounded_channel();
        let conn = match self {
            Self::Node { pushes, .. } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(timeout))
                    .set_response_timeout(Some(timeout))
                    .set_push_sender(tx);
                Connection::Node(pushes.get_multiplexed_async_connection_with_config(&config).await?)
            }
            Self::Cluster(cluster) => {
                let config = call_config(cluster.timeout, cluster.timeout).set_push_sender(tx);
                Connection::Cluster(cluster.pushes.get_async_connection_with_config(config).await?)
            }
        };
        Ok((conn, rx))
    }

    /// What a call runs on: the pool of the one node, or a handle of the cluster connection.
    pub(super) fn calls(&self) -> Calls<'_> {
        match self {
            Self::Node { pool, .. } => Calls::Pool(pool),
            Self::Cluster(cluster) => Calls::Cluster(cluster.conn.lock().unwrap_or_else(|e| e.into_inner()).0.clone()),
        }
    }

    /// The store's error for `e`, a cluster call's. When no node was reached over a
    /// plain-text URL it says that a TLS-only cluster needs `rediss+cluster://`: such nodes
    /// reset a plain-text connection, and the client reports only that it found no connection.
    pub(super) fn call_error(&self, e: RedisError) -> StoreError {
        match self {
            Self::Cluster(cluster) if !cluster.node.tls() && e.kind() == ErrorKind::ClusterConnectionNotFound => {
                StoreError::Unavailable(format!(
                    "no node of the Redis Cluster answered ({e}): is it down, or does it speak TLS only (then use rediss+cluster://)?"
                ))
            }
            _ => StoreError::from(e),
        }
    }

    /// After a call failed in transport on a cluster: replaces the cluster connection with a
    /// new one (at most once per [`RENEW_EVERY`]), which learns the slot map afresh from the
    /// seeds. The client refreshes its map on `MOVED`, but a master that died answers nothing,
    /// and the client would keep reconnecting to it after its replica took over.
    pub(super) fn renew_after_failure(&self) {
        let Self::Cluster(cluster) = self else { return };
        let mut conn = cluster.conn.lock().unwrap_or_else(|e| e.into_inner());
        if conn.1.elapsed() >= RENEW_EVERY {
            let fresh =
                cluster.client.get_pending_async_connection_with_config(call_config(cluster.timeout, cluster.timeout));
            *conn = (fresh, std::time::Instant::now());
        }
    }
}

/// The least time between two renewals of a cluster connection.
const RENEW_EVERY: Duration = Duration::from_secs(1);

/// Timeouts of a cluster connection: `response` per attempt, and overall (retries included).
fn call_config(connect: Duration, response: Duration) -> ClusterConfig {
    ClusterConfig::new().set_connection_timeout(connect).set_response_timeout(response)
}

/// The first wait (ms) before retrying a `TRYAGAIN`-like answer; each next one doubles.
const RETRY_WAIT_FIRST_MS: u64 = 10;

/// The least and most wait (ms) between two retries of one call on a cluster: from
/// [`RETRY_WAIT_FIRST_MS`] up to an eighth of `timeout` (the client draws each wait at random
/// between the least and the doubling formula, capped by the most).
fn retry_waits(timeout: Duration) -> (u64, u64) {
    let eighth = u64::try_from(timeout.as_millis() / 8).unwrap_or(u64::MAX);
    (RETRY_WAIT_FIRST_MS, eighth.max(RETRY_WAIT_FIRST_MS + 1))
}

/// A cluster URL's parts: the scheme of its nodes (`redis` or `rediss`), its `user[:password]`
/// and its comma-separated seeds.
fn split_cluster_url(url: &str) -> Result<(&'static str, Option<&str>, &str)> {
    let (scheme, rest) = match (url.strip_prefix(CLUSTER_SCHEME), url.strip_prefix(TLS_CLUSTER_SCHEME)) {
        (Some(rest), _) => ("redis", rest),
        (_, Some(rest)) => ("rediss", rest),
        (None, None) => {
            return Err(StoreError::Config(
                "a Redis Cluster URL starts with redis+cluster:// or rediss+cluster://".into(),
            ));
        }
    };
    let (userinfo, hosts) = match rest.rsplit_once('@') {
        Some((userinfo, hosts)) => (Some(userinfo), hosts),
        None => (None, rest),
    };
    Ok((scheme, userinfo, hosts.trim_end_matches('/')))
}

/// The cluster client for a `redis+cluster://[user[:password]@]host:port[,host:port...]` URL,
/// or `rediss+cluster://` for TLS to every node (with `access`'s CA and client certificate, as
/// `rediss://`): the seeds and every node the slot map names later are reached alike, and so
/// is every connection made from this client (the calls and their `WAIT`s, `FUNCTION LOAD` on
/// each master, the subscriber, the blocking reads).
fn cluster_client(
    url: &str,
    access: &RedisAccess,
    timeout: Duration,
    protocol: redis::ProtocolVersion,
) -> Result<ClusterClient> {
    let (node, hosts) = NodeAccess::of_cluster_url(url, access)?;
    let tls = node.tls();
    if !tls && connect::has_tls_files(access) {
        return Err(StoreError::Config(
            "a Redis CA or client certificate needs a rediss+cluster:// URL (TLS); this one is plain text".into(),
        ));
    }
    let seeds: Vec<String> = hosts.split(',').map(|host| node.url(host)).collect();
    if hosts.is_empty() || seeds.iter().any(|s| s.ends_with("//") || s.ends_with('@')) {
        return Err(StoreError::Config(format!("a {}+cluster:// URL needs at least one host:port", node.scheme)));
    }
    let mut infos = Vec::with_capacity(seeds.len());
    for seed in &seeds {
        infos.push(connect::connection_info(seed, access, protocol)?);
    }
    let (min_wait, max_wait) = retry_waits(timeout);
    let mut builder = ClusterClientBuilder::new(infos)
        .use_protocol(protocol)
        .connection_timeout(timeout)
        .response_timeout(timeout)
        .min_retry_wait(min_wait)
        .max_retry_wait(max_wait)
        .retry_wait_formula(RETRY_WAIT_FIRST_MS, 2);
    if let Some(password) = &access.password {
        builder = builder.password(password);
    }
    if tls && connect::has_tls_files(access) {
        builder = builder.certs(connect::certificates(access));
    }
    builder.build().map_err(|e| StoreError::Config(format!("the Redis Cluster URL or TLS files do not load: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_its_seeds_and_a_url_without_hosts_is_refused() {
        let access = RedisAccess::default();
        let t = Duration::from_secs(1);
        let resp = redis::ProtocolVersion::RESP2;
        assert!(cluster_client("redis+cluster://127.0.0.1:7000,127.0.0.1:7001", &access, t, resp).is_ok());
        assert!(cluster_client("redis+cluster://jobwire:secret@127.0.0.1:7000/", &access, t, resp).is_ok());
        for bad in ["redis+cluster://", "redis+cluster://user@", "redis+cluster://a:1,,b:2"] {
            assert!(matches!(cluster_client(bad, &access, t, resp), Err(StoreError::Config(_))), "{bad} is refused");
        }
        assert!(is_cluster_url("redis+cluster://h:1") && !is_cluster_url("redis://h:1"));
    }

    #[test]
    fn tls_files_need_a_rediss_cluster_url_and_must_load() {
        let resp = redis::ProtocolVersion::RESP2;
        let t = Duration::from_secs(1);
        let plain = RedisAccess::default();
        assert!(cluster_client("rediss+cluster://127.0.0.1:7000,127.0.0.1:7001", &plain, t, resp).is_ok());
        assert!(is_cluster_url("rediss+cluster://h:1"));
        let pem = b"-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n";
        let bad_ca = RedisAccess { ca: Some(pem.to_vec()), ..RedisAccess::default() };
        let Err(StoreError::Config(plain_refused)) = cluster_client("redis+cluster://127.0.0.1:7000", &bad_ca, t, resp)
        else {
            panic!("a CA with a plain-text cluster URL is refused");
        };
        assert!(plain_refused.contains("rediss+cluster://"), "{plain_refused}");
        assert!(matches!(
            cluster_client("rediss+cluster://127.0.0.1:7000", &bad_ca, t, resp),
            Err(StoreError::Config(_))
        ));
        assert!(matches!(cluster_client("rediss+cluster://", &plain, t, resp), Err(StoreError::Config(_))));
    }

    #[test]
    fn retry_waits_stay_well_within_the_timeout() {
        assert_eq!(retry_waits(Duration::from_secs(2)), (10, 250));
        assert_eq!(retry_waits(Duration::from_millis(40)), (10, 11));
    }
}
