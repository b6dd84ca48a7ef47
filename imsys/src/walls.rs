//! What both processes' sandboxes share: the error they refuse to run with, the first wall
//! they put up, the Landlock ruleset each fills with its own rules, and how the tests' probe
//! harness reports an act it attempted.

use std::path::{Path, PathBuf};

use landlock::{
    Access, AccessFs, AccessNet, BitFlags, Ruleset, RulesetAttr, RulesetCreated,
    RulesetCreatedAttr, RulesetStatus, Scope, ABI,
};

use crate::privileges::PrivilegeError;
use crate::seccomp::SeccompError;

/// The Landlock ABI whose rights this code knows; newer kernels are asked for no more. One
/// pin for both processes: a right one of them handles and the other not would be a wall
/// that differs by accident.
pub const ABI_PINNED: ABI = ABI::V6;

/// Why a process's walls could not be put up; it then refuses to run.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// no_new_privs or a capability could not be set or dropped.
    #[error("dropping privileges: {0}")]
    Privileges(#[from] PrivilegeError),
    /// The Landlock ruleset could not be made, filled or enforced.
    #[error("landlock: {0}")]
    Landlock(#[from] landlock::RulesetError),
    /// A path a rule names could not be opened.
    #[error("landlock: {}: {source}", path.display())]
    LandlockPath {
        /// The path the rule names.
        path: PathBuf,
        /// Why it could not be opened.
        #[source]
        source: landlock::PathFdError,
    },
    /// The kernel enforces no Landlock ruleset.
    #[error("landlock: this kernel enforces no Landlock ruleset (needs Linux 5.13+ with landlock in the LSM list); --insecure-no-sandbox runs without it, outside production")]
    LandlockNotEnforced,
    /// A seccomp filter did not compile or install.
    #[error("seccomp: {0}")]
    Seccomp(#[from] SeccompError),
}

/// Sets no_new_privs and drops every capability, the bounding set included when permitted.
pub fn drop_privileges() -> Result<(), SandboxError> {
    Ok(crate::privileges::drop_all()?)
}

/// A Landlock ruleset that handles every file, TCP and scope right of [`ABI_PINNED`]: what no
/// rule added allows is refused once it is enforced.
pub struct Landlock {
    ruleset: RulesetCreated,
}

impl Landlock {
    /// The ruleset, allowing nothing yet.
    pub fn new() -> Result<Landlock, SandboxError> {
        let ruleset = Ruleset::default()
            .handle_access(AccessFs::from_all(ABI_PINNED))?
            .handle_access(AccessNet::from_all(ABI_PINNED))?
            .scope(Scope::from_all(ABI_PINNED))?
            .create()?;
        Ok(Landlock { ruleset })
    }

    /// Allows `access` beneath `path` (on `path` itself, for a file). A path that cannot be
    /// opened is [`SandboxError::LandlockPath`]: the caller says whether that is fatal.
    pub fn allow_beneath(
        &mut self,
        path: &Path,
        access: BitFlags<AccessFs>,
    ) -> Result<(), SandboxError> {
        let fd = landlock::PathFd::new(path).map_err(|source| SandboxError::LandlockPath {
            path: path.to_owned(),
            source,
        })?;
        (&mut self.ruleset).add_rule(landlock::PathBeneath::new(fd, access))?;
        Ok(())
    }

    /// Allows a TCP connect to `port`.
    pub fn allow_connect(&mut self, port: u16) -> Result<(), SandboxError> {
        (&mut self.ruleset).add_rule(landlock::NetPort::new(port, AccessNet::ConnectTcp))?;
        Ok(())
    }

    /// Enforces the ruleset on this thread and the threads it creates later; returns what the
    /// kernel enforced (fully or partly), for the log. A kernel that enforces none is refused.
    pub fn enforce(self) -> Result<String, SandboxError> {
        match self.ruleset.restrict_self()?.ruleset {
            RulesetStatus::NotEnforced => Err(SandboxError::LandlockNotEnforced),
            s => Ok(format!("{s:?}")),
        }
    }
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
