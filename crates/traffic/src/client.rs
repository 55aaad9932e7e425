//! gRPC channels and bearer tokens for talking to the deployed services.
//!
//! The traffic tool builds its channels from tonic's `Endpoint` and the service kit's TLS
//! connector rather than the kit's `client_channel`: it needs several eager HTTP/2
//! connections to the same target so that one connection's flow control and one TLS
//! session's CPU do not cap the replay.

use anyhow::{Context as _, bail};
use service_kit::tls::TlsConnector;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

/// TLS settings of a client connection.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientTls {
    /// CA certificate (PEM) that signed the server's certificate.
    #[arg(long = "ca")]
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM) to present (mTLS).
    #[arg(long = "cert")]
    pub cert_file: Option<PathBuf>,
    /// Key (PEM) of the client certificate.
    #[arg(long = "key")]
    pub key_file: Option<PathBuf>,
    /// Name the server certificate must carry (default: the target's host).
    #[arg(long)]
    pub server_name: Option<String>,
    /// Plaintext HTTP/2 (development only).
    #[arg(long)]
    pub insecure: bool,
}

/// Where and how to connect: the endpoint of `host:port`, `https://host:port` or, with
/// `insecure`, `http://host:port`, and for `https://` its TLS connector (the service kit's,
/// which sends a request's message and end of stream in one write).
#[derive(Debug, Clone)]
pub struct Target {
    endpoint: Endpoint,
    tls: Option<TlsConnector>,
}

impl Target {
    pub fn new(target: &str, tls: &ClientTls) -> anyhow::Result<Self> {
        let uri = if target.contains("://") {
            target.to_owned()
        } else if tls.insecure {
            format!("http://{target}")
        } else {
            format!("https://{target}")
        };
        if uri.starts_with("http://") && !tls.insecure {
            bail!("{uri}: plaintext needs --insecure");
        }
        let endpoint = Endpoint::from_shared(uri.clone())
            .with_context(|| format!("bad target {uri}"))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .keep_alive_while_idle(true);
        let tls = if uri.starts_with("https://") {
            let ca = tls.ca_file.as_deref().context("https needs --ca")?;
            let identity = match (&tls.cert_file, &tls.key_file) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => bail!("--cert and --key go together"),
            };
            Some(TlsConnector::from_files(
                ca,
                identity,
                tls.server_name.as_deref(),
            )?)
        } else {
            None
        };
        Ok(Self { endpoint, tls })
    }

    /// A channel connected now.
    pub async fn connect(&self) -> Result<Channel, tonic::transport::Error> {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector(tls.clone()).await,
            None => self.endpoint.connect().await,
        }
    }

    /// A channel that connects on first use (and again after the peer restarts).
    pub fn connect_lazy(&self) -> Channel {
        match &self.tls {
            Some(tls) => self.endpoint.connect_with_connector_lazy(tls.clone()),
            None => self.endpoint.connect_lazy(),
        }
    }
}

/// `n` separately connected channels (each its own HTTP/2 connection).
pub async fn connect_channels(
    target: &str,
    tls: &ClientTls,
    n: usize,
) -> anyhow::Result<Vec<Channel>> {
    let destination = Target::new(target, tls)?;
    let mut out = Vec::with_capacity(n);
    for _ in 0..n.max(1) {
        out.push(
            destination
                .connect()
                .await
                .with_context(|| format!("connecting to {target}"))?,
        );
    }
    Ok(out)
}

/// `authorization` header values by official id, from the CSV that
/// `civil-registry admin officials import --tokens-out` writes
/// (`official_id,unit_code,role,token`).
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_official: HashMap<String, MetadataValue<Ascii>>,
}

impl Tokens {
    pub fn read_csv(path: &Path) -> anyhow::Result<Self> {
        let mut r =
            csv::Reader::from_path(path).with_context(|| format!("reading {}", path.display()))?;
        let headers = r.headers()?.clone();
        let col = |name: &str| {
            headers
                .iter()
                .position(|h| h == name)
                .with_context(|| format!("{}: no column {name}", path.display()))
        };
        let (id_col, token_col) = (col("official_id")?, col("token")?);
        let mut tokens = Self::default();
        for rec in r.records() {
            let rec = rec?;
            tokens.insert(&rec[id_col], &rec[token_col])?;
        }
        Ok(tokens)
    }

    pub fn insert(&mut self, official_id: &str, token: &str) -> anyhow::Result<()> {
        let value = MetadataValue::try_from(format!("Bearer {}", token.trim()))
            .with_context(|| format!("token of {official_id} is not a valid header value"))?;
        self.by_official.insert(official_id.to_owned(), value);
        Ok(())
    }

    pub fn get(&self, official_id: &str) -> Option<&MetadataValue<Ascii>> {
        self.by_official.get(official_id)
    }

    pub fn len(&self) -> usize {
        self.by_official.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_official.is_empty()
    }
}

/// A request with the official's bearer token.
pub fn authorized<T>(msg: T, auth: &MetadataValue<Ascii>) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut().insert("authorization", auth.clone());
    req.set_timeout(Duration::from_secs(30));
    req
}
