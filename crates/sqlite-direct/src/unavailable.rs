//! Which database errors mean "not now" rather than "not this": both services answer them
//! UNAVAILABLE, which clients retry, and everything else INTERNAL.

use libsqlite3_sys as ffi;

/// Whether a SQLite result code (primary or extended) says the database cannot be used
/// now rather than that the statement is wrong: locked by another connection (BUSY,
/// LOCKED), the disk failing or full (IOERR, FULL), the file gone or turned read-only
/// (CANTOPEN, READONLY).
pub fn is_unavailable_code(code: i32) -> bool {
    matches!(
        code & 0xff,
        ffi::SQLITE_BUSY
            | ffi::SQLITE_LOCKED
            | ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_CANTOPEN
            | ffi::SQLITE_READONLY
    )
}

/// Whether an error from sqlx, on either backend, says the database is out of reach: the
/// pool timed out or closed, the connection failed (I/O, TLS, protocol), PostgreSQL
/// reports a connection exception (class 08), operator intervention such as a shutdown
/// (class 57) or a missing database (3D000), or SQLite one of [`is_unavailable_code`].
pub fn is_unavailable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => is_unavailable_database_code(&db.code().unwrap_or_default()),
        _ => false,
    }
}

/// [`is_unavailable`] for the code a database error carries: a PostgreSQL SQLSTATE or a
/// SQLite result code.
fn is_unavailable_database_code(code: &str) -> bool {
    // A SQLSTATE is always five characters; SQLite's codes are at most four digits.
    if code.len() == 5 {
        code.starts_with("08") || code.starts_with("57") || code == "3D000"
    } else {
        code.parse().is_ok_and(is_unavailable_code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storage_failures_are_unavailable_and_statement_errors_are_not() {
        for code in [
            ffi::SQLITE_BUSY,
            ffi::SQLITE_BUSY_SNAPSHOT,
            ffi::SQLITE_LOCKED,
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_FSYNC,
            ffi::SQLITE_FULL,
            ffi::SQLITE_CANTOPEN,
            ffi::SQLITE_READONLY,
        ] {
            assert!(is_unavailable_code(code), "{code}");
        }
        for code in [
            ffi::SQLITE_ERROR,
            ffi::SQLITE_CONSTRAINT_UNIQUE,
            ffi::SQLITE_CORRUPT,
            ffi::SQLITE_MISUSE,
        ] {
            assert!(!is_unavailable_code(code), "{code}");
        }
    }

    #[test]
    fn postgres_connection_and_shutdown_states_are_unavailable_and_statement_errors_are_not() {
        // Connection failure, admin shutdown, crash shutdown, cannot connect now, no database.
        for sqlstate in ["08006", "57P01", "57P02", "57P03", "3D000"] {
            assert!(is_unavailable_database_code(sqlstate), "{sqlstate}");
        }
        // Syntax error, unique violation, serialization failure.
        for sqlstate in ["42601", "23505", "40001"] {
            assert!(!is_unavailable_database_code(sqlstate), "{sqlstate}");
        }
        assert!(is_unavailable_database_code("5")); // SQLITE_BUSY
        assert!(!is_unavailable_database_code("19")); // SQLITE_CONSTRAINT
    }
}
