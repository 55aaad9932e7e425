//! End to end: a small pilot profile through both real service binaries (two processes,
//! mTLS, SQLite), then `verify` across both services.

use e2e_tests::{Build, Mode, PilotOptions, ProfileName, ReplayOptions, run_pilot};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_pilot_is_fully_numbered_and_reconciles_across_both_services() {
    // Arrange: 0.5% of the pilot (348 registrations: 11 re-registrations and 3 foreign
    // nationality among them), all 1,276 units and 1,594 accounts, fresh databases.
    let dir = tempfile::tempdir().expect("temp dir");
    let opts = PilotOptions {
        profile: ProfileName::Pilot2016,
        seed: 7,
        scale: 0.005,
        data_dir: dir.path().join("pilot"),
        // Always ask cargo, so that the binaries are those of this checkout.
        build: Build::Always,
        binaries: None,
        replay: ReplayOptions {
            mode: Mode::Concurrency(32),
            ..ReplayOptions::default()
        },
        channels: 2,
    };

    // Act
    let run = run_pilot(&opts)
        .await
        .expect("the pilot runs and both services stop cleanly");

    // Assert
    assert_eq!(
        run.verify.violations,
        Vec::<String>::new(),
        "verify found violations"
    );
    assert_eq!(
        run.replay.failed, 0,
        "errors by code: {:?}",
        run.replay.errors
    );
    assert_eq!(run.result.registrations, 348);
    assert_eq!(run.result.not_eligible, 14);
    assert_eq!(run.result.issued, 334);
    assert_eq!(run.verify.population_active, 334);
    assert_eq!(run.verify.total.not_eligible_re_registration, 11);
    assert_eq!(run.verify.total.not_eligible_foreign_nationality, 3);
    assert_eq!(run.result.violations, 0);
    // Reported, not judged: memory targets are the benchmarks' business.
    for (service, peak) in [
        ("civil-registry", run.result.civil_max_rss_mib),
        ("population-registry", run.result.population_max_rss_mib),
    ] {
        assert!(peak.is_some_and(|mib| mib > 0.0), "{service}: {peak:?}");
    }
}
