//! Test harness: a fresh database per test (SQLite file or a new PostgreSQL database), the
//! real civil registry served on 127.0.0.1:0, a fake population registry, officials.
#![allow(dead_code)]

pub mod fake_population;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use civil_registry::app::App;
use civil_registry::config::Config;
use civil_registry::domain::model::{ProvinceCode, Role, UnitCode, UnitLevel};
use civil_registry::registry::{new_token, token_hash};
use civil_registry::store::{Store, UnitInput};
use contracts::google::r#type::Date;
use contracts::moj::civilstatus::v1 as pb;
use pb::birth_registration_service_client::BirthRegistrationServiceClient;
use sqlx::Connection;
use tonic::transport::Channel;

pub use fake_population::FakePopulation;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Instantiates each async test function `fn(Backend)` for SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::support::Backend::Sqlite).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    if std::env::var("TEST_POSTGRES_URL").is_err() {
                        service_kit::testing::skip("TEST_POSTGRES_URL not set");
                        return;
                    }
                    super::$name($crate::support::Backend::Postgres).await;
                }
            )*
        }
    };
}

/// Units: a ministry, two provinces, a district with two communes, a commune elsewhere.
pub const UNITS: &[(&str, &str, &str, &str, &str)] = &[
    ("MOJ", "Bo Tu phap", "ministry", "001", ""),
    ("P001", "Ha Noi", "province", "001", "MOJ"),
    ("D001", "Ba Dinh", "district", "001", "P001"),
    ("C001", "Phuc Xa", "commune", "001", "D001"),
    ("C002", "Truc Bach", "commune", "001", "D001"),
    ("P079", "Ho Chi Minh", "province", "079", "MOJ"),
    ("D760", "Quan 1", "district", "079", "P079"),
    ("C760", "Tan Dinh", "commune", "079", "D760"),
];

/// The import row of unit `code` of [`UNITS`], active or not.
pub fn unit_input(code: &str, active: bool) -> UnitInput {
    let (code, name, level, province, parent) = UNITS
        .iter()
        .find(|unit| unit.0 == code)
        .expect("a unit of UNITS");
    UnitInput {
        code: UnitCode::parse(code).unwrap(),
        name: (*name).to_owned(),
        level: UnitLevel::parse(level).unwrap(),
        province_code: ProvinceCode::parse(province).unwrap(),
        parent_code: (!parent.is_empty()).then(|| UnitCode::parse(parent).unwrap()),
        active,
    }
}

/// Officials: (name, unit, role).
pub const OFFICIALS: &[(&str, &str, &str)] = &[
    ("reg_c001", "C001", "registrar"),
    ("reg_c002", "C002", "registrar"),
    ("reg_d001", "D001", "registrar"),
    ("sup_d001", "D001", "supervisor"),
    ("aud_p001", "P001", "auditor"),
    ("aud_p079", "P079", "auditor"),
    ("aud_moj", "MOJ", "auditor"),
    ("reg_c760", "C760", "registrar"),
    ("reg_moj", "MOJ", "registrar"),
    ("revoked_c001", "C001", "registrar"),
];

pub struct TestApp {
    pub addr: SocketAddr,
    pub fake: FakePopulation,
    pub fake_addr: SocketAddr,
    pub tokens: HashMap<&'static str, String>,
    pub store: Store,
    pub cfg: Config,
    pub db_url: String,
    /// The running service's own store (its writes take turns with the service's).
    pub served_store: Option<Store>,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pg_drop: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

async fn fresh_database(
    backend: Backend,
    dir: &std::path::Path,
) -> (String, Option<(String, String)>) {
    match backend {
        Backend::Sqlite => (
            format!("sqlite://{}/civil.db?mode=rwc", dir.display()),
            None,
        ),
        Backend::Postgres => {
            sqlx::any::install_default_drivers();
            let admin = std::env::var("TEST_POSTGRES_URL").expect("TEST_POSTGRES_URL");
            let name = format!("civil_{}", uuid::Uuid::new_v4().simple());
            let mut conn = sqlx::AnyConnection::connect(&admin)
                .await
                .expect("connect to TEST_POSTGRES_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                .execute(&mut conn)
                .await
                .expect("create db");
            conn.close().await.ok();
            let base = admin
                .rsplit_once('/')
                .map(|(b, _)| b.to_owned())
                .unwrap_or(admin.clone());
            (format!("{base}/{name}"), Some((admin, name)))
        }
    }
}

pub fn test_config(db_url: &str, fake_addr: SocketAddr) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen_addr = "127.0.0.1:0".parse().unwrap();
    cfg.server.tls.insecure_plaintext = true;
    cfg.server.drain_timeout_ms = 1_000;
    cfg.database.url = db_url.to_owned();
    cfg.database.health_check_interval_ms = 100;
    cfg.population_registry.uri = format!("http://{fake_addr}");
    cfg.population_registry.tls.insecure_plaintext = true;
    cfg.population_registry.call_timeout_ms = 1_000;
    cfg.population_registry.connect_timeout_ms = 500;
    cfg.relay.backoff_initial_ms = 20;
    cfg.relay.backoff_max_ms = 200;
    cfg.relay.breaker_failure_threshold = 3;
    cfg.relay.breaker_open_ms = 100;
    cfg.relay.idle_poll_ms = 50;
    cfg.relay.lease_ms = 2_000;
    cfg.registration.wait_for_number_ms = 2_000;
    cfg
}

impl TestApp {
    pub async fn start(backend: Backend) -> Self {
        Self::start_with(backend, |_| {}).await
    }

    pub async fn start_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let (db_url, pg_drop) = fresh_database(backend, dir.path()).await;
        let (fake, fake_addr) = FakePopulation::serve().await;
        let mut cfg = test_config(&db_url, fake_addr);
        tweak(&mut cfg);
        let store = Store::connect(&cfg.database).await.expect("connect");
        store.migrate().await.expect("migrate");
        let units: Vec<UnitInput> = UNITS.iter().map(|unit| unit_input(unit.0, true)).collect();
        store.import_units(&units, "test").await.expect("units");
        let mut tokens = HashMap::new();
        let mut rows = Vec::new();
        for (name, unit, role) in OFFICIALS {
            let token = new_token();
            rows.push((
                (*name).to_owned(),
                UnitCode::parse(unit).unwrap(),
                Role::parse(role).unwrap(),
                token_hash(&token),
            ));
            tokens.insert(*name, token);
        }
        store
            .create_officials(&rows, "test")
            .await
            .expect("officials");
        assert!(store.revoke_official("revoked_c001", "test").await.unwrap());
        let mut app = Self {
            addr: "127.0.0.1:1".parse().unwrap(),
            fake,
            fake_addr,
            tokens,
            store,
            cfg,
            db_url,
            shutdown: None,
            task: None,
            served_store: None,
            pg_drop,
            _dir: dir,
        };
        app.launch().await;
        app
    }

    /// Starts (or restarts) the service on a new port.
    pub async fn launch(&mut self) {
        self.try_launch().await.expect("build");
    }

    /// [`TestApp::launch`], reporting a failed start instead of panicking.
    pub async fn try_launch(&mut self) -> anyhow::Result<()> {
        let app = App::build(self.cfg.clone()).await?;
        self.addr = app.grpc_addr();
        self.served_store = Some(app.store().clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(app.serve(async move {
            let _ = rx.await;
        })));
        Ok(())
    }

    /// Another replica of the service on the same database and population registry.
    pub async fn replica(&self) -> Replica {
        let app = App::build(self.cfg.clone()).await.expect("build replica");
        let addr = app.grpc_addr();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(async move {
            let _ = rx.await;
        }));
        Replica {
            addr,
            shutdown: tx,
            task,
        }
    }

    /// Stops the service (graceful).
    pub async fn halt(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("join").expect("serve");
        }
    }

    pub async fn stop(mut self) {
        self.halt().await;
        self.store.close().await;
        if let Some((admin, name)) = self.pg_drop.take()
            && let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut conn)
            .await;
        }
    }

    pub async fn client(&self) -> BirthRegistrationServiceClient<Channel> {
        BirthRegistrationServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub fn token(&self, who: &str) -> String {
        self.tokens[who].clone()
    }

    /// Runs raw SQL on the service's database (to plant differences).
    pub async fn sql(&self, statement: &str) {
        self.try_sql(statement).await.expect("sql");
    }

    /// [`TestApp::sql`], reporting the database's refusal instead of panicking.
    pub async fn try_sql(&self, statement: &str) -> Result<(), sqlx::Error> {
        let mut conn = sqlx::AnyConnection::connect(&self.db_url)
            .await
            .expect("connect");
        let result = sqlx::query(sqlx::AssertSqlSafe(statement.to_owned()))
            .execute(&mut conn)
            .await
            .map(drop);
        conn.close().await.ok();
        result
    }

    pub async fn count_registrations(&self) -> i64 {
        self.scalar("SELECT CAST(COUNT(*) AS BIGINT) FROM registrations")
            .await
    }

    /// The one integer a query on the service's database answers.
    pub async fn scalar(&self, query: &str) -> i64 {
        let mut conn = sqlx::AnyConnection::connect(&self.db_url)
            .await
            .expect("connect");
        let n: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(query.to_owned()))
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.ok();
        n
    }

    /// Polls GetBirthRegistration until the status is not PENDING (bounded).
    pub async fn settled(&self, who: &str, name: &str) -> pb::BirthRegistration {
        let mut client = self.client().await;
        for _ in 0..200 {
            let r = client
                .get_birth_registration(auth(
                    pb::GetBirthRegistrationRequest {
                        name: name.to_owned(),
                    },
                    &self.token(who),
                ))
                .await
                .expect("get")
                .into_inner()
                .registration
                .unwrap();
            if r.personal_id_status != pb::PersonalIdStatus::Pending as i32 {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("registration {name} still pending");
    }
}

pub fn auth<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

pub fn date(y: i32, m: i32, d: i32) -> Option<Date> {
    Some(Date {
        year: y,
        month: m,
        day: d,
    })
}

/// A valid, eligible registration request (registered 2025-09-01, so a foreign element
/// goes to a commune).
pub fn birth(request_id: &str) -> pb::RegisterBirthRequest {
    pb::RegisterBirthRequest {
        request_id: request_id.to_owned(),
        kind: pb::RegistrationKind::FirstTime as i32,
        has_foreign_element: false,
        child: Some(pb::Child {
            full_name: "Nguyễn Văn An".into(),
            sex: pb::Sex::Male as i32,
            date_of_birth: date(2025, 8, 20),
            place_of_birth: Some(pb::PlaceOfBirth {
                description: "Bệnh viện Phụ sản Hà Nội".into(),
                province_code: "001".into(),
            }),
            home_town: "Nam Định".into(),
            ethnicity: "Kinh".into(),
            nationality: "VN".into(),
        }),
        father: Some(pb::Parent {
            full_name: "Nguyễn Văn Bình".into(),
            year_of_birth: 1990,
            nationality: "VN".into(),
            ..Default::default()
        }),
        mother: Some(pb::Parent {
            full_name: "Trần Thị Cúc".into(),
            year_of_birth: 1992,
            nationality: "VN".into(),
            ..Default::default()
        }),
        requester: Some(pb::Requester {
            full_name: "Nguyễn Văn Bình".into(),
            relationship: pb::Relationship::Father as i32,
        }),
        registered_on: date(2025, 9, 1),
    }
}

pub struct Replica {
    pub addr: SocketAddr,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Replica {
    pub async fn client(&self) -> BirthRegistrationServiceClient<Channel> {
        BirthRegistrationServiceClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    pub async fn stop(self) {
        let _ = self.shutdown.send(());
        self.task.await.expect("join").expect("serve");
    }
}
