//! The OS image's release at start: recorded in force with the baseline, followed by a new
//! generation the hasher makes itself when the booted image ships another release it can
//! believe (`verifying::transition`), or refused, with a `release_unverified` finding against
//! the release file in every report until the next start.

use std::path::Path;

use protocol::standing::{Transition, MAX_MOVED};
use protocol::{Category, Finding};

use super::Server;
use crate::storing::Current;
use crate::verifying::{
    keep_releases, load_releases, plan_transition, transition_agrees, InForce, Release, Vouch,
};

impl Server {
    /// Follows the release the booted image ships, once, at the first hello.
    pub(super) fn follow_release(&mut self) {
        let (Some(path), Some(key)) = (self.v.policy().release_baseline.clone(), &self.key) else {
            return;
        };
        let key = key.bytes().to_vec();
        let Some((digest, named, generation)) = self
            .v
            .baseline()
            .map(|b| (b.digest.clone(), b.release.clone(), b.generation))
        else {
            return;
        };
        let (next, provenance) = match Release::load_with_provenance(&path) {
            Ok(r) => r,
            Err(e) => return self.refuse(&path, e.to_string()),
        };
        let in_force = match (load_releases(self.ledger.store(), &key, &digest), named) {
            (Ok(f), Some(c)) if f.current.commit == c => Some(f),
            // A baseline from before generations has no record to name it in.
            (Ok(f), None) if generation == 0 => Some(f),
            (Ok(f), named) => {
                return self.refuse(&path, format!("releases.bin says release {} is in force, the generation record {}: not believed", f.current.commit, named.as_deref().unwrap_or("none")));
            }
            (Err(why), Some(c)) => {
                return self.refuse(&path, format!("the generation record says release {c} is in force but its history cannot be believed ({why}): the key ceremony records the release anew"));
            }
            // A store from before releases were recorded.
            (Err(_), None) => None,
        };
        if in_force.is_none() && self.agreed(&next) {
            return self.record_first(&key, next);
        }
        if next.commit.is_empty() {
            return self.refuse(
                &path,
                "the release file names no source_commit: no transition can rest on it".into(),
            );
        }
        self.release.in_force = in_force.as_ref().map(|f| f.current.commit.clone());
        let planned = match self.v.baseline() {
            Some(b) => plan_transition(self.v.policy(), &b.manifest, in_force.as_ref(), &next),
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
            crate::verifying::now_rfc3339(),
            Some(generation),
            plan.entries,
            Some(&key),
        );
        let to = next.commit.clone();
        let made = match self.ledger.commit(manifest, Some(to.clone()), Some(&key)) {
            Ok(c) => c,
            Err(e) => {
                return self.refuse(&path, format!("the new generation cannot be stored: {e}"))
            }
        };
        let now_in_force = match &in_force {
            Some(f) => f.then(next),
            None => InForce {
                current: next,
                previous: None,
                seen: Vec::new(),
            },
        };
        keep_releases(self.ledger.store(), &key, &made.digest, &now_in_force);
        let from = in_force.map_or_else(|| "(none recorded)".to_owned(), |f| f.current.commit);
        tracing::warn!(
            from,
            to,
            downgrade = plan.downgrade,
            generation,
            moved = plan.moved.len(),
            dropped = plan.dropped.len(),
            "release transition: the baseline follows the booted image's release"
        );
        self.release.in_force = Some(to.clone());
        self.release.transition = Some(Transition {
            from,
            to,
            downgrade: plan.downgrade,
            generation,
            moved_count: u32::try_from(plan.moved.len()).unwrap_or(u32::MAX),
            moved: plan.moved.into_iter().take(MAX_MOVED).collect(),
            dropped: plan.dropped.into_iter().take(MAX_MOVED).collect(),
        });
        self.v.adopt(made, Vec::new());
    }

    /// Whether the adopted baseline agrees with `release` on every watched path it lists.
    fn agreed(&self, release: &Release) -> bool {
        self.v
            .baseline()
            .is_some_and(|b| transition_agrees(self.v.policy(), &b.manifest, release))
    }

    /// A store from before releases were recorded, agreeing with the release: recorded in
    /// force as it is, no new generation.
    fn record_first(&mut self, key: &[u8], next: Release) {
        let Some((generation, digest)) =
            self.v.baseline().map(|b| (b.generation, b.digest.clone()))
        else {
            return;
        };
        let commit = next.commit.clone();
        let f = InForce {
            current: next,
            previous: None,
            seen: Vec::new(),
        };
        // The history first: a record naming a release whose history is missing is refused.
        keep_releases(self.ledger.store(), key, &digest, &f);
        // A baseline from before generations (the Go service's) has no record to name it in:
        // the next commit's record will.
        let store = self.ledger.store();
        if generation > 0 {
            if let Err(e) = store.name_release(generation, &digest, &commit, Some(key)) {
                tracing::error!(error = %e, "the release in force could not be recorded");
                return;
            }
        }
        self.v.name_release(Some(commit.clone()));
        tracing::info!(commit, "release recorded in force");
        self.release.in_force = Some(commit);
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

    /// The release a baseline the ceremony (or a first start) is about to make will be in
    /// force with: the release file, read once, if it is configured and a key signs.
    pub(super) fn release_for_commit(&self) -> Option<Release> {
        let path = self.v.policy().release_baseline.as_ref()?;
        self.key.as_ref()?;
        Release::load(path).ok()
    }

    /// Records `next` in force with a baseline the ceremony (or a first start) just made
    /// (`before`: the digest of the one adopted until now, whose history carries on).
    pub(super) fn record_release(&mut self, before: Option<&str>, made: &Current, next: Release) {
        let Some(key) = &self.key else {
            return;
        };
        let store = self.ledger.store();
        let old = before.and_then(|b| load_releases(store, key.bytes(), b).ok());
        let in_force = match old {
            Some(f) if f.current.commit == next.commit => f,
            Some(f) => f.then(next),
            None => InForce {
                current: next,
                previous: None,
                seen: Vec::new(),
            },
        };
        keep_releases(store, key.bytes(), &made.digest, &in_force);
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
            actual_hash: Finding::ReleaseUnverified.into(),
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
