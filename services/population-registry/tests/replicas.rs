//! Several registry instances against one PostgreSQL never mint a duplicate,
//! and a request_id raced across instances yields one number.

mod common;

use std::collections::HashSet;

use common::{TestApp, TestDb, birth, config, issue};
use contracts::mps::population::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_on_one_postgres_minting_into_the_same_few_buckets_never_duplicate() {
    let Some(db) = TestDb::postgres().await else {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    };
    let mut cfg = config(&db);
    // Small buckets: 3 replicas x 4 callers x 30 numbers fill two buckets to 72%.
    cfg.minting.bucket_capacity = 500;
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(TestApp::spawn_with(cfg.clone()).await);
    }

    let mut tasks = Vec::new();
    for (r, app) in apps.iter().enumerate() {
        for c in 0..4 {
            let mut client = app.client.clone();
            tasks.push(tokio::spawn(async move {
                let mut numbers = Vec::new();
                for i in 0..30 {
                    let n = (r * 1000 + c * 100 + i) as i64 + 1;
                    let mut b = birth(&format!("Trẻ {n}"), n);
                    if i % 2 == 1 {
                        b.sex = pb::Sex::Female.into();
                    }
                    let resp = client
                        .issue_personal_id(issue(&format!("reg-{n}"), b))
                        .await
                        .expect("issued")
                        .into_inner();
                    numbers.push(resp.personal_id);
                }
                numbers
            }));
        }
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }

    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(all.len(), 360);
    assert_eq!(distinct.len(), 360, "no number minted twice");
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM citizens")
        .fetch_one(apps[0].store.pool())
        .await
        .expect("count");
    assert_eq!(stored, 360);
    let report = population_registry::store::verify_audit(apps[0].store.pool())
        .await
        .expect("verify");
    assert_eq!(report.first_broken, None, "the chain stays a chain");
    assert_eq!(report.entries, 360);
    for app in apps {
        app.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_request_id_raced_across_postgres_replicas_returns_one_number() {
    let Some(db) = TestDb::postgres().await else {
        service_kit::testing::skip("TEST_POSTGRES_URL not set");
        return;
    };
    let cfg = config(&db);
    let mut apps = Vec::new();
    for _ in 0..3 {
        apps.push(TestApp::spawn_with(cfg.clone()).await);
    }

    let mut tasks = Vec::new();
    for round in 0..3 {
        for app in &apps {
            let mut client = app.client.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .issue_personal_id(issue("same-key", birth("An", 1)))
                    .await
                    .map(|r| (round, r.into_inner()))
            }));
        }
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.expect("task").expect("never an error").1);
    }

    let numbers: HashSet<&str> = answers.iter().map(|a| a.personal_id.as_str()).collect();
    assert_eq!(numbers.len(), 1, "one number for one key");
    assert_eq!(answers.iter().filter(|a| a.newly_issued).count(), 1);
    for app in apps {
        app.stop().await;
    }
}
