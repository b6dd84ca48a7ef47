//! What each side knows of the baseline's standing beyond the store itself: the api's memory of
//! earlier lives (`Prior`, sent at hello, so the hasher holds its store to it and never commits
//! a generation below one already seen), and what a hasher whose store was rejected scans
//! against so the operator sees what differs (`Reference`): never a baseline in force.

use serde::{Deserialize, Serialize};

use crate::hexfmt::is_sha256_hex;

/// Highest generation either side accepts from the other: far above any real count of
/// rebaselines, far below where adding one could saturate.
pub const MAX_GENERATION: u64 = 1 << 53;
/// Longest description of a trace.
pub const MAX_TRACE_LEN: usize = 1024;

/// What guards the baseline against being rolled back, as the hasher found it at start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    /// The anchor: the TPM's counter, or only the api's audit log and memory.
    pub anchor: Anchor,
    /// The TPM NV index's handle, when the TPM anchors it.
    pub tpm_index: Option<u32>,
    /// The counter's value at the last read or increment, when the TPM anchors it.
    pub tpm_counter: Option<u64>,
}

/// What a rollback of the store is checked against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Anchor {
    /// A TPM NV counter, which only goes up, pinned in the signed generation record: the
    /// store and the audit log rolled back together are still caught.
    Tpm,
    /// The api's audit log and memory record (files root can roll back with the store).
    #[default]
    AuditLog,
}

impl Guard {
    /// The TPM's index and count exactly when the TPM is the anchor.
    pub fn well_formed(&self) -> bool {
        (self.anchor == Anchor::Tpm) == (self.tpm_index.is_some() && self.tpm_counter.is_some())
            && (self.anchor == Anchor::Tpm || (self.tpm_index, self.tpm_counter) == (None, None))
    }
}

impl Anchor {
    /// Its name in the status and attestations.
    pub fn as_str(self) -> &'static str {
        match self {
            Anchor::Tpm => "tpm",
            Anchor::AuditLog => "audit-log",
        }
    }
}

/// What the api remembers of the monitor's earlier lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Prior {
    /// No trace of an earlier life: an empty store may be initialized without the key.
    Nothing,
    /// The last baseline adopted, as the api's memory record or audit log recalls it.
    Adopted {
        /// Its store generation.
        generation: u64,
        /// Hex SHA-256 of its manifest.
        digest: String,
    },
    /// An earlier life left a trace (a rotated audit log, say) but no adoption can be
    /// recalled from it: an empty store is not a first start.
    Trace {
        /// What was found, for the operator.
        what: String,
    },
}

impl Prior {
    /// Within bounds and of the right form.
    pub fn well_formed(&self) -> bool {
        match self {
            Prior::Nothing => true,
            Prior::Adopted { generation, digest } => {
                *generation <= MAX_GENERATION && is_sha256_hex(digest)
            }
            Prior::Trace { what } => what.len() <= MAX_TRACE_LEN,
        }
    }

    /// The generation remembered (0 when none).
    pub fn generation(&self) -> u64 {
        match self {
            Prior::Adopted { generation, .. } => *generation,
            Prior::Nothing | Prior::Trace { .. } => 0,
        }
    }
}

/// What a hasher whose store was rejected compares the files with: per path, the release
/// baseline's digest where the OS image's release lists the path, else the rejected store's
/// entry. Reports name its digest as their baseline digest; it never makes a state trusted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    /// Hex SHA-256 of the reference manifest (what its scan reports name).
    pub digest: String,
    /// Entries it holds.
    pub entries: u32,
    /// The release's `source_commit`, when the release baseline contributed.
    pub release: Option<String>,
    /// What the rejected store contributed.
    pub store: FromStore,
}

/// The rejected store's part in a [`Reference`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FromStore {
    /// Nothing (unreadable, unparsable, or empty).
    Nothing,
    /// Its entries, from a manifest that verified under the key (an older baseline put back).
    Verified,
    /// Its entries, from a manifest that did not verify (another key, edited): shown only.
    Unverified,
}

/// Longest release commit string accepted.
pub const MAX_COMMIT_LEN: usize = 128;
/// Longest reason a refused transition gives.
pub const MAX_REFUSAL_LEN: usize = 4096;
/// Most moved paths a transition lists (the count is always given).
pub const MAX_MOVED: usize = 1024;

/// What the hasher found of the OS image's release at its start: the release in force, and a
/// transition it made or refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseNews {
    /// The release commit in force with the adopted baseline, if one is recorded.
    pub in_force: Option<String>,
    /// A release transition made at this start.
    pub transition: Option<Transition>,
    /// Why a release naming another commit made no transition.
    pub refused: Option<String>,
}

/// A new generation the hasher made itself because the booted image ships another release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transition {
    /// The release in force before.
    pub from: String,
    /// The release in force now.
    pub to: String,
    /// Back to the release in force just before (a rollback of the deployment).
    pub downgrade: bool,
    /// The new baseline's generation.
    pub generation: u64,
    /// Paths that took the new release's digest, at most [`MAX_MOVED`].
    pub moved: Vec<Moved>,
    /// How many paths moved in all.
    pub moved_count: u32,
    /// Paths the old release listed and the new one does not: kept in the baseline as they
    /// were, at most [`MAX_MOVED`].
    pub dropped: Vec<String>,
}

/// One path a transition moved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moved {
    /// The watched path.
    pub path: String,
    /// Its digest in the baseline before (none: not in it).
    pub old: Option<String>,
    /// Its digest now, as the new release lists it.
    pub new: String,
}

/// A release commit as either side accepts it: bounded, no control characters.
pub fn commit_ok(c: &str) -> bool {
    c.len() <= MAX_COMMIT_LEN && !c.chars().any(char::is_control)
}

impl ReleaseNews {
    /// Within bounds and of the right form.
    pub fn well_formed(&self) -> bool {
        self.in_force.as_deref().is_none_or(commit_ok)
            && self
                .refused
                .as_ref()
                .is_none_or(|r| r.len() <= MAX_REFUSAL_LEN)
            && self.transition.as_ref().is_none_or(|t| {
                commit_ok(&t.from)
                    && commit_ok(&t.to)
                    && t.generation <= MAX_GENERATION
                    && t.moved.len() <= MAX_MOVED
                    && t.dropped.len() <= MAX_MOVED
                    && t.moved.iter().all(|m| {
                        crate::report::check_path("moved", &m.path).is_ok()
                            && is_sha256_hex(&m.new)
                            && m.old.as_deref().is_none_or(is_sha256_hex)
                    })
                    && t.dropped
                        .iter()
                        .all(|p| crate::report::check_path("dropped", p).is_ok())
            })
    }
}

impl Reference {
    /// Within bounds and of the right form.
    pub fn well_formed(&self) -> bool {
        is_sha256_hex(&self.digest)
            && self.release.as_ref().is_none_or(|c| commit_ok(c))
            && (self.release.is_some() || self.store != FromStore::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_refuse_what_a_compromised_peer_could_send() {
        let d = "a".repeat(64);
        assert!(Prior::Nothing.well_formed());
        assert!(Prior::Adopted {
            generation: 3,
            digest: d.clone()
        }
        .well_formed());
        assert!(!Prior::Adopted {
            generation: u64::MAX,
            digest: d.clone()
        }
        .well_formed());
        assert!(!Prior::Adopted {
            generation: 1,
            digest: "zz".into()
        }
        .well_formed());
        assert!(!Prior::Trace {
            what: "x".repeat(MAX_TRACE_LEN + 1)
        }
        .well_formed());
        let r = Reference {
            digest: d.clone(),
            entries: 1,
            release: Some("abc".into()),
            store: FromStore::Nothing,
        };
        assert!(r.well_formed());
        let empty = Reference {
            release: None,
            ..r.clone()
        };
        assert!(
            !empty.well_formed(),
            "a reference of nothing is no reference"
        );
        let escape = Reference {
            release: Some("a\u{1b}[2J".into()),
            ..r
        };
        assert!(!escape.well_formed());
    }
}
