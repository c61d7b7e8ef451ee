//! The project-wide skip rule for end-to-end tests.
//!
//! A test that cannot run because the machine truly lacks a capability
//! prints `SKIP: <reason>` and passes — unless end-to-end tests are
//! required (`DIFFKEEPER_REQUIRE_E2E=1`, or `CI` set and
//! `DIFFKEEPER_REQUIRE_E2E` not `0`), in which case it fails: CI must never
//! pass on skipped end-to-end tests, however the tests are started.

/// Reports that a test cannot run, or fails it when e2e tests are required.
pub fn skip(reason: &str) {
    let required = match std::env::var("DIFFKEEPER_REQUIRE_E2E").as_deref() {
        Ok("1") => true,
        Ok("0") => false,
        _ => std::env::var_os("CI").is_some_and(|ci| !ci.is_empty() && ci != "false"),
    };
    if required {
        panic!("end-to-end tests are required here (CI or DIFFKEEPER_REQUIRE_E2E=1) but this one cannot run: {reason}");
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
