//! The OS image's release at start: recorded in force with the baseline, followed by a new
//! generation the hasher makes itself when the booted image ships another release it can
//! believe (`verifying::transition`), or refused, with a `release_unverified` finding against
//! the release file in every report until the next start.

use std::path::Path;

use protocol::standing::{Transition, MAX_MOVED};
use protocol::{Category, Finding};

use super::Server;
use crate::storing::key::Key;
use crate::storing::store::Current;
use crate::verifying::release::Release;
use crate::verifying::releasestore::{self, InForce};
use crate::verifying::transition;
use crate::verifying::vouch::Vouch;

impl Server {
    /// Follows the release the booted image ships, once, at the first hello.
    pub(super) fn follow_release(&mut self) {
        let (Some(path), Some(key)) = (self.v.policy().release_baseline.clone(), &self.key) else {
            return;
        };
        let Some(digest) = self.v.baseline().map(|b| b.digest.clone()) else {
            return;
        };
        let key = key.bytes().to_vec();
        let (next, provenance) = match Release::load_with_provenance(&path) {
            Ok(r) => r,
            Err(e) => return self.refuse(&path, e.to_string()),
        };
        let store = self.ledger.store();
        let in_force = match releasestore::load(store, &key, &digest) {
            Ok(f) => f,
            Err(why) => {
                let agrees = self
                    .v
                    .baseline()
                    .is_some_and(|b| transition::agrees(self.v.policy(), &b.manifest, &next));
                if !agrees {
                    return self.refuse(&path, format!("no release is recorded in force with the baseline ({why}) and the baseline disagrees with release {}: the key ceremony adopts it", next.commit));
                }
                let f = InForce {
                    current: next,
                    previous: None,
                    seen: Vec::new(),
                };
                releasestore::keep(store, &key, &digest, &f);
                tracing::info!(commit = f.current.commit, "release recorded in force");
                self.release.in_force = Some(f.current.commit);
                return;
            }
        };
        self.release.in_force = Some(in_force.current.commit.clone());
        let planned = match self.v.baseline() {
            Some(b) => transition::plan(self.v.policy(), &b.manifest, &in_force, &next),
            None => Ok(None),
        };
        let plan = match planned {
            Ok(None) => return,
            Ok(Some(plan)) => plan,
            Err(why) => return self.refuse(&path, why),
        };
        if let Some(why) = provenance.doubt(&path) {
            return self.refuse(&path, why);
        }
        if let Vouch::Not(why) = &self.vouch {
            return self.refuse(&path, why.clone());
        }
        let generation = self.ledger.next_generation();
        let manifest = protocol::baseline::Manifest::of_entries(
            crate::verifying::paths::now_rfc3339(),
            Some(generation),
            plan.entries,
            Some(&key),
        );
        let made = match self.ledger.commit(manifest, Some(&key)) {
            Ok(c) => c,
            Err(e) => {
                return self.refuse(&path, format!("the new generation cannot be stored: {e}"))
            }
        };
        let to = next.commit.clone();
        releasestore::keep(
            self.ledger.store(),
            &key,
            &made.digest,
            &in_force.then(next),
        );
        tracing::warn!(
            from = in_force.current.commit,
            to,
            downgrade = plan.downgrade,
            generation,
            moved = plan.moved.len(),
            dropped = plan.dropped.len(),
            "release transition: the baseline follows the booted image's release"
        );
        self.release.in_force = Some(to.clone());
        self.release.transition = Some(Transition {
            from: in_force.current.commit,
            to,
            downgrade: plan.downgrade,
            generation,
            moved_count: u32::try_from(plan.moved.len()).unwrap_or(u32::MAX),
            moved: plan.moved.into_iter().take(MAX_MOVED).collect(),
            dropped: plan.dropped.into_iter().take(MAX_MOVED).collect(),
        });
        self.v.adopt(made, Vec::new());
    }

    fn refuse(&mut self, path: &Path, why: String) {
        tracing::error!(release = %path.display(), why, "no release transition");
        self.release.refused = Some(
            why.chars()
                .take(protocol::standing::MAX_REFUSAL_LEN / 4)
                .collect(),
        );
        self.release_file = Some(path.to_owned());
    }

    /// Records the release in force with a baseline the ceremony (or a first start) just
    /// made: it agrees with the release file, or it could not have been made.
    pub(super) fn record_release(&mut self, before: Option<&str>, made: &Current) {
        let (Some(path), Some(key)) = (self.v.policy().release_baseline.clone(), &self.key) else {
            return;
        };
        let Ok(next) = Release::load(&path) else {
            return;
        };
        let store = self.ledger.store();
        let old = before.and_then(|b| releasestore::load(store, key.bytes(), b).ok());
        let in_force = match old {
            Some(f) if f.current.commit == next.commit => f,
            Some(f) => f.then(next),
            None => InForce {
                current: next,
                previous: None,
                seen: Vec::new(),
            },
        };
        releasestore::keep(store, Key::bytes(key), &made.digest, &in_force);
        self.release.in_force = Some(in_force.current.commit);
        self.release.refused = None;
        self.release_file = None;
    }

    /// Adds the refused transition to `report`, against the release file.
    pub(super) fn add_release_finding(&self, report: &mut protocol::report::ScanReport) {
        let Some(path) = &self.release_file else {
            return;
        };
        let v = protocol::report::Violation {
            detected_at: report.completed_at.clone(),
            category: Category::TrustMaterial,
            path: path.to_string_lossy().into_owned(),
            expected_hash: protocol::report::NONE.to_owned(),
            actual_hash: Finding::ReleaseUnverified.as_str().to_owned(),
            action: Category::TrustMaterial.action(),
        };
        report.violation_count = report.violation_count.saturating_add(1);
        let at = report.violations.partition_point(|x| x.path < v.path);
        report.violations.insert(at, v);
        report
            .violations
            .truncate(protocol::report::MAX_REPORTED_VIOLATIONS);
    }
}
