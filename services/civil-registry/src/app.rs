//! Assembles the service: database (migrated), the gRPC server from the service kit, the
//! grouped writer, the relay, the database health watch and the metrics sampler; runs them
//! until shutdown and stops them in order (server drains, relay finishes its in-flight
//! batches, writer flushes, pool closes).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use service_kit::GrpcServer;
use tokio::sync::{Notify, mpsc, watch};

use crate::config::Config;
use crate::registry::{Handoff, Registry};
use crate::relay::client::GrpcPopulationRegistry;
use crate::relay::{Relay, Waiters};
use crate::store::{Store, now_ms};

/// Rows the writer may hand to the relay in memory before it leaves further rows to the
/// relay's poll (bounds the memory of a backlog while the population registry is away).
const HANDOFF_QUEUE: usize = 16_384;

/// A built, bound, not yet serving civil registry.
#[derive(Debug)]
pub struct App {
    cfg: Config,
    server: GrpcServer,
    metrics_addr: Option<SocketAddr>,
    store: Store,
    registry: Registry,
    writer: tokio::task::JoinHandle<()>,
    relay: Option<Relay<GrpcPopulationRegistry>>,
}

impl App {
    /// Connects and migrates the database, binds the gRPC server and the metrics endpoint.
    pub async fn build(cfg: Config) -> anyhow::Result<Self> {
        let store = Store::connect(&cfg.database)
            .await?
            .with_numbering(cfg.registration.post_merger_rule);
        store.migrate().await?;
        let metrics_addr = service_kit::metrics::install(&cfg.metrics).await?;
        let server = GrpcServer::bind(&cfg.server, contracts::FILE_DESCRIPTOR_SET).await?;
        let waiters = Arc::new(Waiters::default());
        let wake = Arc::new(Notify::new());
        let relay = if cfg.relay.enabled {
            let client = Arc::new(GrpcPopulationRegistry::new(&cfg.population_registry)?);
            tokio::spawn({
                let client = Arc::clone(&client);
                async move { client.warm_up().await }
            });
            Some(Relay::new(
                store.clone(),
                client,
                cfg.relay.clone(),
                waiters.clone(),
                wake.clone(),
            ))
        } else {
            None
        };
        let (handoff, handed) = match &relay {
            Some(relay) => {
                let (tx, rx) = mpsc::channel(HANDOFF_QUEUE);
                let handoff = Handoff {
                    tx,
                    owner: relay.owner().to_owned(),
                    lease_ms: cfg.relay.lease_ms,
                };
                (Some(handoff), Some(rx))
            }
            None => (None, None),
        };
        let sqlite_writer = store.sqlite_writer(&cfg.database).await?;
        let (registry, writer) = Registry::start(
            store.clone(),
            sqlite_writer,
            &cfg.registration,
            &cfg.auth,
            waiters,
            wake,
            handoff,
        )
        .await?;
        let relay = match (relay, handed) {
            (Some(relay), Some(rx)) => Some(relay.with_handoff(rx, registry.write_back())),
            (relay, _) => relay,
        };
        let api = crate::grpc::service(registry.clone(), server.max_message_bytes());
        // NOT_SERVING while the database does not answer (the population registry's state
        // does not matter: registrations go on and numbers arrive later).
        let every = Duration::from_millis(cfg.database.health_check_interval_ms.max(10));
        let pinged = store.clone();
        let server = server
            .add_service(api)
            .watch_dependency("database", every, move || {
                let store = pinged.clone();
                let patience = every.max(Duration::from_secs(1));
                async move {
                    tokio::time::timeout(patience, store.ping())
                        .await
                        .unwrap_or(false)
                }
            });
        Ok(Self {
            cfg,
            server,
            metrics_addr,
            store,
            registry,
            writer,
            relay,
        })
    }

    /// The bound gRPC address.
    pub fn grpc_addr(&self) -> SocketAddr {
        self.server.local_addr()
    }

    /// The database as the service uses it (its writes take turns with the service's own).
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The bound metrics address, if enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Serves until `shutdown` resolves, then stops everything in order.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            cfg,
            server,
            store,
            registry,
            writer,
            relay,
            ..
        } = self;
        let (stop_tx, stop_rx) = watch::channel(false);
        let relay_task = relay.map(|relay| tokio::spawn(relay.run(stop_rx.clone())));
        let metrics_task = tokio::spawn(sample_metrics(store.clone(), stop_rx.clone()));
        let checkpoint_task = tokio::spawn(checkpoints(
            store.clone(),
            Duration::from_millis(cfg.database.checkpoint_interval_ms.max(10)),
            stop_rx,
        ));
        // The relay goes on through the drain: calls still in flight get their numbers,
        // and rows they commit are not leased to a relay that has already stopped.
        let result = server.serve(shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(mut task) = relay_task {
            let bound = Duration::from_millis(cfg.population_registry.call_timeout_ms + 1_000);
            if tokio::time::timeout(bound, &mut task).await.is_err() {
                tracing::warn!(
                    "relay did not stop in time; its leased rows will be retried after the lease expires"
                );
                // It holds a way into the writer: stop it so that the writer can finish.
                task.abort();
                let _ = task.await;
            }
        }
        metrics_task.abort();
        checkpoint_task.abort();
        drop(registry);
        let _ = writer.await;
        store.close().await;
        result
    }
}

/// Background WAL checkpoints (SQLite), every `period`.
async fn checkpoints(store: Store, period: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(period) => {}
            _ = stop.changed() => return,
        }
        if let Err(e) = store.checkpoint().await {
            tracing::debug!(error = %e, "background WAL checkpoint failed");
        }
    }
}

/// Samples the database-wide gauges. Every sample counts rows, which costs more as the
/// tables grow (the outbox after a long outage, the register over the years): the next
/// sample comes after 5 s or fifty times the last one's cost, whichever is longer, so
/// that sampling never takes more than 2 % of a pooled connection's time.
async fn sample_metrics(store: Store, mut stop: watch::Receiver<bool>) {
    loop {
        let started = Instant::now();
        if let Ok((depth, oldest)) = store.outbox_depth().await {
            metrics::gauge!("civil_registry_outbox_depth").set(depth as f64);
            let age = oldest.map_or(0.0, |t| (now_ms() - t).max(0) as f64 / 1000.0);
            metrics::gauge!("civil_registry_outbox_oldest_pending_age_seconds").set(age);
        }
        if let Ok(counts) = store.status_counts().await {
            for status in ["ISSUED", "PENDING", "NOT_ELIGIBLE", "REJECTED"] {
                let n = counts
                    .iter()
                    .find(|(s, _)| s == status)
                    .map_or(0, |(_, n)| *n);
                metrics::gauge!("civil_registry_registrations", "status" => status).set(n as f64);
            }
        }
        let cost = started.elapsed();
        metrics::gauge!("civil_registry_metrics_sample_seconds").set(cost.as_secs_f64());
        tokio::select! {
            _ = tokio::time::sleep(sample_interval(cost)) => {}
            _ = stop.changed() => return,
        }
    }
}

/// The pause after a sample that took `cost`.
fn sample_interval(cost: Duration) -> Duration {
    (cost * 50).max(Duration::from_secs(5))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_are_spaced_by_their_cost_beyond_five_seconds() {
        assert_eq!(
            sample_interval(Duration::from_millis(3)),
            Duration::from_secs(5)
        );
        assert_eq!(
            sample_interval(Duration::from_millis(330)),
            Duration::from_millis(16_500)
        );
    }
}
