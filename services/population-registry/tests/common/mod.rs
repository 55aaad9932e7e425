//! Shared arrangements: a fresh database per test (SQLite file or a new
//! PostgreSQL database when TEST_POSTGRES_URL is set), a `TestApp` serving the
//! real registry on 127.0.0.1:0, record builders, and a throwaway PKI.
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use contracts::google::r#type::Date;
use contracts::mps::population::v1 as pb;
use contracts::mps::population::v1::population_registry_service_client::PopulationRegistryServiceClient;
use population_registry::app::App;
use population_registry::config::Config;
use population_registry::store::Store;
use sqlx::Connection as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

pub type Client = PopulationRegistryServiceClient<Channel>;

/// A database that lives as long as the test.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
    pg: Option<(String, String)>,
}

impl TestDb {
    /// A fresh SQLite file in a temporary directory.
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite://{}/registry.db?mode=rwc", dir.path().display());
        Self {
            url,
            _dir: Some(dir),
            pg: None,
        }
    }

    /// A fresh PostgreSQL database, or None when TEST_POSTGRES_URL is unset.
    pub async fn postgres() -> Option<Self> {
        let admin = std::env::var("TEST_POSTGRES_URL").ok()?;
        sqlx::any::install_default_drivers();
        let name = format!("pr_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::AnyConnection::connect(&admin)
            .await
            .expect("connect to TEST_POSTGRES_URL");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create database");
        let _ = conn.close().await;
        let base = admin.rsplit_once('/').map_or(admin.as_str(), |(b, _)| b);
        Some(Self {
            url: format!("{base}/{name}"),
            _dir: None,
            pg: Some((admin, name)),
        })
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((admin, name)) = self.pg.take() {
            // Best effort, on a thread of its own: Drop cannot await.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("runtime");
                rt.block_on(async {
                    if let Ok(mut conn) = sqlx::AnyConnection::connect(&admin).await {
                        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                            "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                        )))
                        .execute(&mut conn)
                        .await;
                    }
                });
            })
            .join();
        }
    }
}

/// Test configuration: 127.0.0.1:0, plaintext, short probe and timeouts.
pub fn config(db: &TestDb) -> Config {
    let mut cfg = Config::default();
    cfg.server.listen_addr = "127.0.0.1:0".parse().expect("addr");
    cfg.server.tls.insecure_plaintext = true;
    cfg.server.drain_timeout_ms = 2_000;
    cfg.database.url = db.url.clone();
    cfg.database.health_probe_interval_ms = 50;
    cfg.database.acquire_timeout_ms = 500;
    cfg.database.operation_timeout_ms = 3_000;
    cfg
}

/// The registry serving on 127.0.0.1:0.
pub struct TestApp {
    pub addr: SocketAddr,
    pub client: Client,
    pub store: Store,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    /// Starts with the test configuration.
    pub async fn spawn(db: &TestDb) -> Self {
        Self::spawn_with(config(db)).await
    }

    /// Starts with `cfg` (plaintext client).
    pub async fn spawn_with(cfg: Config) -> Self {
        let app = App::build(&cfg).await.expect("app builds");
        let addr = app.local_addr();
        let store = app.store().clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(app.serve(async move {
            let _ = rx.await;
        }));
        let channel = Channel::from_shared(format!("http://{addr}"))
            .expect("uri")
            .connect_lazy();
        Self {
            addr,
            client: PopulationRegistryServiceClient::new(channel),
            store,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// The stored citizen holding `personal_id`; panics when it is not found.
    pub async fn citizen(&mut self, personal_id: &str) -> pb::Citizen {
        self.client
            .get_citizen(pb::GetCitizenRequest {
                personal_id: personal_id.to_owned(),
            })
            .await
            .unwrap_or_else(|e| panic!("citizen {personal_id}: {e}"))
            .into_inner()
            .citizen
            .expect("citizen")
    }

    /// The gRPC health status of the whole server.
    pub async fn health(&self) -> i32 {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .expect("uri")
            .connect_lazy();
        let mut client = tonic_health::pb::health_client::HealthClient::new(channel);
        client
            .check(tonic_health::pb::HealthCheckRequest {
                service: String::new(),
            })
            .await
            .map(|r| r.into_inner().status)
            .unwrap_or(-1)
    }

    /// Shuts down and waits (bounded).
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(Duration::from_secs(10), task).await;
        }
    }
}

pub fn date(year: i32, month: i32, day: i32) -> Option<Date> {
    Some(Date { year, month, day })
}

/// A valid record: a boy born 2021-03-04 in Ha Noi, registered 2021-03-10 as entry `number`.
pub fn birth(name: &str, number: i64) -> pb::BirthRecord {
    pb::BirthRecord {
        full_name: name.to_owned(),
        sex: pb::Sex::Male.into(),
        date_of_birth: date(2021, 3, 4),
        place_of_birth: Some(pb::PlaceOfBirth {
            description: "Bệnh viện Phụ sản Hà Nội".into(),
            province_code: "001".into(),
        }),
        registration_province_code: "001".into(),
        home_town: "Nam Định".into(),
        ethnicity: "Kinh".into(),
        nationality: "VN".into(),
        father: Some(pb::Parent {
            full_name: "Nguyễn Văn Bố".into(),
            year_of_birth: 1990,
            ethnicity: "Kinh".into(),
            nationality: "VN".into(),
            ..Default::default()
        }),
        mother: Some(pb::Parent {
            full_name: "Trần Thị Mẹ".into(),
            year_of_birth: 1992,
            nationality: "VN".into(),
            ..Default::default()
        }),
        registration: Some(pb::RegistrationReference {
            unit_code: "HN-BD-01".into(),
            registration_number: number,
            book_number: "01/2021".into(),
            registration_date: date(2021, 3, 10),
        }),
    }
}

/// `message` with a client deadline: a call the service should answer at once fails with
/// DEADLINE_EXCEEDED if it hangs instead, which the test's assertion on the code catches
/// (no test times a call itself).
pub fn within<T>(message: T, deadline: std::time::Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(deadline);
    request
}

pub fn issue(request_id: &str, birth: pb::BirthRecord) -> pb::IssuePersonalIdRequest {
    pb::IssuePersonalIdRequest {
        request_id: request_id.to_owned(),
        birth: Some(birth),
    }
}

/// A refusal's code and `ErrorInfo` reason (empty when it has none), to compare in one go.
pub fn refusal(status: &tonic::Status) -> (tonic::Code, String) {
    (
        status.code(),
        service_kit::status::reason_of(status).unwrap_or_default(),
    )
}

/// Every warning the process has logged since the first call, as the text log renders it.
/// The subscriber is process-wide: callers must look for what only their test logs.
pub fn logged_warnings() -> String {
    use std::sync::{Mutex, Once, PoisonError};

    static LOGGED: Mutex<Vec<u8>> = Mutex::new(Vec::new());
    struct Log;
    impl std::io::Write for Log {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            let mut logged = LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
            logged.extend_from_slice(bytes);
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_ansi(false)
            .with_writer(|| Log)
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("no other subscriber");
    });
    let logged = LOGGED.lock().unwrap_or_else(PoisonError::into_inner);
    String::from_utf8_lossy(&logged).into_owned()
}
