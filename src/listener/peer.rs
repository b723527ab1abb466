//! Who is at the other end of a gRPC connection, as request handlers and layers see it: tonic
//! sets the [`Peer`] of the connection as a request extension on every call it carries.
//!
//! With `--tls-client-ca`, every connection passed the TLS handshake with a certificate the
//! CA signed (rustls verified the chain, its validity dates and its client-auth usage before
//! the connection was handed to tonic), and [`Peer::certificate`] holds what the leaf says of
//! its owner. It is read once per connection, at the handshake, never per call.

use std::{net::SocketAddr, sync::Arc};

use x509_parser::{certificate::X509Certificate, extensions::GeneralName, prelude::FromDer};

/// The connection a call came on: set by the listener as a request extension on every call, in
/// plain text and TLS alike. Read it with `request.extensions().get::<Peer>()` (a
/// `tonic::Request` and the `http::Request` a tower layer sees carry the same extensions).
///
/// tonic's own `Request::remote_addr` and `Request::peer_certs` look for tonic's connection
/// types, which this listener does not use: they answer `None`; read this instead.
#[derive(Clone, Debug)]
pub struct Peer {
    /// The client's address, as the kernel reported it at accept (a proxy's, behind one).
    pub remote_addr: Option<SocketAddr>,
    /// The client certificate verified in the TLS handshake; `None` in plain text and in TLS
    /// without `--tls-client-ca`.
    pub certificate: Option<Arc<ClientCertificate>>,
    /// The connection's open calls (`--idle-timeout` closes it after a while with none).
    pub activity: Arc<super::Activity>,
}

/// What a verified client certificate (the leaf of the chain a mutual-TLS client presented)
/// says of its owner. Only names are kept: they are what an access rule can map to a token
/// entry. Two certificates with the same names are the same client to such a rule, so a CA
/// that signs client certificates must not reuse a subject for another client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCertificate {
    /// The subject's distinguished name, its attributes in certificate order, e.g.
    /// `CN=worker-7, O=acme` (OpenSSL's one-line form with `, ` between attributes).
    pub subject: String,
    /// The subject's common name (`CN`), when it has one (the first, if several).
    pub common_name: Option<String>,
    /// The DNS names of its subjectAltName extension.
    pub dns_names: Vec<String>,
    /// The URIs of its subjectAltName extension (e.g. a SPIFFE id, `spiffe://acme/worker`).
    pub uris: Vec<String>,
}

impl ClientCertificate {
    /// Reads the names of a DER certificate. An error means the certificate does not parse as
    /// X.509, which cannot happen to one rustls verified; the listener refuses the connection
    /// then rather than serve it without an identity.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        let (_, cert) = X509Certificate::from_der(der).map_err(|e| format!("client certificate: {e}"))?;
        let subject = cert.subject();
        let common_name = subject.iter_common_name().next().and_then(|cn| cn.as_str().ok()).map(str::to_owned);
        let (mut dns_names, mut uris) = (Vec::new(), Vec::new());
        let names = cert.subject_alternative_name().map_err(|e| format!("client certificate subjectAltName: {e}"))?;
        for name in names.iter().flat_map(|san| san.value.general_names.iter()) {
            match name {
                GeneralName::DNSName(dns) => dns_names.push((*dns).to_owned()),
                GeneralName::URI(uri) => uris.push((*uri).to_owned()),
                _ => {}
            }
        }
        Ok(Self { subject: subject.to_string(), common_name, dns_names, uris })
    }
}
