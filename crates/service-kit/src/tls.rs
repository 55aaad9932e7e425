//! TLS and mutual TLS (rustls with the ring provider): server configuration, client
//! channels, and the verified client identity handlers use for authorization.

use std::{
    collections::BTreeMap,
    io::{ErrorKind, IoSlice},
    path::{Path, PathBuf},
    pin::Pin,
    sync::{Arc, Mutex, Once, PoisonError},
    task::{Context, Poll},
    time::{Duration, Instant, SystemTime},
};

use anyhow::{Context as _, bail};
use hyper_util::rt::TokioIo;
use rustls::{
    RootCertStore,
    pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject as _},
    server::WebPkiClientVerifier,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::{TlsAcceptor, server::TlsStream};
use tonic::transport::{Channel, Endpoint, server::Connected};
use x509_parser::prelude::{FromDer as _, GeneralName, X509Certificate};

use crate::config::{ClientTlsConfig, ConfigError, ServerTlsConfig};

/// Installs rustls' ring crypto provider as the process default, once. Every TLS set-up
/// in the kit calls it; services that use rustls elsewhere (e.g. sqlx) may call it too.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already the default, which serves just as well.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Who the verified client certificate says the caller is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate subject as an RFC 4514 string, e.g. `CN=civil-registry,O=MoJ`.
    pub subject: String,
    /// The subject's common name, if any.
    pub common_name: Option<String>,
    /// DNS subject alternative names.
    pub dns_names: Vec<String>,
    /// URI subject alternative names (e.g. SPIFFE ids).
    pub uris: Vec<String>,
}

impl ClientIdentity {
    /// True when a DNS or URI subject alternative name equals `allowed` exactly. Never the
    /// common name: an issuing CA's name constraints bind the alternative names only, so
    /// a common name (beside them, or on a certificate without any) could claim an
    /// identity the CA may not issue.
    pub fn matches(&self, allowed: &str) -> bool {
        self.dns_names.iter().any(|name| name == allowed)
            || self.uris.iter().any(|uri| uri == allowed)
    }

    /// Parses a DER-encoded X.509 certificate.
    pub fn from_der(der: &[u8]) -> anyhow::Result<Self> {
        let (_, certificate) =
            X509Certificate::from_der(der).map_err(|e| anyhow::anyhow!("bad certificate: {e}"))?;
        let subject = certificate.subject();
        let common_name = subject
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_string);
        let mut dns_names = Vec::new();
        let mut uris = Vec::new();
        if let Ok(Some(san)) = certificate.subject_alternative_name() {
            for name in &san.value.general_names {
                match name {
                    GeneralName::DNSName(dns) => dns_names.push((*dns).to_string()),
                    GeneralName::URI(uri) => uris.push((*uri).to_string()),
                    _ => {}
                }
            }
        }
        Ok(Self {
            subject: subject.to_string(),
            common_name,
            dns_names,
            uris,
        })
    }
}

/// The verified client certificate's identity: `None` over plaintext, without a client
/// certificate, or when the certificate cannot be parsed. rustls has already verified the
/// chain against the configured client CA before a request reaches a handler; the kit's
/// server parses the certificate once per connection ([`TlsConnection`]), not per call.
pub fn client_identity<T>(req: &tonic::Request<T>) -> Option<Arc<ClientIdentity>> {
    req.extensions()
        .get::<ConnectionInfo>()?
        .client_identity
        .clone()
}

/// What the kit's server knows of a TLS connection, in every request's extensions.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The verified client certificate's identity, parsed at the handshake.
    pub client_identity: Option<Arc<ClientIdentity>>,
}

/// A server-side TLS connection that carries its [`ConnectionInfo`] to tonic.
pub struct TlsConnection {
    stream: TlsStream<TcpStream>,
    info: ConnectionInfo,
}

impl TlsConnection {
    /// Wraps an accepted connection, parsing the client certificate (if any) once.
    pub fn new(stream: TlsStream<TcpStream>) -> Self {
        let client_identity = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|certificates| certificates.first())
            .and_then(|leaf| ClientIdentity::from_der(leaf.as_ref()).ok())
            .map(Arc::new);
        let info = ConnectionInfo { client_identity };
        Self { stream, info }
    }
}

impl std::fmt::Debug for TlsConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnection")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl Connected for TlsConnection {
    type ConnectInfo = ConnectionInfo;

    fn connect_info(&self) -> ConnectionInfo {
        self.info.clone()
    }
}

/// `AsyncRead` and `AsyncWrite` for a TLS connection type, delegated to its `stream`, with
/// writes reported as not vectored although rustls accepts vectored ones: h2 then copies
/// DATA payloads under 1 KiB into its write buffer instead of chaining them from 256 bytes
/// on, and a chained payload makes it flush before the next frame. A unary response
/// (headers, message, trailers) thus leaves in one TLS record and one system call instead
/// of two, and a request's message and end of stream in one instead of two.
macro_rules! tls_io {
    ($connection:ty) => {
        impl AsyncRead for $connection {
            fn poll_read(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &mut ReadBuf<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.stream).poll_read(cx, buf)
            }
        }

        impl AsyncWrite for $connection {
            fn poll_write(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                buf: &[u8],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.stream).poll_write(cx, buf)
            }

            fn poll_write_vectored(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
                bufs: &[IoSlice<'_>],
            ) -> Poll<std::io::Result<usize>> {
                Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
            }

            fn is_write_vectored(&self) -> bool {
                false
            }

            fn poll_flush(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.stream).poll_flush(cx)
            }

            fn poll_shutdown(
                mut self: Pin<&mut Self>,
                cx: &mut Context<'_>,
            ) -> Poll<std::io::Result<()>> {
                Pin::new(&mut self.stream).poll_shutdown(cx)
            }
        }
    };
}

tls_io!(TlsConnection);

/// A channel to `uri`: `https://host:port` with TLS (CA from `tls.ca_file`, client
/// certificate for mTLS when `cert_file` and `key_file` are set), `http://` only with
/// `tls.insecure_plaintext`. Connects lazily, so it can be built before the peer is up;
/// `connect_timeout` bounds each connection attempt, the TCP connect and the TLS handshake
/// together: a peer (or middlebox) that accepts the connection and never answers would
/// otherwise hold the channel's only attempt for ever. HTTP/2 keepalive detects dead peers.
pub fn client_channel(
    uri: &str,
    tls: &ClientTlsConfig,
    connect_timeout: Duration,
) -> anyhow::Result<Channel> {
    client_channel_with(uri, tls, connect_timeout, None)
}

/// [`client_channel`], with `call_timeout` bounding every call on the channel, for
/// callers that cannot set a deadline per call (an exporter's background thread).
pub fn client_channel_with(
    uri: &str,
    tls: &ClientTlsConfig,
    connect_timeout: Duration,
    call_timeout: Option<Duration>,
) -> anyhow::Result<Channel> {
    let mut endpoint = Endpoint::from_shared(uri.to_string())
        .with_context(|| format!("invalid URI {uri:?}"))?
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    if let Some(call_timeout) = call_timeout {
        endpoint = endpoint.timeout(call_timeout);
    }
    let scheme = endpoint.uri().scheme_str().unwrap_or_default().to_string();
    match (scheme.as_str(), tls.insecure_plaintext) {
        ("http", true) => {
            tracing::warn!(
                uri,
                "TLS is off for this client: plaintext gRPC (insecure_plaintext)"
            );
            Ok(endpoint.connect_lazy())
        }
        ("http", false) => {
            bail!("{uri}: plaintext http:// needs tls.insecure_plaintext = true; use https://")
        }
        ("https", true) => bail!("{uri}: https:// contradicts tls.insecure_plaintext = true"),
        ("https", false) => Ok(endpoint.connect_with_connector_lazy(client_connector(tls)?)),
        (other, _) => bail!("{uri}: unsupported scheme {other:?} (use https:// or http://)"),
    }
}

fn client_connector(tls: &ClientTlsConfig) -> anyhow::Result<TlsConnector> {
    let ca_file = tls
        .ca_file
        .as_deref()
        .context("tls.ca_file is required for https:// (the CA that signed the server)")?;
    let identity = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => Some((cert.as_path(), key.as_path())),
        (None, None) => None,
        _ => bail!("tls.cert_file and tls.key_file must be set together"),
    };
    TlsConnector::from_files(ca_file, identity, tls.server_name.as_deref())
        .context("client TLS (tls.ca_file, tls.cert_file, tls.key_file, tls.server_name)")
}

/// Opens the TCP and TLS connections of an `https://` channel
/// (`Endpoint::connect_with_connector`): rustls with the ring provider, ALPN `h2`, the
/// server's certificate verified against the given CA under the URI's host (or a fixed
/// server name), and a client certificate presented when one is given (mTLS). It exists,
/// rather than tonic's own TLS, so that the connection can report non-vectored writes
/// ([`ClientTlsConnection`]).
#[derive(Clone)]
pub struct TlsConnector {
    connector: Arc<ReloadingTls<tokio_rustls::TlsConnector>>,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for TlsConnector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConnector")
            .field("server_name", &self.server_name)
            .finish_non_exhaustive()
    }
}

impl TlsConnector {
    /// From PEM files: the CA certificates that may sign the server's certificate, the
    /// client's certificate chain and key (mTLS), and the name the server's certificate
    /// must carry when it is not the URI's host. Connections made after the files change
    /// use the new ones ([`ReloadingTls`]).
    pub fn from_files(
        ca_file: &Path,
        identity_files: Option<(&Path, &Path)>,
        server_name: Option<&str>,
    ) -> anyhow::Result<Self> {
        let ca_file = ca_file.to_path_buf();
        let identity_files =
            identity_files.map(|(cert, key)| (cert.to_path_buf(), key.to_path_buf()));
        let mut files = vec![ca_file.clone()];
        if let Some((cert, key)) = &identity_files {
            files.extend([cert.clone(), key.clone()]);
        }
        let connector = ReloadingTls::new(files, move || {
            let identity = identity_files
                .as_ref()
                .map(|(cert, key)| (cert.as_path(), key.as_path()));
            client_config(&ca_file, identity)
                .map(|config| tokio_rustls::TlsConnector::from(Arc::new(config)))
        })?;
        let server_name = server_name
            .map(|name| {
                ServerName::try_from(name.to_owned())
                    .with_context(|| format!("server name {name:?} is not a DNS name or address"))
            })
            .transpose()?;
        Ok(Self {
            connector: Arc::new(connector),
            server_name,
        })
    }
}

/// The rustls client configuration of [`TlsConnector::from_files`].
fn client_config(
    ca_file: &Path,
    identity_files: Option<(&Path, &Path)>,
) -> anyhow::Result<rustls::ClientConfig> {
    let pem = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let ca = pem(ca_file)?;
    let identity = match identity_files {
        Some((cert, key)) => Some((cert, pem(cert)?, pem(key)?)),
        None => None,
    };
    install_crypto_provider();
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&ca) {
        roots
            .add(cert.context("CA: not a PEM certificate")?)
            .context("CA: unusable certificate")?;
    }
    if roots.is_empty() {
        bail!("CA: no certificate in the PEM");
    }
    let builder = rustls::ClientConfig::builder().with_root_certificates(roots);
    let mut config = match identity {
        Some((cert_file, cert, key)) => {
            let chain = CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<Vec<_>, _>>()
                .context("client certificate: not a PEM certificate chain")?;
            let key =
                PrivateKeyDer::from_pem_slice(&key).context("client key: not a PEM private key")?;
            let config = builder
                .with_client_auth_cert(chain.clone(), key)
                .context("the client key does not match the client certificate")?;
            // Only a certificate that will be presented is reported as presented.
            note_expiry(cert_file, &chain);
            config
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

impl tower::Service<http::Uri> for TlsConnector {
    type Response = TokioIo<ClientTlsConnection>;
    type Error = std::io::Error;
    type Future =
        Pin<Box<dyn std::future::Future<Output = std::io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connector = self.connector.current();
        let server_name = self.server_name.clone();
        Box::pin(async move {
            let invalid = |message: String| std::io::Error::new(ErrorKind::InvalidInput, message);
            let host = uri
                .host()
                .ok_or_else(|| invalid(format!("{uri}: no host")))?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let port = uri.port_u16().unwrap_or(443);
            let name = match server_name {
                Some(name) => name,
                None => ServerName::try_from(host.clone())
                    .map_err(|e| invalid(format!("{host}: {e}")))?,
            };
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            tcp.set_nodelay(true)?;
            let stream = connector.connect(name, tcp).await?;
            Ok(TokioIo::new(ClientTlsConnection { stream }))
        })
    }
}

/// A client-side TLS connection of [`TlsConnector`].
#[derive(Debug)]
pub struct ClientTlsConnection {
    stream: tokio_rustls::client::TlsStream<TcpStream>,
}

tls_io!(ClientTlsConnection);

/// Gauge: when each certificate the process presents stops being valid (Unix seconds),
/// labelled by its file, set when it is loaded (at start, and when renewed files are
/// reloaded): a pod that could not use a renewal presents the old certificate until peers
/// refuse it, and this shows what is served, where the Secret's own expiry shows only what
/// was issued.
pub const TLS_CERTIFICATE_EXPIRY: &str = "tls_certificate_expiry_timestamp_seconds";

/// Fewer days of validity than this left at start is logged as a warning (cert-manager
/// renews 30 days before expiry, so a renewal has then been missed for two weeks).
const EXPIRY_WARNING_DAYS: i64 = 14;

/// The expiry of every certificate loaded so far, by file. Some are loaded before the
/// metrics recorder exists (the telemetry exporter's client identity); the recorder's
/// install exports them from here, so no loaded certificate is missing from the gauge.
static LOADED_EXPIRIES: Mutex<BTreeMap<String, i64>> = Mutex::new(BTreeMap::new());

/// Sets [`TLS_CERTIFICATE_EXPIRY`] for every certificate loaded so far.
pub(crate) fn export_loaded_expiries() {
    let loaded = LOADED_EXPIRIES
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    for (file, not_after) in loaded.iter() {
        metrics::gauge!(TLS_CERTIFICATE_EXPIRY, "file" => file.clone()).set(*not_after as f64);
    }
}

/// Exports the expiry of the leaf of the chain loaded from `file` and warns when it has
/// passed or is near. A certificate that cannot be parsed is left to rustls to refuse.
fn note_expiry(file: &Path, chain: &[CertificateDer<'_>]) {
    let Some(Ok((_, cert))) = chain.first().map(|leaf| X509Certificate::from_der(leaf)) else {
        return;
    };
    let not_after = cert.validity().not_after.timestamp();
    let file = file.display().to_string();
    LOADED_EXPIRIES
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(file.clone(), not_after);
    metrics::gauge!(TLS_CERTIFICATE_EXPIRY, "file" => file.clone()).set(not_after as f64);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let days_left = (not_after - now).div_euclid(86_400);
    if not_after <= now {
        tracing::error!(
            target: "security",
            file,
            "the certificate has expired: peers refuse it until renewed files are in place"
        );
    } else if days_left < EXPIRY_WARNING_DAYS {
        tracing::warn!(
            target: "security",
            file,
            days_left,
            "the certificate expires soon: it is replaced when renewed files are in place"
        );
    }
}

/// How long a client may take to complete the TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Server TLS material read at bind time; the acceptor is built from it so that
/// [`crate::GrpcServer::client_certificate_optional`] can relax client authentication.
#[derive(Debug, Clone)]
pub(crate) struct ServerTlsMaterial {
    cert_chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
    client_roots: Option<Arc<RootCertStore>>,
}

impl ServerTlsMaterial {
    /// Reads `tls`, or `None` for plaintext (logged as a warning).
    pub(crate) fn read(tls: &ServerTlsConfig) -> anyhow::Result<Option<Self>> {
        let material_configured =
            tls.cert_file.is_some() || tls.key_file.is_some() || tls.client_ca_file.is_some();
        if tls.insecure_plaintext && material_configured {
            // A deployment's config names its TLS files; plaintext on top of it is a
            // switch flipped by mistake (an environment variable set while debugging),
            // and on the population registry it would also turn caller checks off.
            return Err(ConfigError::new(
                "server.tls.insecure_plaintext",
                "contradicts the TLS files configured in server.tls (cert_file, key_file, \
                 client_ca_file): unset one or the other",
            )
            .into());
        }
        if tls.insecure_plaintext {
            tracing::warn!("TLS is off: serving plaintext gRPC (server.tls.insecure_plaintext)");
            return Ok(None);
        }
        install_crypto_provider();
        let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) else {
            return Err(ConfigError::new(
                "server.tls.cert_file",
                "server.tls.cert_file and server.tls.key_file are required \
                 (or set server.tls.insecure_plaintext = true for local runs)",
            )
            .into());
        };
        let cert_chain = CertificateDer::pem_slice_iter(&read(cert, "server.tls.cert_file")?)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid("server.tls.cert_file", "not a PEM certificate chain", e))?;
        let key = PrivateKeyDer::from_pem_slice(&read(key, "server.tls.key_file")?)
            .map_err(|e| invalid("server.tls.key_file", "not a PEM private key", e))?;
        let client_roots = match &tls.client_ca_file {
            Some(ca) => {
                let key = "server.tls.client_ca_file";
                let mut roots = RootCertStore::empty();
                for cert in CertificateDer::pem_slice_iter(&read(ca, key)?) {
                    let cert = cert.map_err(|e| invalid(key, "not a PEM certificate", e))?;
                    roots
                        .add(cert)
                        .map_err(|e| invalid(key, "unusable CA certificate", e))?;
                }
                Some(Arc::new(roots))
            }
            None => None,
        };
        let material = Self {
            cert_chain,
            key: Arc::new(key),
            client_roots,
        };
        // Fail at bind, not at the first connection.
        material
            .acceptor(false)
            .map_err(|e| invalid("server.tls", "the certificate, key and CA do not fit", e))?;
        // Only a certificate that will be presented is reported as presented.
        note_expiry(cert, &material.cert_chain);
        Ok(Some(material))
    }

    /// A rustls acceptor speaking HTTP/2; with client roots, mTLS (the client certificate
    /// verified against them, and required unless `client_certificate_optional`).
    pub(crate) fn acceptor(
        &self,
        client_certificate_optional: bool,
    ) -> anyhow::Result<TlsAcceptor> {
        let builder = rustls::ServerConfig::builder();
        let builder = match &self.client_roots {
            None => builder.with_no_client_auth(),
            Some(roots) => {
                let verifier = WebPkiClientVerifier::builder(roots.clone());
                let verifier = if client_certificate_optional {
                    verifier.allow_unauthenticated()
                } else {
                    verifier
                };
                builder.with_client_cert_verifier(
                    verifier
                        .build()
                        .context("server.tls.client_ca_file: unusable")?,
                )
            }
        };
        let mut config = builder
            .with_single_cert(self.cert_chain.clone(), self.key.clone_key())
            .context("server.tls.key_file does not match server.tls.cert_file")?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, ConfigError> {
    std::fs::read(path)
        .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
}

/// How often, at most, the files of a TLS configuration are looked at for a change.
pub const TLS_FILES_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies a file's contents without reading it: modification time, length and
/// (on Unix) inode. Kubernetes updates a mounted Secret by swapping a symlink to new
/// files, so each renewal shows as new inodes.
type FileStamp = Option<(SystemTime, u64, u64)>;

fn stamps(files: &[PathBuf]) -> Vec<FileStamp> {
    files
        .iter()
        .map(|file| {
            let meta = std::fs::metadata(file).ok()?;
            #[cfg(unix)]
            let inode = std::os::unix::fs::MetadataExt::ino(&meta);
            #[cfg(not(unix))]
            let inode = 0;
            Some((meta.modified().ok()?, meta.len(), inode))
        })
        .collect()
}

/// A TLS configuration built from files and built again when they change: cert-manager
/// rewrites a Secret's files on renewal, and the connections accepted or made after that
/// use the new certificate, key and CA without a restart (connections already open keep
/// theirs until they close; `max_connection_age_ms` bounds that). Files that changed but
/// cannot be used (a key that does not fit its certificate, a half-written file) are
/// logged once and the loaded configuration is kept until they change again.
pub(crate) struct ReloadingTls<T> {
    files: Vec<PathBuf>,
    build: Box<dyn Fn() -> anyhow::Result<T> + Send + Sync>,
    state: Mutex<Loaded<T>>,
}

impl<T> std::fmt::Debug for ReloadingTls<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadingTls")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

struct Loaded<T> {
    value: T,
    stamps: Vec<FileStamp>,
    refused: Option<Vec<FileStamp>>,
    checked: Instant,
}

impl<T: Clone> ReloadingTls<T> {
    /// Builds the first configuration; an error here is a configuration error.
    pub(crate) fn new(
        files: Vec<PathBuf>,
        build: impl Fn() -> anyhow::Result<T> + Send + Sync + 'static,
    ) -> anyhow::Result<Self> {
        // Stamped before reading: a change while building is seen at the next check.
        let stamps = stamps(&files);
        let value = build()?;
        Ok(Self {
            files,
            build: Box::new(build),
            state: Mutex::new(Loaded {
                value,
                stamps,
                refused: None,
                checked: Instant::now(),
            }),
        })
    }

    /// The configuration for the next connection.
    pub(crate) fn current(&self) -> T {
        let changed = {
            let mut loaded = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            if loaded.checked.elapsed() < TLS_FILES_CHECK_INTERVAL {
                return loaded.value.clone();
            }
            loaded.checked = Instant::now();
            let now = stamps(&self.files);
            if now == loaded.stamps || loaded.refused.as_ref() == Some(&now) {
                return loaded.value.clone();
            }
            now
        };
        // Built without the lock: connections meanwhile take the loaded configuration
        // (the check time was moved on, so no other caller builds too).
        let built = (self.build)();
        let mut loaded = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        match built {
            Ok(value) => {
                tracing::info!(files = ?self.files, "TLS files changed: new connections use them");
                loaded.value = value;
                loaded.stamps = changed;
                loaded.refused = None;
            }
            Err(error) => {
                tracing::warn!(
                    files = ?self.files,
                    error = %format!("{error:#}"),
                    "TLS files changed but cannot be used: keeping the ones loaded before"
                );
                loaded.refused = Some(changed);
            }
        }
        loaded.value.clone()
    }
}

/// The server's acceptor, built again when its files change ([`ReloadingTls`]); `None`
/// for plaintext.
pub(crate) fn reloading_acceptor(
    tls: &ServerTlsConfig,
    client_certificate_optional: bool,
) -> anyhow::Result<Option<ReloadingTls<TlsAcceptor>>> {
    if tls.insecure_plaintext {
        // Refuses plaintext beside TLS files, and warns.
        return ServerTlsMaterial::read(tls).map(|_| None);
    }
    let files = [&tls.cert_file, &tls.key_file, &tls.client_ca_file]
        .into_iter()
        .flatten()
        .cloned()
        .collect();
    let tls = tls.clone();
    ReloadingTls::new(files, move || {
        ServerTlsMaterial::read(&tls)?
            .context("server TLS is off")?
            .acceptor(client_certificate_optional)
    })
    .map(Some)
}

/// A configured file that does not hold what its key needs.
fn invalid(key: &str, what: &str, cause: impl std::fmt::Display) -> ConfigError {
    ConfigError::new(key, format!("{what}: {cause:#}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_matches_only_a_name_it_carries_in_full() {
        let identity = ClientIdentity {
            subject: "CN=civil-registry,O=MoJ".into(),
            common_name: Some("civil-registry".into()),
            dns_names: vec!["civil-registry.moj-civilstatus".into()],
            uris: vec!["spiffe://gov.vn/ns/moj-civilstatus/sa/civil-registry".into()],
        };
        for allowed in [
            "civil-registry.moj-civilstatus",
            "spiffe://gov.vn/ns/moj-civilstatus/sa/civil-registry",
        ] {
            assert!(identity.matches(allowed), "{allowed}");
        }
        // Prefixes, extensions and the subject string are not names it carries, nor is
        // the common name beside alternative names.
        for other in [
            "civil-registry",
            "civil",
            "civil-registry-2",
            "civil-registry.moj",
            "spiffe://gov.vn/ns/moj-civilstatus/sa/civil-registry-evil",
            "spiffe://gov.vn/ns/moj-civilstatus/sa/civil",
            "CN=civil-registry,O=MoJ",
            "",
        ] {
            assert!(!identity.matches(other), "{other}");
        }
    }

    #[test]
    fn changed_files_are_used_once_they_build_and_an_unusable_change_is_tried_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("tls.crt");
        let put = |text: &str| {
            let staged = dir.path().join("staged");
            std::fs::write(&staged, text).expect("write");
            std::fs::rename(&staged, &file).expect("swap");
        };
        let builds = Arc::new(AtomicUsize::new(0));
        put("first");
        let (read, counted) = (file.clone(), Arc::clone(&builds));
        let tls = ReloadingTls::new(vec![file.clone()], move || {
            counted.fetch_add(1, Ordering::SeqCst);
            let text = std::fs::read_to_string(&read)?;
            anyhow::ensure!(text != "unusable", "unusable");
            Ok(text)
        })
        .expect("first build");
        let after_a_check =
            || std::thread::sleep(TLS_FILES_CHECK_INTERVAL + Duration::from_millis(50));

        put("unusable");
        after_a_check();
        let kept = tls.current();
        after_a_check();
        let still_kept = tls.current();
        let builds_after_refusal = builds.load(Ordering::SeqCst);
        put("second");
        after_a_check();
        let renewed = tls.current();

        assert_eq!((kept.as_str(), still_kept.as_str()), ("first", "first"));
        assert_eq!(builds_after_refusal, 2, "the unusable files are built once");
        assert_eq!(renewed, "second");
    }

    #[test]
    fn the_common_name_is_never_the_identity() {
        let mut identity = ClientIdentity {
            subject: "CN=civil-registry".into(),
            common_name: Some("civil-registry".into()),
            dns_names: vec![],
            uris: vec![],
        };
        assert!(
            !identity.matches("civil-registry"),
            "without alternative names"
        );
        identity.uris = vec!["spiffe://gov.vn/ns/mps-population/sa/other".into()];
        assert!(!identity.matches("civil-registry"), "beside a URI name");
        identity.dns_names = vec!["civil-registry".into()];
        assert!(identity.matches("civil-registry"), "as a DNS name");
    }
}
