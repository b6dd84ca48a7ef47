//! Walking the watched set, making baselines and comparing against them.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use protocol::baseline::{Entry, Manifest, MAX_ENTRIES};
use protocol::report::{self, ScanReport, Violation, MAX_REPORTED_VIOLATIONS};
use protocol::Category;

use crate::hashing::{FileHasher, Outcome};
use crate::policy::Policy;
use crate::walk::Found;

/// The current RFC 3339 time, second precision, UTC.
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(SystemTime::now()).to_string()
}

/// Every model dir with what walking it found.
fn walk_all(policy: &Policy) -> Vec<(&Path, Vec<(PathBuf, Found)>)> {
    policy
        .model_dirs
        .iter()
        .map(|d| (d.as_path(), crate::walk::walk(d)))
        .collect()
}

/// The regular files among the listed files and the walks, for [`FileHasher::prefetch`].
fn regular_files<'a>(
    policy: &'a Policy,
    walks: &'a [(&Path, Vec<(PathBuf, Found)>)],
) -> impl Iterator<Item = &'a Path> {
    policy.files.iter().map(|(p, _)| p.as_path()).chain(
        walks
            .iter()
            .flat_map(|(_, found)| found.iter())
            .filter(|(_, what)| matches!(what, Found::File))
            .map(|(p, _)| p.as_path()),
    )
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Hashes every watched file into a signed manifest; refuses when a listed file is not a
/// readable regular file, since a baseline must never bless an absent or redirected file.
pub fn create_baseline(
    policy: &Policy,
    hasher: &mut FileHasher,
    key: Option<&[u8]>,
    generation: u64,
) -> Result<Manifest, String> {
    let mut entries = Vec::new();
    let walks = walk_all(policy);
    // Every byte is read afresh: nothing remembered from earlier scans goes into a baseline.
    hasher.forget_all();
    hasher.prefetch(regular_files(policy, &walks).map(|p| (p, None)));
    for (path, category) in &policy.files {
        match hasher.check(path) {
            Outcome::Hashed { hash, size } => entries.push(Entry {
                path: path_str(path),
                hash,
                category: *category,
                size,
            }),
            other => {
                return Err(format!(
                    "{}: cannot be baselined: {}",
                    path.display(),
                    describe(&other)
                ))
            }
        }
    }
    for (dir, found) in walks {
        if !dir.is_dir() {
            return Err(format!(
                "{}: model dir does not exist or is not a directory",
                dir.display()
            ));
        }
        for (path, what) in found {
            if policy.registry_manifest.as_ref() == Some(&path) {
                continue; // the registry's own bookkeeping, not a model
            }
            match what {
                Found::File => match hasher.check(&path) {
                    Outcome::Hashed { hash, size } => entries.push(Entry {
                        path: path_str(&path),
                        hash,
                        category: Category::ModelFile,
                        size,
                    }),
                    other => {
                        tracing::warn!(path = %path.display(), why = describe(&other), "left out of the baseline; it will be reported")
                    }
                },
                Found::Anomaly(kind) => {
                    tracing::warn!(path = %path.display(), kind, "left out of the baseline; it will be reported");
                }
            }
        }
    }
    if entries.len() > MAX_ENTRIES {
        return Err(format!(
            "{} files watched; the limit is {MAX_ENTRIES}",
            entries.len()
        ));
    }
    if let Some(release) = &policy.release_baseline {
        let version = crate::release::check_release(release, &entries)?;
        tracing::info!(
            release = version,
            "new baseline agrees with the release baseline"
        );
    }
    Ok(Manifest::with_generation(
        now_rfc3339(),
        Some(generation),
        entries,
        key,
    ))
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Hashed { .. } => "hashed".into(),
        Outcome::Missing => "missing".into(),
        Outcome::Symlink => "is a symlink (list its target instead)".into(),
        Outcome::NotRegular => "not a regular file".into(),
        Outcome::Unreadable(why) => format!("unreadable: {why}"),
        Outcome::SizeChanged(n) => format!("size changed to {n}"),
    }
}

fn actual(o: &Outcome) -> String {
    match o {
        Outcome::Hashed { hash, .. } => hash.clone(),
        Outcome::Missing => report::MISSING.into(),
        Outcome::Symlink => report::SYMLINK.into(),
        Outcome::NotRegular => report::NOT_REGULAR.into(),
        Outcome::Unreadable(_) => report::UNREADABLE.into(),
        Outcome::SizeChanged(_) => report::SIZE_CHANGED.into(),
    }
}

/// Compares every watched path with `baseline`; returns the unsigned report.
pub fn scan(
    policy: &Policy,
    baseline: &Manifest,
    digest: &str,
    hasher: &mut FileHasher,
    seq: u64,
) -> ScanReport {
    let started = Instant::now();
    let hashed_before = hasher.bytes_hashed;
    let now = now_rfc3339();
    let index: BTreeMap<&str, &Entry> = baseline
        .entries
        .iter()
        .map(|e| (e.path.as_str(), e))
        .collect();
    let mut violations: Vec<Violation> = Vec::new();
    let mut watched = 0u32;
    let mut flag = |path: String, category: Category, expected: &str, actual: String| {
        violations.push(Violation {
            detected_at: now.clone(),
            category,
            path,
            expected_hash: expected.to_owned(),
            actual_hash: actual,
            action: category.action(),
        });
    };
    let registry = policy.registry_manifest.as_ref().and_then(|p| {
        crate::release::Registry::load(p)
            .map_err(|e| {
                tracing::warn!(
                    error = e,
                    "registry manifest unusable: only baselined models are accepted"
                )
            })
            .ok()
    });
    // A model the registry promoted (its manifest lists this file name with this digest) is
    // accepted even when the baseline predates it.
    let promoted = |hasher: &mut FileHasher, path: &Path| -> bool {
        let (Some(registry), Some(name)) = (&registry, path.file_name().and_then(|n| n.to_str()))
        else {
            return false;
        };
        let Some((hash, size)) = registry.get(name) else {
            return false;
        };
        FileHasher::size_now(path) == Some(size)
            && matches!(hasher.check(path), Outcome::Hashed { hash: h, .. } if h == hash)
    };
    let check = |hasher: &mut FileHasher,
                 path: &Path,
                 category: Category,
                 flag: &mut dyn FnMut(String, Category, &str, String)| {
        let key = path_str(path);
        if category == Category::ModelFile && promoted(hasher, path) {
            return;
        }
        match index.get(key.as_str()) {
            None => flag(key, category, report::NONE, report::UNREGISTERED.into()),
            Some(entry) => {
                // A size change is a violation at once; reading the file would only confirm it.
                let outcome = hasher.check_expecting(path, Some(entry.size));
                let matches = matches!(&outcome, Outcome::Hashed { hash, size } if *hash == entry.hash && *size == entry.size);
                if !matches {
                    flag(key, entry.category, &entry.hash, actual(&outcome));
                }
            }
        }
    };
    let walks = walk_all(policy);
    let expected_size = |p: &Path| index.get(path_str(p).as_str()).map(|e| e.size);
    hasher.prefetch(regular_files(policy, &walks).map(|p| (p, expected_size(p))));
    for (path, category) in &policy.files {
        watched += 1;
        check(hasher, path, *category, &mut flag);
    }
    for (dir, found) in &walks {
        let seen: HashSet<&[u8]> = found
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes())
            .collect();
        for (path, what) in found {
            if policy.registry_manifest.as_ref() == Some(path) {
                continue;
            }
            watched += 1;
            match what {
                Found::File => check(hasher, path, Category::ModelFile, &mut flag),
                Found::Anomaly(kind) => {
                    let expected = index
                        .get(path_str(path).as_str())
                        .map_or(report::NONE, |e| e.hash.as_str());
                    flag(
                        path_str(path),
                        Category::ModelFile,
                        expected,
                        (*kind).to_owned(),
                    );
                }
            }
        }
        let prefix = dir.as_os_str().as_bytes();
        let beneath = |p: &[u8]| p.starts_with(prefix) && p.get(prefix.len()) == Some(&b'/');
        for entry in baseline
            .entries
            .iter()
            .filter(|e| beneath(e.path.as_bytes()))
        {
            if !seen.contains(entry.path.as_bytes()) {
                flag(
                    entry.path.clone(),
                    entry.category,
                    &entry.hash,
                    report::MISSING.into(),
                );
            }
        }
    }
    // Baselined paths the policy no longer covers (a reload narrowed it): still findings.
    let listed: HashSet<&[u8]> = policy
        .files
        .iter()
        .map(|(p, _)| p.as_os_str().as_bytes())
        .collect();
    let covered = |p: &[u8]| {
        listed.contains(p)
            || policy.model_dirs.iter().any(|d| {
                let d = d.as_os_str().as_bytes();
                p.starts_with(d) && p.get(d.len()) == Some(&b'/')
            })
    };
    for entry in baseline
        .entries
        .iter()
        .filter(|e| !covered(e.path.as_bytes()))
    {
        flag(
            entry.path.clone(),
            entry.category,
            &entry.hash,
            report::REMOVED.into(),
        );
    }
    violations.sort_by(|a, b| a.path.cmp(&b.path));
    let violation_count = u32::try_from(violations.len()).unwrap_or(u32::MAX);
    violations.truncate(MAX_REPORTED_VIOLATIONS);
    ScanReport {
        seq,
        completed_at: now_rfc3339(),
        baseline_digest: digest.to_owned(),
        watched_files: watched,
        bytes_hashed: hasher.bytes_hashed - hashed_before,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        violation_count,
        violations,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Tree {
        dir: tempfile::TempDir,
        policy: Policy,
    }

    fn tree() -> Tree {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        std::fs::create_dir_all(root.join("models/sub")).expect("mkdir");
        for (p, c) in [
            ("bin", "b"),
            ("policy.yaml", "p"),
            ("models/a.gguf", "a"),
            ("models/sub/b.gguf", "b"),
        ] {
            std::fs::write(root.join(p), c).expect("write");
        }
        let yaml = format!(
            "service_binaries: [{r}/bin]\npolicy_files: [{r}/policy.yaml]\nmodel_dirs: [{r}/models]\n",
            r = root.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        Tree { dir, policy }
    }

    fn run(t: &Tree, m: &Manifest) -> ScanReport {
        scan(&t.policy, m, &"0".repeat(64), &mut FileHasher::default(), 1)
    }

    #[test]
    fn clean_then_each_kind_of_violation() {
        let t = tree();
        let root = t.dir.path();
        let m = create_baseline(&t.policy, &mut FileHasher::default(), Some(&[3u8; 32]), 1)
            .expect("baseline");
        assert_eq!(m.entries.len(), 4);
        assert!(m.entries.windows(2).all(|w| w[0].path < w[1].path));
        let r = run(&t, &m);
        assert_eq!((r.violation_count, r.watched_files), (0, 4));

        std::fs::write(root.join("bin"), "tampered").expect("write");
        std::fs::remove_file(root.join("models/a.gguf")).expect("rm");
        std::fs::write(root.join("models/new.gguf"), "n").expect("write");
        std::os::unix::fs::symlink("/etc/passwd", root.join("models/sub/link")).expect("symlink");
        let r = run(&t, &m);
        let got: Vec<(String, &str, &str)> = r
            .violations
            .iter()
            .map(|v| {
                (
                    v.path
                        .trim_start_matches(&*root.to_string_lossy())
                        .to_owned(),
                    v.actual_hash.as_str(),
                    v.category.as_str(),
                )
            })
            .map(|(p, a, c)| (p, if a.len() == 64 { "hash" } else { a }, c))
            .collect();
        assert_eq!(
            got,
            vec![
                ("/bin".to_owned(), "size_changed", "service_binary"),
                ("/models/a.gguf".to_owned(), "missing", "model_file"),
                ("/models/new.gguf".to_owned(), "unregistered", "model_file"),
                ("/models/sub/link".to_owned(), "symlink", "model_file"),
            ]
        );
        assert_eq!(r.violation_count, 4);
    }

    #[test]
    fn parallel_hashing_agrees_with_one_thread_and_keeps_the_fast_path() {
        let t = tree();
        let root = t.dir.path();
        // Large and small files: the largest-first order has uneven work to spread.
        for i in 0..12u8 {
            let len = if i % 4 == 0 {
                5 << 20
            } else {
                1000 + usize::from(i)
            };
            std::fs::write(root.join(format!("models/m{i}")), vec![i; len]).expect("write");
        }
        let key = [3u8; 32];
        let one = create_baseline(&t.policy, &mut FileHasher::default(), Some(&key), 1).expect("1");
        let mut four = FileHasher::default();
        four.threads = 4;
        let m = create_baseline(&t.policy, &mut four, Some(&key), 1).expect("4");
        assert_eq!(
            one.entries, m.entries,
            "same digests whatever the thread count"
        );
        let read = four.bytes_hashed;
        let total: u64 = m.entries.iter().map(|e| e.size).sum();
        assert_eq!(read, total, "each file read once");

        let r = scan(&t.policy, &m, &"0".repeat(64), &mut four, 1);
        assert_eq!(
            (r.violation_count, r.bytes_hashed),
            (0, 0),
            "all from the cache"
        );

        // Same size, new content: only that file is read, and it is caught.
        std::fs::write(root.join("models/m4"), vec![9u8; 5 << 20]).expect("tamper");
        let r = scan(&t.policy, &m, &"0".repeat(64), &mut four, 2);
        assert_eq!(r.violation_count, 1);
        assert!(r.violations[0].path.ends_with("/models/m4"));
        assert_eq!(r.bytes_hashed, 5 << 20);
    }

    #[test]
    fn baseline_refuses_missing_or_symlinked_listed_file() {
        let t = tree();
        std::fs::remove_file(t.dir.path().join("bin")).expect("rm");
        let e =
            create_baseline(&t.policy, &mut FileHasher::default(), None, 1).expect_err("refused");
        assert!(e.contains("/bin") && e.contains("missing"), "{e}");
        std::os::unix::fs::symlink("/etc/passwd", t.dir.path().join("bin")).expect("symlink");
        let e =
            create_baseline(&t.policy, &mut FileHasher::default(), None, 1).expect_err("refused");
        assert!(e.contains("symlink"), "{e}");
    }

    #[test]
    fn promoted_models_are_accepted_and_mismatched_ones_are_not() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        std::fs::create_dir_all(r.join("models")).expect("mkdir");
        std::fs::write(r.join("models/old.gguf"), "old").expect("write");
        let yaml = format!(
            "model_dirs: [{d}/models]\nregistry_manifest: {d}/models/manifest.json\n",
            d = r.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        let write_manifest = |entries: &[(&str, &[u8])]| {
            let models: Vec<String> = entries
                .iter()
                .map(|(f, c)| {
                    let h = protocol::sign::sha256_hex(c);
                    format!("{{\"name\":\"{f}\",\"filename\":\"{f}\",\"sha256\":\"{h}\",\"size_bytes\":{}}}", c.len())
                })
                .collect();
            std::fs::write(
                r.join("models/manifest.json"),
                format!("{{\"version\":1,\"models\":[{}]}}", models.join(",")),
            )
            .expect("write");
        };
        write_manifest(&[]);
        let m = create_baseline(&policy, &mut FileHasher::default(), None, 1).expect("baseline");
        assert_eq!(
            m.entries.len(),
            1,
            "the manifest itself is not a model: {:?}",
            m.entries
        );
        std::fs::write(r.join("models/new.gguf"), "promoted weights").expect("write");
        let run = || scan(&policy, &m, &"0".repeat(64), &mut FileHasher::default(), 1);
        assert_eq!(run().violation_count, 1, "not yet promoted");
        write_manifest(&[("new.gguf", b"promoted weights")]);
        assert_eq!(run().violation_count, 0, "promoted with a matching digest");
        write_manifest(&[("new.gguf", b"other weights!!!")]);
        assert_eq!(
            run().violation_count,
            1,
            "promoted digest does not match the file"
        );
    }

    #[test]
    fn a_baseline_never_blesses_a_file_the_release_disagrees_with() {
        let t = tree();
        let root = t.dir.path();
        let bin = root.join("bin");
        let good = protocol::sign::sha256_hex(b"b");
        std::fs::write(root.join("release.json"), format!("{{\"version\":\"1.0\",\"source_commit\":\"c0ffee\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{good}\",\"size\":1}}]}}", bin.display())).expect("write");
        let mut policy = t.policy.clone();
        policy.release_baseline = Some(root.join("release.json"));
        assert!(create_baseline(&policy, &mut FileHasher::default(), None, 1).is_ok());
        std::fs::write(&bin, "x").expect("tamper");
        let e = create_baseline(&policy, &mut FileHasher::default(), None, 1).expect_err("refused");
        assert!(
            e.contains(&bin.display().to_string()) && e.contains("1.0"),
            "{e}"
        );
    }

    #[test]
    fn violations_are_capped_but_counted() {
        let t = tree();
        let m = create_baseline(&t.policy, &mut FileHasher::default(), None, 1).expect("baseline");
        for i in 0..(MAX_REPORTED_VIOLATIONS + 10) {
            std::fs::write(t.dir.path().join(format!("models/x{i:04}")), "x").expect("write");
        }
        let r = run(&t, &m);
        assert_eq!(r.violation_count as usize, MAX_REPORTED_VIOLATIONS + 10);
        assert_eq!(r.violations.len(), MAX_REPORTED_VIOLATIONS);
    }
}
