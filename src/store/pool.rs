//! The connection pool: bb8 over `bb8_redis::RedisConnectionManager`, wrapped for the two
//! things jobwire needs beyond it.
//!
//! - Timeouts: every call fails within the configured timeout, so a stopped or paused Redis
//!   turns into `UNAVAILABLE` quickly instead of a hung request. The base manager connects with
//!   the redis crate's defaults (1 s to connect); the wrapper bounds the connect by the
//!   configured timeout as well (the shorter wins) and gives the connection the configured
//!   response timeout.
//! - Healing without a round trip: connections are not PINGed on checkout — that would add a
//!   round trip to every call. Instead a connection whose call failed in transport (I/O error,
//!   timeout, dropped) is marked broken and bb8 drops it instead of reusing it, so the pool
//!   heals by itself once Redis is back.
//!
//! The connections are multiplexed: many requests are in flight on each.

use std::time::Duration;

use bb8_redis::{
    RedisConnectionManager,
    bb8::{self, ManageConnection},
};
use redis::RedisError;

use super::connection::Connection;

/// A pooled multiplexed connection (always `Connection::Node`) that remembers whether it failed
/// in transport.
pub(super) struct Conn {
    pub inner: Connection,
    pub broken: bool,
}

/// Transport-level failures: the call may succeed later, and the connection should be replaced.
pub(super) fn is_transport(e: &RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}

pub(super) struct Manager {
    base: RedisConnectionManager,
    timeout: Duration,
}

impl Manager {
    pub(super) fn new(client: &redis::Client, timeout: Duration) -> Result<Self, RedisError> {
        Ok(Self { base: RedisConnectionManager::new(client.get_connection_info().clone())?, timeout })
    }

    pub(super) fn pool(self, size: u32) -> bb8::Pool<Self> {
        let timeout = self.timeout;
        bb8::Pool::builder()
            .max_size(size)
            .min_idle(Some(1))
            .test_on_check_out(false)
            .retry_connection(false)
            .connection_timeout(timeout)
            .build_unchecked(self)
    }
}

impl ManageConnection for Manager {
    type Connection = Conn;
    type Error = RedisError;

    async fn connect(&self) -> Result<Conn, RedisError> {
        let connecting = tokio::time::timeout(self.timeout, self.base.connect());
        let mut inner = connecting.await.map_err(|_| {
            RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "redis connect timed out"))
        })??;
        inner.set_response_timeout(self.timeout);
        Ok(Conn { inner: Connection::Node(inner), broken: false })
    }

    async fn is_valid(&self, conn: &mut Conn) -> Result<(), RedisError> {
        redis::cmd("PING").query_async(&mut conn.inner).await
    }

    fn has_broken(&self, conn: &mut Conn) -> bool {
        conn.broken
    }
}
