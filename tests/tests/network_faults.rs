//! Network faults between the civil registry's relay and the population registry, through
//! a TCP proxy that the test controls (TLS passes through it unchanged): delay, dropped
//! connections, resets mid-call, a black hole, and a long outage (connection refused).
//! During each fault RegisterBirth keeps answering within its deadline (the wait for the
//! number plus a margin), PENDING when the number cannot come; after the network heals the
//! relay recovers on its own and `traffic verify` holds.
//!
//! `E2E_HEAVY=1`: longer faults (a black hole longer than the HTTP/2 keepalive, a one-minute
//! outage) and more registrations.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, WAIT_FOR_NUMBER_MS, findings, heavy};
use e2e_tests::proxy::{Mode, Proxy};
use traffic::replay::{Mode as ReplayMode, Outcome, ReplayOptions};

/// RegisterBirth's own deadline: the wait for the number plus a margin for the commit
/// and a loaded two-core machine running debug builds.
const ANSWER_DEADLINE: Duration = Duration::from_millis(WAIT_FOR_NUMBER_MS + 1_500);

/// Once the network heals, every pending number must arrive within this.
const RECOVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug)]
struct Fault {
    name: &'static str,
    mode: Mode,
    /// How long the fault lasts once the replay has started.
    lasts: Duration,
    /// How the test knows the fault bit.
    bites: Bite,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bite {
    /// RegisterBirth answered PENDING at least once (the number could not come in time).
    Pending,
    /// The relay had to open new connections through the proxy.
    Reconnects,
}

fn faults() -> Vec<Fault> {
    let s = |ms: u64| Duration::from_millis(ms);
    let (black_hole, outage) = if heavy() {
        (s(45_000), s(60_000))
    } else {
        (s(2_500), s(3_000))
    };
    vec![
        Fault {
            name: "delay 250 ms per chunk",
            mode: Mode::Delay(s(250)),
            lasts: s(2_000),
            bites: Bite::Pending,
        },
        Fault {
            name: "connections dropped",
            mode: Mode::Drop,
            lasts: s(1_500),
            bites: Bite::Pending,
        },
        Fault {
            name: "reset mid-call",
            mode: Mode::Reset,
            lasts: s(1_000),
            bites: Bite::Pending,
        },
        Fault {
            name: "reset part-way through each new connection",
            mode: Mode::ResetAfter(4_000),
            lasts: s(1_500),
            bites: Bite::Reconnects,
        },
        Fault {
            name: "black hole",
            mode: Mode::BlackHole,
            lasts: black_hole,
            bites: Bite::Pending,
        },
        Fault {
            name: "black hole after the connection was cut (the relay reconnects into it)",
            mode: Mode::BlackHole,
            lasts: black_hole,
            bites: Bite::Pending,
        },
        Fault {
            name: "long outage (connection refused)",
            mode: Mode::Refuse,
            lasts: outage,
            bites: Bite::Pending,
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_relay_recovers_from_every_network_fault_and_register_birth_answers_within_its_deadline()
 {
    // Arrange: the relay reaches the population registry only through the proxy; the
    // server name it checks stays the certificate's ("localhost").
    let faults = faults();
    let scale = if heavy() { 0.02 } else { 0.004 };
    let proxy = Proxy::start(Vec::new()).await.expect("proxy");
    let uri = format!("https://{}", proxy.addr());
    let fleet = Fleet::start(
        scale,
        &[(
            "CIVIL_REGISTRY_POPULATION_REGISTRY__URI".to_owned(),
            uri.clone(),
        )],
    )
    .await;
    proxy.set_upstreams(vec![fleet.stack.population.grpc]);
    let total = fleet.lines.len();
    let per = total / faults.len();
    let mut outcomes: Vec<Outcome> = Vec::new();

    for (i, fault) in faults.iter().enumerate() {
        let range = i * per..if i + 1 == faults.len() {
            total
        } else {
            (i + 1) * per
        };
        let slice = fleet.slice(&format!("fault-{i}"), range.clone());
        let replayed_so_far = fleet.slice(&format!("prefix-{i}"), 0..range.end);
        let before = fleet.registrations().await;
        let connections_before = proxy.accepted();
        let rate = range.len() as f64 / fault.lasts.as_secs_f64().min(2.0);

        // Act: the fault starts with the replay ("reset mid-call" once calls flow through a
        // slowed proxy), lasts, then the network heals.
        let channels = fleet.channels(&fleet.stack.civil.uri(), 2);
        if matches!(fault.mode, Mode::Reset) {
            proxy.set_mode(Mode::Delay(Duration::from_millis(200)));
        } else if fault.name.starts_with("black hole after") {
            // Cut the open connection first, so the relay's next connection (TCP accepted,
            // TLS handshake never answered) lands in the black hole.
            proxy.set_mode(Mode::Reset);
            tokio::time::sleep(Duration::from_millis(100)).await;
            proxy.set_mode(fault.mode);
        } else {
            proxy.set_mode(fault.mode);
        }
        // Each RegisterBirth has its answer deadline and no retry: one that outlived it
        // fails the replay (a finding). Numbers PENDING past the fault and the recovery
        // window stay PENDING in the report.
        let replaying = fleet.replay_in_background_with(
            &slice,
            channels,
            ReplayOptions {
                mode: ReplayMode::Rate(rate),
                max_in_flight: 512,
                call_timeout: ANSWER_DEADLINE,
                number_timeout: fault.lasts + RECOVERY,
                retries: 0,
                ..ReplayOptions::default()
            },
        );
        if matches!(fault.mode, Mode::Reset) {
            fleet
                .until_registered(before + 3, Duration::from_secs(30))
                .await;
            proxy.set_mode(Mode::Reset);
        }
        tokio::time::sleep(fault.lasts).await;
        proxy.set_mode(Mode::PassThrough);
        let report = replaying.await.expect("replay task");

        // Assert
        outcomes.extend(report.outcomes.iter().cloned());
        let verified = fleet.verify(&replayed_so_far, &outcomes).await;
        let found = findings(&report, &verified);
        eprintln!(
            "{}: {} registrations, first answers {:?}, by status {:?}, RegisterBirth {}, {} connections so far",
            fault.name,
            report.registrations,
            report.first_answer,
            report.by_status,
            report.register_ms,
            proxy.accepted()
        );
        assert!(found.is_empty(), "after {}: {found:#?}", fault.name);
        assert_eq!(
            report.failed, 0,
            "during {}: RegisterBirth failed, or outlived its deadline ({ANSWER_DEADLINE:?}): {:?}",
            fault.name, report.errors
        );
        match fault.bites {
            Bite::Pending => assert!(
                report.first_answer.get("PENDING").is_some_and(|n| *n > 0),
                "during {} no RegisterBirth answered PENDING: did the fault bite? {:?}",
                fault.name,
                report.first_answer
            ),
            Bite::Reconnects => assert!(
                proxy.accepted() >= connections_before + 3,
                "during {} the relay kept its connection: did the fault bite?",
                fault.name
            ),
        }
        assert_eq!(
            report.by_status.get("PENDING"),
            None,
            "after {} some numbers had not arrived {RECOVERY:?} after the network healed",
            fault.name
        );
    }
    fleet
        .stack
        .stop()
        .await
        .expect("both services stop cleanly");
}
