//! A rebaseline plan and the hasher's signed answer to the ceremony that adopts it. The hasher
//! makes the candidate baseline, compares it with the baseline in force and signs what would
//! change (a [`Plan`]); the operator's proof is made over that plan's digest, so the hasher
//! adopts only the candidate the operator saw, at the generation the plan names, once. Its
//! answer to the proof is signed too (an [`Outcome`], bound to the proof), so a relay cannot
//! pass a faked failure or success off as the hasher's.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::entries::Entries;
use crate::hexfmt::{self, Sha256Digest};

/// Domain of a plan's HMAC.
pub const PLAN_DOMAIN: &[u8] = b"integrity-monitor rebaseline plan v1\0";
/// Domain of an outcome's HMAC.
pub const OUTCOME_DOMAIN: &[u8] = b"integrity-monitor rebaseline outcome v1\0";
/// Most changes a plan lists path by path (its counts are always whole).
pub const MAX_LISTED: usize = 1000;
/// Largest signed plan or outcome payload accepted (1,000 changes of the longest paths fit).
pub const MAX_PAYLOAD: usize = 8 << 20;
/// The plan format's version.
pub const VERSION: u32 = 1;

/// What a rebaseline would change against the baseline in force.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// [`VERSION`].
    pub version: u32,
    /// 16 random bytes, hex: no two plans share a digest.
    pub id: String,
    /// When the candidate was made (the hasher's clock, RFC 3339).
    pub planned_at: String,
    /// The baseline in force, if one is adopted.
    pub base: Option<Base>,
    /// The generation the candidate is adopted at.
    pub generation: u64,
    /// SHA-256 of the candidate's entries ([`entries_digest`]).
    pub candidate: String,
    /// Entries in the candidate.
    pub entries: u64,
    /// Paths the candidate adds.
    pub added: u64,
    /// Paths the candidate drops.
    pub removed: u64,
    /// Paths whose digest, size or category the candidate changes.
    pub changed: u64,
    /// The first [`MAX_LISTED`] changes by path.
    pub changes: Vec<Change>,
}

/// The baseline a plan is made against.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Base {
    /// Its generation.
    pub generation: u64,
    /// SHA-256 of its manifest.
    pub digest: String,
}

/// One path a plan changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// Absolute path, as the baseline holds it.
    pub path: String,
    /// Its digest in force (`None`: added).
    pub old: Option<String>,
    /// Its digest in the candidate (`None`: removed).
    pub new: Option<String>,
}

impl Change {
    /// `added`, `removed` or `changed`.
    pub fn kind(&self) -> &'static str {
        match (&self.old, &self.new) {
            (None, _) => "added",
            (_, None) => "removed",
            _ => "changed",
        }
    }
}

/// A plan or an outcome as signed: the exact bytes (compact JSON) and their HMAC.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    /// The signed bytes.
    pub payload: Vec<u8>,
    /// Hex HMAC-SHA256 under the HMAC key over the domain and the payload.
    pub hmac: String,
}

impl Signed {
    /// `value` as compact JSON, signed under `key` in `domain`.
    pub fn sign(value: &impl Serialize, domain: &[u8], key: &[u8]) -> Signed {
        let payload = serde_json::to_vec(value).unwrap_or_default();
        let hmac = crate::sign::hmac_hex(key, &[domain, &payload]);
        Signed { payload, hmac }
    }

    /// Hex SHA-256 of the payload: what a proof is made over.
    pub fn digest(&self) -> String {
        crate::sign::sha256_hex(&self.payload)
    }

    /// Whether the form is one to relay: bounded, an HMAC's hex.
    pub fn well_formed(&self) -> bool {
        self.payload.len() <= MAX_PAYLOAD && hexfmt::is_sha256_hex(&self.hmac)
    }

    /// The plan, if the HMAC under `key` holds over a plan.
    pub fn open_plan(&self, key: &[u8]) -> Option<Plan> {
        self.open(PLAN_DOMAIN, key)
    }

    /// The outcome, if the HMAC under `key` holds over an outcome.
    pub fn open_outcome(&self, key: &[u8]) -> Option<Outcome> {
        self.open(OUTCOME_DOMAIN, key)
    }

    fn open<T: for<'a> Deserialize<'a>>(&self, domain: &[u8], key: &[u8]) -> Option<T> {
        if self.payload.len() > MAX_PAYLOAD
            || !crate::sign::verify_hex(key, &[domain, &self.payload], &self.hmac)
        {
            return None;
        }
        serde_json::from_slice(&self.payload).ok()
    }
}

/// The hasher's answer to a ceremony's proof, bound to that proof.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Outcome {
    /// The challenge the proof named.
    pub challenge: String,
    /// The plan digest the proof named.
    pub plan: String,
    /// The proof answered (hex), so an answer to another proof is not this one's.
    pub proof: String,
    /// What was adopted, or `None`: refused.
    pub adopted: Option<Adopted>,
    /// Why nothing was adopted (empty when adopted).
    pub refused: String,
    /// The new plan's digest, when the files changed since the plan (the new plan travels
    /// beside the outcome, signed itself).
    pub new_plan: Option<String>,
}

/// The baseline a ceremony adopted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Adopted {
    /// Its generation.
    pub generation: u64,
    /// SHA-256 of its manifest.
    pub digest: String,
    /// Its entries.
    pub entries: u64,
    /// SHA-256 of its entries (the plan's `candidate`).
    pub candidate: String,
}

/// SHA-256 of a baseline's entries as they serialize (path, digest, category, size, in path
/// order): what stays the same between two baselines of the same files whatever their time.
pub fn entries_digest(entries: &Entries) -> Sha256Digest {
    struct Hashing(Sha256);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.update(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(Sha256::new());
    // Writing into a hash cannot fail, and the entries always serialize.
    let _ = serde_json::to_writer(&mut h, entries);
    Sha256Digest(h.0.finalize().into())
}

/// The changes from `old` to `new` (both sorted by path, as a manifest holds them): counts
/// (added, removed, changed) and the first [`MAX_LISTED`] changes.
pub fn compare(old: Option<&Entries>, new: &Entries) -> ([u64; 3], Vec<Change>) {
    let empty = Entries::new();
    let old = old.unwrap_or(&empty);
    let (mut i, mut j) = (0, 0);
    let mut counts = [0u64; 3];
    let mut listed = Vec::new();
    let mut note = |c: Change, counts: &mut [u64; 3]| {
        counts[match c.kind() {
            "added" => 0,
            "removed" => 1,
            _ => 2,
        }] += 1;
        if listed.len() < MAX_LISTED {
            listed.push(c);
        }
    };
    while i < old.len() || j < new.len() {
        let (a, b) = (old.get(i), new.get(j));
        let order = match (&a, &b) {
            (Some(a), Some(b)) => a.path.cmp(b.path),
            (Some(_), None) => std::cmp::Ordering::Less,
            _ => std::cmp::Ordering::Greater,
        };
        let old_hex = a.map(|a| a.hash.to_hex());
        let new_hex = b.map(|b| b.hash.to_hex());
        match (order, a, b) {
            (std::cmp::Ordering::Less, Some(a), _) => {
                let change = Change {
                    path: a.path.to_owned(),
                    old: old_hex,
                    new: None,
                };
                note(change, &mut counts);
                i += 1;
            }
            (std::cmp::Ordering::Greater, _, Some(b)) => {
                let change = Change {
                    path: b.path.to_owned(),
                    old: None,
                    new: new_hex,
                };
                note(change, &mut counts);
                j += 1;
            }
            (_, Some(a), Some(b)) => {
                if a.hash != b.hash || a.size != b.size || a.category != b.category {
                    let change = Change {
                        path: b.path.to_owned(),
                        old: old_hex,
                        new: new_hex,
                    };
                    note(change, &mut counts);
                }
                i += 1;
                j += 1;
            }
            _ => break,
        }
    }
    (counts, listed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::category::Category;

    fn entries(list: &[(&str, u8)]) -> Entries {
        let mut e = Entries::new();
        for (p, h) in list {
            e.push(p, Sha256Digest([*h; 32]), Category::ServiceBinary, 1)
                .expect("room");
        }
        e
    }

    #[test]
    fn a_plan_names_what_is_added_removed_and_changed() {
        let old = entries(&[("/a", 1), ("/b", 2), ("/c", 3)]);
        let new = entries(&[("/a", 1), ("/b", 9), ("/d", 4)]);
        let (counts, listed) = compare(Some(&old), &new);
        assert_eq!(counts, [1, 1, 1]);
        let got: Vec<_> = listed.iter().map(|c| (c.kind(), c.path.as_str())).collect();
        assert_eq!(got, [("changed", "/b"), ("removed", "/c"), ("added", "/d")]);
        let (counts, _) = compare(None, &new);
        assert_eq!(counts, [3, 0, 0], "nothing in force: everything is added");
        assert_ne!(entries_digest(&old), entries_digest(&new));
        assert_eq!(entries_digest(&new), entries_digest(&new.clone()));
    }

    #[test]
    fn a_signed_plan_opens_only_under_its_key_and_domain() {
        let key = [7u8; 32];
        let (counts, changes) = compare(None, &entries(&[("/a", 1)]));
        let plan = Plan {
            version: VERSION,
            id: "00".repeat(16),
            planned_at: "2026-12-07T00:00:00Z".into(),
            base: None,
            generation: 1,
            candidate: "ab".repeat(32),
            entries: 1,
            added: counts[0],
            removed: counts[1],
            changed: counts[2],
            changes,
        };
        let s = Signed::sign(&plan, PLAN_DOMAIN, &key);
        assert_eq!(s.open_plan(&key), Some(plan));
        assert!(s.open_plan(&[8u8; 32]).is_none(), "another key");
        assert!(s.open_outcome(&key).is_none(), "another domain");
        let mut edited = s.clone();
        edited.payload[3] ^= 1;
        assert!(edited.open_plan(&key).is_none(), "edited bytes");
    }
}
