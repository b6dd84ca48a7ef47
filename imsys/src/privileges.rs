//! no_new_privs and an empty capability set, without asking for what is already gone.

use caps::{CapSet, Capability};
use thiserror::Error;

/// Why privileges could not be dropped.
#[derive(Debug, Error)]
pub enum PrivilegeError {
    /// `PR_SET_NO_NEW_PRIVS` failed.
    #[error("no_new_privs: {0}")]
    NoNewPrivs(#[source] nix::Error),
    /// A capability set could not be read or emptied.
    #[error("capabilities ({set}): {why}")]
    Caps {
        /// The capability set concerned.
        set: &'static str,
        /// The kernel's answer.
        #[source]
        why: caps::errors::CapsError,
    },
}

const SETS: [(CapSet, &str); 4] = [
    (CapSet::Ambient, "ambient"),
    (CapSet::Inheritable, "inheritable"),
    (CapSet::Effective, "effective"),
    (CapSet::Permitted, "permitted"),
];

/// Sets no_new_privs, empties the bounding set when `CAP_SETPCAP` allows, then every other set.
///
/// `capset` is called only when a set is not empty already: a unit with
/// `SystemCallFilter=~@privileged` (systemd 252) refuses `capset` with EPERM even when it would
/// change nothing, and a service started with no capabilities must still start there.
pub fn drop_all() -> Result<(), PrivilegeError> {
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    let caps_err =
        |set: &'static str| move |why: caps::errors::CapsError| PrivilegeError::Caps { set, why };
    if caps::has_cap(None, CapSet::Effective, Capability::CAP_SETPCAP).unwrap_or(false) {
        for cap in caps::read(None, CapSet::Bounding).map_err(caps_err("bounding"))? {
            caps::drop(None, CapSet::Bounding, cap).map_err(caps_err("bounding"))?;
        }
    }
    for (set, name) in SETS {
        if !caps::read(None, set).map_err(caps_err(name))?.is_empty() {
            caps::clear(None, set).map_err(caps_err(name))?;
        }
    }
    Ok(())
}

/// True when the effective, permitted, inheritable and ambient sets are all empty.
pub fn none_held() -> bool {
    SETS.iter()
        .all(|(set, _)| caps::read(None, *set).is_ok_and(|s| s.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forbids `capset` with EPERM from here on, as `SystemCallFilter=~@privileged` does.
    fn forbid_capset() {
        use seccompiler::{SeccompAction, SeccompFilter, SeccompRule, TargetArch};
        let arch = TargetArch::try_from(std::env::consts::ARCH).expect("supported arch");
        let rules = [(libc::SYS_capset, Vec::<SeccompRule>::new())]
            .into_iter()
            .collect();
        let filter = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .expect("filter");
        let program: seccompiler::BpfProgram = filter.try_into().expect("compiles");
        seccompiler::apply_filter(&program).expect("installs");
    }

    #[test]
    #[allow(
        clippy::exit,
        reason = "the test's child process reports by its exit code"
    )]
    fn with_nothing_held_no_capset_is_needed() {
        // Capabilities and filters are per process: run the check in a child of its own.
        if std::env::var_os("IMSYS_CHILD").is_some() {
            let first = drop_all().map_err(|e| e.to_string());
            forbid_capset();
            let again = drop_all().map_err(|e| e.to_string());
            let ok = first.is_ok() && none_held() && again.is_ok();
            eprintln!("first={first:?} again={again:?}");
            std::process::exit(if ok { 0 } else { 1 });
        }
        let me = std::env::current_exe().expect("test binary");
        let out = std::process::Command::new(me)
            .args([
                "--exact",
                "privileges::tests::with_nothing_held_no_capset_is_needed",
                "--nocapture",
            ])
            .env("IMSYS_CHILD", "1")
            .output()
            .expect("child runs");
        assert!(
            out.status.success(),
            "drop_all failed under a capset ban: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    #[test]
    #[allow(
        clippy::exit,
        reason = "the test's child process reports by its exit code"
    )]
    fn capset_ban_is_real() {
        // The control: with capabilities held, the same ban makes dropping them fail.
        if std::env::var_os("IMSYS_CHILD").is_some() {
            forbid_capset();
            std::process::exit(if drop_all().is_err() { 0 } else { 1 });
        }
        assert!(!none_held(), "the tests run as root (README: Test it)");
        let me = std::env::current_exe().expect("test binary");
        let status = std::process::Command::new(me)
            .args(["--exact", "privileges::tests::capset_ban_is_real"])
            .env("IMSYS_CHILD", "1")
            .status()
            .expect("child runs");
        assert!(
            status.success(),
            "a held capability was dropped despite the ban"
        );
    }
}
