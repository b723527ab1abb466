//! `--secure`: every server of the run serves TLS and needs a token, and every client and worker
//! process connects with both, so that a secure run's figures set beside a plain run's show what
//! security costs. The certificates are made for the run by the recipe of
//! `scripts/dev-certs.sh` (a CA, and a server certificate for 127.0.0.1), the token file by
//! `jobwire token create` (one admin token, so one token covers every call the scenarios make),
//! all in the run's work dir.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{Context, ensure};
use jobwire::client::{Client, Tls};

/// The recipe of `scripts/dev-certs.sh`, run with `bash -c`.
const DEV_CERTS: &str = include_str!("../../../scripts/dev-certs.sh");

/// What a client needs to reach a secure server: the CA that signed its certificate and the
/// token. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Access {
    /// The CA's PEM file, for worker processes.
    pub ca_file: PathBuf,
    ca_pem: Vec<u8>,
    /// The bearer token.
    pub token: String,
}

impl Access {
    /// Reads the CA file a worker process was given.
    pub(crate) fn read(ca_file: PathBuf, token: String) -> anyhow::Result<Self> {
        let ca_pem = std::fs::read(&ca_file).with_context(|| format!("cannot read {}", ca_file.display()))?;
        Ok(Self { ca_file, ca_pem, token })
    }

    /// A client of the server at `uri` (`https://host:port`) over TLS, sending the token.
    pub(crate) async fn connect(&self, uri: &str) -> anyhow::Result<Client> {
        let tls = Tls::new().ca_certificate(self.ca_pem.clone());
        Ok(Client::connect_tls(uri, &tls).await?.with_token(&self.token)?)
    }
}

/// The files of a secure run: what the servers get, and what the clients get.
pub(crate) struct Security {
    /// `--tls-cert`, `--tls-key` and `--auth-tokens` for every server.
    pub server_flags: Vec<String>,
    /// For every client and worker process.
    pub access: Access,
}

impl Security {
    /// Makes the certificates and the token in `dir` (with `server_exe`'s `jobwire token`).
    pub(crate) fn make(dir: &Path, server_exe: &Path) -> anyhow::Result<Self> {
        let certs = dir.join("certs");
        let made = std::process::Command::new("bash")
            .args(["-c", DEV_CERTS, "dev-certs"])
            .arg(&certs)
            .stdout(Stdio::null())
            .output()
            .context("cannot run bash for the certificates")?;
        ensure!(made.status.success(), "making the certificates failed: {}", String::from_utf8_lossy(&made.stderr));
        let tokens = dir.join("tokens.json");
        let created = std::process::Command::new(server_exe)
            .args(["token", "create", "--name", "bench", "--role", "admin", "--file"])
            .arg(&tokens)
            .output()
            .context("cannot run jobwire token create")?;
        ensure!(created.status.success(), "jobwire token create failed: {}", String::from_utf8_lossy(&created.stderr));
        let token = String::from_utf8(created.stdout).context("the token is not text")?.trim().to_owned();
        let path = |p: PathBuf| p.to_string_lossy().into_owned();
        let server_flags = vec![
            "--tls-cert".into(),
            path(certs.join("server.pem")),
            "--tls-key".into(),
            path(certs.join("server.key")),
            "--auth-tokens".into(),
            path(tokens),
        ];
        Ok(Self { server_flags, access: Access::read(certs.join("ca.pem"), token)? })
    }
}
