//! Shared arrangements of the reliability tests: both real services as processes (via
//! `traffic::stack`), clients with each kind of credential, valid requests to mutate, and
//! the counts that prove nothing was written.

#![allow(dead_code)] // each test binary uses its own subset of these helpers

use std::time::Duration;

use chrono::{Datelike as _, NaiveDate};
use contracts::google::r#type::Date;
use contracts::moj::civilstatus::v1 as cpb;
use contracts::moj::civilstatus::v1::birth_registration_service_client::BirthRegistrationServiceClient;
use contracts::mps::population::v1 as ppb;
use contracts::mps::population::v1::population_registry_service_client::PopulationRegistryServiceClient;
use traffic::client::{ClientTls, Target, Tokens, authorized};
use traffic::profile::{Level, Plan, ProfileName};
use traffic::stack::{Build, Certs, SUPERVISOR_ID, Stack, locate_binaries};

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

pub type Civil = BirthRegistrationServiceClient<Channel>;
pub type Population = PopulationRegistryServiceClient<Channel>;

/// Which certificate a population-registry client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cert {
    /// The civil registry's (minting and read allow-lists).
    Minting,
    /// The traffic verifier's (read allow-list only).
    Reader,
    /// Signed by the stack's CA, on no allow-list.
    Stranger,
    /// The civil registry's identity, but signed by another CA.
    OtherCa,
    /// No client certificate at all.
    None,
}

/// Both services running on fresh SQLite databases, with the pilot's units and accounts.
#[derive(Debug)]
pub struct World {
    pub stack: Stack,
    pub tokens: Tokens,
    pub plan: Plan,
    other_ca: Certs,
    _dir: tempfile::TempDir,
}

impl World {
    /// Starts both services (building them with cargo when this checkout changed them).
    pub async fn start() -> Self {
        Self::start_with_env(&[]).await
    }

    /// [`World::start`] with extra (prefixed) environment variables for the services.
    pub async fn start_with_env(env: &[(&str, &str)]) -> Self {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let dir = tempfile::tempdir().expect("temp dir");
        let bins = locate_binaries(Build::Always).expect("service binaries");
        let plan = Plan::new(ProfileName::Pilot2016, 7, 0.001).expect("plan");
        let (stack, tokens) = Stack::start_with_env(&dir.path().join("stack"), bins, &plan, &env)
            .await
            .expect("both services start");
        let other_ca = Certs::create(&dir.path().join("other-ca")).expect("other CA");
        Self {
            stack,
            tokens,
            plan,
            other_ca,
            _dir: dir,
        }
    }

    pub async fn stop(self) {
        self.stack.stop().await.expect("both services stop cleanly");
    }

    fn tls(&self, cert: Cert) -> ClientTls {
        let c = &self.stack.certs;
        let (cert_file, key_file) = match cert {
            Cert::Minting => (Some(&c.civil_client_cert), Some(&c.civil_client_key)),
            Cert::Reader => (Some(&c.traffic_client_cert), Some(&c.traffic_client_key)),
            Cert::Stranger => (Some(&c.stranger_client_cert), Some(&c.stranger_client_key)),
            Cert::OtherCa => (
                Some(&self.other_ca.civil_client_cert),
                Some(&self.other_ca.civil_client_key),
            ),
            Cert::None => (None, None),
        };
        ClientTls {
            ca_file: Some(c.ca.clone()),
            cert_file: cert_file.cloned(),
            key_file: key_file.cloned(),
            server_name: Some("localhost".into()),
            insecure: false,
        }
    }

    /// A population-registry client presenting `cert` (connects lazily).
    pub fn population(&self, cert: Cert) -> Population {
        let ep = Target::new(&self.stack.population.uri(), &self.tls(cert)).expect("endpoint");
        PopulationRegistryServiceClient::new(ep.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// A civil-registry client (officials authenticate by token, not certificate).
    pub fn civil(&self) -> Civil {
        let ep = Target::new(&self.stack.civil.uri(), &self.tls(Cert::None)).expect("endpoint");
        BirthRegistrationServiceClient::new(ep.connect_lazy())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// The first registrar of a commune in a province (official id, unit code, province).
    pub fn commune_registrar(&self, nth_province: usize) -> (String, String, String) {
        let provinces = self.plan.region_codes();
        let province = provinces[nth_province % provinces.len()];
        self.plan
            .officials
            .iter()
            .find_map(|o| {
                let unit = self.plan.units.iter().find(|u| u.code == o.unit_code)?;
                (unit.level == Level::Commune && unit.province_code == province)
                    .then(|| (o.id.clone(), unit.code.clone(), unit.province_code.clone()))
            })
            .expect("a commune registrar in the province")
    }

    /// Another registrar of a different commune in the same province as `unit_code`.
    pub fn neighbour_registrar(&self, unit_code: &str) -> String {
        let province = &self
            .plan
            .units
            .iter()
            .find(|u| u.code == unit_code)
            .expect("unit")
            .province_code;
        self.plan
            .officials
            .iter()
            .find(|o| {
                o.unit_code != unit_code
                    && self.plan.units.iter().any(|u| {
                        u.code == o.unit_code
                            && u.level == Level::Commune
                            && &u.province_code == province
                    })
            })
            .map(|o| o.id.clone())
            .expect("a neighbouring registrar")
    }

    pub fn auth(&self, official_id: &str) -> MetadataValue<Ascii> {
        self.tokens.get(official_id).expect("token").clone()
    }

    pub fn supervisor(&self) -> MetadataValue<Ascii> {
        self.auth(SUPERVISOR_ID)
    }

    /// Registers a valid birth and returns the registration.
    pub async fn register(&self, official_id: &str, request_id: &str) -> cpb::BirthRegistration {
        self.civil()
            .register_birth(authorized(
                register_request(request_id),
                &self.auth(official_id),
            ))
            .await
            .expect("a valid birth is registered")
            .into_inner()
            .registration
            .expect("registration")
    }

    /// What both services hold: civil registrations (statistics over every date), both
    /// audit chains' lengths, and the population registry's issuances.
    pub async fn counts(&self) -> Counts {
        let stats = self
            .civil()
            .get_registration_statistics(authorized(
                cpb::GetRegistrationStatisticsRequest {
                    registered_from: Some(date(1900, 1, 1)),
                    registered_to: Some(date(2399, 12, 31)),
                    grouping: cpb::StatisticsGrouping::Province.into(),
                    province_code: String::new(),
                },
                &self.supervisor(),
            ))
            .await
            .expect("civil statistics")
            .into_inner();
        let issued = self
            .population(Cert::Reader)
            .get_issuance_statistics(ppb::GetIssuanceStatisticsRequest {
                registered_from: Some(date(1900, 1, 1)),
                registered_to: Some(date(2399, 12, 31)),
                province_codes: vec![],
            })
            .await
            .expect("population statistics")
            .into_inner();
        Counts {
            registrations: stats.total.map_or(0, |t| t.registrations),
            civil_audit_entries: audit_entries(&self.stack.civil_admin(&["audit", "verify"]).await),
            population_issued: issued.total.map_or(0, |t| t.issued),
            population_audit_entries: audit_entries(
                &self.stack.population_admin(&["audit", "verify"]).await,
            ),
        }
    }

    /// The services' log files (stderr: JSON lines).
    pub fn logs(&self) -> (String, String) {
        let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
        (
            read(&self.stack.civil.log),
            read(&self.stack.population.log),
        )
    }
}

fn audit_entries<E: std::fmt::Debug>(out: &Result<String, E>) -> u64 {
    let out = out.as_ref().expect("audit verify runs");
    out.lines()
        .find_map(|l| l.trim().strip_prefix("audit chain intact: "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("audit chain not intact: {out}"))
}

/// What was written, as seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub registrations: i64,
    pub civil_audit_entries: u64,
    pub population_issued: i64,
    pub population_audit_entries: u64,
}

pub fn date(year: i32, month: i32, day: i32) -> Date {
    Date { year, month, day }
}

pub fn proto_date(d: NaiveDate) -> Date {
    date(d.year(), d.month() as i32, d.day() as i32)
}

/// Today in Vietnam (+07:00), the services' reference for "not in the future".
pub fn today() -> NaiveDate {
    let offset = chrono::FixedOffset::east_opt(7 * 3600).expect("offset");
    chrono::Utc::now().with_timezone(&offset).date_naive()
}

/// A date a few days ahead: in the future whatever the time zone of the machine.
pub fn future() -> Date {
    proto_date(today() + chrono::Days::new(3))
}

/// A valid first-time registration of a Vietnamese child born 2016-03-01.
pub fn register_request(request_id: &str) -> cpb::RegisterBirthRequest {
    let parent = |name: &str, year: i32| cpb::Parent {
        full_name: name.into(),
        year_of_birth: year,
        ethnicity: "Kinh".into(),
        nationality: "VN".into(),
        residence: "Phường Hàng Bạc, Hoàn Kiếm, Hà Nội".into(),
        personal_id: String::new(),
    };
    cpb::RegisterBirthRequest {
        request_id: request_id.into(),
        kind: cpb::RegistrationKind::FirstTime.into(),
        has_foreign_element: false,
        child: Some(cpb::Child {
            full_name: "Nguyễn Văn An".into(),
            sex: cpb::Sex::Male.into(),
            date_of_birth: Some(date(2016, 3, 1)),
            place_of_birth: Some(cpb::PlaceOfBirth {
                description: "Bệnh viện Phụ sản Hà Nội".into(),
                province_code: "001".into(),
            }),
            home_town: "Hà Nội".into(),
            ethnicity: "Kinh".into(),
            nationality: "VN".into(),
        }),
        father: Some(parent("Nguyễn Văn Bình", 1988)),
        mother: Some(parent("Trần Thị Cúc", 1990)),
        requester: Some(cpb::Requester {
            full_name: "Nguyễn Văn Bình".into(),
            relationship: cpb::Relationship::Father.into(),
        }),
        registered_on: Some(date(2016, 3, 10)),
    }
}

/// A valid birth record for the population registry.
pub fn birth_record(registration_number: i64) -> ppb::BirthRecord {
    let parent = |name: &str, year: i32| ppb::Parent {
        full_name: name.into(),
        year_of_birth: year,
        ethnicity: "Kinh".into(),
        nationality: "VN".into(),
        residence: "Hà Nội".into(),
        personal_id: String::new(),
    };
    ppb::BirthRecord {
        full_name: "Lê Thị Hoa".into(),
        sex: ppb::Sex::Female.into(),
        date_of_birth: Some(date(2016, 2, 1)),
        place_of_birth: Some(ppb::PlaceOfBirth {
            description: "Bệnh viện Bạch Mai".into(),
            province_code: "001".into(),
        }),
        registration_province_code: "001".into(),
        home_town: "Hà Nội".into(),
        ethnicity: "Kinh".into(),
        nationality: "VN".into(),
        father: Some(parent("Lê Văn Minh", 1985)),
        mother: Some(parent("Phạm Thị Lan", 1987)),
        registration: Some(ppb::RegistrationReference {
            unit_code: "E2E-TEST".into(),
            registration_number,
            book_number: "01/2016".into(),
            registration_date: Some(date(2016, 2, 15)),
        }),
    }
}

pub fn issue_request(request_id: &str, registration_number: i64) -> ppb::IssuePersonalIdRequest {
    ppb::IssuePersonalIdRequest {
        request_id: request_id.into(),
        birth: Some(birth_record(registration_number)),
    }
}

/// A `tonic::Status` rebuilt from a batch item's `google.rpc.Status`, so that the same
/// helpers read its details.
pub fn status_of(s: &contracts::google::rpc::Status) -> tonic::Status {
    use prost::Message as _;
    tonic::Status::with_details(
        tonic::Code::from(s.code),
        s.message.clone(),
        s.encode_to_vec().into(),
    )
}

/// The field paths a status names, sorted and without duplicates.
pub fn fields_of(status: &tonic::Status) -> Vec<String> {
    let mut f: Vec<String> = service_kit::status::field_violations_of(status)
        .into_iter()
        .map(|(f, _)| f)
        .collect();
    f.sort();
    f.dedup();
    f
}

/// A generous per-call deadline for requests in the tests.
pub const CALL_DEADLINE: Duration = Duration::from_secs(20);

pub mod fleet;
