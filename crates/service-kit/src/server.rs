//! The gRPC server every service runs: binds first (so port 0 works and the address is
//! known before serving), adds grpc.health.v1 and server reflection (v1 and v1alpha),
//! TLS/mTLS per config, per-call tracing and metrics ([`crate::layer`]), limits, and a
//! bounded graceful shutdown.

use std::{
    convert::Infallible, future::Future, net::SocketAddr, pin::Pin, sync::Arc, time::Duration,
};

use anyhow::Context as _;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{
    body::Body,
    server::NamedService,
    service::Routes,
    transport::{Server, server::TcpIncoming},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};

use crate::{
    config::ServerConfig,
    layer::RpcLayer,
    tls::{ReloadingTls, TLS_HANDSHAKE_TIMEOUT, TlsConnection},
};

/// Health service name that stands for the whole server (what `grpc_health_probe` and
/// Kubernetes gRPC probes ask for by default). Services turn it NOT_SERVING while their
/// database is out of reach, so that readiness routes calls elsewhere.
const OVERALL: &str = "";

/// Health service name for liveness probes: SERVING from `serve()` on, whatever the
/// database does. A liveness probe on [`OVERALL`] would restart every replica during a
/// database outage, and a restarted process cannot reach the database either; this one
/// fails only when the process stops answering.
pub const LIVENESS: &str = "liveness";

/// How often the server pings an HTTP/2 connection (and probes it with TCP keepalive).
const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long a ping may go unanswered before the connection is closed.
const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

/// A bound, not yet serving gRPC server. See the module docs.
#[derive(Debug)]
pub struct GrpcServer {
    config: ServerConfig,
    listener: TcpListener,
    local_addr: SocketAddr,
    tls: Option<Arc<ReloadingTls<TlsAcceptor>>>,
    client_certificate_optional: bool,
    /// The plaintext health-only listener and its service, when configured.
    health_probe: Option<(TcpListener, HealthServer<HealthService>)>,
    routes: Routes,
    health_reporter: HealthReporter,
    service_names: Vec<&'static str>,
    dependency: Option<DependencyWatch>,
}

/// A dependency's check: answers whether it can be used now.
type DependencyCheck = Box<dyn FnMut() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send>;

/// What [`GrpcServer::watch_dependency`] configured.
struct DependencyWatch {
    name: &'static str,
    every: Duration,
    check: DependencyCheck,
}

impl std::fmt::Debug for DependencyWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DependencyWatch")
            .field("name", &self.name)
            .field("every", &self.every)
            .finish_non_exhaustive()
    }
}

impl GrpcServer {
    /// Reads the TLS material and binds `cfg.listen_addr`. `file_descriptor_set` is the
    /// encoded descriptor set of the services that will be added, for reflection.
    pub async fn bind(
        cfg: &ServerConfig,
        file_descriptor_set: &'static [u8],
    ) -> anyhow::Result<Self> {
        // Read here so that bad TLS files fail the bind.
        let tls = crate::tls::reloading_acceptor(&cfg.tls, false)?.map(Arc::new);
        let listener = TcpListener::bind(cfg.listen_addr)
            .await
            .with_context(|| format!("server.listen_addr: cannot bind {}", cfg.listen_addr))?;
        let local_addr = listener.local_addr()?;

        let health_reporter = HealthReporter::new();
        let health_service =
            HealthServer::new(HealthService::from_health_reporter(health_reporter.clone()));
        let health_probe = match cfg.health_listen_addr {
            Some(addr) => {
                let probe_listener = TcpListener::bind(addr)
                    .await
                    .with_context(|| format!("server.health_listen_addr: cannot bind {addr}"))?;
                Some((probe_listener, health_service.clone()))
            }
            None => None,
        };
        // The health service starts NOT_SERVING for the whole server until serve() runs.
        health_reporter
            .set_service_status(OVERALL, ServingStatus::NotServing)
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(file_descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .context("invalid file descriptor set for reflection")?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(file_descriptor_set)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .context("invalid file descriptor set for reflection")?;
        let routes = Routes::new(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha);

        Ok(Self {
            config: cfg.clone(),
            listener,
            local_addr,
            tls,
            client_certificate_optional: false,
            health_probe,
            routes,
            health_reporter,
            service_names: Vec::new(),
            dependency: None,
        })
    }

    /// The bound address (with the real port when the config asked for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The bound address of the plaintext health-only listener, when configured.
    pub fn health_local_addr(&self) -> Option<SocketAddr> {
        self.health_probe
            .as_ref()
            .and_then(|(listener, _)| listener.local_addr().ok())
    }

    /// The health reporter. Every added service is set SERVING when [`GrpcServer::serve`]
    /// starts; a service whose status follows its database uses
    /// [`GrpcServer::watch_dependency`] instead of setting it here, which would race the
    /// watch and the shutdown.
    pub fn health_reporter(&self) -> HealthReporter {
        self.health_reporter.clone()
    }

    /// The configured request size limit. The kit enforces it for every call; a generated
    /// tonic server also has its own decoding limit (4 MiB by default), so a service that
    /// raises `max_message_bytes` above that passes this value to
    /// `FooServer::new(svc).max_decoding_message_size(..)` too.
    pub fn max_message_bytes(&self) -> usize {
        self.config.max_message_bytes
    }

    /// With mTLS (`tls.client_ca_file`), lets a client WITHOUT a certificate complete the
    /// TLS handshake, so that the service refuses it itself with UNAUTHENTICATED (what a
    /// gRPC contract can promise; a failed handshake only shows as a transport error) and
    /// writes the attempt to its security log. A certificate that IS presented is still
    /// verified against the client CA. Only for services whose every handler checks
    /// [`crate::tls::client_identity`]; health and reflection then answer without one.
    pub fn client_certificate_optional(mut self) -> Self {
        self.client_certificate_optional = true;
        self
    }

    /// Adds a tonic service (a generated `FooServiceServer::new(impl)`).
    pub fn add_service<S>(mut self, svc: S) -> Self
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>, Error = Infallible>
            + NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Future: Send + 'static,
    {
        self.routes = self.routes.add_service(svc);
        self.service_names.push(S::NAME);
        self
    }

    /// Runs `check` every `every` while serving: every service and the server as a whole
    /// turn NOT_SERVING while it fails, and SERVING again once it succeeds. `check` bounds
    /// its own time (a hung database must count as a failure). `name` is what the log
    /// calls the dependency. One dependency per server: a second call replaces the first.
    /// Shutdown stops the watch before it turns everything NOT_SERVING, so that a late
    /// answer cannot report a draining server as SERVING.
    pub fn watch_dependency<F, Fut>(
        mut self,
        name: &'static str,
        every: Duration,
        mut check: F,
    ) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = bool> + Send + 'static,
    {
        self.dependency = Some(DependencyWatch {
            name,
            every,
            check: Box::new(move || Box::pin(check())),
        });
        self
    }

    /// Serves until `shutdown` resolves; then every service (and the server as a whole)
    /// turns NOT_SERVING, the listener closes, in-flight calls drain for at most
    /// `drain_timeout_ms`, and this returns.
    ///
    /// Open streams count as in flight: a client that keeps a health `Watch` open holds the
    /// drain until the timeout (Kubernetes probes use `Check`, which does not).
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Self {
            config,
            listener,
            local_addr,
            tls,
            client_certificate_optional,
            health_probe,
            routes,
            health_reporter,
            service_names,
            dependency,
        } = self;
        // Admitting clients without a certificate takes an acceptor of its own.
        let acceptor = match tls {
            Some(_) if client_certificate_optional => {
                crate::tls::reloading_acceptor(&config.tls, true)?.map(Arc::new)
            }
            tls => tls,
        };

        let mut health_names: Vec<&'static str> = service_names.clone();
        health_names.push(OVERALL);
        for name in &health_names {
            health_reporter
                .set_service_status(*name, ServingStatus::Serving)
                .await;
        }
        // Alive while draining too: the drain is bounded, and a restart would cut it short.
        health_reporter
            .set_service_status(LIVENESS, ServingStatus::Serving)
            .await;

        let request_timeout = Duration::from_millis(config.request_timeout_ms);
        let mut known_services: Vec<String> =
            service_names.iter().map(|name| name.to_string()).collect();
        known_services.extend(
            [
                "grpc.health.v1.Health",
                "grpc.reflection.v1.ServerReflection",
                "grpc.reflection.v1alpha.ServerReflection",
            ]
            .map(String::from),
        );
        // HTTP/2 pings find peers that vanished without closing (a dead NAT entry, a
        // crashed host): their connections are closed instead of held for ever.
        let mut builder = Server::builder();
        if config.max_connection_age_ms > 0 {
            builder =
                builder.max_connection_age(Duration::from_millis(config.max_connection_age_ms));
        }
        let router = builder
            .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
            .tcp_keepalive(Some(HTTP2_KEEPALIVE_INTERVAL))
            .concurrency_limit_per_connection(config.concurrency_limit_per_connection)
            .layer(RpcLayer::new(
                known_services,
                config.max_message_bytes,
                request_timeout,
            ))
            .add_routes(routes);

        let dependency_watch = dependency.map(|dependency| {
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            let task = tokio::spawn(follow_dependency(
                dependency,
                health_reporter.clone(),
                health_names.clone(),
                stop_rx,
            ));
            (stop_tx, task)
        });
        let (draining_tx, draining_rx) = tokio::sync::oneshot::channel::<()>();
        let signal = async move {
            shutdown.await;
            if let Some((stop_tx, task)) = dependency_watch {
                let _ = stop_tx.send(true);
                let _ = task.await;
            }
            tracing::info!("shutdown requested: health NOT_SERVING, draining in-flight calls");
            for name in &health_names {
                health_reporter
                    .set_service_status(*name, ServingStatus::NotServing)
                    .await;
            }
            let _ = draining_tx.send(());
        };

        // The probe listener answers for as long as the main server runs, draining
        // included, so that probes see NOT_SERVING rather than a refused connection.
        let (probe_stop_tx, probe_stop_rx) = tokio::sync::oneshot::channel::<()>();
        let probe_task = health_probe.map(|(probe_listener, health_service)| {
            let probe_addr = probe_listener.local_addr().ok();
            tracing::info!(?probe_addr, "plaintext health-only listener serving");
            tokio::spawn(
                Server::builder()
                    .add_service(health_service)
                    .serve_with_incoming_shutdown(TcpIncoming::from(probe_listener), async {
                        let _ = probe_stop_rx.await;
                    }),
            )
        });

        tracing::info!(%local_addr, services = ?service_names, "gRPC server serving");
        // TLS is accepted here rather than by tonic so that a refused handshake (no client
        // certificate, one from another CA, a client that never speaks) is written to the
        // security log: it never reaches a handler that could.
        let (serve, accept_task): (Pin<Box<dyn Future<Output = _> + Send>>, _) = match acceptor {
            None => {
                let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
                (
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
                    None,
                )
            }
            Some(acceptor) => {
                let (incoming, accept_task) = tls_incoming(listener, acceptor);
                (
                    Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
                    Some(accept_task),
                )
            }
        };
        let drain_timeout = Duration::from_millis(config.drain_timeout_ms);
        let drain_deadline = async move {
            match draining_rx.await {
                Ok(()) => tokio::time::sleep(drain_timeout).await,
                // The signal future was dropped: serve() has already returned.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            result = serve => {
                result.context("gRPC server failed")?;
                tracing::info!("gRPC server stopped: all calls drained");
            }
            () = drain_deadline => {
                tracing::warn!(
                    drain_timeout_ms = config.drain_timeout_ms,
                    "gRPC server stopped with calls still in flight: drain timeout reached"
                );
            }
        }
        if let Some(accept_task) = accept_task {
            accept_task.abort();
            let _ = accept_task.await;
        }
        let _ = probe_stop_tx.send(());
        if let Some(probe_task) = probe_task {
            probe_task
                .await
                .context("health listener task failed")?
                .context("health listener failed")?;
        }
        Ok(())
    }
}

/// Checks the dependency every `every` until `stop`; sets `health_names` on each change.
async fn follow_dependency(
    mut dependency: DependencyWatch,
    health: HealthReporter,
    health_names: Vec<&'static str>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut serving = true;
    loop {
        tokio::select! {
            () = tokio::time::sleep(dependency.every) => {}
            _ = stop.changed() => return,
        }
        let answered = tokio::select! {
            answered = (dependency.check)() => answered,
            _ = stop.changed() => return,
        };
        if answered == serving {
            continue;
        }
        serving = answered;
        let status = if answered {
            tracing::info!(dependency = dependency.name, "reachable again: SERVING");
            ServingStatus::Serving
        } else {
            tracing::error!(dependency = dependency.name, "unreachable: NOT_SERVING");
            ServingStatus::NotServing
        };
        for name in &health_names {
            health.set_service_status(*name, status).await;
        }
    }
}

/// Accepts TCP connections and completes their TLS handshakes (each in its own task,
/// bounded by [`TLS_HANDSHAKE_TIMEOUT`]); refused handshakes go to the security log with
/// the peer's address only. The accept loop stops when the returned stream is dropped or
/// the task is aborted, which closes the listener.
fn tls_incoming(
    listener: TcpListener,
    acceptor: Arc<ReloadingTls<TlsAcceptor>>,
) -> (
    ReceiverStream<Result<TlsConnection, std::io::Error>>,
    tokio::task::JoinHandle<()>,
) {
    let (connections, incoming) = mpsc::channel(64);
    let accept_task = tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = connections.closed() => break,
            };
            let (tcp, peer) = match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            let acceptor = acceptor.current();
            let connections = connections.clone();
            tokio::spawn(async move {
                match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = connections.send(Ok(TlsConnection::new(tls))).await;
                    }
                    Ok(Err(error)) => {
                        tracing::warn!(target: "security", %peer, %error, "TLS handshake refused");
                    }
                    Err(_) => {
                        tracing::warn!(
                            target: "security",
                            %peer,
                            timeout_ms = TLS_HANDSHAKE_TIMEOUT.as_millis(),
                            "TLS handshake not completed in time"
                        );
                    }
                }
            });
        }
    });
    (ReceiverStream::new(incoming), accept_task)
}
