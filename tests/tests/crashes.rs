//! Crashes: `kill -9` of the population registry, of the civil registry, and of both at
//! once, each in the middle of a replay, each followed by a restart on the same address.
//! After each: every registration the client saw acknowledged exists (with the number it
//! was answered, if any), `traffic verify` holds (every eligible registration exactly one
//! active number, none for the ineligible, no number twice, both sides reconcile).
//!
//! `E2E_HEAVY=1` replays ten times more per phase.

mod common;

use std::time::Duration;

use common::fleet::{Fleet, findings, heavy};
use traffic::replay::Outcome;

/// How long a killed service stays down before it is restarted.
const OUTAGE: Duration = Duration::from_millis(700);

#[derive(Clone, Copy, Debug)]
enum Crash {
    Population,
    Civil,
    Both,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_registrations_survive_kill_9_of_either_service_or_both_and_verify_holds() {
    // Arrange: ~210 registrations (1,400 with E2E_HEAVY), three equal slices.
    let scale = if heavy() { 0.02 } else { 0.003 };
    let mut fleet = Fleet::start(scale, &[]).await;
    let total = fleet.lines.len();
    let per = total / 3;
    let mut outcomes: Vec<Outcome> = Vec::new();

    for (phase, crash) in [Crash::Population, Crash::Civil, Crash::Both]
        .into_iter()
        .enumerate()
    {
        let range = phase * per..if phase == 2 { total } else { (phase + 1) * per };
        let slice = fleet.slice(&format!("phase-{phase}"), range.clone());
        let replayed_so_far = fleet.slice(&format!("prefix-{phase}"), 0..range.end);
        let before = fleet.registrations().await;

        // Act: replay the slice at a steady rate; a quarter of the way in, kill -9.
        let channels = fleet.channels(&fleet.stack.civil.uri(), 2);
        let rate = (range.len() as f64 / 2.0).max(20.0); // about two seconds of arrivals
        let replaying = fleet.replay_in_background(&slice, channels, rate);
        fleet
            .until_registered(before + (range.len() / 4) as i64, Duration::from_secs(60))
            .await;
        match crash {
            Crash::Population => fleet.stack.population.kill().await.expect("kill -9"),
            Crash::Civil => fleet.stack.civil.kill().await.expect("kill -9"),
            Crash::Both => {
                fleet.stack.civil.kill().await.expect("kill -9 civil");
                fleet
                    .stack
                    .population
                    .kill()
                    .await
                    .expect("kill -9 population");
            }
        }
        // Down for a moment (calls meet a closed port), then restarted by the "orchestrator".
        tokio::time::sleep(OUTAGE).await;
        if matches!(crash, Crash::Population | Crash::Both) {
            fleet.stack.restart_population().await.expect("restart");
        }
        if matches!(crash, Crash::Civil | Crash::Both) {
            fleet.stack.restart_civil().await.expect("restart");
        }
        let report = replaying.await.expect("replay task");

        // Assert
        outcomes.extend(report.outcomes.iter().cloned());
        let verified = fleet.verify(&replayed_so_far, &outcomes).await;
        let found = findings(&report, &verified);
        assert!(
            found.is_empty(),
            "after a crash of {crash:?} (phase {phase}): {found:#?}"
        );
        assert_eq!(report.registrations as usize, range.len());
        assert_eq!(verified.registrations as usize, range.end);
        eprintln!(
            "crash of {crash:?}: {} registrations, {} retried, first answers {:?}, {} numbers in all",
            report.registrations, report.retried, report.first_answer, verified.issued
        );
    }
    fleet
        .stack
        .stop()
        .await
        .expect("both services stop cleanly");
}
