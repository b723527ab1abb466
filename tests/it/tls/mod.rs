//! TLS on both sides of jobwire, with certificates each test makes (`pki.rs`, rcgen):
//! - `serving.rs`: the gRPC listener with `--tls-cert`/`--tls-client-ca` against the Rust
//!   client and the CLI: plain text, another CA, a missing or foreign client certificate and the
//!   wrong server name are refused; what a handler learns of a verified client certificate;
//! - `rotation.rs`: new files served after a reload (SIGHUP for the binary) while open streams
//!   go on, and files that do not load changing nothing;
//! - `redis.rs`: jobwire over `rediss://` as an ACL user limited to its keys, channels and
//!   commands, with the password in a file; a Redis that requires client certificates.
//!
//! `pki.rs` also makes the certificates of the TLS-only Redis Cluster of
//! `redis_cluster::tls`.

pub(crate) mod pki;
mod redis;
mod rotation;
mod serving;

use std::{error::Error, sync::Arc};

use jobwire::{
    client::{Client, Tls},
    listener::{ServerTls, TlsFiles},
};

use pki::{Ca, Files, Leaf};

/// The server side's TLS: a certificate for `names` signed by `ca`, written to `files`; with
/// `client_ca`, mutual TLS.
pub fn server_tls(files: &Files, ca: &Ca, names: &[&str], client_ca: Option<&Ca>) -> Arc<ServerTls> {
    let (cert, key) = files.leaf("server", &ca.server(names));
    let client_ca = client_ca.map(|ca| files.write("client-ca.pem", &ca.pem));
    Arc::new(ServerTls::load(TlsFiles { cert, key, client_ca }).expect("the TLS files load"))
}

/// A client's TLS trusting `ca`.
pub fn trusting(ca: &Ca) -> Tls {
    Tls::new().ca_certificate(ca.pem.clone())
}

/// A client's TLS trusting `ca` and presenting `leaf`.
pub fn presenting(ca: &Ca, leaf: &Leaf) -> Tls {
    trusting(ca).client_certificate(leaf.cert.clone(), leaf.key.clone())
}

/// Asserts that a client with `tls` (plain text when None) cannot use the server at `addr`,
/// whether the connect fails (the client refused the server's certificate) or the first call
/// (the server refused the client's: TLS 1.3 tells a client so only after its handshake), and
/// returns why, with every cause.
pub async fn refused(addr: &str, tls: Option<&Tls>) -> String {
    let client = match tls {
        Some(tls) => Client::connect_tls(addr, tls).await,
        None => Client::connect(&format!("http://{addr}")).await,
    };
    match client {
        Err(e) => chain(&e),
        Ok(client) => chain(&client.stats("q").await.expect_err("the call is refused")),
    }
}

/// An error and its sources, joined by ": " (tonic's transport errors say why only there).
pub fn chain(error: &dyn Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
