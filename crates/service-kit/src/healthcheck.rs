//! A one-shot grpc.health.v1 check, for each binary's `healthcheck` subcommand (Docker
//! HEALTHCHECK), which has no grpc_health_probe to rely on.

use std::time::Duration;

use anyhow::Context as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::{ClientTlsConfig, ServerConfig};

/// What a `healthcheck` subcommand asks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// A plaintext listener (`http://`).
    Plaintext(String),
    /// A TLS listener (`https://`): the caller presents its TLS settings.
    Tls(String),
}

impl Target {
    /// `--uri` when given; otherwise, on loopback, the plaintext health-only listener when
    /// one is configured (what the kubelet asks; no certificate is needed, and none would
    /// carry the name 127.0.0.1), else the main listener.
    pub fn of(uri: Option<String>, server: &ServerConfig) -> Self {
        let loopback = |mut addr: std::net::SocketAddr| {
            if addr.ip().is_unspecified() {
                addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
            }
            addr
        };
        match (uri, server.health_listen_addr) {
            (Some(uri), _) if uri.starts_with("http://") => Self::Plaintext(uri),
            (Some(uri), _) => Self::Tls(uri),
            (None, Some(addr)) => Self::Plaintext(format!("http://{}", loopback(addr))),
            (None, None) if server.tls.insecure_plaintext => {
                Self::Plaintext(format!("http://{}", loopback(server.listen_addr)))
            }
            (None, None) => Self::Tls(format!("https://{}", loopback(server.listen_addr))),
        }
    }

    /// The URI.
    pub fn uri(&self) -> &str {
        match self {
            Self::Plaintext(uri) | Self::Tls(uri) => uri,
        }
    }
}

/// Plaintext client settings, for a [`Target::Plaintext`].
pub fn plaintext() -> ClientTlsConfig {
    ClientTlsConfig {
        insecure_plaintext: true,
        ..ClientTlsConfig::default()
    }
}

/// Asks the server at `uri` whether `service` (`""` = the whole server) is SERVING.
/// `Ok(false)` for any other status; `Err` when the server cannot be reached or answers
/// with an error. Bounded by a 5 s deadline.
pub async fn check(uri: &str, tls: &ClientTlsConfig, service: &str) -> anyhow::Result<bool> {
    let channel = crate::tls::client_channel(uri, tls, Duration::from_secs(3))?;
    let mut client = HealthClient::new(channel);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: service.to_string(),
    });
    request.set_timeout(Duration::from_secs(5));
    let response = client
        .check(request)
        .await
        .with_context(|| format!("health check of {uri} failed"))?;
    Ok(response.into_inner().status() == ServingStatus::Serving)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_only_listener_is_asked_in_plaintext_when_there_is_one() {
        let mut server = ServerConfig {
            listen_addr: "0.0.0.0:50051".parse().unwrap(),
            ..ServerConfig::default()
        };
        server.tls.insecure_plaintext = false;
        assert_eq!(
            Target::of(None, &server),
            Target::Tls("https://127.0.0.1:50051".into())
        );
        server.health_listen_addr = Some("0.0.0.0:50052".parse().unwrap());
        assert_eq!(
            Target::of(None, &server),
            Target::Plaintext("http://127.0.0.1:50052".into())
        );
        assert_eq!(
            Target::of(Some("https://registry.example:443".into()), &server),
            Target::Tls("https://registry.example:443".into())
        );
    }
}
