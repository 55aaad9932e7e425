//! A one-shot grpc.health.v1 check, for each binary's `healthcheck` subcommand (Docker
//! HEALTHCHECK), which has no grpc_health_probe to rely on.

use std::time::Duration;

use anyhow::Context as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

use crate::config::ClientTlsConfig;

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
