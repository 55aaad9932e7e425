//! For tests that need something outside the process (a PostgreSQL server, a Python
//! interpreter): they skip where it is not at hand, and fail where it must be.

/// Set (to anything) where every such test must run, as CI sets it: a skip then fails the
/// test instead of passing it quietly (cargo shows nothing a passing test prints).
pub const REQUIRE_ALL: &str = "REQUIRE_ALL_TESTS";

/// Called by a test that returns without running for want of `what`: prints
/// `skipped: {what}`, or panics when [`REQUIRE_ALL`] is set.
pub fn skip(what: &str) {
    assert!(
        std::env::var_os(REQUIRE_ALL).is_none(),
        "{what}, but {REQUIRE_ALL} is set: this test must run here"
    );
    println!("skipped: {what}");
}
