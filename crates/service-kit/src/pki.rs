//! A throwaway certificate authority for local runs, tests and benchmarks: one command
//! (the pilot) or one test gets working mTLS without an operator's PKI. Keys are made
//! fresh each time and written as PEM files next to the CA; production identities come
//! from the cluster's issuer (deploy/), never from here.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// A CA whose certificate is written to `ca.pem` in its directory.
pub struct ThrowawayCa {
    issuer: Issuer<'static, KeyPair>,
    dir: PathBuf,
    ca_file: PathBuf,
}

impl std::fmt::Debug for ThrowawayCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThrowawayCa")
            .field("ca_file", &self.ca_file)
            .finish_non_exhaustive()
    }
}

/// A certificate and its private key, as PEM files.
#[derive(Debug, Clone)]
pub struct IssuedCert {
    /// PEM certificate.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
}

impl ThrowawayCa {
    /// Creates the CA (common name `{name} throwaway CA`) and writes `dir/ca.pem`.
    pub fn create(dir: &Path, name: &str) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} throwaway CA"));
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate()?;
        let cert = params.self_signed(&key)?;
        let ca_file = dir.join("ca.pem");
        write(&ca_file, cert.pem())?;
        Ok(Self {
            issuer: Issuer::new(params, key),
            dir: dir.to_path_buf(),
            ca_file,
        })
    }

    /// The CA certificate (the trust root for both servers and clients).
    pub fn ca_file(&self) -> &Path {
        &self.ca_file
    }

    /// A server certificate for `hosts` (DNS names or IP addresses; the first is also the
    /// common name), written as `{file_stem}.pem` and `{file_stem}-key.pem`.
    pub fn server_cert(&self, file_stem: &str, hosts: &[&str]) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = hosts.iter().map(|h| san(h)).collect::<Result<_, _>>()?;
        if let Some(first) = hosts.first() {
            params.distinguished_name.push(DnType::CommonName, *first);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        self.issue(file_stem, params)
    }

    /// A client certificate with `common_name` and `sans` (DNS names, or URIs such as
    /// `spiffe://...`), written as `{file_stem}.pem` and `{file_stem}-key.pem`.
    pub fn client_cert(
        &self,
        file_stem: &str,
        common_name: &str,
        sans: &[&str],
    ) -> anyhow::Result<IssuedCert> {
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.subject_alt_names = sans.iter().map(|s| san(s)).collect::<Result<_, _>>()?;
        params
            .distinguished_name
            .push(DnType::CommonName, common_name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.issue(file_stem, params)
    }

    fn issue(&self, file_stem: &str, params: CertificateParams) -> anyhow::Result<IssuedCert> {
        let key = KeyPair::generate()?;
        let cert = params.signed_by(&key, &self.issuer)?;
        let cert_file = self.dir.join(format!("{file_stem}.pem"));
        let key_file = self.dir.join(format!("{file_stem}-key.pem"));
        write(&cert_file, cert.pem())?;
        write(&key_file, key.serialize_pem())?;
        Ok(IssuedCert {
            cert_file,
            key_file,
        })
    }
}

/// A throwaway CA in a temporary directory that is removed with it: what a test needs for
/// mTLS between a server on `localhost` and named clients.
#[derive(Debug)]
pub struct TempCa {
    ca: ThrowawayCa,
    _dir: tempfile::TempDir,
}

impl TempCa {
    /// Creates the CA (see [`ThrowawayCa::create`]) in a fresh temporary directory.
    pub fn new(name: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let ca = ThrowawayCa::create(dir.path(), name)?;
        Ok(Self { ca, _dir: dir })
    }

    /// The CA certificate (`ca.pem` in the temporary directory).
    pub fn ca_file(&self) -> &Path {
        self.ca.ca_file()
    }

    /// A server certificate for `localhost` and 127.0.0.1.
    pub fn server_cert(&self) -> anyhow::Result<IssuedCert> {
        self.ca.server_cert("server", &["localhost", "127.0.0.1"])
    }

    /// A client certificate with common name `name`, DNS SAN `{name}.test` and URI SAN
    /// `spiffe://test/{name}`.
    pub fn client_cert(&self, name: &str) -> anyhow::Result<IssuedCert> {
        self.ca.client_cert(
            name,
            name,
            &[&format!("{name}.test"), &format!("spiffe://test/{name}")],
        )
    }
}

fn san(name: &str) -> anyhow::Result<SanType> {
    Ok(if let Ok(ip) = name.parse() {
        SanType::IpAddress(ip)
    } else if name.contains("://") {
        SanType::URI(name.try_into()?)
    } else {
        SanType::DnsName(name.try_into()?)
    })
}

fn write(path: &Path, pem: String) -> anyhow::Result<()> {
    std::fs::write(path, pem).with_context(|| format!("writing {}", path.display()))
}
