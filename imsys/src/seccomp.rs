//! Seccomp filters kept as data (`seccomp/*.json`, seccompiler's format, a comment on every
//! rule), compiled for the architecture at hand and installed in a given order.
//!
//! The files name x86_64's syscalls. Where another architecture has no such syscall, its libc
//! uses the `*at`/`p*` form the files list beside it, so those rules are dropped there: a
//! fixed list, so a misspelt name still fails on every architecture.

use std::collections::HashMap;

use seccompiler::{BpfProgram, TargetArch};
use serde_json::Value;

/// Why filters could not be compiled or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The JSON is not JSON.
    #[error("filters are not JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// seccompiler refused the filters for this architecture (an unknown syscall name, a bad rule).
    #[error("{arch:?}: {why}")]
    Compile {
        /// The architecture compiled for.
        arch: TargetArch,
        /// seccompiler's message.
        why: String,
    },
    /// No filters are kept for this machine's architecture.
    #[error("no seccomp filters for {0}")]
    Arch(&'static str),
    /// A filter named for installation is not in the file.
    #[error("filter `{0}` missing")]
    Missing(String),
    /// The kernel refused a filter.
    #[error("{name}: {why}")]
    Install {
        /// The filter.
        name: String,
        /// seccompiler's message.
        why: String,
    },
}

/// Syscalls x86_64 has and aarch64 has not; aarch64's libc uses the form after the arrow,
/// which the filters list too: poll → ppoll, rename → renameat/renameat2, unlink → unlinkat,
/// epoll_wait → epoll_pwait.
const X86_64_ONLY: [&str; 4] = ["poll", "rename", "unlink", "epoll_wait"];

/// The architectures the filters are kept for.
pub const ARCHES: [TargetArch; 2] = [TargetArch::x86_64, TargetArch::aarch64];

/// Compiles the filters in `json` for `arch`.
pub fn compile(json: &str, arch: TargetArch) -> Result<HashMap<String, BpfProgram>, SeccompError> {
    let mut doc: Value = serde_json::from_str(json)?;
    if arch != TargetArch::x86_64 {
        for filter in doc.as_object_mut().into_iter().flat_map(|o| o.values_mut()) {
            if let Some(rules) = filter.get_mut("filter").and_then(Value::as_array_mut) {
                rules.retain(|r| {
                    !r.get("syscall")
                        .and_then(Value::as_str)
                        .is_some_and(|s| X86_64_ONLY.contains(&s))
                });
            }
        }
    }
    seccompiler::compile_from_json(doc.to_string().as_bytes(), arch).map_err(|e| {
        SeccompError::Compile {
            arch,
            why: e.to_string(),
        }
    })
}

/// Compiles `json` for this machine and installs the filters `names`, in order (the allowlist
/// last: installing needs `seccomp` and `prctl`), skipping those `skip` names.
pub fn install(
    json: &str,
    names: &[&str],
    skip: impl Fn(&str) -> bool,
) -> Result<(), SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))?;
    let mut filters = compile(json, arch)?;
    for name in names {
        let filter = filters
            .remove(*name)
            .ok_or_else(|| SeccompError::Missing((*name).to_owned()))?;
        if skip(name) {
            continue;
        }
        seccompiler::apply_filter(&filter).map_err(|e| SeccompError::Install {
            name: (*name).to_owned(),
            why: e.to_string(),
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: [(&str, &str); 2] = [
        ("hasher", include_str!("../../seccomp/hasher.json")),
        ("api", include_str!("../../seccomp/api.json")),
    ];

    #[test]
    fn every_filter_compiles_for_every_architecture() {
        for (name, json) in FILES {
            for arch in ARCHES {
                let filters = compile(json, arch).unwrap_or_else(|e| panic!("{name}: {e}"));
                assert!(!filters.is_empty(), "{name} {arch:?}");
            }
        }
    }

    #[test]
    fn a_misspelt_syscall_fails_everywhere() {
        let bad = r#"{"f":{"mismatch_action":"kill_process","match_action":"allow","filter":[{"syscall":"reed"}]}}"#;
        for arch in ARCHES {
            assert!(compile(bad, arch).is_err(), "{arch:?}");
        }
        let legacy = r#"{"f":{"mismatch_action":"kill_process","match_action":"allow","filter":[{"syscall":"read"},{"syscall":"poll"}]}}"#;
        assert!(
            compile(legacy, TargetArch::aarch64).is_ok(),
            "dropped on aarch64"
        );
        assert!(
            seccompiler::compile_from_json(legacy.as_bytes(), TargetArch::aarch64).is_err(),
            "the control: aarch64 has no poll"
        );
    }
}
