//! How the store reaches Redis: its URL plus what a managed Redis may ask beyond it: TLS
//! (`rediss://`, and `rediss+cluster://` through `link.rs`) with a private CA, a client
//! certificate, and an ACL user's password kept out of the URL.
//!
//! The URL may carry a user and a password (`rediss://jobwire:secret@host:6380/0`); a password
//! given apart ([`RedisAccess::password`], from `--redis-password-file`) replaces the URL's, so
//! the secret need not sit in an environment variable or a process listing. Without a CA, a
//! `rediss://` connection trusts the system's roots (as a managed Redis with a public
//! certificate needs). TLS is rustls, with the one crypto provider of the build (`ring`).

use redis::{ClientTlsConfig, ConnectionAddr, IntoConnectionInfo, TlsCertificates};

use super::{Result, StoreError};

/// What reaching Redis takes beyond its URL; `Default` is nothing beyond it. Its `Debug` shows
/// which parts are set, never their contents.
#[derive(Clone, Default)]
pub struct RedisAccess {
    /// PEM certificates of the CA that signs Redis's certificate (`rediss://` only); `None`
    /// trusts the system's roots.
    pub ca: Option<Vec<u8>>,
    /// A client certificate and key, for a Redis that requires one (`tls-auth-clients yes`).
    pub client_identity: Option<RedisIdentity>,
    /// The password of the URL's user (or of `default` when it names none), replacing any
    /// password in the URL.
    pub password: Option<String>,
}

/// A client certificate chain and its private key, both PEM.
#[derive(Clone)]
pub struct RedisIdentity {
    /// The certificate chain, leaf first.
    pub cert: Vec<u8>,
    /// The leaf's private key.
    pub key: Vec<u8>,
}

impl std::fmt::Debug for RedisAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |present: bool| if present { "<set>" } else { "<none>" };
        f.debug_struct("RedisAccess")
            .field("ca", &set(self.ca.is_some()))
            .field("client_identity", &set(self.client_identity.is_some()))
            .field("password", &set(self.password.is_some()))
            .finish()
    }
}

/// The connection settings of `url` with `access`'s password applied, speaking `protocol`.
pub(super) fn connection_info(
    url: &str,
    access: &RedisAccess,
    protocol: redis::ProtocolVersion,
) -> Result<redis::ConnectionInfo> {
    let info =
        url.into_connection_info().map_err(|e| StoreError::Config(format!("the Redis URL does not parse: {e}")))?;
    // No `CLIENT SETINFO` on connect: one command less per connection, and one the ACL of
    // `acl.rs` need not grant (Redis 7.0 does not know it, so the rule could not be written).
    let mut settings = info.redis_settings().clone().set_skip_set_lib_name().set_protocol(protocol);
    if let Some(password) = &access.password {
        settings = settings.set_password(password);
    }
    Ok(info.set_redis_settings(settings))
}

/// The client for `url` with `access` applied, speaking `protocol` (RESP3 for pushes). Refuses
/// TLS settings on a URL that is not `rediss://`, rather than connect in plain text to a Redis
/// the operator meant to reach through TLS.
pub(super) fn client(url: &str, access: &RedisAccess, protocol: redis::ProtocolVersion) -> Result<redis::Client> {
    let info = connection_info(url, access, protocol)?;
    if !has_tls_files(access) {
        return Ok(redis::Client::open(info)?);
    }
    if !matches!(info.addr(), ConnectionAddr::TcpTls { .. }) {
        return Err(StoreError::Config(
            "a Redis CA or client certificate needs a rediss:// URL (TLS); this one is plain text".into(),
        ));
    }
    redis::Client::build_with_tls(info, certificates(access))
        .map_err(|e| StoreError::Config(format!("the Redis TLS files do not load: {e}")))
}

/// `access`'s CA and client certificate as the redis crate takes them (for one node or a
/// cluster); the caller has checked that the URL is TLS.
pub(super) fn certificates(access: &RedisAccess) -> TlsCertificates {
    TlsCertificates {
        client_tls: access
            .client_identity
            .as_ref()
            .map(|id| ClientTlsConfig { client_cert: id.cert.clone(), client_key: id.key.clone() }),
        root_cert: access.ca.clone(),
    }
}

/// Whether `access` holds TLS files (a CA or a client certificate), which a plain-text URL
/// must refuse.
pub(super) fn has_tls_files(access: &RedisAccess) -> bool {
    access.ca.is_some() || access.client_identity.is_some()
}
