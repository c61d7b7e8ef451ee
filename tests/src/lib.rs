//! End-to-end test harness: a private containerd 1.6 per test, with the
//! DiffKeeper shim on its `PATH`, a busybox rootfs and a hand-built OCI
//! image. Everything it creates is removed by `Drop` guards, also when a
//! test panics.

pub mod binaries;
pub mod bounded;
pub mod containerd;
pub mod cri;
pub mod image;
pub mod leaks;
pub mod readme;
pub mod skip;

pub use binaries::{cli_binary, installer_binary, shim_binary};
pub use containerd::{Containerd, CtrOutput};
pub use image::{busybox_rootfs, OciImage};
pub use skip::{e2e_unavailable, skip};

/// Our runtime's name in containerd.
pub const DIFFKEEPER_RUNTIME: &str = "io.containerd.diffkeeper.v1";
/// The reference runtime the harness is proven against.
pub const RUNC_RUNTIME: &str = "io.containerd.runc.v2";
/// Both runtimes, ours first.
pub const RUNTIMES: [&str; 2] = [DIFFKEEPER_RUNTIME, RUNC_RUNTIME];

/// A private containerd for one test, or `None` (after printing why, or
/// failing in CI) when this machine cannot run the end-to-end suites.
pub fn containerd_or_skip() -> Option<Containerd> {
    containerd_with_state_or_skip(None)
}

/// [`containerd_or_skip`], with the state directory at `state` if given
/// (see [`Containerd::start_with_state_in`]).
pub fn containerd_with_state_or_skip(state: Option<&std::path::Path>) -> Option<Containerd> {
    if let Some(reason) = e2e_unavailable() {
        skip(&reason);
        return None;
    }
    let started = match state {
        Some(state) => Containerd::start_with_state_in(state),
        None => Containerd::start(),
    };
    Some(started.unwrap_or_else(|err| panic!("cannot start containerd: {err}")))
}

/// A private containerd with its CRI plugin and a client for it (see
/// [`cri`]), or `None` as for [`containerd_or_skip`].
pub fn cri_or_skip() -> Option<(Containerd, cri::Cri)> {
    if let Some(reason) = e2e_unavailable() {
        skip(&reason);
        return None;
    }
    Some(
        Containerd::start_cri()
            .unwrap_or_else(|err| panic!("cannot start containerd with CRI: {err}")),
    )
}
