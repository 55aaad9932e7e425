//! Bad input matrix: every RPC of both services, every field, with the values that must be
//! refused (empty, too long up to a 4 MiB message, control characters, unknown enum values,
//! impossible and future dates, unencodable years, unknown province codes, missing
//! sub-messages). Each must be INVALID_ARGUMENT with a `google.rpc.BadRequest` naming the
//! exact field, and nothing may be written (registrations, issuances and both audit chains
//! are counted before and after).
//!
//! One table row per (rpc, field, bad value, expected field paths); every failing row is
//! reported, not only the first.

mod common;

use common::{
    Counts, World, birth_record, date, fields_of, future, issue_request, register_request,
    status_of,
};
use contracts::moj::civilstatus::v1 as cpb;
use contracts::mps::population::v1 as ppb;
use tonic::Code;
use traffic::client::authorized;

/// Just under the default 4 MiB message limit, so that only the field's own limit refuses it.
const NEAR_4_MIB: usize = 4 * 1024 * 1024 - 64 * 1024;
const CONTROL: &str = "An\u{1b}[2J\u{7}";
const UNKNOWN_ENUM: i32 = 99;

fn long(n: usize) -> String {
    "a".repeat(n)
}

/// One request to one RPC.
enum Call {
    Issue(ppb::IssuePersonalIdRequest),
    BatchItem(ppb::IssuePersonalIdRequest),
    Reissue(ppb::ReissuePersonalIdRequest),
    GetCitizen(ppb::GetCitizenRequest),
    FindCitizen(ppb::FindCitizenByRegistrationRequest),
    IssuanceStatistics(ppb::GetIssuanceStatisticsRequest),
    ListIssuances(ppb::ListIssuancesRequest),
    Register(cpb::RegisterBirthRequest),
    GetRegistration(cpb::GetBirthRegistrationRequest),
    ListRegistrations(cpb::ListBirthRegistrationsRequest),
    Correct(cpb::CorrectBirthRegistrationRequest),
    RegistrationStatistics(cpb::GetRegistrationStatisticsRequest),
}

/// One row of the matrix.
struct Row {
    rpc: &'static str,
    bad: String,
    expect: Vec<String>,
    call: Call,
}

type BirthMutation = (&'static str, &'static str, fn(&mut ppb::BirthRecord));

/// Bad values of every `BirthRecord` field: (path under the record, what is bad, mutation).
fn birth_mutations() -> Vec<BirthMutation> {
    fn reg(b: &mut ppb::BirthRecord) -> &mut ppb::RegistrationReference {
        b.registration.as_mut().expect("registration")
    }
    fn pob(b: &mut ppb::BirthRecord) -> &mut ppb::PlaceOfBirth {
        b.place_of_birth.as_mut().expect("place of birth")
    }
    fn father(b: &mut ppb::BirthRecord) -> &mut ppb::Parent {
        b.father.as_mut().expect("father")
    }
    fn mother(b: &mut ppb::BirthRecord) -> &mut ppb::Parent {
        b.mother.as_mut().expect("mother")
    }
    vec![
        ("full_name", "empty", |b| b.full_name = String::new()),
        ("full_name", "blank", |b| b.full_name = "   ".into()),
        ("full_name", "101 characters", |b| b.full_name = long(101)),
        ("full_name", "nearly 4 MiB", |b| {
            b.full_name = long(NEAR_4_MIB)
        }),
        ("full_name", "control characters", |b| {
            b.full_name = CONTROL.into()
        }),
        ("sex", "unspecified", |b| b.sex = 0),
        ("sex", "unknown enum value", |b| b.sex = UNKNOWN_ENUM),
        ("sex", "negative enum value", |b| b.sex = -1),
        ("date_of_birth", "missing", |b| b.date_of_birth = None),
        ("date_of_birth", "2016-02-30", |b| {
            b.date_of_birth = Some(date(2016, 2, 30))
        }),
        ("date_of_birth", "month 13", |b| {
            b.date_of_birth = Some(date(2016, 13, 1))
        }),
        ("date_of_birth", "day 0", |b| {
            b.date_of_birth = Some(date(2016, 1, 0))
        }),
        ("date_of_birth", "in the future", |b| {
            b.date_of_birth = Some(future())
        }),
        ("date_of_birth", "1899: no century digit", |b| {
            b.date_of_birth = Some(date(1899, 12, 31))
        }),
        ("date_of_birth", "year 0", |b| {
            b.date_of_birth = Some(date(0, 1, 1))
        }),
        ("date_of_birth", "year i32::MAX", |b| {
            b.date_of_birth = Some(date(i32::MAX, 1, 1))
        }),
        ("date_of_birth", "year i32::MIN", |b| {
            b.date_of_birth = Some(date(i32::MIN, 1, 1))
        }),
        ("date_of_birth", "after the registration date", |b| {
            b.date_of_birth = Some(date(2016, 2, 20))
        }),
        ("place_of_birth", "missing", |b| b.place_of_birth = None),
        ("place_of_birth.description", "empty", |b| {
            pob(b).description = String::new()
        }),
        ("place_of_birth.description", "201 characters", |b| {
            pob(b).description = long(201)
        }),
        ("place_of_birth.description", "control characters", |b| {
            pob(b).description = CONTROL.into()
        }),
        (
            "place_of_birth.province_code",
            "unknown province 999",
            |b| pob(b).province_code = "999".into(),
        ),
        ("place_of_birth.province_code", "not three digits", |b| {
            pob(b).province_code = "1a".into()
        }),
        ("registration_province_code", "empty", |b| {
            b.registration_province_code = String::new()
        }),
        ("registration_province_code", "unknown province 999", |b| {
            b.registration_province_code = "999".into()
        }),
        ("registration_province_code", "unknown province 003", |b| {
            b.registration_province_code = "003".into()
        }),
        ("registration_province_code", "four digits", |b| {
            b.registration_province_code = "0001".into()
        }),
        ("home_town", "empty", |b| b.home_town = String::new()),
        ("home_town", "201 characters", |b| b.home_town = long(201)),
        ("home_town", "control characters", |b| {
            b.home_town = CONTROL.into()
        }),
        ("ethnicity", "empty", |b| b.ethnicity = String::new()),
        ("ethnicity", "51 characters", |b| b.ethnicity = long(51)),
        ("ethnicity", "control characters", |b| {
            b.ethnicity = CONTROL.into()
        }),
        ("nationality", "empty", |b| b.nationality = String::new()),
        ("nationality", "lower case", |b| b.nationality = "vn".into()),
        ("nationality", "not an ISO code", |b| {
            b.nationality = "XX".into()
        }),
        ("nationality", "foreign", |b| b.nationality = "FR".into()),
        ("father.full_name", "empty", |b| {
            father(b).full_name = String::new()
        }),
        ("father.full_name", "control characters", |b| {
            father(b).full_name = CONTROL.into()
        }),
        ("father.year_of_birth", "1849", |b| {
            father(b).year_of_birth = 1849
        }),
        ("father.year_of_birth", "in the future", |b| {
            father(b).year_of_birth = 3000
        }),
        ("father.year_of_birth", "negative", |b| {
            father(b).year_of_birth = -1988
        }),
        ("father.ethnicity", "51 characters", |b| {
            father(b).ethnicity = long(51)
        }),
        ("father.nationality", "not an ISO code", |b| {
            father(b).nationality = "Vietnam".into()
        }),
        ("father.residence", "201 characters", |b| {
            father(b).residence = long(201)
        }),
        ("father.personal_id", "five digits", |b| {
            father(b).personal_id = "12345".into()
        }),
        ("mother.full_name", "101 characters", |b| {
            mother(b).full_name = long(101)
        }),
        ("mother.nationality", "lower case", |b| {
            mother(b).nationality = "vn".into()
        }),
        ("mother.residence", "control characters", |b| {
            mother(b).residence = CONTROL.into()
        }),
        ("mother.personal_id", "letters", |b| {
            mother(b).personal_id = "00121600000a".into()
        }),
        ("registration", "missing", |b| b.registration = None),
        ("registration.unit_code", "empty", |b| {
            reg(b).unit_code = String::new()
        }),
        ("registration.unit_code", "33 characters", |b| {
            reg(b).unit_code = long(33)
        }),
        ("registration.unit_code", "space and bang", |b| {
            reg(b).unit_code = "bad unit!".into()
        }),
        ("registration.registration_number", "zero", |b| {
            reg(b).registration_number = 0
        }),
        ("registration.registration_number", "negative", |b| {
            reg(b).registration_number = i64::MIN
        }),
        ("registration.book_number", "empty", |b| {
            reg(b).book_number = String::new()
        }),
        ("registration.book_number", "33 characters", |b| {
            reg(b).book_number = long(33)
        }),
        ("registration.registration_date", "missing", |b| {
            reg(b).registration_date = None
        }),
        ("registration.registration_date", "2016-02-30", |b| {
            reg(b).registration_date = Some(date(2016, 2, 30))
        }),
        ("registration.registration_date", "in the future", |b| {
            reg(b).registration_date = Some(future())
        }),
    ]
}

/// Each birth mutation names exactly its own field, under the record's path.
fn expected_birth_paths(prefix: &str, field: &str, _bad: &str) -> Vec<String> {
    vec![format!("{prefix}{field}")]
}

fn population_rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for (field, bad, mutate) in birth_mutations() {
        let mut issue = issue_request("bad-input-issue", 1);
        mutate(issue.birth.as_mut().expect("birth"));
        rows.push(Row {
            rpc: "IssuePersonalId",
            bad: format!("birth.{field}: {bad}"),
            expect: expected_birth_paths("birth.", field, bad),
            call: Call::Issue(issue.clone()),
        });
        rows.push(Row {
            rpc: "BatchIssuePersonalIds",
            bad: format!("items[0].birth.{field}: {bad}"),
            expect: expected_birth_paths("items[0].birth.", field, bad),
            call: Call::BatchItem(issue),
        });
        let mut corrected = birth_record(2);
        mutate(&mut corrected);
        rows.push(Row {
            rpc: "ReissuePersonalId",
            bad: format!("corrected_birth.{field}: {bad}"),
            expect: expected_birth_paths("corrected_birth.", field, bad),
            call: Call::Reissue(reissue(|r| r.corrected_birth = Some(corrected))),
        });
    }
    let one = |rpc: &'static str, bad: &str, expect: &[&str], call: Call| Row {
        rpc,
        bad: bad.to_owned(),
        expect: expect.iter().map(|s| (*s).to_owned()).collect(),
        call,
    };
    let issue_with = |f: fn(&mut ppb::IssuePersonalIdRequest)| {
        let mut r = issue_request("bad-input-issue", 1);
        f(&mut r);
        r
    };
    for (bad, f) in [
        (
            "empty",
            (|r| r.request_id = String::new()) as fn(&mut ppb::IssuePersonalIdRequest),
        ),
        ("65 characters", |r| r.request_id = long(65)),
        ("control characters", |r| r.request_id = "key\u{0}".into()),
        ("space", |r| r.request_id = "a key".into()),
        ("non-ASCII", |r| r.request_id = "khóa".into()),
    ] {
        rows.push(one(
            "IssuePersonalId",
            &format!("request_id: {bad}"),
            &["request_id"],
            Call::Issue(issue_with(f)),
        ));
        rows.push(one(
            "BatchIssuePersonalIds",
            &format!("items[0].request_id: {bad}"),
            &["items[0].request_id"],
            Call::BatchItem(issue_with(f)),
        ));
    }
    rows.push(one(
        "IssuePersonalId",
        "birth: missing",
        &["birth"],
        Call::Issue(issue_with(|r| r.birth = None)),
    ));
    rows.push(one(
        "BatchIssuePersonalIds",
        "items[0].birth: missing",
        &["items[0].birth"],
        Call::BatchItem(issue_with(|r| r.birth = None)),
    ));
    for (field, bad, f) in [
        (
            "request_id",
            "empty",
            (|r| r.request_id = String::new()) as fn(&mut ppb::ReissuePersonalIdRequest),
        ),
        ("request_id", "control characters", |r| {
            r.request_id = "k\u{7f}".into()
        }),
        ("personal_id", "empty", |r| r.personal_id = String::new()),
        ("personal_id", "eleven digits", |r| {
            r.personal_id = "00121600000".into()
        }),
        ("personal_id", "letters", |r| {
            r.personal_id = "0012160000x1".into()
        }),
        ("corrected_birth", "missing", |r| r.corrected_birth = None),
        ("reason", "empty", |r| r.reason = String::new()),
        ("reason", "501 characters", |r| r.reason = long(501)),
        ("reason", "nearly 4 MiB", |r| r.reason = long(NEAR_4_MIB)),
        ("reason", "control characters", |r| {
            r.reason = CONTROL.into()
        }),
    ] {
        rows.push(one(
            "ReissuePersonalId",
            &format!("{field}: {bad}"),
            &[field],
            Call::Reissue(reissue(f)),
        ));
    }
    for (bad, id) in [
        ("empty", String::new()),
        ("eleven digits", "00121600000".into()),
        ("thirteen digits", "0012160000011".into()),
        ("letters", "abcdefghijkl".into()),
        ("control characters", "00121600\u{0}001".into()),
        ("nearly 4 MiB", long(NEAR_4_MIB)),
    ] {
        rows.push(one(
            "GetCitizen",
            &format!("personal_id: {bad}"),
            &["personal_id"],
            Call::GetCitizen(ppb::GetCitizenRequest { personal_id: id }),
        ));
    }
    let find = |f: fn(&mut ppb::FindCitizenByRegistrationRequest)| {
        let mut r = ppb::FindCitizenByRegistrationRequest {
            request_id: String::new(),
            unit_code: "E2E-TEST".into(),
            book_number: "01/2016".into(),
            registration_number: 1,
        };
        f(&mut r);
        Call::FindCitizen(r)
    };
    rows.push(one(
        "FindCitizenByRegistration",
        "request_id: control characters",
        &["request_id"],
        find(|r| r.request_id = "id\u{1b}".into()),
    ));
    rows.push(one(
        "FindCitizenByRegistration",
        "request_id: 65 characters",
        &["request_id"],
        find(|r| r.request_id = long(65)),
    ));
    rows.push(one(
        "FindCitizenByRegistration",
        "every field empty",
        &["book_number", "registration_number", "unit_code"],
        find(|r| {
            r.unit_code = String::new();
            r.book_number = String::new();
            r.registration_number = 0;
        }),
    ));
    rows.push(one(
        "FindCitizenByRegistration",
        "unit_code: 33 characters",
        &["unit_code"],
        find(|r| r.unit_code = long(33)),
    ));
    rows.push(one(
        "FindCitizenByRegistration",
        "book_number: control characters",
        &["book_number"],
        find(|r| r.book_number = CONTROL.into()),
    ));
    rows.push(one(
        "FindCitizenByRegistration",
        "registration_number: negative",
        &["registration_number"],
        find(|r| r.registration_number = -1),
    ));
    let stats = |f: fn(&mut ppb::GetIssuanceStatisticsRequest)| {
        let mut r = ppb::GetIssuanceStatisticsRequest {
            registered_from: Some(date(2016, 1, 1)),
            registered_to: Some(date(2016, 12, 31)),
            province_codes: vec![],
        };
        f(&mut r);
        Call::IssuanceStatistics(r)
    };
    for (field, bad, f) in [
        (
            "registered_from",
            "missing",
            (|r| r.registered_from = None) as fn(&mut ppb::GetIssuanceStatisticsRequest),
        ),
        ("registered_from", "2016-02-30", |r| {
            r.registered_from = Some(date(2016, 2, 30))
        }),
        ("registered_to", "missing", |r| r.registered_to = None),
        ("registered_to", "before registered_from", |r| {
            r.registered_to = Some(date(2015, 12, 31))
        }),
        ("registered_to", "year i32::MAX", |r| {
            r.registered_to = Some(date(i32::MAX, 12, 31))
        }),
        ("province_codes[0]", "unknown province 999", |r| {
            r.province_codes = vec!["999".into()]
        }),
        ("province_codes[1]", "not three digits", |r| {
            r.province_codes = vec!["001".into(), "1".into()]
        }),
        ("province_codes[0]", "control characters", |r| {
            r.province_codes = vec!["0\u{0}1".into()]
        }),
    ] {
        rows.push(one(
            "GetIssuanceStatistics",
            &format!("{field}: {bad}"),
            &[field],
            stats(f),
        ));
    }
    let list = |f: fn(&mut ppb::ListIssuancesRequest)| {
        let mut r = ppb::ListIssuancesRequest {
            registered_from: Some(date(2016, 1, 1)),
            registered_to: Some(date(2016, 12, 31)),
            page_size: 10,
            page_token: String::new(),
        };
        f(&mut r);
        Call::ListIssuances(r)
    };
    for (field, bad, f) in [
        (
            "registered_from",
            "missing",
            (|r| r.registered_from = None) as fn(&mut ppb::ListIssuancesRequest),
        ),
        ("registered_to", "2016-13-01", |r| {
            r.registered_to = Some(date(2016, 13, 1))
        }),
        ("page_size", "negative", |r| r.page_size = -1),
        ("page_size", "1001", |r| r.page_size = 1001),
        ("page_token", "not a token", |r| {
            r.page_token = "garbage".into()
        }),
        ("page_token", "control characters", |r| {
            r.page_token = "after:\u{0}".into()
        }),
    ] {
        rows.push(one(
            "ListIssuances",
            &format!("{field}: {bad}"),
            &[field],
            list(f),
        ));
    }
    rows
}

fn reissue(f: impl FnOnce(&mut ppb::ReissuePersonalIdRequest)) -> ppb::ReissuePersonalIdRequest {
    let mut r = ppb::ReissuePersonalIdRequest {
        request_id: "bad-input-reissue".into(),
        personal_id: "001216000001".into(),
        corrected_birth: Some(birth_record(2)),
        reason: "Sai giới tính".into(),
    };
    f(&mut r);
    r
}

type ChildMutation = (&'static str, &'static str, fn(&mut cpb::Child));

/// Bad values of every `Child` field.
fn child_mutations() -> Vec<ChildMutation> {
    fn pob(c: &mut cpb::Child) -> &mut cpb::PlaceOfBirth {
        c.place_of_birth.as_mut().expect("place of birth")
    }
    vec![
        ("full_name", "empty", |c| c.full_name = String::new()),
        ("full_name", "101 characters", |c| c.full_name = long(101)),
        ("full_name", "nearly 4 MiB", |c| {
            c.full_name = long(NEAR_4_MIB)
        }),
        ("full_name", "control characters", |c| {
            c.full_name = CONTROL.into()
        }),
        ("sex", "unspecified", |c| c.sex = 0),
        ("sex", "unknown enum value", |c| c.sex = UNKNOWN_ENUM),
        ("sex", "negative enum value", |c| c.sex = i32::MIN),
        ("date_of_birth", "missing", |c| c.date_of_birth = None),
        ("date_of_birth", "2016-02-30", |c| {
            c.date_of_birth = Some(date(2016, 2, 30))
        }),
        ("date_of_birth", "day -1", |c| {
            c.date_of_birth = Some(date(2016, 1, -1))
        }),
        ("date_of_birth", "in the future", |c| {
            c.date_of_birth = Some(future())
        }),
        ("date_of_birth", "1899: no century digit", |c| {
            c.date_of_birth = Some(date(1899, 12, 31))
        }),
        ("date_of_birth", "year i32::MAX", |c| {
            c.date_of_birth = Some(date(i32::MAX, 1, 1))
        }),
        ("place_of_birth", "missing", |c| c.place_of_birth = None),
        ("place_of_birth.description", "empty", |c| {
            pob(c).description = String::new()
        }),
        ("place_of_birth.description", "201 characters", |c| {
            pob(c).description = long(201)
        }),
        ("place_of_birth.description", "control characters", |c| {
            pob(c).description = CONTROL.into()
        }),
        (
            "place_of_birth.province_code",
            "unknown province 999",
            |c| pob(c).province_code = "999".into(),
        ),
        ("place_of_birth.province_code", "two digits", |c| {
            pob(c).province_code = "01".into()
        }),
        ("home_town", "empty", |c| c.home_town = String::new()),
        ("home_town", "201 characters", |c| c.home_town = long(201)),
        ("ethnicity", "empty", |c| c.ethnicity = String::new()),
        ("ethnicity", "control characters", |c| {
            c.ethnicity = CONTROL.into()
        }),
        ("nationality", "empty", |c| c.nationality = String::new()),
        ("nationality", "lower case", |c| c.nationality = "vn".into()),
        ("nationality", "three letters", |c| {
            c.nationality = "VNM".into()
        }),
    ]
}

type ParentMutation = (&'static str, &'static str, fn(&mut cpb::Parent));

fn parent_mutations() -> Vec<ParentMutation> {
    vec![
        ("full_name", "empty", |p| p.full_name = String::new()),
        ("full_name", "control characters", |p| {
            p.full_name = CONTROL.into()
        }),
        ("year_of_birth", "in the future", |p| p.year_of_birth = 3000),
        ("year_of_birth", "i32::MIN", |p| p.year_of_birth = i32::MIN),
        ("ethnicity", "51 characters", |p| p.ethnicity = long(51)),
        ("nationality", "not a code", |p| {
            p.nationality = "Vietnam".into()
        }),
        // Two letters, but not an assigned code: the population registry would refuse
        // the record later, so the civil registry refuses it now.
        ("nationality", "unassigned code UK", |p| {
            p.nationality = "UK".into()
        }),
        ("residence", "201 characters", |p| p.residence = long(201)),
        ("residence", "control characters", |p| {
            p.residence = CONTROL.into()
        }),
        ("personal_id", "five digits", |p| {
            p.personal_id = "12345".into()
        }),
    ]
}

fn civil_rows(registration_name: &str) -> Vec<Row> {
    let mut rows = Vec::new();
    let one = |rpc: &'static str, bad: String, expect: &[&str], call: Call| Row {
        rpc,
        bad,
        expect: expect.iter().map(|s| (*s).to_owned()).collect(),
        call,
    };
    let correction = || cpb::CorrectBirthRegistrationRequest {
        request_id: "bad-input-correct".into(),
        name: registration_name.to_owned(),
        child: register_request("x").child,
        father: register_request("x").father,
        mother: register_request("x").mother,
        unit_code: String::new(),
        reason: "Sửa tên".into(),
    };
    for (field, bad, mutate) in child_mutations() {
        let mut r = register_request("bad-input-register");
        mutate(r.child.as_mut().expect("child"));
        rows.push(one(
            "RegisterBirth",
            format!("child.{field}: {bad}"),
            &[&format!("child.{field}")],
            Call::Register(r),
        ));
        // A correction is checked against today only (the registration date is stored).
        let mut c = correction();
        mutate(c.child.as_mut().expect("child"));
        rows.push(one(
            "CorrectBirthRegistration",
            format!("child.{field}: {bad}"),
            &[&format!("child.{field}")],
            Call::Correct(c),
        ));
    }
    for (field, bad, mutate) in parent_mutations() {
        for who in ["father", "mother"] {
            let mut r = register_request("bad-input-register");
            let mut c = correction();
            let (rp, cp) = if who == "father" {
                (r.father.as_mut(), c.father.as_mut())
            } else {
                (r.mother.as_mut(), c.mother.as_mut())
            };
            mutate(rp.expect("parent"));
            mutate(cp.expect("parent"));
            let path = format!("{who}.{field}");
            rows.push(one(
                "RegisterBirth",
                format!("{path}: {bad}"),
                &[&path],
                Call::Register(r),
            ));
            rows.push(one(
                "CorrectBirthRegistration",
                format!("{path}: {bad}"),
                &[&path],
                Call::Correct(c),
            ));
        }
    }
    let register_with = |f: fn(&mut cpb::RegisterBirthRequest)| {
        let mut r = register_request("bad-input-register");
        f(&mut r);
        Call::Register(r)
    };
    for (field, bad, f) in [
        (
            "request_id",
            "empty",
            (|r| r.request_id = String::new()) as fn(&mut cpb::RegisterBirthRequest),
        ),
        ("request_id", "65 characters", |r| r.request_id = long(65)),
        ("request_id", "control characters", |r| {
            r.request_id = "a\u{1b}b".into()
        }),
        ("kind", "unspecified", |r| r.kind = 0),
        ("kind", "unknown enum value", |r| r.kind = UNKNOWN_ENUM),
        ("child", "missing", |r| r.child = None),
        ("requester", "missing", |r| r.requester = None),
        ("requester.full_name", "empty", |r| {
            r.requester.as_mut().expect("requester").full_name = String::new()
        }),
        ("requester.full_name", "control characters", |r| {
            r.requester.as_mut().expect("requester").full_name = CONTROL.into()
        }),
        ("requester.relationship", "unspecified", |r| {
            r.requester.as_mut().expect("requester").relationship = 0
        }),
        ("requester.relationship", "unknown enum value", |r| {
            r.requester.as_mut().expect("requester").relationship = UNKNOWN_ENUM
        }),
        ("registered_on", "in the future", |r| {
            r.registered_on = Some(future())
        }),
        ("registered_on", "2016-02-30", |r| {
            r.registered_on = Some(date(2016, 2, 30))
        }),
        ("registered_on", "year i32::MIN", |r| {
            r.registered_on = Some(date(i32::MIN, 1, 1))
        }),
    ] {
        rows.push(one(
            "RegisterBirth",
            format!("{field}: {bad}"),
            &[field],
            register_with(f),
        ));
    }
    rows.push(one(
        "RegisterBirth",
        "registered_on: before child.date_of_birth".into(),
        &["child.date_of_birth"],
        register_with(|r| r.registered_on = Some(date(2016, 2, 1))),
    ));
    let correct_with = |f: fn(&mut cpb::CorrectBirthRegistrationRequest), name: &str| {
        let mut c = correction();
        c.name = name.to_owned();
        f(&mut c);
        Call::Correct(c)
    };
    for (field, bad, f) in [
        (
            "request_id",
            "empty",
            (|c| c.request_id = String::new()) as fn(&mut cpb::CorrectBirthRegistrationRequest),
        ),
        ("name", "empty", |c| c.name = String::new()),
        ("name", "not a UUID", |c| {
            c.name = "birthRegistrations/42".into()
        }),
        ("name", "control characters", |c| {
            c.name = "birthRegistrations/\u{0}".into()
        }),
        ("child", "missing", |c| c.child = None),
        ("unit_code", "33 characters", |c| c.unit_code = long(33)),
        ("unit_code", "control characters", |c| {
            c.unit_code = "U\u{7}".into()
        }),
        ("reason", "empty", |c| c.reason = String::new()),
        ("reason", "501 characters", |c| c.reason = long(501)),
        ("reason", "nearly 4 MiB", |c| c.reason = long(NEAR_4_MIB)),
        ("reason", "control characters", |c| {
            c.reason = CONTROL.into()
        }),
    ] {
        rows.push(one(
            "CorrectBirthRegistration",
            format!("{field}: {bad}"),
            &[field],
            correct_with(f, registration_name),
        ));
    }
    for (bad, name) in [
        ("empty", String::new()),
        (
            "no collection",
            "0190f3b2-7d1a-7000-8000-000000000000".into(),
        ),
        ("not a UUID", "birthRegistrations/x".into()),
        ("control characters", "birthRegistrations/\u{1b}".into()),
        ("nearly 4 MiB", long(NEAR_4_MIB)),
    ] {
        rows.push(one(
            "GetBirthRegistration",
            format!("name: {bad}"),
            &["name"],
            Call::GetRegistration(cpb::GetBirthRegistrationRequest { name }),
        ));
    }
    let list = |f: fn(&mut cpb::ListBirthRegistrationsRequest)| {
        let mut r = cpb::ListBirthRegistrationsRequest::default();
        f(&mut r);
        Call::ListRegistrations(r)
    };
    for (field, bad, f) in [
        (
            "page_size",
            "negative",
            (|r| r.page_size = -5) as fn(&mut cpb::ListBirthRegistrationsRequest),
        ),
        ("page_size", "1001", |r| r.page_size = 1001),
        ("page_token", "not a token", |r| r.page_token = "zz".into()),
        ("page_token", "hex of garbage", |r| {
            r.page_token = "6162".into()
        }),
        ("unit_code", "control characters", |r| {
            r.unit_code = "U\u{0}".into()
        }),
        ("province_code", "unknown province 999", |r| {
            r.province_code = "999".into()
        }),
        ("province_code", "letters", |r| {
            r.province_code = "abc".into()
        }),
        ("registered_from", "2016-02-30", |r| {
            r.registered_from = Some(date(2016, 2, 30))
        }),
        ("registered_to", "month 0", |r| {
            r.registered_to = Some(date(2016, 0, 1))
        }),
        ("personal_id_status", "unknown enum value", |r| {
            r.personal_id_status = UNKNOWN_ENUM
        }),
    ] {
        rows.push(one(
            "ListBirthRegistrations",
            format!("{field}: {bad}"),
            &[field],
            list(f),
        ));
    }
    let stats = |f: fn(&mut cpb::GetRegistrationStatisticsRequest)| {
        let mut r = cpb::GetRegistrationStatisticsRequest {
            registered_from: Some(date(2016, 1, 1)),
            registered_to: Some(date(2016, 12, 31)),
            grouping: cpb::StatisticsGrouping::Province.into(),
            province_code: String::new(),
        };
        f(&mut r);
        Call::RegistrationStatistics(r)
    };
    for (field, bad, f) in [
        (
            "registered_from",
            "missing",
            (|r| r.registered_from = None) as fn(&mut cpb::GetRegistrationStatisticsRequest),
        ),
        ("registered_from", "2016-02-30", |r| {
            r.registered_from = Some(date(2016, 2, 30))
        }),
        ("registered_to", "missing", |r| r.registered_to = None),
        ("registered_to", "before registered_from", |r| {
            r.registered_to = Some(date(2015, 1, 1))
        }),
        ("grouping", "unspecified", |r| r.grouping = 0),
        ("grouping", "unknown enum value", |r| {
            r.grouping = UNKNOWN_ENUM
        }),
        ("province_code", "unknown province 999", |r| {
            r.province_code = "999".into()
        }),
        ("province_code", "four digits", |r| {
            r.province_code = "0001".into()
        }),
    ] {
        rows.push(one(
            "GetRegistrationStatistics",
            format!("{field}: {bad}"),
            &[field],
            stats(f),
        ));
    }
    rows
}

/// Sends one row's request; `Ok` means the service accepted it.
async fn send(world: &World, registrar: &str, call: Call) -> Result<(), tonic::Status> {
    let mut population = world.population(common::Cert::Minting);
    let mut civil = world.civil();
    let auth = world.auth(registrar);
    match call {
        Call::Issue(r) => population.issue_personal_id(r).await.map(drop),
        Call::BatchItem(item) => {
            let msg = ppb::BatchIssuePersonalIdsRequest { items: vec![item] };
            let mut answers = population
                .batch_issue_personal_ids(tokio_stream::iter(vec![msg]))
                .await?
                .into_inner();
            let answer = answers.message().await?.expect("one answer per message");
            match answer.results.first().and_then(|r| r.outcome.as_ref()) {
                Some(ppb::batch_issue_result::Outcome::Error(s)) => Err(status_of(s)),
                Some(ppb::batch_issue_result::Outcome::Issued(_)) => Ok(()),
                None => Err(tonic::Status::internal("no outcome")),
            }
        }
        Call::Reissue(r) => population.reissue_personal_id(r).await.map(drop),
        Call::GetCitizen(r) => population.get_citizen(r).await.map(drop),
        Call::FindCitizen(r) => population.find_citizen_by_registration(r).await.map(drop),
        Call::IssuanceStatistics(r) => population.get_issuance_statistics(r).await.map(drop),
        Call::ListIssuances(r) => population.list_issuances(r).await.map(drop),
        Call::Register(r) => civil.register_birth(authorized(r, &auth)).await.map(drop),
        Call::GetRegistration(r) => civil
            .get_birth_registration(authorized(r, &auth))
            .await
            .map(drop),
        Call::ListRegistrations(r) => civil
            .list_birth_registrations(authorized(r, &auth))
            .await
            .map(drop),
        Call::Correct(r) => civil
            .correct_birth_registration(authorized(r, &auth))
            .await
            .map(drop),
        Call::RegistrationStatistics(r) => civil
            .get_registration_statistics(authorized(r, &auth))
            .await
            .map(drop),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_field_of_every_rpc_is_invalid_argument_naming_the_field_and_writes_nothing() {
    // Arrange: both services; one registration to correct; the counts before.
    let world = World::start().await;
    let (registrar, _, _) = world.commune_registrar(0);
    let existing = world.register(&registrar, "bad-input-existing").await;
    let before: Counts = world.counts().await;
    let mut rows = population_rows();
    rows.extend(civil_rows(&existing.name));
    assert!(rows.len() > 250, "the matrix has {} rows", rows.len());

    // Act
    let mut failures = Vec::new();
    for row in rows {
        let outcome = send(&world, &registrar, row.call).await;
        // Assert (per row, collected)
        match outcome {
            Ok(()) => failures.push(format!("{} {}: accepted", row.rpc, row.bad)),
            Err(s) if s.code() != Code::InvalidArgument => failures.push(format!(
                "{} {}: {:?} {}",
                row.rpc,
                row.bad,
                s.code(),
                s.message()
            )),
            Err(s) => {
                let named = fields_of(&s);
                if named != row.expect {
                    failures.push(format!(
                        "{} {}: named {:?}, expected {:?}",
                        row.rpc, row.bad, named, row.expect
                    ));
                }
            }
        }
    }

    // Assert: every row refused as specified, and nothing written anywhere.
    let after = world.counts().await;
    world.stop().await;
    assert!(
        failures.is_empty(),
        "{} rows failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(after, before, "a refused request wrote something");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_personal_id_answers_bad_numbers_as_invalid_without_an_error() {
    // Arrange
    let world = World::start().await;
    let mut reader = world.population(common::Cert::Reader);
    let cases = [
        ("", "must be exactly 12 digits"),
        ("12345", "must be exactly 12 digits"),
        ("0012160000011", "must be exactly 12 digits"),
        ("00121600\u{0}001", "must be exactly 12 digits"),
        ("999216000001", "unknown province code"),
    ];

    // Act
    let mut answers = Vec::new();
    for (raw, _) in cases {
        let answer = reader
            .validate_personal_id(ppb::ValidatePersonalIdRequest {
                personal_id: raw.to_owned(),
            })
            .await
            .expect("ValidatePersonalId never refuses a string")
            .into_inner();
        answers.push(answer);
    }
    let huge = reader
        .validate_personal_id(ppb::ValidatePersonalIdRequest {
            personal_id: long(NEAR_4_MIB),
        })
        .await
        .expect("a 4 MiB string is checked, not refused")
        .into_inner();

    // Assert
    world.stop().await;
    for ((raw, reason), answer) in cases.iter().zip(answers) {
        assert!(!answer.valid, "{raw:?} is valid");
        assert_eq!(answer.invalid_reason, *reason, "{raw:?}");
        assert_eq!(answer.decoded, None);
        assert_eq!(answer.state, ppb::PersonalIdState::Unspecified as i32);
    }
    assert!(!huge.valid);
}
