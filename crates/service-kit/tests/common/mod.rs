//! Shared arrangements for the kit's tests: a plaintext or TLS Echo server on
//! 127.0.0.1:0 with a shutdown trigger, and clients (mTLS tests use `pki::TempCa`).
#![allow(dead_code, unreachable_pub)]

use std::{net::SocketAddr, time::Duration};

use service_kit::{
    GrpcServer, ServerConfig, ServerTlsConfig,
    echo::{EchoServer, EchoServiceClient},
};
use tokio::{sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;

/// A server config on 127.0.0.1:0, plaintext, short drain.
pub fn plaintext_config() -> ServerConfig {
    ServerConfig {
        listen_addr: "127.0.0.1:0".parse().expect("address"),
        drain_timeout_ms: 5_000,
        tls: ServerTlsConfig {
            insecure_plaintext: true,
            ..ServerTlsConfig::default()
        },
        ..ServerConfig::default()
    }
}

/// A running Echo server.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The plaintext health-only listener, when the config asked for one.
    pub health_addr: Option<SocketAddr>,
    pub health: tonic_health::server::HealthReporter,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<anyhow::Result<()>>,
}

impl TestServer {
    pub async fn start(config: &ServerConfig) -> Self {
        Self::start_with(config, |server| server).await
    }

    /// Starts with `arrange` applied to the bound server (say, a dependency to watch).
    pub async fn start_with(
        config: &ServerConfig,
        arrange: impl FnOnce(GrpcServer) -> GrpcServer,
    ) -> Self {
        Self::serve(arrange(
            GrpcServer::bind(config, service_kit::echo::FILE_DESCRIPTOR_SET)
                .await
                .expect("bind")
                .add_service(EchoServer::service()),
        ))
    }

    /// Serves a bound server with its services added.
    pub fn serve(server: GrpcServer) -> Self {
        let addr = server.local_addr();
        let health_addr = server.health_local_addr();
        let health = server.health_reporter();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = rx.await;
        }));
        Self {
            addr,
            health_addr,
            health,
            shutdown: Some(tx),
            task,
        }
    }

    pub fn http_uri(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Sends the shutdown signal (what SIGTERM does in a binary).
    pub fn trigger_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// Triggers shutdown and waits for serve() to return (at most 10 s).
    pub async fn stop(mut self) {
        self.trigger_shutdown();
        tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .expect("server stops in time")
            .expect("server task")
            .expect("serve returns Ok");
    }
}

pub async fn plaintext_channel(addr: SocketAddr) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect")
}

pub async fn echo_client(addr: SocketAddr) -> EchoServiceClient<Channel> {
    EchoServiceClient::new(plaintext_channel(addr).await)
}

/// The value of the sample of `metric` whose labels include every `label="value"` pair.
pub fn sample(body: &str, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|line| line.starts_with(&format!("{metric}{{")))
        .find(|line| {
            labels
                .iter()
                .all(|(k, v)| line.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// When the leaf certificate in the PEM file stops being valid, in Unix seconds.
pub fn certificate_not_after(file: &std::path::Path) -> f64 {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    use x509_parser::prelude::{FromDer as _, X509Certificate};

    let der = CertificateDer::from_pem_slice(&std::fs::read(file).expect("read")).expect("pem");
    let (_, cert) = X509Certificate::from_der(&der).expect("x509");
    cert.validity().not_after.timestamp() as f64
}
