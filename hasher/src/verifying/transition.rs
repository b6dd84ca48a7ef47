//! A release transition, planned: the booted image ships another release than the one in
//! force, and the baseline follows it where the old release's digest still stands. Each watched
//! path the new release lists takes its digest when its baseline entry still equals the old
//! release's (local edits, as ostree keeps them in `/etc`, stay); a watched path new in the
//! release joins the baseline; everything else (models, local configuration) keeps its entry,
//! and a path the old release listed and the new one drops is reported, not forgotten. Going
//! back is allowed to the release in force just before, never further. A store from before
//! releases were recorded knows no old release: every watched path the new one lists takes its
//! digest (a local edit then differs from it and is a violation: it fails closed).

use protocol::baseline::Manifest;
use protocol::entries::Entries;
use protocol::hexfmt::Sha256Digest;
use protocol::standing::Moved;

use crate::policy::Policy;
use crate::verifying::paths::category_of;
use crate::verifying::release::Release;
use crate::verifying::releasestore::InForce;

/// What a transition changes.
#[derive(Debug)]
pub(crate) struct Plan {
    /// Back to the release in force just before.
    pub(crate) downgrade: bool,
    /// The new baseline's entries (unsorted).
    pub(crate) entries: Entries,
    /// The paths that took the new release's digest.
    pub(crate) moved: Vec<Moved>,
    /// The paths the old release listed and the new one does not.
    pub(crate) dropped: Vec<String>,
}

/// The transition from `in_force` (`None`: not known, a store from before releases were
/// recorded) to `next` for `baseline` under `policy`: `Ok(None)` when `next` is the release in
/// force; `Err` why it may not be made.
pub(crate) fn plan(
    policy: &Policy,
    baseline: &Manifest,
    in_force: Option<&InForce>,
    next: &Release,
) -> Result<Option<Plan>, String> {
    let Some(in_force) = in_force else {
        return Ok(Some(moved_to(policy, baseline, None, next, false)?));
    };
    let old = &in_force.current;
    if next.commit == old.commit {
        return Ok(None);
    }
    let downgrade = in_force
        .previous
        .as_ref()
        .is_some_and(|p| p.commit == next.commit);
    if !downgrade && in_force.seen.contains(&next.commit) {
        return Err(format!(
            "release {} was in force before the previous one ({}): going back further than the release in force just before is refused",
            next.commit,
            in_force.previous.as_ref().map_or("none", |p| p.commit.as_str())
        ));
    }
    moved_to(policy, baseline, Some(old), next, downgrade).map(Some)
}

/// The baseline moved from release `old` (`None`: not known, every listed path moves) to `next`.
fn moved_to(
    policy: &Policy,
    baseline: &Manifest,
    old: Option<&Release>,
    next: &Release,
    downgrade: bool,
) -> Result<Plan, String> {
    let mut entries = Entries::with_capacity(baseline.entries.len());
    let mut moved = Vec::new();
    let mut dropped = Vec::new();
    let too_many = |_| "the new baseline would hold too many entries".to_owned();
    let listed = |path: &str| old.is_some_and(|o| o.files.contains_key(path));
    for e in baseline.entries.iter() {
        let stands = old.is_none_or(|o| o.files.get(e.path) == Some(&(e.hash, e.size)));
        let (hash, size) = match next.files.get(e.path) {
            Some(&(hash, size)) if stands && (hash, size) != (e.hash, e.size) => {
                moved.push(moved_path(e.path, Some(e.hash), hash));
                (hash, size)
            }
            _ => {
                if listed(e.path) && !next.files.contains_key(e.path) {
                    dropped.push(e.path.to_owned());
                }
                (e.hash, e.size)
            }
        };
        entries
            .push(e.path, hash, e.category, size)
            .map_err(too_many)?;
    }
    let mut added: Vec<_> = next
        .files
        .iter()
        .filter(|(p, _)| baseline.entries.index_of(p).is_none())
        .filter_map(|(p, d)| category_of(policy, p).map(|c| (p, d, c)))
        .collect();
    added.sort_by(|a, b| a.0.cmp(b.0));
    for (path, &(hash, size), category) in added {
        moved.push(moved_path(path, None, hash));
        entries.push(path, hash, category, size).map_err(too_many)?;
    }
    moved.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(Plan {
        downgrade,
        entries,
        moved,
        dropped,
    })
}

fn moved_path(path: &str, old: Option<Sha256Digest>, new: Sha256Digest) -> Moved {
    Moved {
        path: path.to_owned(),
        old: old.map(|d| d.to_hex()),
        new: new.to_hex(),
    }
}

/// Whether `baseline` agrees with `release` on every watched path the release lists (then
/// the release may be recorded in force without a transition).
pub(crate) fn agrees(policy: &Policy, baseline: &Manifest, release: &Release) -> bool {
    release.files.iter().all(|(path, &(hash, size))| {
        category_of(policy, path).is_none()
            || baseline
                .entries
                .index_of(path)
                .and_then(|i| baseline.entries.get(i))
                .is_some_and(|e| (e.hash, e.size) == (hash, size))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::baseline::Entry;
    use protocol::Category;
    use std::collections::HashMap;

    fn d(c: u8) -> Sha256Digest {
        Sha256Digest([c; 32])
    }

    /// Each path's digest in `entries`.
    fn digests(entries: Entries) -> HashMap<String, Sha256Digest> {
        let m = Manifest::of_entries("t".into(), None, entries, None);
        m.entries
            .iter()
            .map(|e| (e.path.to_owned(), e.hash))
            .collect()
    }

    fn release(commit: &str, root: &str, files: &[(&str, u8)]) -> Release {
        Release {
            commit: commit.into(),
            files: files
                .iter()
                .map(|(p, c)| (format!("{root}/{p}"), (d(*c), 1)))
                .collect::<HashMap<_, _>>(),
        }
    }

    #[test]
    fn the_baseline_follows_the_release_where_the_old_digest_stands_and_nowhere_else() {
        let dir = tempfile::tempdir().expect("dir");
        let root = dir.path().display().to_string();
        let p = |rel: &str| format!("{root}/{rel}");
        for f in ["bin/a", "bin/b", "bin/c", "bin/new", "etc/local"] {
            std::fs::create_dir_all(dir.path().join(f).parent().expect("parent")).expect("mkdir");
            std::fs::write(dir.path().join(f), "x").expect("write");
        }
        std::fs::create_dir_all(dir.path().join("models")).expect("mkdir");
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(
            &policy_path,
            format!(
                "service_binaries: [{a}, {b}, {c}, {n}]\npolicy_files: [{l}]\nmodel_dirs: [{m}]\n",
                a = p("bin/a"),
                b = p("bin/b"),
                c = p("bin/c"),
                n = p("bin/new"),
                l = p("etc/local"),
                m = p("models")
            ),
        )
        .expect("write");
        let policy = Policy::load(&policy_path).expect("policy");
        let entry = |rel: &str, c: u8, category| Entry {
            path: p(rel),
            hash: d(c),
            category,
            size: 1,
        };
        let baseline = Manifest::new(
            "t".into(),
            vec![
                entry("bin/a", 1, Category::ServiceBinary),
                entry("bin/b", 9, Category::ServiceBinary), // changed locally
                entry("bin/c", 3, Category::ServiceBinary),
                entry("etc/local", 4, Category::PolicyFile),
                entry("models/m", 5, Category::ModelFile),
            ],
            None,
        );
        let a = release(
            "A",
            &root,
            &[("bin/a", 1), ("bin/b", 2), ("bin/c", 3), ("etc/local", 4)],
        );
        let b = release(
            "B",
            &root,
            &[
                ("bin/a", 11),
                ("bin/b", 12),
                ("bin/new", 13),
                ("etc/local", 14),
            ],
        );
        let in_force = InForce {
            current: a.clone(),
            previous: None,
            seen: Vec::new(),
        };
        assert!(!agrees(&policy, &baseline, &a), "bin/b was changed locally");
        let plan = plan(&policy, &baseline, Some(&in_force), &b)
            .expect("allowed")
            .expect("a transition");
        assert!(!plan.downgrade);
        let moved: Vec<&str> = plan.moved.iter().map(|m| m.path.as_str()).collect();
        assert_eq!(moved, vec![p("bin/a"), p("bin/new"), p("etc/local")]);
        assert_eq!(plan.dropped, vec![p("bin/c")]);
        let got = digests(plan.entries);
        assert_eq!(got[&p("bin/a")], d(11), "followed the release");
        assert_eq!(got[&p("bin/b")], d(9), "a local change stays as it was");
        assert_eq!(
            got[&p("bin/c")],
            d(3),
            "dropped by the release: kept, reported"
        );
        assert_eq!(got[&p("bin/new")], d(13), "new in the release");
        assert_eq!(got[&p("models/m")], d(5), "not the release's: kept");
        // The same commit: nothing to do. Back to the previous one: a downgrade. Further: no.
        assert!(super::plan(&policy, &baseline, Some(&in_force), &a)
            .expect("ok")
            .is_none());
        let after = in_force.then(b.clone());
        let back = super::plan(&policy, &baseline, Some(&after), &a)
            .expect("allowed")
            .expect("some");
        assert!(back.downgrade);
        let later = after.then(release("C", &root, &[("bin/a", 21)]));
        assert!(
            super::plan(&policy, &baseline, Some(&later), &a).is_err(),
            "older than the previous"
        );
        assert!(super::plan(&policy, &baseline, Some(&later), &b)
            .expect("ok")
            .is_some_and(|p| p.downgrade));
        // No release known: every path B lists takes B's digest, the local edit included.
        let first = super::plan(&policy, &baseline, None, &b)
            .expect("ok")
            .expect("some");
        let got = digests(first.entries);
        assert_eq!(
            got[&p("bin/b")],
            d(12),
            "no old release to tell a local edit by"
        );
        assert_eq!(got[&p("bin/c")], d(3), "not B's: kept");
        assert_eq!(got[&p("models/m")], d(5));
        assert!(first.dropped.is_empty());
    }
}
