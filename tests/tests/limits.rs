//! Limits: the largest message, the per-connection concurrency limit, deadlines for slow
//! and silent clients, and a flood of calls. A service may shed load (RESOURCE_EXHAUSTED,
//! UNAVAILABLE, DEADLINE_EXCEEDED) but never crash, hang or grow without bound.
//!
//! `E2E_HEAVY=1` multiplies the flood by ten (outside the default test command).

mod common;

use std::time::{Duration, Instant};

use common::{Cert, World, date, issue_request, register_request};
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use futures::StreamExt as _;
use tokio::io::AsyncReadExt as _;
use tonic::Code;
use traffic::client::authorized;

/// The population registry's request timeout in these tests (the default is 30 s).
const REQUEST_TIMEOUT_MS: u64 = 1500;
/// Calls in flight at once per connection during the concurrency check (limit set below).
const CONCURRENCY_LIMIT: usize = 8;

fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process alive");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .expect("VmRSS")
}

fn heavy() -> bool {
    std::env::var("E2E_HEAVY").is_ok_and(|v| v == "1")
}

/// The code of a failed call, with the caller's own deadline counted as what it is: tonic
/// reports a deadline it enforced from `grpc-timeout` as CANCELLED "Timeout expired"
/// (`tonic::TimeoutExpired`), where gRPC names it DEADLINE_EXCEEDED. Any other
/// cancellation keeps its code, and fails the flood's check.
fn deadline_as_such(status: &tonic::Status) -> Code {
    if status.code() == Code::Cancelled && status.message() == "Timeout expired" {
        Code::DeadlineExceeded
    } else {
        status.code()
    }
}

/// Outcomes of a flood, by code.
fn tally(codes: &[Code]) -> std::collections::BTreeMap<String, usize> {
    let mut t = std::collections::BTreeMap::new();
    for c in codes {
        *t.entry(format!("{c:?}")).or_insert(0) += 1;
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_messages_silent_clients_and_a_flood_are_bounded_and_both_services_survive() {
    // Arrange
    let timeout = REQUEST_TIMEOUT_MS.to_string();
    let limit = CONCURRENCY_LIMIT.to_string();
    let world = World::start_with_env(&[
        ("POPULATION_REGISTRY_SERVER__REQUEST_TIMEOUT_MS", &timeout),
        (
            "POPULATION_REGISTRY_SERVER__CONCURRENCY_LIMIT_PER_CONNECTION",
            &limit,
        ),
    ])
    .await;
    let population_pid = world.stack.population.pid().expect("population pid");
    let civil_pid = world.stack.civil.pid().expect("civil pid");
    let (registrar, _, _) = world.commune_registrar(0);
    let registrar_auth = world.auth(&registrar);
    let supervisor = world.supervisor();
    let before = world.counts().await;

    // Act 1: one message over the 4 MiB limit to each service.
    let five_mib = "a".repeat(5 << 20);
    let mut big_issue = issue_request("limits-big", 1);
    big_issue.birth.as_mut().expect("birth").home_town = five_mib.clone();
    let population_big = world
        .population(Cert::Minting)
        .issue_personal_id(big_issue)
        .await
        .expect_err("over the limit");
    let mut big_birth = register_request("limits-big");
    big_birth.child.as_mut().expect("child").home_town = five_mib;
    let civil_big = world
        .civil()
        .register_birth(authorized(big_birth, &registrar_auth))
        .await
        .expect_err("over the limit");

    // Act 2 (concurrently): a silent TCP client, a stalled batch stream, and the flood.
    let addr = world.stack.population.grpc;
    let silent = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(30), socket.read(&mut buf)).await;
        read.map(|r| r.unwrap_or(0))
    };
    let stalled = async {
        // One message (an invalid item: nothing is written), then silence for ever.
        let first = ppb::BatchIssuePersonalIdsRequest {
            items: vec![ppb::IssuePersonalIdRequest {
                request_id: String::new(),
                birth: None,
            }],
        };
        let outbound = futures::stream::iter(vec![first]).chain(futures::stream::pending());
        let mut answers = world
            .population(Cert::Minting)
            .batch_issue_personal_ids(outbound)
            .await
            .expect("the stream opens")
            .into_inner();
        let first_answer = answers.message().await;
        let end = tokio::time::timeout(Duration::from_secs(30), answers.message()).await;
        (first_answer.map(|a| a.is_some()), end)
    };
    let flood_calls = if heavy() { 20_000 } else { 2_000 };
    let rss_before = (vm_rss_kib(population_pid), vm_rss_kib(civil_pid));
    let flood = async {
        let population: Vec<_> = (0..8).map(|_| world.population(Cert::Reader)).collect();
        let civil: Vec<_> = (0..4).map(|_| world.civil()).collect();
        let started = Instant::now();
        let codes: Vec<Code> = futures::stream::iter(0..flood_calls)
            .map(|i| {
                let mut p = population[i % population.len()].clone();
                let mut c = civil[i % civil.len()].clone();
                let supervisor = supervisor.clone();
                async move {
                    let deadline = Duration::from_secs(5);
                    let outcome = match i % 4 {
                        0 => {
                            let mut req = tonic::Request::new(ppb::GetIssuanceStatisticsRequest {
                                registered_from: Some(date(2016, 1, 1)),
                                registered_to: Some(date(2016, 12, 31)),
                                province_codes: vec![],
                            });
                            req.set_timeout(deadline);
                            p.get_issuance_statistics(req).await.map(drop)
                        }
                        1 => {
                            let mut req = tonic::Request::new(ppb::ValidatePersonalIdRequest {
                                personal_id: format!("001216{:06}", i % 1_000_000),
                            });
                            req.set_timeout(deadline);
                            p.validate_personal_id(req).await.map(drop)
                        }
                        2 => {
                            let mut req = authorized(
                                cpb::ListBirthRegistrationsRequest {
                                    page_size: 50,
                                    ..Default::default()
                                },
                                &supervisor,
                            );
                            req.set_timeout(deadline);
                            c.list_birth_registrations(req).await.map(drop)
                        }
                        _ => {
                            let mut req = authorized(
                                cpb::GetRegistrationStatisticsRequest {
                                    registered_from: Some(date(2016, 1, 1)),
                                    registered_to: Some(date(2016, 12, 31)),
                                    grouping: cpb::StatisticsGrouping::Unit.into(),
                                    province_code: String::new(),
                                },
                                &supervisor,
                            );
                            req.set_timeout(deadline);
                            c.get_registration_statistics(req).await.map(drop)
                        }
                    };
                    outcome.map_or_else(|s| deadline_as_such(&s), |()| Code::Ok)
                }
            })
            .buffer_unordered(256)
            .collect()
            .await;
        (codes, started.elapsed())
    };
    let (silent_read, (first_answer, stalled_end), (codes, took)) =
        tokio::join!(silent, stalled, flood);
    let rss_after = (vm_rss_kib(population_pid), vm_rss_kib(civil_pid));

    // Act 3: one connection, many more calls than its concurrency limit: they queue.
    let queued: Vec<Code> = {
        let reader = world.population(Cert::Reader);
        futures::stream::iter(0..CONCURRENCY_LIMIT * 40)
            .map(|i| {
                let mut p = reader.clone();
                async move {
                    p.validate_personal_id(ppb::ValidatePersonalIdRequest {
                        personal_id: format!("079316{i:06}"),
                    })
                    .await
                    .map_or_else(|s| s.code(), |_| Code::Ok)
                }
            })
            .buffer_unordered(CONCURRENCY_LIMIT * 40)
            .collect()
            .await
    };
    let after = world.counts().await;
    let still_serving = world
        .population(Cert::Reader)
        .validate_personal_id(ppb::ValidatePersonalIdRequest {
            personal_id: "001216000001".into(),
        })
        .await
        .is_ok();
    world.stop().await;

    // Assert: oversized messages refused before they are buffered.
    assert_eq!(
        population_big.code(),
        Code::ResourceExhausted,
        "{population_big:?}"
    );
    assert_eq!(civil_big.code(), Code::ResourceExhausted, "{civil_big:?}");
    // A silent TCP client is dropped by the TLS handshake timeout (10 s), not held.
    assert!(
        matches!(silent_read, Ok(0)),
        "the silent connection was not closed within 30 s: {silent_read:?}"
    );
    // A stalled stream is ended by the server's deadline.
    assert_eq!(first_answer.map_err(|s| s.code()), Ok(true));
    let end = stalled_end.expect("the stalled stream ended within 30 s");
    assert_eq!(
        end.as_ref().map_err(tonic::Status::code).err(),
        Some(Code::DeadlineExceeded),
        "{end:?}"
    );
    // The flood degrades only with the load-shedding codes, and memory stays bounded.
    let allowed = [
        Code::Ok,
        Code::ResourceExhausted,
        Code::Unavailable,
        Code::DeadlineExceeded,
    ];
    assert!(
        codes.iter().all(|c| allowed.contains(c)),
        "flood outcomes: {:?}",
        tally(&codes)
    );
    assert!(
        codes.iter().filter(|c| **c == Code::Ok).count() * 2 > codes.len(),
        "most of the flood is served: {:?}",
        tally(&codes)
    );
    eprintln!(
        "flood of {flood_calls} calls in {took:?}: {:?}; VmRSS population {} -> {} KiB, civil {} -> {} KiB",
        tally(&codes),
        rss_before.0,
        rss_after.0,
        rss_before.1,
        rss_after.1
    );
    let bound_kib = 256 * 1024;
    assert!(
        rss_after.0 < rss_before.0 + bound_kib,
        "population registry grew from {} to {} KiB",
        rss_before.0,
        rss_after.0
    );
    assert!(
        rss_after.1 < rss_before.1 + bound_kib,
        "civil registry grew from {} to {} KiB",
        rss_before.1,
        rss_after.1
    );
    // Calls above the per-connection limit wait their turn; none is refused.
    assert!(
        queued.iter().all(|c| *c == Code::Ok),
        "{:?}",
        tally(&queued)
    );
    assert!(still_serving, "the population registry stopped serving");
    assert_eq!(after, before, "the limits scenario wrote nothing");
}
