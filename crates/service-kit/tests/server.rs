//! GrpcServer over real TCP on 127.0.0.1:0: health (a watched dependency too), graceful
//! and bounded shutdown, reflection (v1, v1alpha), limits and the healthcheck helper.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{TestServer, echo_client, plaintext_channel, plaintext_config};
use service_kit::echo::{
    EchoRequest, EchoResponse, EchoService, EchoServiceClient, EchoServiceServer,
};
use service_kit::pki::TempCa as TestCa;
use tokio_stream::StreamExt as _;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const ECHO_SERVICE: &str = "kit.echo.v1.EchoService";

#[tokio::test]
async fn health_turns_not_serving_on_shutdown_while_an_in_flight_call_still_completes() {
    // Arrange: a served Echo, a health watch on it, and a slow call in flight.
    let mut server = TestServer::start(&plaintext_config()).await;
    let channel = plaintext_channel(server.addr).await;
    let mut health = HealthClient::new(channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: ECHO_SERVICE.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    let first = watch.next().await.expect("first status").expect("status");
    assert_eq!(first.status(), ServingStatus::Serving);
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .expect("check")
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::Serving);

    let mut echo = echo_client(server.addr).await;
    let slow_call = tokio::spawn(async move {
        echo.echo(EchoRequest {
            message: "slow".into(),
            delay_ms: 600,
            ..EchoRequest::default()
        })
        .await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;

    // Act: the shutdown signal arrives while the slow call runs.
    server.trigger_shutdown();

    // Assert: health flips to NOT_SERVING, the slow call still succeeds, serve() returns
    // once drained (well before the 5 s drain timeout).
    let next = tokio::time::timeout(Duration::from_secs(2), watch.next())
        .await
        .expect("health update in time")
        .expect("second status")
        .expect("status");
    assert_eq!(next.status(), ServingStatus::NotServing);
    drop(watch);

    let reply = slow_call
        .await
        .expect("task")
        .expect("the in-flight call completes");
    assert_eq!(reply.into_inner().message, "slow");

    tokio::time::timeout(Duration::from_secs(4), &mut server.task)
        .await
        .expect("server drained before the drain timeout")
        .expect("task")
        .expect("serve returns Ok");

    // And nobody new gets in: the listener is closed.
    let refused = tonic::transport::Channel::from_shared(format!("http://{}", server.addr))
        .expect("uri")
        .connect()
        .await;
    assert!(
        refused.is_err(),
        "the listener must be closed after shutdown"
    );
}

#[tokio::test]
async fn liveness_stays_serving_while_the_service_reports_itself_not_serving() {
    // Arrange
    let server = TestServer::start(&plaintext_config()).await;
    let mut health = HealthClient::new(plaintext_channel(server.addr).await);
    let status = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    // serve() runs in a task of its own: wait until it has set the statuses.
    let mut watch = health
        .watch(status(service_kit::server::LIVENESS))
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            let update = watch.next().await.expect("an update").expect("status");
            if update.status() == ServingStatus::Serving {
                return;
            }
        }
    })
    .await
    .expect("liveness SERVING once the server serves");

    // Act: what a service does when its database goes out of reach.
    server
        .health
        .set_service_status("", tonic_health::ServingStatus::NotServing)
        .await;

    // Assert
    let overall = health.check(status("")).await.expect("check").into_inner();
    let alive = health
        .check(status(service_kit::server::LIVENESS))
        .await
        .expect("check")
        .into_inner();
    assert_eq!(overall.status(), ServingStatus::NotServing);
    assert_eq!(alive.status(), ServingStatus::Serving);
}

#[tokio::test]
async fn a_failing_dependency_turns_the_services_not_serving_until_it_answers_again() {
    // Arrange: a dependency whose answer the test decides, checked every 20 ms.
    let reachable = Arc::new(AtomicBool::new(true));
    let server = TestServer::start_with(&plaintext_config(), |server| {
        let reachable = Arc::clone(&reachable);
        server.watch_dependency("database", Duration::from_millis(20), move || {
            let answer = reachable.load(Ordering::SeqCst);
            async move { answer }
        })
    })
    .await;
    let mut health = HealthClient::new(plaintext_channel(server.addr).await);
    let first = next_status(&mut health, "", ServingStatus::Serving).await;

    // Act
    reachable.store(false, Ordering::SeqCst);
    let while_down = next_status(&mut health, "", ServingStatus::NotServing).await;
    let service_while_down = health_of(&mut health, ECHO_SERVICE).await;
    let alive_while_down = health_of(&mut health, service_kit::server::LIVENESS).await;
    reachable.store(true, Ordering::SeqCst);
    let back = next_status(&mut health, "", ServingStatus::Serving).await;
    let service_back = health_of(&mut health, ECHO_SERVICE).await;

    // Assert
    assert_eq!(
        (
            first,
            while_down,
            service_while_down,
            alive_while_down,
            back,
            service_back
        ),
        (
            ServingStatus::Serving,
            ServingStatus::NotServing,
            ServingStatus::NotServing,
            ServingStatus::Serving,
            ServingStatus::Serving,
            ServingStatus::Serving,
        )
    );
    server.stop().await;
}

/// Watches `service` until it reports `wanted` (at most 5 s); returns what it reported.
async fn next_status(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
    wanted: ServingStatus,
) -> ServingStatus {
    let mut watch = health
        .watch(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("watch")
        .into_inner();
    tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let update = watch.next().await.expect("an update").expect("status");
            if update.status() == wanted {
                return update.status();
            }
        }
    })
    .await
    .unwrap_or(ServingStatus::Unknown)
}

async fn health_of(
    health: &mut HealthClient<tonic::transport::Channel>,
    service: &str,
) -> ServingStatus {
    health
        .check(HealthCheckRequest {
            service: service.into(),
        })
        .await
        .expect("check")
        .into_inner()
        .status()
}

#[tokio::test]
async fn shutdown_drains_calls_in_flight_but_no_longer_than_the_drain_timeout() {
    // Arrange: drain timeout 1.5 s; one call that ends within it, one that would take 10 s,
    // each on a connection of its own.
    let config = service_kit::ServerConfig {
        drain_timeout_ms: 1_500,
        ..plaintext_config()
    };
    let (mut server, echo) = CountingEcho::serve(&config).await;
    let call_taking = |delay_ms| {
        let addr = server.addr;
        tokio::spawn(async move {
            echo_client(addr)
                .await
                .echo(EchoRequest {
                    delay_ms,
                    ..EchoRequest::default()
                })
                .await
        })
    };
    let short = call_taking(400);
    let stuck = call_taking(10_000);
    tokio::time::timeout(Duration::from_secs(10), async {
        while echo.inside.load(Ordering::SeqCst) < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("both calls in the handler");

    // Act
    server.trigger_shutdown();
    let result = tokio::time::timeout(Duration::from_secs(8), &mut server.task).await;

    // Assert: serve returned while the long call was still running, and the short one
    // was allowed to finish.
    result
        .expect("serve returns at the drain timeout, not when the 10 s call ends")
        .expect("task")
        .expect("serve returns Ok");
    assert!(
        !stuck.is_finished(),
        "serve waited for the call longer than the drain"
    );
    short
        .await
        .expect("task")
        .expect("a call shorter than the drain completes");
    stuck.abort();
}

#[tokio::test]
async fn a_call_longer_than_the_request_timeout_fails_with_deadline_exceeded() {
    let config = service_kit::ServerConfig {
        request_timeout_ms: 200,
        ..plaintext_config()
    };
    let server = TestServer::start(&config).await;
    let mut echo = echo_client(server.addr).await;
    let call_taking = |delay_ms| EchoRequest {
        delay_ms,
        ..EchoRequest::default()
    };

    // Act: one call well within the timeout, one five times past it.
    let quick = echo.echo(call_taking(20)).await;
    let slow = echo.echo(call_taking(1_000)).await;

    // Assert: the bound is the configured 200 ms, neither missing nor far too short.
    quick.expect("a call within the request timeout completes");
    assert_eq!(
        slow.expect_err("the server cuts the call off").code(),
        tonic::Code::DeadlineExceeded
    );
    server.stop().await;
}

#[tokio::test]
async fn a_request_message_over_the_size_limit_is_rejected_with_resource_exhausted() {
    let config = service_kit::ServerConfig {
        max_message_bytes: 1024,
        ..plaintext_config()
    };
    let server = TestServer::start(&config).await;
    let mut echo = echo_client(server.addr).await;

    let small = echo
        .echo(EchoRequest {
            payload: vec![7; 512],
            ..EchoRequest::default()
        })
        .await;
    let large = echo
        .echo(EchoRequest {
            payload: vec![7; 4096],
            ..EchoRequest::default()
        })
        .await;

    assert_eq!(
        small
            .expect("small message passes")
            .into_inner()
            .payload
            .len(),
        512
    );
    assert_eq!(
        large.expect_err("large message is refused").code(),
        tonic::Code::ResourceExhausted
    );
    server.stop().await;
}

#[tokio::test]
async fn the_server_refuses_plaintext_beside_configured_tls_files() {
    let ca = TestCa::new("trusted").expect("CA");
    let server = ca.server_cert().expect("server certificate");
    let config = service_kit::ServerConfig {
        tls: service_kit::ServerTlsConfig {
            insecure_plaintext: true,
            cert_file: Some(server.cert_file),
            key_file: Some(server.key_file),
            client_ca_file: Some(ca.ca_file().to_path_buf()),
        },
        ..plaintext_config()
    };

    let error = service_kit::GrpcServer::bind(&config, service_kit::echo::FILE_DESCRIPTOR_SET)
        .await
        .expect_err("plaintext and TLS files together");

    assert!(
        error.to_string().contains("server.tls.insecure_plaintext"),
        "error names the contradicting key: {error}"
    );
}

#[tokio::test]
async fn the_server_refuses_to_start_without_tls_material_unless_plaintext_is_explicit() {
    let config = service_kit::ServerConfig {
        tls: service_kit::ServerTlsConfig::default(),
        ..plaintext_config()
    };

    let error = service_kit::GrpcServer::bind(&config, service_kit::echo::FILE_DESCRIPTOR_SET)
        .await
        .expect_err("no certificate and no insecure_plaintext");

    assert!(
        error.to_string().contains("server.tls.cert_file"),
        "error names the missing key: {error}"
    );
}

#[tokio::test]
async fn reflection_v1_lists_the_service_health_and_reflection() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(&plaintext_config()).await;
    let mut client = ServerReflectionClient::new(plaintext_channel(server.addr).await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        ECHO_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    server.stop().await;
}

#[tokio::test]
async fn reflection_v1alpha_lists_the_service_for_older_clients() {
    use tonic_reflection::pb::v1alpha::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let server = TestServer::start(&plaintext_config()).await;
    let mut client = ServerReflectionClient::new(plaintext_channel(server.addr).await);

    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .expect("reflection call")
        .into_inner();
    let response = responses.next().await.expect("a response").expect("ok");

    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!(
            "expected a service list, got {:?}",
            response.message_response
        );
    };
    assert!(
        list.service.iter().any(|s| s.name == ECHO_SERVICE),
        "{ECHO_SERVICE} missing from {:?}",
        list.service
    );
    server.stop().await;
}

#[tokio::test]
async fn healthcheck_reports_serving_then_fails_once_the_server_is_gone() {
    let server = TestServer::start(&plaintext_config()).await;
    let uri = server.http_uri();
    let tls = service_kit::ClientTlsConfig {
        insecure_plaintext: true,
        ..Default::default()
    };

    let serving = service_kit::healthcheck::check(&uri, &tls, ECHO_SERVICE).await;
    let overall = service_kit::healthcheck::check(&uri, &tls, "").await;
    server
        .health
        .set_not_serving::<service_kit::echo::EchoServiceServer<service_kit::echo::EchoServer>>()
        .await;
    let flipped = service_kit::healthcheck::check(&uri, &tls, ECHO_SERVICE).await;
    server.stop().await;
    let gone = service_kit::healthcheck::check(&uri, &tls, "").await;

    assert!(serving.expect("check"), "echo is SERVING");
    assert!(overall.expect("check"), "the server as a whole is SERVING");
    assert!(
        !flipped.expect("check"),
        "echo was set NOT_SERVING by the service"
    );
    assert!(gone.is_err(), "a stopped server cannot be checked");
}

#[tokio::test]
async fn a_plaintext_client_channel_needs_explicit_consent() {
    let tls = service_kit::ClientTlsConfig::default();

    let error =
        service_kit::tls::client_channel("http://127.0.0.1:1", &tls, Duration::from_secs(1))
            .expect_err("plaintext without insecure_plaintext");

    assert!(error.to_string().contains("insecure_plaintext"), "{error}");
}

#[tokio::test]
async fn a_busy_request_stream_outlives_the_request_timeout_and_an_idle_one_is_cut_off() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest,
    };
    let config = service_kit::ServerConfig {
        request_timeout_ms: 300,
        ..plaintext_config()
    };
    let server = TestServer::start(&config).await;
    let mut client = ServerReflectionClient::new(plaintext_channel(server.addr).await);
    let (sender, receiver) = tokio::sync::mpsc::channel(4);
    let list = || ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = client
        .server_reflection_info(tokio_stream::wrappers::ReceiverStream::new(receiver))
        .await
        .expect("reflection call")
        .into_inner();

    // Ten messages 100 ms apart: the stream lives for more than three request timeouts,
    // each message answered.
    for message in 0..10 {
        sender.send(list()).await.expect("stream open");
        responses
            .next()
            .await
            .unwrap_or_else(|| panic!("message {message}: the stream ended"))
            .unwrap_or_else(|e| panic!("message {message}: {e:?}"));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Then silence, with the stream still open: the server ends it (well within 5 s).
    let cut = tokio::time::timeout(Duration::from_secs(5), responses.next())
        .await
        .expect("the server ends an idle stream");

    // The handler sees its request stream fail and ends the call (reflection answers the
    // end of its input by closing its output): no further response, either way.
    match cut {
        None => {}
        Some(Err(status)) => assert_eq!(status.code(), tonic::Code::DeadlineExceeded),
        Some(Ok(response)) => panic!("an idle stream got a response: {response:?}"),
    }
    drop(sender);
    server.stop().await;
}

/// An Echo that counts the calls inside it at once, and the most there ever were.
#[derive(Clone, Default)]
struct CountingEcho {
    inside: Arc<std::sync::atomic::AtomicUsize>,
    most: Arc<std::sync::atomic::AtomicUsize>,
}

impl CountingEcho {
    /// A server with `config` whose Echo is a counting one.
    async fn serve(config: &service_kit::ServerConfig) -> (TestServer, Self) {
        let echo = Self::default();
        let server = TestServer::serve(
            service_kit::GrpcServer::bind(config, service_kit::echo::FILE_DESCRIPTOR_SET)
                .await
                .expect("bind")
                .add_service(EchoServiceServer::new(echo.clone())),
        );
        (server, echo)
    }
}

#[tonic::async_trait]
impl EchoService for CountingEcho {
    async fn echo(
        &self,
        request: tonic::Request<EchoRequest>,
    ) -> Result<tonic::Response<EchoResponse>, tonic::Status> {
        let now = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(request.get_ref().delay_ms.into())).await;
        self.inside.fetch_sub(1, Ordering::SeqCst);
        Ok(tonic::Response::new(EchoResponse::default()))
    }
}

#[tokio::test]
async fn calls_over_the_per_connection_limit_wait_their_turn_instead_of_failing() {
    // Arrange: a limit of 3 calls per connection, 12 slow calls on one connection.
    let config = service_kit::ServerConfig {
        concurrency_limit_per_connection: 3,
        ..plaintext_config()
    };
    let (server, echo) = CountingEcho::serve(&config).await;
    let client = EchoServiceClient::new(plaintext_channel(server.addr).await);

    // Act
    let calls: Vec<_> = (0..12)
        .map(|_| {
            let mut client = client.clone();
            tokio::spawn(async move {
                client
                    .echo(EchoRequest {
                        delay_ms: 100,
                        ..EchoRequest::default()
                    })
                    .await
            })
        })
        .collect();

    // Assert
    for call in calls {
        call.await
            .expect("task")
            .expect("a queued call is served in its turn");
    }
    assert_eq!(echo.most.load(Ordering::SeqCst), 3, "calls inside at once");
    server.stop().await;
}

/// Forwards TCP connections from a port of its own to `to`, counting them.
async fn counting_forwarder(to: std::net::SocketAddr) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut inbound, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                if let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await {
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
            });
        }
    });
    (addr, accepted)
}

#[tokio::test]
async fn a_client_connection_past_its_maximum_age_is_replaced_and_calls_go_on() {
    // Arrange: connections live 300 ms; a client whose connections are counted.
    let config = service_kit::ServerConfig {
        max_connection_age_ms: 300,
        ..plaintext_config()
    };
    let server = TestServer::start(&config).await;
    let (via, connections) = counting_forwarder(server.addr).await;
    let mut echo = echo_client(via).await;

    // Act: calls before and well after the age.
    echo.echo(EchoRequest::default())
        .await
        .expect("a call on the first connection");
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    echo.echo(EchoRequest::default())
        .await
        .expect("a call after the server asked the first connection to go away");

    // Assert: the client connected again.
    assert!(
        connections.load(Ordering::SeqCst) >= 2,
        "connections: {connections:?}"
    );
    server.stop().await;
}
