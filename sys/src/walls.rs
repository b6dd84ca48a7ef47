//! What both processes' sandboxes share: the error they refuse to run with, the first wall
//! they put up, and how the tests' probe harness reports an act it attempted.

use crate::seccomp::SeccompError;

/// Why a process's walls could not be put up; it then refuses to run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// no_new_privs or a capability could not be set or dropped.
    #[error("dropping privileges: {0}")]
    Privileges(String),
    /// Landlock could not be set up, or the kernel has none.
    #[error("landlock: {0}")]
    Landlock(String),
    /// A seccomp filter did not compile or install.
    #[error("seccomp: {0}")]
    Seccomp(#[from] SeccompError),
}

/// Sets no_new_privs and drops every capability, the bounding set included when permitted.
pub fn drop_privileges() -> Result<(), SandboxError> {
    crate::privileges::drop_all().map_err(|e| SandboxError::Privileges(e.to_string()))
}

/// Exit code of a probe whose act the walls refused with an errno.
pub const PROBE_REFUSED: i32 = 3;

/// The tests' probe harness: says on stderr whether `act` was allowed or refused (with its
/// errno), and returns the exit code (0, or [`PROBE_REFUSED`]). A SIGSYS never gets here.
pub fn report_probe(act: &str, result: std::io::Result<()>) -> i32 {
    match result {
        Ok(()) => {
            eprintln!("probe {act}: allowed");
            0
        }
        Err(e) => {
            eprintln!(
                "probe {act}: refused errno={} ({e})",
                e.raw_os_error().unwrap_or(0)
            );
            PROBE_REFUSED
        }
    }
}
