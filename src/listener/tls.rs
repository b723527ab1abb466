//! The server's TLS configuration (`--tls-cert`, `--tls-key`, `--tls-client-ca`), read from its
//! files and swappable while serving.
//!
//! tonic's built-in TLS takes its configuration once, when the server is built; jobwire runs its
//! own acceptor (tokio-rustls, `super::Incoming`) instead, and each handshake takes the
//! configuration current at that moment. [`ServerTls::reload`] reads the files again and swaps
//! it in: connections made from then on get the new certificate (and client CA); connections
//! already open keep the session they negotiated, so their streams go on. A reload that fails
//! (a missing file, a key that does not fit the certificate, a half-written file) changes
//! nothing, and the caller logs it: the old configuration keeps serving.
//!
//! Every configuration offers ALPN `h2` (gRPC clients require it: tonic, grpc-go, C-core and
//! grpc-js refuse a TLS connection that did not negotiate HTTP/2), TLS 1.2 and 1.3 with rustls'
//! safe defaults, and the `ring` crypto provider (the one provider in the build, so the redis
//! client and tonic's client pick it too).

use std::{
    path::{Path, PathBuf},
    sync::{Arc, RwLock},
};

use rustls::{
    RootCertStore, ServerConfig,
    pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject},
    server::WebPkiClientVerifier,
};
use tokio_rustls::TlsAcceptor;

/// The files of the server's TLS configuration, all PEM.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// `--tls-cert`: the server's certificate chain, leaf first.
    pub cert: PathBuf,
    /// `--tls-key`: the leaf's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// `--tls-client-ca`: the CA certificates that sign client certificates. When given, every
    /// client must present a certificate one of them signed (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// Why a TLS configuration could not be loaded; each names the flag and the file.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("{flag} {}: {source}", path.display())]
    Read {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// A file was read but does not hold what the flag needs.
    #[error("{flag} {}: {reason}", path.display())]
    Invalid {
        /// The flag that names the file.
        flag: &'static str,
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// rustls refused the combination (e.g. the key does not belong to the certificate).
    #[error("--tls-cert and --tls-key: {0}")]
    Config(rustls::Error),
}

/// The live TLS configuration of a listener; see the module doc.
pub struct ServerTls {
    files: TlsFiles,
    /// Read at each handshake (a pointer copy under a read lock), written by `reload`.
    current: RwLock<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Reads the files and builds the first configuration.
    pub fn load(files: TlsFiles) -> Result<Self, TlsError> {
        let config = build(&files)?;
        Ok(Self { files, current: RwLock::new(Arc::new(config)) })
    }

    /// Reads the same files again and, if they make a valid configuration, serves it to every
    /// connection from now on. On an error the previous configuration stays.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = Arc::new(build(&self.files)?);
        *self.current.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = config;
        Ok(())
    }

    /// Whether clients must present a certificate (`--tls-client-ca` given).
    pub fn requires_client_certificates(&self) -> bool {
        self.files.client_ca.is_some()
    }

    /// An acceptor with the configuration current now, for one handshake.
    pub(super) fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(self.current.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone())
    }
}

fn read(flag: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { flag, path: path.to_owned(), source })
}

/// Every certificate of a PEM file; an error if it holds none or one does not decode.
fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(flag, path)?;
    let invalid = |reason: String| TlsError::Invalid { flag, path: path.to_owned(), reason };
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("holds no certificate (no BEGIN CERTIFICATE block)".into()));
    }
    Ok(certs)
}

fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("--tls-cert", &files.cert)?;
    let key_pem = read("--tls-key", &files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Invalid {
        flag: "--tls-key",
        path: files.key.clone(),
        reason: format!("no private key found: {e}"),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(TlsError::Config)?;
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in certificates("--tls-client-ca", path)? {
                roots.add(cert).map_err(|e| TlsError::Invalid {
                    flag: "--tls-client-ca",
                    path: path.clone(),
                    reason: format!("not a usable CA certificate: {e}"),
                })?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().map_err(|e| {
                    TlsError::Invalid { flag: "--tls-client-ca", path: path.clone(), reason: e.to_string() }
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(chain, key).map_err(TlsError::Config)?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}
