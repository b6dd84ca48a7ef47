//! What the policy watches, and paths as the protocol writes them: the leaf every part of the
//! verifier reads, so none of them has to reach into another for it.

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use protocol::entries::Entries;

use crate::policy::Policy;

/// The current RFC 3339 time, second precision, UTC.
pub(crate) fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// The registry manifest every model dir follows, when the policy names one.
pub(in crate::verifying) fn governed(policy: &Policy) -> Option<&Path> {
    policy.registry_manifest.as_deref()
}

pub(crate) fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether `path` lies beneath one of the policy's model dirs.
pub(crate) fn in_model_dir(policy: &Policy, path: &[u8]) -> bool {
    policy.model_dirs.iter().any(|d| beneath(path, d))
}

/// Whether `policy` watches `path`: listed, or beneath a model dir.
pub(crate) fn watches(policy: &Policy, path: &Path) -> bool {
    policy.files.iter().any(|(p, _)| p == path) || in_model_dir(policy, path.as_os_str().as_bytes())
}

/// Whether `path` lies strictly beneath `dir`, compared as bytes.
pub(crate) fn beneath(path: &[u8], dir: &Path) -> bool {
    let prefix = dir.as_os_str().as_bytes();
    path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/')
}

/// The category `policy` gives `path`, if it watches it.
pub(crate) fn category_of(policy: &Policy, path: &str) -> Option<protocol::Category> {
    if let Some((_, c)) = policy.files.iter().find(|(p, _)| p.as_os_str() == path) {
        return Some(*c);
    }
    in_model_dir(policy, path.as_bytes()).then_some(protocol::Category::ModelFile)
}

/// Where the baseline entries at `key` or beneath it are: the entry at `key` itself, and the
/// range of those beneath (entries are sorted by path bytes, so those beneath form one range:
/// from `key/` up to `key0`, `0` being the byte after `/`).
#[derive(Debug, Clone)]
pub(crate) struct Scope {
    at: Option<usize>,
    beneath: std::ops::Range<usize>,
}

impl Scope {
    /// The indices of the entries in scope.
    pub(crate) fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        self.at.into_iter().chain(self.beneath.clone())
    }

    /// The indices of the entries beneath `key` (not at it).
    pub(crate) fn beneath_range(&self) -> std::ops::Range<usize> {
        self.beneath.clone()
    }

    /// How many entries are in scope.
    pub(crate) fn len(&self) -> usize {
        usize::from(self.at.is_some()) + self.beneath.len()
    }
}

/// The baseline entries at `key` or beneath it.
pub(crate) fn scoped(entries: &Entries, key: &str) -> Scope {
    let at = entries.index_of(key);
    let (low, high) = (format!("{key}/"), format!("{key}0"));
    let from = entries.partition_point(|p| p < low.as_str());
    let to = entries.partition_point(|p| p < high.as_str());
    Scope {
        at,
        beneath: from..to.max(from),
    }
}
