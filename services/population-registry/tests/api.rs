//! The registry's API over real gRPC, run once on SQLite and once on
//! PostgreSQL (when TEST_POSTGRES_URL is set): every call and each error code.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{TestApp, TestDb, birth, config, date, issue, logged_warnings, refusal, within};
use contracts::mps::population::v1 as pb;
use service_kit::status::field_violations_of;
use tonic::Code;

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let db = super::TestDb::sqlite().await;
                    super::$name(db).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(db) = super::TestDb::postgres().await else {
                        service_kit::testing::skip("TEST_POSTGRES_URL not set");
                        return;
                    };
                    super::$name(db).await;
                }
            )*
        }
    };
}

suite!(
    issue_returns_a_number_encoding_province_sex_and_year,
    the_same_request_id_and_content_returns_the_same_number_without_minting_again,
    the_same_request_id_with_different_content_is_refused_as_already_exists,
    an_invalid_record_is_invalid_argument_naming_each_field_and_writes_nothing,
    twins_are_warned_as_duplicate_suspects_and_both_get_numbers,
    batch_answers_every_item_by_request_id_with_its_number_or_its_own_error,
    a_batch_message_of_more_than_1000_items_is_refused_item_by_item_and_writes_nothing,
    get_citizen_returns_the_stored_record_or_not_found,
    find_citizen_by_registration_finds_by_request_id_and_by_register_entry,
    a_key_issued_under_an_earlier_post_merger_rule_keeps_its_number,
    find_citizen_by_registration_finds_the_issues_made_under_derived_keys,
    citizens_stored_before_the_register_entry_key_are_found_by_entry_after_the_migration,
    a_binary_rolled_back_under_a_newer_schema_still_starts_and_keeps_its_numbers,
    reissue_cancels_the_old_number_links_both_and_never_reuses_it,
    reissue_that_changes_nothing_encoded_or_targets_a_cancelled_number_is_failed_precondition,
    validate_personal_id_decodes_the_number_and_reports_its_state,
    statistics_and_listing_count_issued_and_cancelled_numbers_page_by_page,
    a_full_bucket_answers_resource_exhausted_at_once_and_never_duplicates,
    a_drawn_number_already_taken_is_drawn_again_and_never_given_twice,
    the_audit_chain_verifies_and_reports_a_tampered_row,
    a_group_of_several_insert_chunks_gives_each_record_its_own_number_and_one_chain,
    database_gone_turns_health_not_serving_and_calls_fail_fast_with_unavailable,
    a_write_stalled_past_the_operation_timeout_is_unavailable_and_its_retry_gets_one_number,
    minting_goes_on_while_lookups_hold_every_pooled_connection,
);

async fn issue_returns_a_number_encoding_province_sex_and_year(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;

    let resp = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguyễn Văn An", 1)))
        .await
        .expect("issued")
        .into_inner();

    assert_eq!(resp.personal_id.len(), 12);
    assert!(
        resp.personal_id.starts_with("001221"),
        "{}",
        resp.personal_id
    );
    assert!(resp.newly_issued);
    assert!(resp.issued_at.is_some());
    #[allow(deprecated)]
    let first_version_time = resp.issue_time;
    assert_eq!(
        first_version_time, resp.issued_at,
        "the deprecated field agrees"
    );
    assert!(resp.duplicate_suspects.is_empty());
    app.stop().await;
}

async fn the_same_request_id_and_content_returns_the_same_number_without_minting_again(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let first = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguyễn Văn An", 1)))
        .await
        .expect("first")
        .into_inner();

    // Unicode-equivalent content (decomposed) is the same content.
    let again = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguye\u{302}\u{303}n Văn An", 1)))
        .await
        .expect("again")
        .into_inner();

    assert_eq!(again.personal_id, first.personal_id);
    assert!(!again.newly_issued);
    assert_eq!(again.issued_at, first.issued_at);
    let stats = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2021, 1, 1),
            registered_to: date(2021, 12, 31),
            province_codes: vec![],
        })
        .await
        .expect("stats")
        .into_inner();
    assert_eq!(stats.total.expect("total").issued, 1);
    app.stop().await;
}

async fn the_same_request_id_with_different_content_is_refused_as_already_exists(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    app.client
        .issue_personal_id(issue("reg-1", birth("Nguyễn Văn An", 1)))
        .await
        .expect("first");

    let err = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguyễn Văn Bình", 1)))
        .await
        .expect_err("refused");

    assert_eq!(
        refusal(&err),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED".into())
    );
    app.stop().await;
}

async fn an_invalid_record_is_invalid_argument_naming_each_field_and_writes_nothing(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let mut b = birth("", 1);
    b.sex = pb::Sex::Unspecified.into();
    b.date_of_birth = date(2021, 2, 30);
    b.nationality = "FR".into();
    b.registration_province_code = "003".into();
    b.mother.as_mut().expect("mother").full_name = "x".repeat(101);

    let err = app
        .client
        .issue_personal_id(issue("bad id with spaces", b))
        .await
        .expect_err("refused");

    assert_eq!(err.code(), Code::InvalidArgument);
    let fields: Vec<String> = field_violations_of(&err)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    for expected in [
        "request_id",
        "birth.full_name",
        "birth.sex",
        "birth.date_of_birth",
        "birth.registration_province_code",
        "birth.nationality",
        "birth.mother.full_name",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} in {fields:?}"
        );
    }
    let mut future = birth("An", 2);
    future.date_of_birth = date(2999, 1, 1);
    let err = app
        .client
        .issue_personal_id(issue("reg-2", future))
        .await
        .expect_err("future");
    assert_eq!(err.code(), Code::InvalidArgument);
    let missing = app
        .client
        .issue_personal_id(pb::IssuePersonalIdRequest {
            request_id: "reg-3".into(),
            birth: None,
        })
        .await
        .expect_err("missing");
    assert_eq!(field_violations_of(&missing)[0].0, "birth");
    let stats = app
        .client
        .list_issuances(pb::ListIssuancesRequest {
            registered_from: date(1900, 1, 1),
            registered_to: date(2100, 1, 1),
            ..Default::default()
        })
        .await
        .expect("list")
        .into_inner();
    assert!(stats.issuances.is_empty());
    app.stop().await;
}

async fn twins_are_warned_as_duplicate_suspects_and_both_get_numbers(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let first = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguyễn Văn An", 1)))
        .await
        .expect("first")
        .into_inner();

    let twin = app
        .client
        .issue_personal_id(issue("reg-2", birth("Nguyễn Văn An", 2)))
        .await
        .expect("twin still gets a number")
        .into_inner();

    assert_ne!(twin.personal_id, first.personal_id);
    assert_eq!(twin.duplicate_suspects, vec![first.personal_id]);
    app.stop().await;
}

async fn a_batch_message_of_more_than_1000_items_is_refused_item_by_item_and_writes_nothing(
    db: TestDb,
) {
    let mut app = TestApp::spawn(&db).await;
    let message = |n: i64| pb::BatchIssuePersonalIdsRequest {
        items: (0..n)
            .map(|i| {
                issue(
                    &format!("big-{n}-{i}"),
                    birth(&format!("Lê Văn {n}-{i}"), i + 1),
                )
            })
            .collect(),
    };

    let mut answers = app
        .client
        .batch_issue_personal_ids(tokio_stream::iter(vec![message(1_001), message(1_000)]))
        .await
        .expect("stream")
        .into_inner();
    let refused = answers.message().await.expect("answered").expect("answer");
    let accepted = answers
        .message()
        .await
        .expect("the stream carries on")
        .expect("answer");

    assert_eq!(refused.results.len(), 1_001);
    for (i, result) in refused.results.iter().enumerate() {
        assert_eq!(result.request_id, format!("big-1001-{i}"));
        let Some(pb::batch_issue_result::Outcome::Error(error)) = &result.outcome else {
            panic!("item {i} of the refused message: {result:?}");
        };
        // The item's google.rpc.Status, read as a call's status would be.
        let status = tonic::Status::with_details(
            Code::from(error.code),
            error.message.clone(),
            prost::Message::encode_to_vec(error).into(),
        );
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(
            field_violations_of(&status)
                .into_iter()
                .map(|(field, _)| field)
                .collect::<Vec<_>>(),
            vec!["items".to_owned()]
        );
    }
    assert_eq!(accepted.results.len(), 1_000);
    let found = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "big-1001-0".into(),
            ..Default::default()
        })
        .await;
    assert_eq!(
        found.expect_err("nothing of the refused message").code(),
        Code::NotFound
    );
    app.stop().await;
}

/// The post-merger rule is configuration and may change (legacy to merged). A key issued
/// under the earlier rule keeps its answer, over both calls; content the new rule refuses
/// gets no new number, whether under a new key or as other content under the old one.
async fn a_key_issued_under_an_earlier_post_merger_rule_keeps_its_number(db: TestDb) {
    use population_registry::domain::province::PostMergerRule;

    // Arrange: Ha Giang's legacy code (002) on a date after the merger, issued under the
    // legacy rule; then the registry restarts under the merged one.
    let mut record = birth("Hà Văn Giang", 7);
    record.registration_province_code = "002".into();
    record.date_of_birth = date(2025, 8, 1);
    record.registration.as_mut().unwrap().registration_date = date(2025, 9, 1);
    let mut app = TestApp::spawn(&db).await;
    let first = app
        .client
        .issue_personal_id(issue("reg-merger", record.clone()))
        .await
        .expect("issued under the legacy rule")
        .into_inner();
    // And a Ha Noi number re-issued for a move to Ha Giang, on the same dates.
    let mut in_ha_noi = record.clone();
    in_ha_noi.full_name = "Hà Văn Chuyển".into();
    in_ha_noi.registration_province_code = "001".into();
    let mut moved = in_ha_noi.clone();
    moved.registration_province_code = "002".into();
    let before_move = app
        .client
        .issue_personal_id(issue("reg-moved", in_ha_noi))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    let reissue_moved = reissue("reg-moved:r1", &before_move, moved);
    let reissued = app
        .client
        .reissue_personal_id(reissue_moved.clone())
        .await
        .expect("re-issued under the legacy rule")
        .into_inner();
    app.stop().await;
    let mut cfg = config(&db);
    cfg.minting.post_merger_rule = PostMergerRule::Merged;
    let mut app = TestApp::spawn_with(cfg).await;
    let mut other_content = record.clone();
    other_content.full_name = "Hà Thị Khác".into();

    // Act
    let retried = app
        .client
        .issue_personal_id(issue("reg-merger", record.clone()))
        .await
        .expect("the retry's answer")
        .into_inner();
    let mut answers = app
        .client
        .batch_issue_personal_ids(tokio_stream::iter(vec![pb::BatchIssuePersonalIdsRequest {
            items: vec![
                issue("reg-merger", record.clone()),
                issue("reg-new", record.clone()),
            ],
        }]))
        .await
        .expect("stream")
        .into_inner();
    let batch = answers
        .message()
        .await
        .expect("ok")
        .expect("answer")
        .results;
    let new_key = app
        .client
        .issue_personal_id(issue("reg-new", record.clone()))
        .await
        .expect_err("the merged rule refuses 002 after the merger");
    let other = app
        .client
        .issue_personal_id(issue("reg-merger", other_content))
        .await
        .expect_err("other content under the old key");
    let reissued_again = app
        .client
        .reissue_personal_id(reissue_moved.clone())
        .await
        .expect("the re-issue's retry")
        .into_inner();
    let new_reissue = app
        .client
        .reissue_personal_id(pb::ReissuePersonalIdRequest {
            request_id: "reg-moved:r2".into(),
            ..reissue_moved
        })
        .await
        .expect_err("a new re-issue the merged rule refuses");

    // Assert
    assert_eq!(
        (retried.personal_id.as_str(), retried.newly_issued),
        (first.personal_id.as_str(), false)
    );
    match &batch[0].outcome {
        Some(pb::batch_issue_result::Outcome::Issued(again)) => {
            assert_eq!(
                (again.personal_id.as_str(), again.newly_issued),
                (first.personal_id.as_str(), false)
            );
        }
        other => panic!("the retried item: {other:?}"),
    }
    match &batch[1].outcome {
        Some(pb::batch_issue_result::Outcome::Error(refused)) => {
            assert_eq!(refused.code, Code::InvalidArgument as i32, "{refused:?}");
            let status = tonic::Status::with_details(
                Code::InvalidArgument,
                refused.message.clone(),
                prost::Message::encode_to_vec(refused).into(),
            );
            let fields: Vec<String> = field_violations_of(&status)
                .into_iter()
                .map(|(field, _)| field)
                .collect();
            assert_eq!(fields, ["items[1].birth.registration_province_code"]);
        }
        other => panic!("the new item: {other:?}"),
    }
    for refused in [&new_key, &other] {
        assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
        let fields: Vec<String> = field_violations_of(refused)
            .into_iter()
            .map(|(field, _)| field)
            .collect();
        assert_eq!(fields, ["birth.registration_province_code"]);
    }
    assert_eq!(
        (
            reissued_again.personal_id.as_str(),
            reissued_again.newly_issued
        ),
        (reissued.personal_id.as_str(), false)
    );
    assert_eq!(new_reissue.code(), Code::InvalidArgument, "{new_reissue:?}");
    assert_eq!(
        field_violations_of(&new_reissue)
            .into_iter()
            .map(|(field, _)| field)
            .collect::<Vec<_>>(),
        ["corrected_birth.registration_province_code"]
    );
    let stats = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2025, 1, 1),
            registered_to: date(2025, 12, 31),
            province_codes: vec![],
        })
        .await
        .expect("statistics")
        .into_inner();
    assert_eq!(
        stats.total.map(|t| t.issued),
        Some(3),
        "Ha Giang's number, Ha Noi's and its successor: no other, ever"
    );
    app.stop().await;
}

async fn batch_answers_every_item_by_request_id_with_its_number_or_its_own_error(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    app.client
        .issue_personal_id(issue("reg-0", birth("Lê Văn Trước", 100)))
        .await
        .expect("earlier issue");
    let mut bad = birth("Lê Thị Lỗi", 3);
    bad.nationality = "US".into();
    let mut invalid_again = birth("Lê Văn Bốn", 4);
    invalid_again.full_name = String::new();
    let first_message = pb::BatchIssuePersonalIdsRequest {
        items: vec![
            issue("reg-1", birth("Lê Văn Một", 1)),
            issue("reg-2", birth("Lê Văn Hai", 2)),
            issue("reg-3", bad),
            issue("reg-0", birth("Khác hẳn", 100)),
            issue("reg-1", birth("Lê Văn Một", 1)),
            issue("reg-4", invalid_again),
            issue("reg-4", birth("Lê Văn Bốn", 4)),
        ],
    };
    let second_message = pb::BatchIssuePersonalIdsRequest {
        items: (10..60)
            .map(|i| issue(&format!("reg-{i}"), birth(&format!("Người {i}"), i)))
            .collect(),
    };

    let mut responses = app
        .client
        .batch_issue_personal_ids(tokio_stream::iter(vec![first_message, second_message]))
        .await
        .expect("stream")
        .into_inner();
    let first = responses
        .message()
        .await
        .expect("ok")
        .expect("first answer");
    let second = responses
        .message()
        .await
        .expect("ok")
        .expect("second answer");
    assert!(responses.message().await.expect("end").is_none());

    let ids: Vec<&str> = first
        .results
        .iter()
        .map(|r| r.request_id.as_str())
        .collect();
    assert_eq!(
        ids,
        [
            "reg-1", "reg-2", "reg-3", "reg-0", "reg-1", "reg-4", "reg-4"
        ]
    );
    use pb::batch_issue_result::Outcome;
    let number = |i: usize| match &first.results[i].outcome {
        Some(Outcome::Issued(r)) => r.personal_id.clone(),
        other => panic!("item {i}: {other:?}"),
    };
    let code = |i: usize| match &first.results[i].outcome {
        Some(Outcome::Error(s)) => s.code,
        other => panic!("item {i}: {other:?}"),
    };
    assert_ne!(number(0), number(1));
    assert_eq!(code(2), Code::InvalidArgument as i32);
    assert_eq!(code(3), Code::AlreadyExists as i32);
    assert_eq!(
        code(4),
        Code::InvalidArgument as i32,
        "duplicate id in one message"
    );
    assert_eq!(code(5), Code::InvalidArgument as i32, "an invalid record");
    assert_eq!(
        code(6),
        Code::InvalidArgument as i32,
        "a valid copy of a key whose first copy was invalid is still a repeat"
    );
    let err = match &first.results[2].outcome {
        Some(Outcome::Error(s)) => s.clone(),
        _ => unreachable!(),
    };
    assert!(
        !err.details.is_empty(),
        "item errors carry google.rpc details"
    );
    assert_eq!(second.results.len(), 50);
    let numbers: HashSet<String> = second
        .results
        .iter()
        .map(|r| match &r.outcome {
            Some(Outcome::Issued(i)) => i.personal_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(numbers.len(), 50);
    app.stop().await;
}

async fn get_citizen_returns_the_stored_record_or_not_found(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let issued = app
        .client
        .issue_personal_id(issue("reg-1", birth("Nguye\u{302}\u{303}n Văn An", 1)))
        .await
        .expect("issued")
        .into_inner();

    let citizen = app.citizen(&issued.personal_id).await;

    assert_eq!(citizen.personal_id, issued.personal_id);
    assert_eq!(citizen.status, pb::CitizenStatus::Active as i32);
    assert_eq!(citizen.request_id, "reg-1");
    let stored = citizen.birth.expect("birth");
    assert_eq!(stored.full_name, "Nguyễn Văn An", "stored in NFC");
    assert_eq!(stored, birth("Nguyễn Văn An", 1), "every field as sent");

    // A child without a known father keeps none, and every other field.
    let mut fatherless = birth("Lê Thị Hoa", 2);
    fatherless.father = None;
    fatherless.sex = pb::Sex::Female.into();
    let issued = app
        .client
        .issue_personal_id(issue("reg-2", fatherless.clone()))
        .await
        .expect("issued")
        .into_inner();
    let citizen = app.citizen(&issued.personal_id).await;
    assert_eq!(citizen.request_id, "reg-2");
    assert_eq!(citizen.birth, Some(fatherless));

    let missing = app
        .client
        .get_citizen(pb::GetCitizenRequest {
            personal_id: "001221999999".into(),
        })
        .await
        .expect_err("unknown");
    assert_eq!(
        refusal(&missing),
        (Code::NotFound, "CITIZEN_NOT_FOUND".into())
    );
    let malformed = app
        .client
        .get_citizen(pb::GetCitizenRequest {
            personal_id: "12ab".into(),
        })
        .await
        .expect_err("malformed");
    assert_eq!(malformed.code(), Code::InvalidArgument);
    assert_eq!(field_violations_of(&malformed)[0].0, "personal_id");
    app.stop().await;
}

async fn find_citizen_by_registration_finds_by_request_id_and_by_register_entry(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let issued = app
        .client
        .issue_personal_id(issue("reg-1", birth("An", 7)))
        .await
        .expect("issued")
        .into_inner();

    let by_id = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-1".into(),
            ..Default::default()
        })
        .await
        .expect("by id")
        .into_inner();
    let by_entry = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            unit_code: "HN-BD-01".into(),
            book_number: "01/2021".into(),
            registration_number: 7,
            ..Default::default()
        })
        .await
        .expect("by entry")
        .into_inner();

    assert_eq!(by_id.citizens[0].personal_id, issued.personal_id);
    assert_eq!(by_entry.citizens[0].personal_id, issued.personal_id);
    let none = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-404".into(),
            ..Default::default()
        })
        .await
        .expect_err("not found");
    assert_eq!(none.code(), Code::NotFound);
    let empty = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest::default())
        .await
        .expect_err("nothing given");
    assert_eq!(empty.code(), Code::InvalidArgument);
    app.stop().await;
}

/// A registration whose first issue was refused is issued, once corrected, under a key
/// derived from its id (the id, a colon, a suffix); looking it up by its id finds that
/// number and the re-issue linked to it, and nothing of a registration whose id merely
/// begins the same way.
async fn find_citizen_by_registration_finds_the_issues_made_under_derived_keys(db: TestDb) {
    // Arrange: reg-2's number issued under "reg-2:i1", then re-issued under "reg-2:fix-1";
    // reg-20 and reg-2x are other registrations.
    let mut app = TestApp::spawn(&db).await;
    let first = app
        .client
        .issue_personal_id(issue("reg-2:i1", birth("Binh", 8)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    let mut corrected = birth("Binh", 8);
    corrected.sex = pb::Sex::Female.into();
    let second = app
        .client
        .reissue_personal_id(reissue("reg-2:fix-1", &first, corrected))
        .await
        .expect("re-issued")
        .into_inner()
        .personal_id;
    for (other, number) in [("reg-20", 9), ("reg-2x", 10)] {
        app.client
            .issue_personal_id(issue(other, birth("Cuong", number)))
            .await
            .expect("issued");
    }

    // Act
    let found = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-2".into(),
            ..Default::default()
        })
        .await
        .expect("found by the registration id")
        .into_inner()
        .citizens;
    // By the derived key itself, the successor comes by its link alone.
    let by_derived_key: Vec<String> = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-2:i1".into(),
            ..Default::default()
        })
        .await
        .expect("found by the derived key")
        .into_inner()
        .citizens
        .into_iter()
        .map(|c| c.personal_id)
        .collect();

    // Assert
    let found: Vec<(String, String, i32)> = found
        .into_iter()
        .map(|c| (c.personal_id, c.request_id, c.status))
        .collect();
    assert_eq!(
        found,
        vec![
            (
                first.clone(),
                "reg-2:i1".to_owned(),
                pb::CitizenStatus::Cancelled as i32
            ),
            (
                second.clone(),
                "reg-2:fix-1".to_owned(),
                pb::CitizenStatus::Active as i32
            ),
        ]
    );
    assert_eq!(by_derived_key, [first, second]);
    if db.url.starts_with("postgres") {
        // The range holds just the derived keys in byte order, whatever the database's
        // collation (this one's may already be byte order).
        use sqlx::Connection as _;
        let mut conn = sqlx::AnyConnection::connect(&db.url)
            .await
            .expect("connect");
        let collation: String = sqlx::query_scalar(
            "SELECT collation_name::text FROM information_schema.columns \
             WHERE table_name = 'citizens' AND column_name = 'request_id'",
        )
        .fetch_one(&mut conn)
        .await
        .expect("collation");
        assert_eq!(collation, "C");
        conn.close().await.ok();
    }
    app.stop().await;
}

/// Rows stored before the register entry key existed have none; starting the service
/// computes it (`store::migrate`), so FindCitizenByRegistration finds them by entry.
async fn citizens_stored_before_the_register_entry_key_are_found_by_entry_after_the_migration(
    db: TestDb,
) {
    use sqlx::Connection as _;
    let app = TestApp::spawn(&db).await;
    let mut client = app.client.clone();
    let mut issued = Vec::new();
    for (request_id, name, number) in [("reg-1", "An", 7), ("reg-2", "Binh", 8)] {
        let answer = client
            .issue_personal_id(issue(request_id, birth(name, number)))
            .await
            .expect("issued")
            .into_inner();
        issued.push((number, answer.personal_id));
    }
    app.stop().await;

    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("connect");
    let erased = sqlx::query("UPDATE citizens SET register_key = NULL")
        .execute(&mut conn)
        .await
        .expect("erase the keys")
        .rows_affected();
    assert_eq!(erased, 2);

    let mut app = TestApp::spawn(&db).await;
    let missing: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM citizens WHERE register_key IS NULL")
            .fetch_one(&mut conn)
            .await
            .expect("count");
    assert_eq!(missing, 0, "every earlier row has its key");
    for (number, personal_id) in issued {
        let found = app
            .client
            .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
                unit_code: "HN-BD-01".into(),
                book_number: "01/2021".into(),
                registration_number: number,
                ..Default::default()
            })
            .await
            .expect("found by entry")
            .into_inner()
            .citizens;
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].personal_id, personal_id);
    }
    conn.close().await.ok();
    app.stop().await;
}

/// A rollback needs no down-migration: a binary that does not know the newest applied
/// migration starts on that schema and answers from it.
async fn a_binary_rolled_back_under_a_newer_schema_still_starts_and_keeps_its_numbers(db: TestDb) {
    let app = TestApp::spawn(&db).await;
    let issued = app
        .client
        .clone()
        .issue_personal_id(issue("reg-1", birth("An", 7)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    app.stop().await;

    record_applied_migration(&db, 9999).await;

    let mut app = TestApp::spawn(&db).await;
    let citizen = app
        .client
        .get_citizen(pb::GetCitizenRequest {
            personal_id: issued.clone(),
        })
        .await
        .expect("the number is still there")
        .into_inner();
    assert_eq!(citizen.citizen.expect("a citizen").personal_id, issued);
    app.client
        .issue_personal_id(issue("reg-2", birth("Binh", 8)))
        .await
        .expect("minting goes on");
    app.stop().await;

    // An unknown migration below the binary's newest is no rollback: refused.
    record_applied_migration(&db, 0).await;
    let pool = sqlx::AnyPool::connect(&db.url).await.expect("pool");
    let backend = population_registry::store::Backend::of_url(&db.url).expect("backend");
    let refused = population_registry::store::migrate(&pool, backend)
        .await
        .expect_err("a stray migration");
    pool.close().await;
    assert_eq!(
        service_kit::config::exit_code(&refused),
        service_kit::config::EXIT_CONFIG
    );
    assert!(
        format!("{refused:#}").contains("migration 0"),
        "{refused:#}"
    );
}

/// Records `version` as applied, as a binary that knew it would have.
async fn record_applied_migration(db: &TestDb, version: i64) {
    use sqlx::Connection as _;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("connect");
    sqlx::query(
        "INSERT INTO _sqlx_migrations \
         (version, description, installed_on, success, checksum, execution_time) \
         VALUES ($1, 'not of this binary', CURRENT_TIMESTAMP, TRUE, $2, 0)",
    )
    .bind(version)
    .bind(vec![0u8; 48])
    .execute(&mut conn)
    .await
    .expect("record a migration this binary does not know");
    conn.close().await.ok();
}

fn reissue(request_id: &str, old: &str, b: pb::BirthRecord) -> pb::ReissuePersonalIdRequest {
    pb::ReissuePersonalIdRequest {
        request_id: request_id.into(),
        personal_id: old.into(),
        corrected_birth: Some(b),
        reason: "sex corrected by decision 12/QD".into(),
    }
}

async fn reissue_cancels_the_old_number_links_both_and_never_reuses_it(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let old = app
        .client
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    let mut corrected = birth("An", 1);
    corrected.sex = pb::Sex::Female.into();

    let new = app
        .client
        .reissue_personal_id(reissue("fix-1", &old, corrected.clone()))
        .await
        .expect("re-issued")
        .into_inner();

    assert!(new.personal_id.starts_with("001321"), "{}", new.personal_id);
    assert_eq!(new.cancelled_personal_id, old);
    assert!(new.newly_issued);
    let again = app
        .client
        .reissue_personal_id(reissue("fix-1", &old, corrected))
        .await
        .expect("idempotent")
        .into_inner();
    assert_eq!(again.personal_id, new.personal_id);
    assert!(!again.newly_issued);
    // The same key with another correction is refused, never a second re-issue.
    let mut other = birth("An", 1);
    other.sex = pb::Sex::Female.into();
    other.full_name = "An Khác".into();
    let reused = app
        .client
        .reissue_personal_id(reissue("fix-1", &old, other))
        .await
        .expect_err("key reused with other content");
    assert_eq!(
        refusal(&reused),
        (Code::AlreadyExists, "IDEMPOTENCY_KEY_REUSED".into())
    );
    let validated = |number: &str| {
        let mut client = app.client.clone();
        let number = number.to_owned();
        async move {
            client
                .validate_personal_id(pb::ValidatePersonalIdRequest {
                    personal_id: number,
                })
                .await
                .expect("validated")
                .into_inner()
        }
    };
    let old_state = validated(&old).await;
    assert_eq!(old_state.state, pb::PersonalIdState::Cancelled as i32);
    assert_eq!(old_state.replaced_by, new.personal_id);
    assert_eq!(
        validated(&new.personal_id).await.state,
        pb::PersonalIdState::Active as i32
    );
    let old_citizen = app.citizen(&old).await;
    assert_eq!(old_citizen.status, pb::CitizenStatus::Cancelled as i32);
    assert_eq!(old_citizen.replaced_by, new.personal_id);
    assert!(old_citizen.cancel_time.is_some());
    let new_citizen = app.citizen(&new.personal_id).await;
    assert_eq!(new_citizen.replaces, old);
    let chain = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-1".into(),
            ..Default::default()
        })
        .await
        .expect("chain")
        .into_inner();
    let chain: Vec<String> = chain.citizens.into_iter().map(|c| c.personal_id).collect();
    assert_eq!(chain, vec![old.clone(), new.personal_id.clone()]);
    // Moving back to the old bucket draws a fresh number, never the cancelled one.
    let back = app
        .client
        .reissue_personal_id(reissue("fix-2", &new.personal_id, birth("An", 1)))
        .await
        .expect("back")
        .into_inner();
    assert!(back.personal_id.starts_with("001221"));
    assert_ne!(back.personal_id, old);
    app.stop().await;
}

async fn reissue_that_changes_nothing_encoded_or_targets_a_cancelled_number_is_failed_precondition(
    db: TestDb,
) {
    let mut app = TestApp::spawn(&db).await;
    let old = app
        .client
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;

    let err = app
        .client
        .reissue_personal_id(reissue("fix-1", &old, birth("An Renamed", 1)))
        .await
        .expect_err("nothing encoded changes");

    assert_eq!(
        refusal(&err),
        (Code::FailedPrecondition, "NOTHING_TO_REISSUE".into())
    );
    let mut moved = birth("An", 1);
    moved.registration_province_code = "079".into();
    let new = app
        .client
        .reissue_personal_id(reissue("fix-2", &old, moved.clone()))
        .await
        .expect("moved")
        .into_inner();
    assert!(new.personal_id.starts_with("079221"));
    let mut female = moved;
    female.sex = pb::Sex::Female.into();
    let cancelled = app
        .client
        .reissue_personal_id(reissue("fix-3", &old, female))
        .await
        .expect_err("old is cancelled");
    assert_eq!(
        refusal(&cancelled),
        (Code::FailedPrecondition, "PERSONAL_ID_CANCELLED".into())
    );
    let unknown = app
        .client
        .reissue_personal_id(reissue("fix-4", "001221999999", birth("An", 1)))
        .await
        .expect_err("unknown");
    assert_eq!(unknown.code(), Code::NotFound);
    app.stop().await;
}

async fn validate_personal_id_decodes_the_number_and_reports_its_state(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let issued = app
        .client
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    let mut validate = async |raw: &str| {
        app.client
            .validate_personal_id(pb::ValidatePersonalIdRequest {
                personal_id: raw.into(),
            })
            .await
            .expect("never an error")
            .into_inner()
    };

    let active = validate(&issued).await;
    let unknown = validate("079305123456").await;
    let malformed = validate("07930512345").await;
    let bad_province = validate("003221000001").await;

    assert!(active.valid);
    assert_eq!(active.state, pb::PersonalIdState::Active as i32);
    let decoded = active.decoded.expect("decoded");
    assert_eq!(decoded.province_code, "001");
    assert_eq!(decoded.province_name, "Hà Nội");
    assert_eq!(decoded.sex, pb::Sex::Male as i32);
    assert_eq!(decoded.century_start_year, 2000);
    assert_eq!(decoded.birth_year, 2021);
    assert!(unknown.valid);
    assert_eq!(unknown.state, pb::PersonalIdState::NotIssued as i32);
    assert_eq!(
        unknown.decoded.expect("decoded").sex,
        pb::Sex::Female as i32
    );
    assert!(!malformed.valid);
    assert_eq!(malformed.invalid_reason, "must be exactly 12 digits");
    assert_eq!(malformed.state, pb::PersonalIdState::Unspecified as i32);
    assert!(!bad_province.valid);
    app.stop().await;
}

async fn statistics_and_listing_count_issued_and_cancelled_numbers_page_by_page(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let mut first = None;
    for i in 1..=5 {
        let mut b = birth(&format!("Người {i}"), i);
        if i > 3 {
            b.registration_province_code = "079".into();
        }
        let id = app
            .client
            .issue_personal_id(issue(&format!("reg-{i}"), b))
            .await
            .expect("issued")
            .into_inner()
            .personal_id;
        first.get_or_insert(id);
    }
    let mut moved = birth("Người 1", 1);
    moved.sex = pb::Sex::Female.into();
    app.client
        .reissue_personal_id(reissue("fix-1", first.as_deref().expect("first"), moved))
        .await
        .expect("re-issued");

    let stats = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2021, 3, 10),
            registered_to: date(2021, 3, 10),
            province_codes: vec![],
        })
        .await
        .expect("stats")
        .into_inner();

    let rows: Vec<(String, i64, i64, i64)> = stats
        .provinces
        .iter()
        .map(|p| (p.province_code.clone(), p.issued, p.cancelled, p.active))
        .collect();
    assert_eq!(rows, vec![("001".into(), 4, 1, 3), ("079".into(), 2, 0, 2)]);
    assert_eq!(stats.provinces[1].province_name, "Hồ Chí Minh");
    let total = stats.total.expect("total");
    assert_eq!((total.issued, total.cancelled, total.active), (6, 1, 5));
    let only_hcm = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2021, 1, 1),
            registered_to: date(2021, 12, 31),
            province_codes: vec!["079".into()],
        })
        .await
        .expect("filtered")
        .into_inner();
    let hcm_rows: Vec<_> = only_hcm
        .provinces
        .iter()
        .map(|p| (p.province_code.clone(), p.issued, p.cancelled, p.active))
        .collect();
    assert_eq!(hcm_rows, vec![("079".into(), 2, 0, 2)]);
    // Every record is registered on 2021-03-10: ranges on either side of it count none.
    for (from, to) in [
        ((2021, 1, 1), (2021, 3, 9)),
        ((2021, 3, 11), (2021, 12, 31)),
    ] {
        let outside = app
            .client
            .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
                registered_from: date(from.0, from.1, from.2),
                registered_to: date(to.0, to.1, to.2),
                province_codes: vec![],
            })
            .await
            .expect("outside")
            .into_inner();
        assert_eq!(
            outside.total.map(|t| t.issued).unwrap_or_default(),
            0,
            "{from:?}..{to:?}"
        );
    }
    let reversed = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2021, 12, 31),
            registered_to: date(2021, 1, 1),
            province_codes: vec!["999".into()],
        })
        .await
        .expect_err("bad range");
    assert_eq!(reversed.code(), Code::InvalidArgument);
    // A filter longer than there are provinces is refused as a whole, not code by code.
    let endless = app
        .client
        .get_issuance_statistics(pb::GetIssuanceStatisticsRequest {
            registered_from: date(2021, 1, 1),
            registered_to: date(2021, 12, 31),
            province_codes: vec!["999".into(); 10_000],
        })
        .await
        .expect_err("too many codes");
    assert_eq!(endless.code(), Code::InvalidArgument);
    assert_eq!(
        field_violations_of(&endless)
            .into_iter()
            .map(|(field, _)| field)
            .collect::<Vec<_>>(),
        ["province_codes"]
    );

    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .client
            .list_issuances(pb::ListIssuancesRequest {
                registered_from: date(2021, 1, 1),
                registered_to: date(2021, 12, 31),
                page_size: 4,
                page_token: token.clone(),
            })
            .await
            .expect("page")
            .into_inner();
        assert!(page.issuances.len() <= 4);
        seen.extend(
            page.issuances
                .into_iter()
                .map(|i| (i.personal_id, i.status)),
        );
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 6);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted, "ordered by number");
    assert_eq!(
        seen.iter()
            .filter(|(_, s)| *s == pb::CitizenStatus::Cancelled as i32)
            .count(),
        1
    );
    let bad_token = app
        .client
        .list_issuances(pb::ListIssuancesRequest {
            registered_from: date(2021, 1, 1),
            registered_to: date(2021, 12, 31),
            page_size: 4,
            page_token: "garbage".into(),
        })
        .await
        .expect_err("bad token");
    assert_eq!(field_violations_of(&bad_token)[0].0, "page_token");
    app.stop().await;
}

async fn a_full_bucket_answers_resource_exhausted_at_once_and_never_duplicates(db: TestDb) {
    let mut cfg = config(&db);
    cfg.minting.bucket_capacity = 6;
    let mut app = TestApp::spawn_with(cfg).await;
    let mut numbers = HashSet::new();
    // Mixed unary and batch fills draw both randomly and by enumeration.
    for i in 0..3 {
        let n = app
            .client
            .issue_personal_id(issue(&format!("reg-{i}"), birth(&format!("Bé {i}"), i + 1)))
            .await
            .expect("fits")
            .into_inner()
            .personal_id;
        numbers.insert(n);
    }
    let batch = pb::BatchIssuePersonalIdsRequest {
        items: (3..8)
            .map(|i| issue(&format!("reg-{i}"), birth(&format!("Bé {i}"), i + 1)))
            .collect(),
    };
    let answer = app
        .client
        .batch_issue_personal_ids(tokio_stream::iter(vec![batch]))
        .await
        .expect("stream")
        .into_inner()
        .message()
        .await
        .expect("ok")
        .expect("answer");
    use pb::batch_issue_result::Outcome;
    let mut exhausted = 0;
    for r in &answer.results {
        match &r.outcome {
            Some(Outcome::Issued(i)) => {
                numbers.insert(i.personal_id.clone());
            }
            Some(Outcome::Error(s)) => {
                assert_eq!(s.code, Code::ResourceExhausted as i32);
                exhausted += 1;
            }
            None => panic!("no outcome"),
        }
    }

    let err = app
        .client
        .issue_personal_id(within(
            issue("reg-99", birth("Bé cuối", 99)),
            Duration::from_secs(2),
        ))
        .await
        .expect_err("bucket full");

    // At once: a full bucket is never searched (a hang would be DEADLINE_EXCEEDED).
    assert_eq!(
        refusal(&err),
        (Code::ResourceExhausted, "BUCKET_EXHAUSTED".into())
    );
    assert_eq!(exhausted, 2);
    assert_eq!(numbers.len(), 6, "six distinct numbers: {numbers:?}");
    for n in &numbers {
        let suffix: u32 = n[6..].parse().expect("digits");
        assert!(suffix < 6, "{n} drawn within the configured capacity");
    }
    // Another bucket (a girl) still has room.
    let mut girl = birth("Bé gái", 100);
    girl.sex = pb::Sex::Female.into();
    let girls_number = app
        .client
        .issue_personal_id(issue("reg-100", girl.clone()))
        .await
        .expect("other bucket")
        .into_inner()
        .personal_id;
    // A correction into the full bucket is refused the same way, and cancels nothing.
    let mut as_boy = girl;
    as_boy.sex = pb::Sex::Male.into();
    let refused = app
        .client
        .reissue_personal_id(within(
            pb::ReissuePersonalIdRequest {
                request_id: "fix-100".into(),
                personal_id: girls_number.clone(),
                corrected_birth: Some(as_boy),
                reason: "sex corrected".into(),
            },
            Duration::from_secs(2),
        ))
        .await
        .expect_err("bucket full");
    assert_eq!(
        refusal(&refused),
        (Code::ResourceExhausted, "BUCKET_EXHAUSTED".into())
    );
    assert_eq!(
        app.citizen(&girls_number).await.status,
        pb::CitizenStatus::Active as i32
    );
    app.stop().await;
}

/// The fill of a bucket is exported after each commit, as it stands after it, and the
/// commit that takes it past the warning line (80 %) logs it once. SQLite only: the gauge
/// and the log are process-wide, and this bucket (Da Nang, boys born 2017) is this test's
/// alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_buckets_fill_is_exported_after_each_commit_and_its_crossing_of_the_line_logged() {
    logged_warnings();
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.minting.bucket_capacity = 10;
    let mut app = TestApp::spawn_with(cfg).await;
    let da_nang_2017 = |number: i64| {
        let mut b = birth(&format!("Trần Văn {number}"), number);
        b.registration_province_code = "048".into();
        b.date_of_birth = date(2017, 5, 1);
        b
    };
    let fill = || exported_fill("048", 2017, "male");

    let warnings = || {
        logged_warnings()
            .lines()
            .filter(|line| {
                line.contains("number bucket is nearly full")
                    && line.contains("province=048")
                    && line.contains("year=2017")
            })
            .count()
    };

    let mut fills = Vec::new();
    let mut warned = Vec::new();
    for number in 1..=10 {
        app.client
            .issue_personal_id(issue(&format!("dn-{number}"), da_nang_2017(number)))
            .await
            .expect("issued");
        fills.push(fill());
        warned.push(warnings());
    }

    assert_eq!(fills[0], Some(0.1));
    assert_eq!(fills[8], Some(0.9), "{fills:?}");
    assert_eq!(
        warned,
        [0, 0, 0, 0, 0, 0, 0, 0, 1, 1],
        "warnings after each issue"
    );
    app.stop().await;
}

/// A bucket appears in the metrics only from 1 % full: a series for a nearly empty one
/// would tell when one person was numbered. SQLite only, as above; this bucket (Hai
/// Phong, girls born 2018) is this test's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nearly_empty_bucket_is_not_exported() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.minting.bucket_capacity = 200;
    let mut app = TestApp::spawn_with(cfg).await;
    let hai_phong_2018 = |number: i64| {
        let mut b = birth(&format!("Lê Thị {number}"), number);
        b.registration_province_code = "031".into();
        b.sex = pb::Sex::Female as i32;
        b.date_of_birth = date(2018, 5, 1);
        b
    };

    let mut fills = Vec::new();
    for number in 1..=2 {
        app.client
            .issue_personal_id(issue(&format!("hp-{number}"), hai_phong_2018(number)))
            .await
            .expect("issued");
        fills.push(exported_fill("031", 2018, "female"));
    }

    assert_eq!(fills, [None, Some(0.01)]);
    app.stop().await;
}

/// The exported fill of one bucket, if it is exported.
fn exported_fill(province: &str, year: i32, sex: &str) -> Option<f64> {
    let rendered = service_kit::metrics::handle().expect("recorder").render();
    rendered
        .lines()
        .find(|line| {
            line.starts_with("population_registry_bucket_fill_ratio{")
                && line.contains(&format!("province=\"{province}\""))
                && line.contains(&format!("year=\"{year}\""))
                && line.contains(&format!("sex=\"{sex}\""))
        })
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse::<f64>().ok())
}

/// Calls one at a time commit one at a time, so a random draw is checked only against
/// the table: with 29 numbers drawn from 40 suffixes (below the fill where free suffixes
/// are enumerated instead), about ten draws land on a taken number. Each must be drawn
/// again, and every answer must be the number of the record that holds it.
async fn a_drawn_number_already_taken_is_drawn_again_and_never_given_twice(db: TestDb) {
    let mut cfg = config(&db);
    cfg.minting.bucket_capacity = 40;
    let mut app = TestApp::spawn_with(cfg).await;
    let mut numbers = HashSet::new();
    for i in 0..29 {
        let request_id = format!("reg-{i}");
        let number = app
            .client
            .issue_personal_id(issue(&request_id, birth(&format!("Bé {i}"), i + 1)))
            .await
            .expect("fits")
            .into_inner()
            .personal_id;
        assert!(numbers.insert(number.clone()), "{number} given twice");
        let holder = app.citizen(&number).await;
        assert_eq!(
            holder.request_id, request_id,
            "{number} belongs to this record"
        );
    }
    app.stop().await;
}

/// A group larger than one multi-row INSERT (1,000 rows) is written chunk by chunk, each
/// chunk's statement built while the previous one runs: every record must still get its
/// own number and the audit chain must run unbroken across the chunks.
async fn a_group_of_several_insert_chunks_gives_each_record_its_own_number_and_one_chain(
    db: TestDb,
) {
    use population_registry::domain::province::{PostMergerRule, ProvinceTable};
    let mut app = TestApp::spawn(&db).await;
    let provinces = ProvinceTable::load(PostMergerRule::Legacy).expect("provinces");
    const COUNT: i64 = 2_345;
    let names: Vec<String> = (0..COUNT).map(|i| format!("Bé thứ {i}")).collect();
    let items = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let request = issue(&format!("chunked-{i}"), birth(name, i as i64 + 1));
            population_registry::grpc::convert::issue_request(&request, &provinces)
                .expect("valid request")
        })
        .collect();

    // One store call is one writer command, so all of it is one group.
    let results = app.store.issue(items).await.expect("group committed");

    assert_eq!(results.len(), COUNT as usize);
    let numbers: Vec<String> = results
        .into_iter()
        .map(|r| r.expect("issued").personal_id.to_string())
        .collect();
    let distinct: HashSet<&String> = numbers.iter().collect();
    assert_eq!(distinct.len(), numbers.len(), "no number twice");
    // Each number holds its own record: both sides of every chunk boundary and a spread
    // of the rest.
    let probes = [0, 998, 999, 1000, 1001, 1999, 2000, 2001, 2344]
        .into_iter()
        .chain((0..COUNT as usize).step_by(97));
    for i in probes {
        let citizen = app.citizen(&numbers[i]).await;
        let birth = citizen.birth.expect("record");
        assert_eq!(birth.full_name, names[i], "number {i}");
        assert_eq!(
            birth.registration.expect("entry").registration_number,
            i as i64 + 1
        );
    }
    let report = population_registry::store::verify_audit(app.store.pool())
        .await
        .expect("verify");
    assert_eq!(report.entries, COUNT as u64);
    assert_eq!(report.first_broken, None);
    app.stop().await;
}

/// `population-registry audit verify` run against `url`, as a scheduled Job runs it: its
/// exit code and what it printed.
async fn audit_verify_command(url: &str) -> (Option<i32>, String) {
    let url = url.to_owned();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_population-registry"))
            .args(["audit", "verify"])
            .env("POPULATION_REGISTRY_DATABASE__URL", url)
            .output()
            .expect("population-registry audit verify runs")
    })
    .await
    .expect("joined");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn the_audit_chain_verifies_and_reports_a_tampered_row(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    let old = app
        .client
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("issued")
        .into_inner()
        .personal_id;
    app.client
        .issue_personal_id(issue("reg-2", birth("Bình", 2)))
        .await
        .expect("issued");
    let mut moved = birth("An", 1);
    moved.sex = pb::Sex::Female.into();
    app.client
        .reissue_personal_id(reissue("fix-1", &old, moved))
        .await
        .expect("re-issued");
    let pool = app.store.pool().clone();

    let intact = population_registry::store::verify_audit(&pool)
        .await
        .expect("verify");
    let (intact_code, intact_report) = audit_verify_command(&db.url).await;
    // The last entry cut off leaves a chain that is whole as far as it goes: only the
    // head, written in the same transaction, tells.
    for statement in [
        "CREATE TABLE audit_saved AS SELECT * FROM audit_log WHERE seq = 4",
        "DELETE FROM audit_log WHERE seq = 4",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    let truncated = population_registry::store::verify_audit(&pool)
        .await
        .expect("verify");
    for statement in [
        "INSERT INTO audit_log SELECT * FROM audit_saved",
        "DROP TABLE audit_saved",
    ] {
        sqlx::query(statement)
            .execute(&pool)
            .await
            .expect(statement);
    }
    assert_eq!(truncated.first_broken.map(|(seq, _)| seq), Some(4));
    assert_eq!(
        population_registry::store::verify_audit(&pool)
            .await
            .expect("verify")
            .first_broken,
        None,
        "whole again once the entry is back"
    );
    sqlx::query("UPDATE audit_log SET request_id = 'forged' WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("tamper");
    let tampered = population_registry::store::verify_audit(&pool)
        .await
        .expect("verify");

    assert_eq!(intact.entries, 4, "issue, issue, cancel, reissue");
    assert_eq!(intact.first_broken, None);
    assert_eq!(intact_code, Some(0), "{intact_report}");
    assert!(
        intact_report.contains("intact: 4 entries"),
        "{intact_report}"
    );
    assert_eq!(tampered.first_broken.map(|(seq, _)| seq), Some(2));
    let (code, report) = audit_verify_command(&db.url).await;
    assert_eq!(
        code,
        Some(65),
        "the scheduled check's exit for tampering: {report}"
    );
    assert!(report.contains("BROKEN at entry 2"), "{report}");
    sqlx::query("DELETE FROM audit_log WHERE seq = 2")
        .execute(&pool)
        .await
        .expect("delete");
    let deleted = population_registry::store::verify_audit(&pool)
        .await
        .expect("verify");
    assert_eq!(deleted.first_broken.map(|(seq, _)| seq), Some(2));
    app.stop().await;
}

async fn database_gone_turns_health_not_serving_and_calls_fail_fast_with_unavailable(db: TestDb) {
    let mut app = TestApp::spawn(&db).await;
    app.client
        .issue_personal_id(issue("reg-1", birth("An", 1)))
        .await
        .expect("works while the database is up");
    assert_eq!(app.health().await, 1, "SERVING");

    app.store.close().await;

    let deadline = Instant::now() + Duration::from_secs(5);
    while app.health().await != 2 {
        assert!(Instant::now() < deadline, "health turns NOT_SERVING");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let fast = Duration::from_secs(2);
    let err = app
        .client
        .issue_personal_id(within(issue("reg-2", birth("Bình", 2)), fast))
        .await
        .expect_err("no database");
    let read = app
        .client
        .get_citizen(within(
            pb::GetCitizenRequest {
                personal_id: "001221000001".into(),
            },
            fast,
        ))
        .await
        .expect_err("no database");
    // Fails fast: a call left waiting would end DEADLINE_EXCEEDED instead.
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(read.code(), Code::Unavailable);
    app.stop().await;
}

/// Another session holds the lock every writing transaction needs (SQLite's write lock,
/// PostgreSQL's chain head row) for longer than the operation timeout: the call answers
/// UNAVAILABLE at the timeout instead of hanging, and once the lock is gone a retry under
/// the same request_id gets a number, the only one stored for that request.
async fn a_write_stalled_past_the_operation_timeout_is_unavailable_and_its_retry_gets_one_number(
    db: TestDb,
) {
    use sqlx::Connection as _;
    let mut cfg = config(&db);
    cfg.database.operation_timeout_ms = 300;
    let mut app = TestApp::spawn_with(cfg).await;
    sqlx::any::install_default_drivers();
    let mut blocker = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("connect");
    let lock = if db.url.starts_with("sqlite:") {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN; SELECT seq FROM audit_head WHERE id = 1 FOR UPDATE"
    };
    sqlx::raw_sql(sqlx::AssertSqlSafe(lock))
        .execute(&mut blocker)
        .await
        .expect("take the write lock");

    // The lock is released only after this call returns: waiting for it would hang until
    // the client's deadline (DEADLINE_EXCEEDED), not answer UNAVAILABLE at the timeout.
    let stalled = app
        .client
        .issue_personal_id(within(
            issue("reg-stalled", birth("An", 1)),
            Duration::from_secs(5),
        ))
        .await
        .expect_err("the writer cannot commit while the lock is held");
    assert_eq!(stalled.code(), Code::Unavailable, "{stalled:?}");

    tokio::time::sleep(Duration::from_millis(200)).await;
    sqlx::raw_sql("ROLLBACK")
        .execute(&mut blocker)
        .await
        .expect("release the lock");
    let retry_until = Instant::now() + Duration::from_secs(10);
    let number = loop {
        match app
            .client
            .issue_personal_id(issue("reg-stalled", birth("An", 1)))
            .await
        {
            Ok(answer) => break answer.into_inner().personal_id,
            // The writer may still be finishing the stalled attempt.
            Err(e) if e.code() == Code::Unavailable => {
                assert!(Instant::now() < retry_until, "still refused: {e:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("retry: {e:?}"),
        }
    };
    let found = app
        .client
        .find_citizen_by_registration(pb::FindCitizenByRegistrationRequest {
            request_id: "reg-stalled".into(),
            ..Default::default()
        })
        .await
        .expect("found")
        .into_inner()
        .citizens;
    assert_eq!(found.len(), 1, "one number for the request");
    assert_eq!(found[0].personal_id, number);
    app.stop().await;
}

/// An in-memory SQLite database would lose every number issued when the process exits.
#[tokio::test]
async fn an_in_memory_sqlite_database_is_refused_naming_the_key() {
    let db = TestDb::sqlite().await;
    let mut cfg = config(&db);
    cfg.database.url = "sqlite::memory:".into();
    let Err(err) = population_registry::app::App::build(&cfg).await else {
        panic!("an in-memory database was accepted");
    };
    let message = format!("{err:#}");
    assert!(message.contains("database.url"), "{message}");
    assert!(message.contains("in-memory"), "{message}");
}

/// Long lookups (statistics over years, listings paged through) may hold every connection
/// of the readers' pool; the writer has its own, so minting does not wait for one.
async fn minting_goes_on_while_lookups_hold_every_pooled_connection(db: TestDb) {
    // Arrange: a pool of two, both held.
    let mut cfg = config(&db);
    cfg.database.max_connections = 2;
    cfg.database.acquire_timeout_ms = 300;
    let mut app = TestApp::spawn_with(cfg).await;
    let held = (
        app.store.pool().acquire().await.expect("first connection"),
        app.store.pool().acquire().await.expect("second connection"),
    );

    // Act
    let minted = app
        .client
        .issue_personal_id(within(
            issue("reg-busy", birth("An", 1)),
            Duration::from_secs(10),
        ))
        .await;
    drop(held);

    // Assert
    let minted = minted.expect("minted while the readers' pool was exhausted");
    assert_eq!(minted.into_inner().personal_id.len(), 12);
    app.stop().await;
}
