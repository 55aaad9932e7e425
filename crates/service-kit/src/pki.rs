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
        private_to_owner(dir, 0o700)?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        // It signs the services' and clients' certificates only, never another CA's.
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
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
        write_private(&key_file, key.serialize_pem())?;
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

/// Writes a private key readable by its owner alone.
fn write_private(path: &Path, pem: String) -> anyhow::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    // A file left by an earlier run keeps its mode through `open`: set it.
    private_to_owner(path, 0o600)?;
    std::io::Write::write_all(&mut file, pem.as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

/// Restricts `path` to its owner (`mode`, on Unix).
fn private_to_owner(path: &Path, mode: u32) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .with_context(|| format!("restricting {} to its owner", path.display()))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path)
            .expect("metadata")
            .permissions()
            .mode()
            & 0o777
    }

    #[test]
    fn private_keys_and_their_directory_are_the_owners_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let pki = dir.path().join("pki");
        let ca = ThrowawayCa::create(&pki, "test").expect("CA");
        // A key left by an earlier run with a wider mode is narrowed when rewritten.
        std::fs::write(pki.join("client-key.pem"), "old").expect("old key");
        std::fs::set_permissions(
            pki.join("client-key.pem"),
            std::fs::Permissions::from_mode(0o644),
        )
        .expect("widen");

        let server = ca.server_cert("server", &["localhost"]).expect("server");
        let client = ca
            .client_cert("client", "client", &["client"])
            .expect("client");

        assert_eq!(mode(&pki), 0o700);
        assert_eq!(mode(&server.key_file), 0o600);
        assert_eq!(mode(&client.key_file), 0o600);
        assert!(
            std::fs::read_to_string(&client.key_file)
                .expect("key")
                .starts_with("-----BEGIN PRIVATE KEY-----")
        );
    }

    #[test]
    fn the_throwaway_ca_signs_leaf_certificates_only() {
        use rustls::pki_types::CertificateDer;
        use rustls::pki_types::pem::PemObject as _;
        use x509_parser::prelude::{FromDer as _, X509Certificate};

        let dir = tempfile::tempdir().expect("tempdir");
        let ca = ThrowawayCa::create(dir.path(), "test").expect("CA");
        let der = CertificateDer::from_pem_file(ca.ca_file()).expect("CA certificate");
        let (_, certificate) = X509Certificate::from_der(&der).expect("parse");
        let constraints = certificate
            .basic_constraints()
            .expect("one basic constraints extension")
            .expect("basic constraints")
            .value;

        assert!(constraints.ca);
        assert_eq!(constraints.path_len_constraint, Some(0));
    }
}
