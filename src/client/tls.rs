//! How the client reaches a server: the address, and TLS when the server serves it
//! (`jobwire serve --tls-cert`): which CA to trust, the client certificate that mutual TLS asks
//! for, and the name to check the server's certificate against when it is not the address's host.
//!
//! tonic does the TLS (rustls, the build's one crypto provider, ALPN `h2`). Without a CA, TLS
//! trusts the system's roots.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

use super::ClientError;

/// TLS settings of a connection to a jobwire server. `Tls::default()` trusts the system's roots,
/// presents no client certificate and checks the server's certificate against the address's
/// host. Its `Debug` never shows the private key.
#[derive(Clone, Default)]
pub struct Tls {
    ca: Option<Vec<u8>>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
    server_name: Option<String>,
}

impl std::fmt::Debug for Tls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tls")
            .field("ca", &self.ca.as_ref().map(|_| "<set>"))
            .field("client_certificate", &self.identity.as_ref().map(|_| "<set>"))
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Tls {
    /// TLS trusting the system's roots (add a CA with [`Tls::ca_certificate`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts the CA certificates of this PEM (instead of the system's roots).
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Presents this client certificate chain and key (both PEM), for a server that requires
    /// client certificates (`--tls-client-ca`).
    pub fn client_certificate(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Checks the server's certificate against `name` (and sends it as SNI) instead of the
    /// address's host: for a server reached by an address its certificate does not name.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    fn config(&self) -> ClientTlsConfig {
        let mut config = ClientTlsConfig::new();
        config = match &self.ca {
            Some(pem) => config.ca_certificate(Certificate::from_pem(pem)),
            None => config.with_native_roots(),
        };
        if let Some((cert, key)) = &self.identity {
            config = config.identity(Identity::from_pem(cert, key));
        }
        if let Some(name) = &self.server_name {
            config = config.domain_name(name);
        }
        config
    }
}

/// The endpoint (not yet connected) of the server at `addr`: `host:port` or a URI. Without
/// `tls` the address is a URI, `http://` for plain text or `https://` for TLS with the system's
/// roots; with `tls` it is `host:port` or `https://`, never `http://` (that would be plain text
/// while the caller asked for TLS).
pub fn endpoint(addr: &str, tls: Option<&Tls>) -> Result<Endpoint, ClientError> {
    let invalid = |why: &str| ClientError::Rpc(tonic::Status::invalid_argument(format!("address: {addr} {why}")));
    let uri = match tls {
        Some(_) if addr.starts_with("http://") => {
            return Err(invalid("is plain text (http://), but TLS was asked for"));
        }
        Some(_) if !addr.contains("://") => format!("https://{addr}"),
        _ => addr.to_owned(),
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|_| invalid("is not a URI"))?;
    let tls = match tls {
        Some(tls) => Some(tls.clone()),
        None if addr.starts_with("https://") => Some(Tls::default()),
        None => None,
    };
    match tls {
        None => Ok(endpoint),
        Some(tls) => {
            endpoint.tls_config(tls.config()).map_err(|source| ClientError::Connect { addr: addr.to_owned(), source })
        }
    }
}
