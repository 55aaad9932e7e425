//! Opening a pool so that a failure says why: when the database refuses or is out of
//! reach, sqlx's pool retries until its acquire timeout and keeps only "pool timed out",
//! which leaves an operator guessing between a wrong host, a wrong password and a
//! database that is down.

use std::fmt;
use std::time::Duration;

use sqlx::Connection as _;
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyConnection, AnyPool};

/// How long the one direct attempt that names the cause may take.
const DIRECT_ATTEMPT: Duration = Duration::from_secs(5);

/// The pool could not open its first connection.
#[derive(Debug)]
pub struct ConnectError {
    /// The database URL without its password or query.
    pub database: String,
    /// Why, as the driver said it.
    pub cause: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.database, self.cause)
    }
}

impl std::error::Error for ConnectError {}

/// Opens the pool; when it times out, makes one direct connection to learn why.
pub async fn connect_pool(options: AnyPoolOptions, url: &str) -> Result<AnyPool, ConnectError> {
    let error = match options.connect(url).await {
        Ok(pool) => return Ok(pool),
        Err(error) => error,
    };
    let cause = match error {
        sqlx::Error::PoolTimedOut => {
            match tokio::time::timeout(DIRECT_ATTEMPT, AnyConnection::connect(url)).await {
                Ok(Err(direct)) => direct.to_string(),
                Ok(Ok(connection)) => {
                    let _ = tokio::time::timeout(DIRECT_ATTEMPT, connection.close()).await;
                    "no connection within the acquire timeout, although a direct one \
                     succeeded (a slow database, or the connection's set-up failed)"
                        .to_owned()
                }
                Err(_) => format!("no answer within {} s", DIRECT_ATTEMPT.as_secs()),
            }
        }
        other => other.to_string(),
    };
    Err(ConnectError {
        database: without_secrets(url),
        cause,
    })
}

/// `url` without the password in its user information and without its query (which may
/// carry one too): what a log line may say of a database.
pub fn without_secrets(url: &str) -> String {
    let without_query = |text: &str| text.split('?').next().unwrap_or_default().to_owned();
    let Some((scheme, rest)) = url.split_once("://") else {
        return without_query(url);
    };
    // The user information first: a password may hold a `?` of its own.
    match rest.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}@{}", without_query(host))
        }
        None => format!("{scheme}://{}", without_query(rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_queries_are_left_out() {
        assert_eq!(
            without_secrets("postgres://app:s3cr:et@db.internal:5432/register?password=x"),
            "postgres://app@db.internal:5432/register"
        );
        assert_eq!(
            without_secrets("sqlite://data/civil-registry.db?mode=rwc"),
            "sqlite://data/civil-registry.db"
        );
        assert_eq!(without_secrets("sqlite::memory:"), "sqlite::memory:");
        assert_eq!(
            without_secrets("postgres://app:pa?ss@db/register"),
            "postgres://app@db/register"
        );
    }

    #[tokio::test]
    async fn a_database_out_of_reach_is_named_with_the_drivers_reason() {
        sqlx::any::install_default_drivers();
        // Port 1 on loopback: nothing listens, so every attempt is refused.
        let url = "postgres://app:secret@127.0.0.1:1/register";
        let error = connect_pool(
            AnyPoolOptions::new().acquire_timeout(Duration::from_millis(300)),
            url,
        )
        .await
        .expect_err("nothing listens there");
        let said = error.to_string();
        assert!(
            said.starts_with("postgres://app@127.0.0.1:1/register: "),
            "{said}"
        );
        assert!(!said.contains("secret"), "{said}");
        assert!(
            said.contains("refused"),
            "the cause, not the pool's timeout: {said}"
        );
    }
}
