//! Wiring: database, writer, gRPC server with the registry service, metrics,
//! and the probe that turns the health status NOT_SERVING while the database
//! is unreachable (handlers then refuse at once). `App::build` binds, so the
//! address is known before serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use contracts::mps::population::v1::population_registry_service_server::PopulationRegistryServiceServer;
use service_kit::{ConfigError, GrpcServer};

use crate::config::Config;
use crate::domain::minting::BucketPolicy;
use crate::domain::province::ProvinceTable;
use crate::grpc::RegistryService;
use crate::grpc::auth::{AuthorizedCallersOnly, Authorizer};
use crate::store::{self, Store};

type Server = PopulationRegistryServiceServer<RegistryService>;

/// A bound, not yet serving registry.
#[derive(Debug)]
pub struct App {
    server: GrpcServer,
    store: Store,
    metrics_addr: Option<SocketAddr>,
}

/// Checks what the type system cannot: returns the bucket policy.
fn validate(cfg: &Config) -> anyhow::Result<BucketPolicy> {
    let policy = BucketPolicy::new(cfg.minting.bucket_capacity, cfg.minting.bucket_warn_percent)
        .map_err(|e| {
            ConfigError::new("minting.bucket_capacity/bucket_warn_percent", e.to_string())
        })?;
    let tls = &cfg.server.tls;
    if !tls.insecure_plaintext && tls.client_ca_file.is_none() {
        return Err(ConfigError::new(
            "server.tls.client_ca_file",
            "required, callers are authenticated by client certificate \
             (or set server.tls.insecure_plaintext for development)",
        )
        .into());
    }
    Ok(policy)
}

impl App {
    /// Connects (and migrates) the database, starts the writer, binds the server.
    pub async fn build(cfg: &Config) -> anyhow::Result<Self> {
        let policy = validate(cfg)?;
        let provinces = Arc::new(ProvinceTable::load(cfg.minting.post_merger_rule)?);
        let (pool, backend) = store::connect_pool(&cfg.database).await?;
        if cfg.database.migrate_on_start {
            store::migrate(&pool, backend).await?;
        }
        let writer_db = store::connect_writer(&cfg.database).await?;
        let store = Store::start(
            pool,
            writer_db,
            backend,
            &cfg.database,
            policy,
            cfg.minting.max_group_items,
        )
        .await?;
        let metrics_addr = service_kit::metrics::install(&cfg.metrics).await?;
        // Every handler checks the caller's certificate (grpc/auth.rs), so a caller without
        // one gets the contract's UNAUTHENTICATED and a security log line, not a bare
        // handshake failure.
        let server = GrpcServer::bind(&cfg.server, contracts::FILE_DESCRIPTOR_SET)
            .await?
            .client_certificate_optional();
        let auth = Arc::new(Authorizer::new(
            &cfg.auth,
            !cfg.server.tls.insecure_plaintext,
        ));
        let service = AuthorizedCallersOnly::new(
            Server::new(RegistryService::new(
                store.clone(),
                Arc::clone(&auth),
                provinces,
            ))
            .max_decoding_message_size(server.max_message_bytes()),
            auth,
        );
        let probed = store.clone();
        let server = server.add_service(service).watch_dependency(
            "database",
            Duration::from_millis(cfg.database.health_probe_interval_ms.max(10)),
            move || {
                let store = probed.clone();
                async move { store.probe().await }
            },
        );
        Ok(Self {
            server,
            store,
            metrics_addr,
        })
    }

    /// The bound gRPC address.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The bound metrics address, when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The store (for tests that break the database).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Serves until `shutdown` resolves, then drains and closes the pool.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let result = self.server.serve(shutdown).await.context("serving");
        self.store.close().await;
        result
    }
}
