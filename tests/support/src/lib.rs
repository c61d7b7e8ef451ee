//! The project-wide skip rule for end-to-end tests.
//!
//! A test that cannot run because the machine truly lacks a capability
//! prints `SKIP: <reason>` and passes — unless `DIFFKEEPER_REQUIRE_E2E=1`
//! (CI sets it), in which case it fails: CI must never pass on skipped
//! end-to-end tests.

/// Reports that a test cannot run, or fails it when e2e tests are required.
pub fn skip(reason: &str) {
    if std::env::var("DIFFKEEPER_REQUIRE_E2E").is_ok_and(|v| v == "1") {
        panic!("DIFFKEEPER_REQUIRE_E2E=1 but the test cannot run: {reason}");
    }
    eprintln!("SKIP: {reason}");
}

/// True (after reporting it) when not running as root; `what` says what
/// needs root.
pub fn lacks_root(what: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    skip(&format!("{what} needs root"));
    true
}
