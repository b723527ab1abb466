//! Certificates for the TLS tests, made fresh by each test with rcgen (ECDSA P-256): a CA, server
//! certificates for given names, client certificates with a subject and subjectAltNames; and a
//! temp dir to write them to for the flags that take files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    SanType,
};

/// A certificate authority that signs the certificates of a test.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate, PEM: what a peer trusts.
    pub pem: String,
}

/// A certificate and its private key, both PEM.
pub struct Leaf {
    pub cert: String,
    pub key: String,
}

impl Ca {
    pub fn new(name: &str) -> Self {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = params.self_signed(&key).expect("CA certificate").pem();
        Self { issuer: Issuer::new(params, key), pem }
    }

    /// A server certificate (CN `jobwire`) for `names`: DNS names or IP addresses.
    pub fn server(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("server names");
        params.distinguished_name.push(DnType::CommonName, "jobwire");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.sign(params)
    }

    /// A certificate for a node of a TLS-only Redis Cluster, at `names`: a server's and a
    /// client's at once, as the node presents it both ways on the cluster bus and on the
    /// replication link.
    pub fn cluster_node(&self, names: &[&str]) -> Leaf {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).expect("node names");
        params.distinguished_name.push(DnType::CommonName, "redis node");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    /// A client certificate with subject `CN=<common_name>, O=<organization>` and `sans`.
    pub fn client(&self, common_name: &str, organization: &str, sans: Vec<SanType>) -> Leaf {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.distinguished_name.push(DnType::OrganizationName, organization);
        params.subject_alt_names = sans;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(params)
    }

    fn sign(&self, mut params: CertificateParams) -> Leaf {
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("signed certificate");
        Leaf { cert: cert.pem(), key: key.serialize_pem() }
    }
}

/// A temp dir the PEM files of a test go to.
pub struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    pub fn new() -> Self {
        Self { dir: tempfile::tempdir().expect("temp dir") }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` in the dir (atomically: a temp file renamed over it, as a
    /// certificate rotation should) and returns its path.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        let temp = self.dir.path().join(format!(".{name}.tmp"));
        std::fs::write(&temp, contents).expect("write a PEM file");
        std::fs::rename(&temp, &path).expect("rename a PEM file into place");
        path
    }

    /// Writes a leaf as `<name>.pem` and `<name>.key`; returns both paths.
    pub fn leaf(&self, name: &str, leaf: &Leaf) -> (PathBuf, PathBuf) {
        (self.write(&format!("{name}.pem"), &leaf.cert), self.write(&format!("{name}.key"), &leaf.key))
    }
}

/// A path as a command-line argument.
pub fn arg(path: &Path) -> String {
    path.to_str().expect("a UTF-8 temp path").to_owned()
}
