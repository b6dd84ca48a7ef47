//! Checking only what the kernel named: each path a write, create, delete or rename was
//! reported at is checked (a directory: its whole subtree), and the last full sweep's findings
//! are brought up to date, so the cost of a change follows the change, not the tree.
//!
//! The server widens to a full sweep whenever the named paths may not tell the whole story
//! (events lost, a change with no name, the sweep older than the scan interval); this module
//! widens too, by answering `None`, where a part cannot be brought up to date on its own: the
//! registry's dir, a model dir itself, a bound the sweep hit, a directory swapped above a path.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use protocol::report::{self, ScanReport};

use crate::verifying::paths::{beneath, governed, scoped, Scope};
use crate::verifying::scan::Comparison;
use crate::verifying::sweep::Sweep;
use crate::verifying::verifier::Verifier;
use crate::verifying::walk::{self, Found, MAX_DEPTH};

/// How a path appears in findings (names that are not UTF-8 escaped, as the walk shows them).
fn key_of(p: &Path) -> String {
    report::display_path(p.as_os_str().as_bytes())
}

fn beneath_key(path: &str, key: &str) -> bool {
    path.starts_with(key) && path.as_bytes().get(key.len()) == Some(&b'/')
}

/// The entries the full sweep's walk found at or beneath `key`: every baselined path there
/// that it did not report missing, and every path there it reported that is not baselined.
fn present_before(sweep: &Sweep, scope: &Scope, key: &str) -> i64 {
    // No scope holds 2^63 entries; were one to, it counts as many as can be said.
    let baselined = i64::try_from(scope.len()).unwrap_or(i64::MAX);
    let (mut missing, mut extra) = (0i64, 0i64);
    for v in sweep
        .findings
        .iter()
        .filter(|v| v.path == key || beneath_key(&v.path, key))
    {
        if v.actual_hash == protocol::Finding::Missing.into() {
            missing += 1;
        } else if v.expected_hash == report::NONE {
            extra += 1;
        }
    }
    baselined - missing + extra
}

/// The directories one update found to be directories: sibling paths (a slice of a large
/// directory's files) share their ancestors, looked up once.
#[derive(Default)]
struct Ancestors(Vec<PathBuf>);

/// What is at a path now.
enum At {
    /// What the walk would find there: nothing, one anomaly, or a directory's subtree.
    Walked(Vec<(PathBuf, Found)>),
    /// A regular file, with the `lstat` that says so (its check needs no second one).
    File(std::fs::Metadata),
}

/// What the walk of `dir` would find at `p` now: nothing, one entry, or (for a directory)
/// everything beneath it. `None` when a directory between `dir` and `p` is no longer one: that
/// change is an ancestor's, and only a full sweep reads it right.
fn what_is_at(dir: &Path, p: &Path, limit: usize, dirs: &mut Ancestors) -> Option<At> {
    let rel: Vec<_> = p.strip_prefix(dir).ok()?.components().collect();
    let mut ancestor = dir.to_path_buf();
    for c in &rel[..rel.len().saturating_sub(1)] {
        ancestor.push(c);
        if dirs.0.contains(&ancestor) {
            continue;
        }
        match std::fs::symlink_metadata(&ancestor) {
            Ok(m) if m.file_type().is_dir() => {
                if dirs.0.len() >= 16 {
                    dirs.0.clear(); // sorted roots: the ones that repeat are the latest
                }
                dirs.0.push(ancestor.clone());
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Some(At::Walked(Vec::new()))
            }
            _ => return None,
        }
    }
    let meta = std::fs::symlink_metadata(p);
    if meta
        .as_ref()
        .is_err_and(|e| e.kind() == std::io::ErrorKind::NotFound)
    {
        return Some(At::Walked(Vec::new()));
    }
    if let Some((shown, marker)) = walk::unusable(p) {
        return Some(At::Walked(vec![(shown, Found::Anomaly(marker))]));
    }
    let one = |what| Some(At::Walked(vec![(p.to_owned(), what)]));
    let meta = match meta {
        Err(_) => return one(Found::Anomaly(protocol::Finding::Unreadable)),
        Ok(m) => m,
    };
    let t = meta.file_type();
    // A directory `depth` levels down is walked when the walk would have entered it.
    let depth = rel.len();
    if t.is_dir() && depth <= MAX_DEPTH {
        Some(At::Walked(walk::walk_from(p, depth, limit)))
    } else if t.is_dir() {
        one(Found::Anomaly(protocol::Finding::TooDeep))
    } else if t.is_file() {
        Some(At::File(meta))
    } else if t.is_symlink() {
        one(Found::Anomaly(protocol::Finding::Symlink))
    } else {
        one(Found::Anomaly(protocol::Finding::NotRegular))
    }
}

impl Verifier {
    /// Checks only the named paths, when they are all that changed and the sweep is current:
    /// the report and how many paths; `None` when only a full sweep can say.
    pub(crate) fn check_named(&mut self, watching: bool) -> Option<(ScanReport, usize)> {
        let fresh = match (&self.sweep, &self.baseline) {
            (Some(s), Some(b)) => {
                s.digest == b.digest && s.at.elapsed() < self.sweep_lifetime(watching)
            }
            _ => false,
        };
        if !(fresh && self.named_complete) {
            return None;
        }
        let paths: Vec<PathBuf> = self.named.drain().collect();
        let Some(report) = self.rescan(&paths, self.seq + 1) else {
            tracing::debug!(paths = paths.len(), "named changes need a full sweep");
            return None;
        };
        self.seq += 1;
        Some((report, paths.len()))
    }

    /// Brings the last sweep up to date with what is now at each of `paths`: its report, or
    /// `None` when only a full sweep can say (the sweep is then discarded).
    pub(super) fn rescan(&mut self, paths: &[PathBuf], seq: u64) -> Option<ScanReport> {
        let started = Instant::now();
        let hashed_before = self.hasher.bytes_hashed;
        if self.update(paths).is_none() {
            self.sweep = None;
            return None;
        }
        let bytes = self.hasher.bytes_hashed - hashed_before;
        Some(self.sweep.as_ref()?.report(seq, bytes, started))
    }

    /// Brings the last sweep up to date with what is now at each of `paths`; `None` when only
    /// a full sweep can say, or there is no sweep (then the sweep must be discarded: it may be
    /// half updated).
    pub(super) fn update(&mut self, paths: &[PathBuf]) -> Option<()> {
        let Verifier {
            policy,
            baseline,
            hasher,
            sweep,
            ..
        } = self;
        let (Some(sweep), Some(baseline)) = (sweep.as_mut(), baseline.as_ref()) else {
            return None;
        };
        let baseline = &baseline.manifest;
        if sweep
            .findings
            .iter()
            .any(|v| v.actual_hash == protocol::Finding::LimitExceeded.into())
        {
            return None;
        }
        let manifest = governed(policy);
        let mut roots: Vec<&PathBuf> = paths.iter().collect();
        roots.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        hasher.bind(&sweep.digest, baseline.entries.len());
        let mut cmp = Comparison::new(policy, &baseline.entries, hasher);
        // A spread sweep's slice names dozens of files: each lookup costs its path's depth.
        let mut done: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
        let mut dirs = Ancestors::default();
        let mut watched = i64::from(sweep.watched);
        for p in roots {
            let bytes = p.as_os_str().as_bytes();
            let parents = bytes.iter().enumerate().filter(|(_, b)| **b == b'/');
            if parents.clone().any(|(i, _)| done.contains(&bytes[..i])) {
                continue; // inside a subtree already checked whole
            }
            // The policy keeps its listed files sorted by path.
            if let Ok(i) = policy.files.binary_search_by(|(f, _)| f.as_path().cmp(p)) {
                let key = key_of(p);
                sweep.findings.retain(|v| v.path != key);
                cmp.file(p, policy.files[i].1);
                continue;
            }
            // The registry's manifest and the dirs that follow it are checked as one piece.
            if manifest == Some(p.as_path()) {
                return None;
            }
            let Some(dir) = policy.model_dirs.iter().find(|d| beneath(bytes, d)) else {
                if policy.model_dirs.iter().any(|d| d == p) {
                    return None;
                }
                continue; // a neighbour of a listed file: not watched
            };
            if manifest.is_some() {
                return None;
            }
            let at = what_is_at(dir, p, policy.max_watched_files, &mut dirs)?;
            let key = key_of(p);
            let scope = scoped(&baseline.entries, &key);
            watched -= present_before(sweep, &scope, &key);
            sweep
                .findings
                .retain(|v| v.path != key && !beneath_key(&v.path, &key));
            let examined = cmp.watched;
            match at {
                At::Walked(found) => cmp.walked(&scope, &found),
                At::File(meta) => cmp.walked_file(&scope, p, meta),
            }
            watched += i64::from(cmp.watched - examined);
            done.insert(bytes);
        }
        sweep.findings.append(&mut cmp.violations);
        sweep.findings.sort_by(|a, b| a.path.cmp(&b.path));
        sweep.watched = u32::try_from(watched.max(0)).unwrap_or(u32::MAX);
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::Watcher;
    use crate::policy::Policy;
    use std::os::unix::ffi::OsStrExt;

    /// Findings and count as a full sweep states them (detection times aside).
    fn essence(r: &ScanReport) -> (u32, u32, Vec<(String, String, String)>) {
        let v = r
            .violations
            .iter()
            .map(|v| {
                (
                    v.path.clone(),
                    v.expected_hash.clone(),
                    v.actual_hash.to_string(),
                )
            })
            .collect();
        (r.watched_files, r.violation_count, v)
    }

    /// After each change, checking only the paths inotify named gives exactly what a full
    /// sweep gives: the same findings, the same count of watched paths.
    #[test]
    fn checking_the_named_paths_agrees_with_a_full_sweep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        std::fs::create_dir_all(r.join("models/sub/deep")).expect("mkdir");
        std::fs::create_dir_all(r.join("models/keep")).expect("mkdir");
        for (p, c) in [
            ("bin", "b"),
            ("models/a.gguf", "a"),
            ("models/sub/b.gguf", "b"),
            ("models/sub/deep/c.gguf", "c"),
            ("models/keep/k.gguf", "k"),
        ] {
            std::fs::write(r.join(p), c).expect("write");
        }
        let yaml = format!(
            "service_binaries: [{r}/bin]\nmodel_dirs: [{r}/models]\n",
            r = r.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        let digest = "0".repeat(64);
        let base = Verifier::fresh_baseline(&policy).expect("base");
        let mut watcher = Watcher::new(&policy).expect("inotify");
        let mut v = Verifier::bare(policy.clone());
        v.adopt_as(base.clone(), &digest);
        v.sweep_all(false).expect("swept");
        type Change = Box<dyn Fn(&Path)>;
        let changes: Vec<(&str, Change)> = vec![
            (
                "edit a model",
                Box::new(|r| std::fs::write(r.join("models/a.gguf"), "A").expect("w")),
            ),
            (
                "edit the listed binary",
                Box::new(|r| std::fs::write(r.join("bin"), "B").expect("w")),
            ),
            (
                "add a file",
                Box::new(|r| std::fs::write(r.join("models/new.bin"), "n").expect("w")),
            ),
            (
                "add a dir of files",
                Box::new(|r| {
                    std::fs::create_dir_all(r.join("models/nd/x")).expect("mkdir");
                    std::fs::write(r.join("models/nd/x/1"), "1").expect("w");
                    std::fs::write(r.join("models/nd/2"), "2").expect("w");
                }),
            ),
            (
                "delete a baselined file",
                Box::new(|r| std::fs::remove_file(r.join("models/keep/k.gguf")).expect("rm")),
            ),
            (
                "move a baselined dir away",
                Box::new(|r| std::fs::rename(r.join("models/sub"), r.join("moved")).expect("mv")),
            ),
            (
                "put it back",
                Box::new(|r| std::fs::rename(r.join("moved"), r.join("models/sub")).expect("mv")),
            ),
            (
                "a file becomes a symlink",
                Box::new(|r| {
                    std::fs::remove_file(r.join("models/a.gguf")).expect("rm");
                    std::os::unix::fs::symlink("/etc/passwd", r.join("models/a.gguf")).expect("ln");
                }),
            ),
            (
                "a name that is not UTF-8",
                Box::new(|r| {
                    let name = std::ffi::OsStr::from_bytes(b"bad\xff");
                    std::fs::write(r.join("models").join(name), "x").expect("w");
                }),
            ),
            (
                "a fifo",
                Box::new(|r| {
                    nix::unistd::mkfifo(&r.join("models/sub/pipe"), nix::sys::stat::Mode::S_IRUSR)
                        .expect("mkfifo");
                }),
            ),
            (
                "restore everything",
                Box::new(|r| {
                    std::fs::remove_file(r.join("models/a.gguf")).expect("rm");
                    std::fs::write(r.join("models/a.gguf"), "a").expect("w");
                    std::fs::write(r.join("bin"), "b").expect("w");
                    std::fs::write(r.join("models/keep/k.gguf"), "k").expect("w");
                    std::fs::remove_dir_all(r.join("models/nd")).expect("rm");
                    std::fs::remove_file(r.join("models/new.bin")).expect("rm");
                    std::fs::remove_file(r.join("models/sub/pipe")).expect("rm");
                    std::fs::remove_file(
                        r.join("models")
                            .join(std::ffi::OsStr::from_bytes(b"bad\xff")),
                    )
                    .expect("rm");
                }),
            ),
        ];
        for (seq, (what, change)) in (2..).zip(&changes) {
            change(r);
            let drained = watcher.drain();
            assert!(!drained.overflow && !drained.unnamed, "{what}: {drained:?}");
            let named: Vec<PathBuf> = drained.paths.into_iter().collect();
            for p in &named {
                v.hasher.forget(p);
            }
            let partial = v
                .rescan(&named, seq)
                .unwrap_or_else(|| panic!("{what}: widened to a full sweep"));
            let full = Verifier::fresh_sweep(&policy, &base, &digest);
            assert_eq!(essence(&partial), essence(&full), "{what}");
        }
        assert_eq!(essence(&v.sweep_all(false).expect("swept")).1, 0);
    }

    #[test]
    fn a_model_dir_itself_or_a_swapped_ancestor_needs_a_full_sweep() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        std::fs::create_dir_all(r.join("models/sub")).expect("mkdir");
        std::fs::write(r.join("models/sub/f"), "f").expect("write");
        let yaml = format!("model_dirs: [{r}/models]\n", r = r.display());
        let policy = Policy::parse(&yaml).expect("policy");
        let base = Verifier::fresh_baseline(&policy).expect("base");
        let mut v = Verifier::bare(policy);
        v.adopt_as(base, &"0".repeat(64));
        v.sweep_all(false).expect("swept");
        let models = r.join("models");
        assert!(v.rescan(std::slice::from_ref(&models), 2).is_none());
        assert!(v.sweep.is_none(), "discarded: only a full sweep can say");
        v.sweep_all(false).expect("swept");
        std::fs::rename(models.join("sub"), r.join("elsewhere")).expect("mv");
        std::os::unix::fs::symlink(r.join("elsewhere"), models.join("sub")).expect("ln");
        let inside = [models.join("sub/f")];
        assert!(v.sweep.is_some());
        assert!(v.rescan(&inside, 3).is_none());
    }
}
