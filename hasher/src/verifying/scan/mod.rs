//! Walking the watched set, making baselines and comparing against them.

mod compare;
use crate::verifying::paths::{governed, in_model_dir, now_rfc3339, path_str, scoped, Scope};
pub(crate) use compare::Comparison;

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use protocol::baseline::{Manifest, MAX_ENTRIES};
use protocol::entries::Entries;
use protocol::report::{self, ScanReport, Violation};
use protocol::Actual;
use protocol::Category;

use crate::error::BaselineRefused;
use crate::policy::Policy;
use crate::reading::Ahead;
use crate::verifying::hashing::{FileHasher, Outcome};
use crate::verifying::slots::{Expect, Slot};
pub(in crate::verifying) use crate::verifying::sweep::Sweep;
use crate::verifying::verifier::Verifier;
use crate::verifying::walk::{Found, Walk};

/// The model dirs a sweep walks: none while a registry manifest is set, for then every model
/// dir follows the registry, not the per-file baseline (the Go service's rule).
fn walked_dirs(policy: &Policy) -> impl Iterator<Item = &Path> {
    let governed = governed(policy).is_some();
    policy
        .model_dirs
        .iter()
        .map(PathBuf::as_path)
        .filter(move |_| !governed)
}

/// A new baseline as it is made: its entries, and beside each what its slot in the hasher
/// will remember of the version read (so the first sweep against it reads nothing again).
#[derive(Default)]
pub(in crate::verifying) struct Made {
    /// The entries, in the order hashed until [`Made::sorted`].
    pub(crate) entries: Entries,
    /// One per entry.
    pub(crate) slots: Vec<Slot>,
}

impl Made {
    fn push(&mut self, path: &Path, outcome: &Outcome, category: Category, slot: Slot) -> bool {
        let Outcome::Hashed { hash, size } = outcome else {
            return false;
        };
        if self
            .entries
            .push(&path_str(path), *hash, category, *size)
            .is_err()
        {
            self.slots.push(Slot::default()); // counted, refused below
            return true;
        }
        self.slots.push(slot);
        true
    }

    fn sorted(mut self) -> Made {
        let order = self.entries.sort();
        self.slots = protocol::entries::permuted(&self.slots, &order);
        self
    }
}

/// A baseline as it is made: the policy followed, the file memory read through, and what
/// was made so far.
struct Making<'a> {
    policy: &'a Policy,
    hasher: &'a mut FileHasher,
    made: Made,
}

impl Making<'_> {
    /// Hashes the policy's listed files; refuses when one is not a readable regular file,
    /// since a baseline must never bless an absent or redirected file.
    fn listed(&mut self) -> Result<(), BaselineRefused> {
        let policy = self.policy;
        for (path, category) in &policy.files {
            let (outcome, slot) = self.hasher.check_new(path);
            if !self.made.push(path, &outcome, *category, slot) {
                return Err(BaselineRefused::Unreadable {
                    path: path.clone(),
                    why: describe(&outcome),
                });
            }
        }
        Ok(())
    }

    /// Hashes the files of one part of a walk; what cannot be hashed is left out (and will be
    /// reported by every scan).
    fn walked_part(&mut self, found: &[(PathBuf, Found)]) {
        for (path, what) in found {
            if self.policy.registry_manifest.as_ref() == Some(path) {
                continue; // the registry's own bookkeeping, not a model
            }
            match what {
                Found::File => {
                    let (outcome, slot) = self.hasher.check_new(path);
                    if !self.made.push(path, &outcome, Category::ModelFile, slot) {
                        tracing::warn!(path = %path.display(), why = describe(&outcome), "left out of the baseline; it will be reported");
                    }
                }
                Found::Anomaly(kind) => {
                    tracing::warn!(path = %path.display(), kind = kind.as_str(), "left out of the baseline; it will be reported");
                }
            }
        }
    }
}

impl Verifier {
    /// Hashes every watched file, afresh, into a manifest signed with `key`, and what each
    /// entry's slot is to remember of the version read (for [`Verifier::adopt`] once the
    /// manifest is stored). Refuses when a listed file is not a readable regular file. Model
    /// dirs are walked a directory at a time, so a million files are never held but as entries.
    pub fn make_baseline(
        &mut self,
        key: Option<&[u8]>,
        generation: u64,
    ) -> Result<(Manifest, Vec<Slot>), BaselineRefused> {
        let policy = &self.policy;
        // Every byte is read afresh: nothing remembered from earlier scans goes into a baseline.
        self.hasher.forget_all();
        let mut making = Making {
            policy,
            hasher: &mut self.hasher,
            made: Made::default(),
        };
        let listed: Vec<&Path> = policy.files.iter().map(|(p, _)| p.as_path()).collect();
        let ahead = read_part(making.hasher, true, &listed, |_| None);
        making.listed()?;
        drop(ahead);
        for dir in walked_dirs(policy) {
            if !dir.is_dir() {
                return Err(BaselineRefused::NoModelDir {
                    dir: dir.to_path_buf(),
                });
            }
            // A directory at a time: the model dir is never held whole.
            for batch in Walk::new(dir, 0, policy.max_watched_files) {
                let files = regular(&batch);
                let ahead = read_part(making.hasher, true, &files, |_| None);
                making.walked_part(&batch);
                drop(ahead);
            }
        }
        let made = making.made;
        if self.hasher.reads.lifeline.cut() {
            return Err(crate::reading::ApiGone.into());
        }
        let count = made.slots.len();
        if count > MAX_ENTRIES || made.entries.len() != count {
            return Err(BaselineRefused::TooMany {
                count,
                limit: MAX_ENTRIES,
            });
        }
        let mut made = made.sorted();
        made.entries.shrink_to_fit();
        if let Some(release) = &policy.release_baseline {
            let version = crate::verifying::release::check_release(release, &made.entries)?;
            tracing::info!(
                release = version,
                "new baseline agrees with the release baseline"
            );
        }
        let manifest = Manifest::of_entries(now_rfc3339(), Some(generation), made.entries, key);
        Ok((manifest, made.slots))
    }

    /// A full sweep against the adopted baseline (`None`: there is none). `events_complete`:
    /// every directory is watched, so the named paths can stand for all changes from now on.
    pub fn sweep_all(&mut self, events_complete: bool) -> Option<ScanReport> {
        self.baseline.as_ref()?;
        self.seq += 1;
        // Everything named so far is covered: events drained later name later changes.
        self.named.clear();
        self.named_complete = events_complete;
        self.cycle = None;
        let (report, sweep) = self.sweep(self.seq)?;
        self.sweep = Some(sweep);
        // A pending file handed out for a read that this sweep did not check is no watched
        // file's (an abandoned download in a registry dir, a path gone): nothing will prove it.
        self.hasher.settling.drop_unread_all();
        Some(report)
    }

    /// Every watched path compared with the adopted baseline: the unsigned report, and the
    /// findings kept for later checks of named paths.
    fn sweep(&mut self, seq: u64) -> Option<(ScanReport, Sweep)> {
        let Verifier {
            policy,
            baseline,
            hasher,
            ..
        } = self;
        let (policy, b) = (&*policy, baseline.as_ref()?);
        let started = Instant::now();
        let hashed_before = hasher.bytes_hashed;
        hasher.bind(&b.digest, b.manifest.entries.len());
        // Nothing remembered (the first sweep after a start): every file is read.
        let all_read = hasher.remembers_nothing();
        let entries = &b.manifest.entries;
        let mut cmp = Comparison::new(policy, entries, hasher);
        let listed: Vec<&Path> = policy.files.iter().map(|(p, _)| p.as_path()).collect();
        let expect = |p: &Path| expect_in(entries, p);
        let ahead = read_part(cmp.hasher(), all_read, &listed, expect);
        cmp.listed();
        drop(ahead);
        for dir in walked_dirs(policy) {
            let scope = scoped(entries, &path_str(dir));
            cmp.forget_seen(&scope);
            for batch in Walk::new(dir, 0, policy.max_watched_files) {
                let files = regular(&batch);
                let ahead = read_part(cmp.hasher(), all_read, &files, expect);
                cmp.walked_part(&batch);
                drop(ahead);
            }
            cmp.missing(&scope);
        }
        if let Some(manifest) = governed(policy) {
            cmp.registry(manifest);
        }
        cmp.uncovered(&b.manifest);
        let watched = cmp.watched;
        let mut findings = cmp.violations;
        findings.sort_by(|a, b| a.path.cmp(&b.path));
        let sweep = Sweep {
            findings,
            watched,
            digest: b.digest.clone(),
            at: Instant::now(),
        };
        let bytes = hasher.bytes_hashed - hashed_before;
        Some((sweep.report(seq, bytes, started), sweep))
    }
}

/// The regular files among what a walk found.
fn regular(found: &[(PathBuf, Found)]) -> Vec<&Path> {
    found
        .iter()
        .filter(|(_, what)| matches!(what, Found::File))
        .map(|(p, _)| p.as_path())
        .collect()
}

/// Readies the checks of `files` (in that order): files with a remembered digest due or none
/// are read first on the hashing threads (`expect` gives each one's baseline entry), or, with
/// one thread and every file to be read (`all_read`), reads are issued ahead of the checks
/// until the helper returned is dropped (none for a part with no regular file: a directory
/// of directories).
fn read_part(
    hasher: &mut FileHasher,
    all_read: bool,
    files: &[&Path],
    expect: impl Fn(&Path) -> Option<Expect>,
) -> Option<Ahead> {
    // Lazy: with one thread the prefetch returns before asking for any expectation.
    hasher.prefetch(files.iter().map(|p| (*p, expect(p))));
    (all_read && hasher.threads <= 1 && !files.is_empty())
        .then(|| Ahead::start(files, hasher.progress()))
}

fn describe(o: &Outcome) -> String {
    match o {
        Outcome::Hashed { .. } => "hashed".into(),
        Outcome::Missing => "missing".into(),
        Outcome::Symlink => "is a symlink (list its target instead)".into(),
        Outcome::NotRegular => "not a regular file".into(),
        Outcome::Unreadable(why) => format!("unreadable: {why}"),
        Outcome::SizeChanged(n) => format!("size changed to {n}"),
        Outcome::TooLarge(n) => format!("{n} bytes, more than max_file_size"),
        Outcome::Secret => "is the HMAC key or the service token (a hard link, bind mount or copy of it); never digested".into(),
        Outcome::SealChanged(seal) => format!("sealed as {seal}, not the fs-verity digest bound to the baseline's content"),
        Outcome::Untrusted(fs) => format!("on {fs}, whose server decides what a read returns; never read (move it to a local filesystem)"),
    }
}

/// What a finding says a file now is: its digest, or the finding.
fn actual(o: &Outcome) -> Actual {
    match o {
        Outcome::Hashed { hash, .. } => Actual::Digest(*hash),
        // Only a digest has no finding; were another outcome without one, it is no digest.
        other => other
            .finding()
            .unwrap_or(protocol::Finding::Unreadable)
            .into(),
    }
}

/// What a check of `path` expects: its entry in `entries`, if it has one.
fn expect_in(entries: &Entries, path: &Path) -> Option<Expect> {
    let index = entries.index_of(&path_str(path))?;
    Some(Expect::of(index, &entries.get(index)?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::report::MAX_REPORTED_VIOLATIONS;

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
        Verifier::fresh_sweep(&t.policy, m, &"0".repeat(64))
    }

    #[test]
    fn clean_then_each_kind_of_violation() {
        let t = tree();
        let root = t.dir.path();
        let (m, _) = Verifier::bare(t.policy.clone())
            .make_baseline(Some(&[3u8; 32]), 1)
            .expect("baseline");
        assert_eq!(m.entries.len(), 4);
        assert!(m.entries.is_sorted_unique());
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
                    v.actual_hash
                        .finding()
                        .map_or("hash", protocol::Finding::as_str),
                    v.category.as_str(),
                )
            })
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
        let (one, _) = Verifier::bare(t.policy.clone())
            .make_baseline(Some(&key), 1)
            .expect("1");
        let mut four = Verifier::bare(t.policy.clone());
        four.hasher.threads = 4;
        let (m, slots) = four.make_baseline(Some(&key), 1).expect("4");
        assert_eq!(
            one.entries, m.entries,
            "same digests whatever the thread count"
        );
        let read = four.hasher.bytes_hashed;
        let total: u64 = m.entries.iter().map(|e| e.size).sum();
        assert_eq!(read, total, "each file read once");

        // The slots filled while making it are adopted for it: its first sweep reads nothing.
        four.hasher.adopt(&"0".repeat(64), slots);
        four.adopt_as(m.clone(), &"0".repeat(64));
        let r = four.sweep_all(false).expect("swept");
        assert_eq!(
            (r.violation_count, r.bytes_hashed),
            (0, 0),
            "all from the slots"
        );

        // Same size, new content: only that file is read, and it is caught.
        std::fs::write(root.join("models/m4"), vec![9u8; 5 << 20]).expect("tamper");
        let r = four.sweep_all(false).expect("swept");
        assert_eq!(r.violation_count, 1);
        assert!(r.violations[0].path.ends_with("/models/m4"));
        assert_eq!(r.bytes_hashed, 5 << 20);
        // Against another baseline (another digest), the slots say nothing: all is read but
        // the tampered file, whose digest is remembered by its path.
        four.adopt_as(m, &"1".repeat(64));
        let r = four.sweep_all(false).expect("swept");
        assert_eq!((r.violation_count, r.bytes_hashed), (1, total - (5 << 20)));
    }

    #[test]
    fn baseline_refuses_missing_or_symlinked_listed_file() {
        let t = tree();
        std::fs::remove_file(t.dir.path().join("bin")).expect("rm");
        let e = Verifier::fresh_baseline(&t.policy).expect_err("refused");
        assert!(
            matches!(&e, BaselineRefused::Unreadable { path, why } if path.ends_with("bin") && why == "missing"),
            "{e}"
        );
        std::os::unix::fs::symlink("/etc/passwd", t.dir.path().join("bin")).expect("symlink");
        let e = Verifier::fresh_baseline(&t.policy).expect_err("refused");
        assert!(
            matches!(&e, BaselineRefused::Unreadable { why, .. } if why.contains("symlink")),
            "{e}"
        );
    }

    #[test]
    fn a_model_written_while_a_baseline_reads_it_is_left_out_and_reported() {
        let t = tree();
        // 256 MiB (sparse) under a 32 MiB/s budget: 8 s to read, written to 300 ms in.
        let big = t.dir.path().join("models/big.gguf");
        std::fs::File::create(&big)
            .expect("create")
            .set_len(256 << 20)
            .expect("set_len");
        let mut v = Verifier::bare(t.policy.clone());
        v.hasher.set_rate_limit(Some(32 << 20));
        let writer = crate::reading::write_later(&big, std::time::Duration::from_millis(300), 0);
        let (m, _) = v.make_baseline(None, 1).expect("baseline");
        writer.join().expect("writer");
        // A digest of a file being written is not its content: no entry, so it is reported.
        assert!(m.entries.iter().all(|e| e.path != path_str(&big)));
        let r = run(&t, &m);
        assert_eq!(r.violation_count, 1);
        assert!(r.violations[0].path.ends_with("/models/big.gguf"));
        // Once the writes are done, a new baseline has it.
        v.hasher.set_rate_limit(None);
        let (m, _) = v.make_baseline(None, 2).expect("baseline");
        assert!(m.entries.iter().any(|e| e.path == path_str(&big)));
    }

    #[test]
    fn the_registry_governs_its_dir_with_file_and_directory_artifacts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let m = r.join("models");
        std::fs::create_dir_all(m.join("shards/sub")).expect("mkdir");
        std::fs::write(m.join("old.gguf"), "old").expect("write");
        std::fs::write(m.join("shards/a.bin"), "A").expect("write");
        std::fs::write(m.join("shards/sub/b.bin"), "BB").expect("write");
        let shards =
            crate::verifying::registry::dir_hash_by_hand(&[("a.bin", b"A"), ("sub/b.bin", b"BB")]);
        let yaml = format!(
            "model_dirs: [{d}/models]\nregistry_manifest: {d}/models/manifest.json\n",
            d = r.display()
        );
        let policy = Policy::parse(&yaml).expect("policy");
        let manifest = |body: &str| std::fs::write(m.join("manifest.json"), body).expect("write");
        let enrol = |extra: &str| {
            let old = protocol::sign::sha256_hex(b"old");
            manifest(&format!("{{\"version\":1,\"models\":[{{\"name\":\"old\",\"filename\":\"old.gguf\",\"sha256\":\"{old}\",\"size_bytes\":3}},{{\"name\":\"sd\",\"filename\":\"shards\",\"sha256\":\"{shards}\",\"size_bytes\":3}}{extra}]}}"));
        };
        enrol("");
        let baseline = Verifier::fresh_baseline(&policy).expect("baseline");
        assert!(baseline.entries.is_empty(), "the dir follows the registry");
        let mut v = Verifier::bare(policy.clone());
        v.adopt_as(baseline, &"0".repeat(64));
        let mut run = || v.sweep_all(false).expect("swept");
        let found = |rep: ScanReport| -> Vec<(String, String)> {
            rep.violations
                .into_iter()
                .map(|v| {
                    (
                        v.path.rsplit('/').next().unwrap_or("").to_owned(),
                        v.actual_hash.to_string(),
                    )
                })
                .collect()
        };
        assert_eq!(
            found(run()),
            vec![],
            "a file and a directory artifact, both enrolled"
        );
        assert_eq!(found(run()), vec![], "again, from the remembered versions");
        // A promoted artifact is trusted without a rebaseline; an unknown entry is not.
        std::fs::write(m.join("new.gguf"), "new").expect("write");
        assert_eq!(
            found(run()),
            vec![("new.gguf".into(), "unregistered".into())]
        );
        let new = protocol::sign::sha256_hex(b"new");
        enrol(&format!(
            ",{{\"name\":\"n\",\"filename\":\"new.gguf\",\"sha256\":\"{new}\",\"size_bytes\":3}}"
        ));
        assert_eq!(found(run()), vec![]);
        // A shard changed in place (same size): its directory digest no longer matches.
        std::fs::write(m.join("shards/sub/b.bin"), "CC").expect("write");
        let got = found(run());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, "shards");
        assert!(protocol::hexfmt::is_sha256_hex(&got[0].1), "{got:?}");
        std::fs::write(m.join("shards/sub/b.bin"), "BB").expect("write");
        assert_eq!(found(run()), vec![]);
        // A symlink or a hard link inside an artifact makes it invalid.
        std::os::unix::fs::symlink("/etc/passwd", m.join("shards/link")).expect("symlink");
        assert_eq!(
            found(run()),
            vec![("shards".into(), "artifact_invalid".into())]
        );
        std::fs::remove_file(m.join("shards/link")).expect("rm");
        std::fs::hard_link(m.join("shards/a.bin"), r.join("a.hard")).expect("link");
        assert_eq!(
            found(run()),
            vec![("shards".into(), "artifact_invalid".into())]
        );
        std::fs::remove_file(r.join("a.hard")).expect("rm");
        assert_eq!(found(run()), vec![]);
        // The manifest itself: another version, a repeated name, gone.
        manifest("{\"version\":2,\"models\":[]}");
        assert_eq!(
            found(run()),
            vec![("manifest.json".into(), "manifest_invalid".into())]
        );
        enrol(",{\"name\":\"again\",\"filename\":\"old.gguf\",\"sha256\":\"00000000000000000000000000000000000000000000000000000000000000aa\",\"size_bytes\":1}");
        assert!(found(run()).contains(&("manifest.json".into(), "manifest_invalid".into())));
        std::fs::remove_file(m.join("manifest.json")).expect("rm");
        assert_eq!(
            found(run()),
            vec![("manifest.json".into(), "manifest_invalid".into())]
        );
    }

    #[test]
    fn directory_artifacts_hashed_together_on_several_threads_match_their_definition() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut dirs = Vec::new();
        let mut expected = Vec::new();
        for (d, files) in [
            ("one", vec![("a", "1"), ("b/c", "22")]),
            (
                "two",
                vec![("x.bin", "333"), ("y/z/w", "4444"), ("y/q", "")],
            ),
            ("three", vec![("only", "55555")]),
        ] {
            for (rel, content) in &files {
                let p = dir.path().join(d).join(rel);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(&p, content).expect("write");
            }
            let bytes: Vec<(&str, &[u8])> = files.iter().map(|(r, c)| (*r, c.as_bytes())).collect();
            let total: usize = files.iter().map(|(_, c)| c.len()).sum();
            expected.push(Ok((
                crate::verifying::registry::dir_hash_by_hand(&bytes),
                total as u64,
            )));
            dirs.push(dir.path().join(d));
        }
        let mut hasher = FileHasher::default();
        hasher.threads = 3;
        assert_eq!(
            crate::verifying::registry::directory_digests(&mut hasher, &dirs),
            expected
        );
        let read = hasher.bytes_hashed;
        assert_eq!(read, 15, "every byte once");
        // Again: from the remembered versions, nothing read.
        assert_eq!(
            crate::verifying::registry::directory_digests(&mut hasher, &dirs),
            expected
        );
        assert_eq!(hasher.bytes_hashed, read);
    }

    #[test]
    fn a_baseline_never_blesses_a_file_the_release_disagrees_with() {
        let t = tree();
        let root = t.dir.path();
        let bin = root.join("bin");
        let good = protocol::sign::sha256_hex(b"b");
        std::fs::write(root.join("release.json"), format!("{{\"version\":1,\"source_commit\":\"c0ffee0123456789abcdef0123456789abcdef01\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{good}\",\"size\":1}}]}}", bin.display())).expect("write");
        let mut policy = t.policy.clone();
        policy.release_baseline = Some(root.join("release.json"));
        assert!(Verifier::fresh_baseline(&policy).is_ok());
        std::fs::write(&bin, "x").expect("tamper");
        let e = Verifier::fresh_baseline(&policy).expect_err("refused");
        let e = e.to_string();
        assert!(
            e.contains(&bin.display().to_string()) && e.contains("c0ffee0123456789"),
            "{e}"
        );
    }

    #[test]
    fn violations_are_capped_but_counted() {
        let t = tree();
        let m = Verifier::fresh_baseline(&t.policy).expect("baseline");
        for i in 0..(MAX_REPORTED_VIOLATIONS + 10) {
            std::fs::write(t.dir.path().join(format!("models/x{i:04}")), "x").expect("write");
        }
        let r = run(&t, &m);
        assert_eq!(r.violation_count as usize, MAX_REPORTED_VIOLATIONS + 10);
        assert_eq!(r.violations.len(), MAX_REPORTED_VIOLATIONS);
    }
}
