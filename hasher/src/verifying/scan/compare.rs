//! The comparison of what a walk or a check found with the baseline's entries: which entries
//! were seen, what each finding says, what a scope of the tree covers.

use super::*;
use crate::verifying::hashing::Given;

/// One scan's comparison against the baseline, as it goes: the policy followed, the
/// baseline's entries and the file memory read through, borrowed from the
/// `Verifier` for the scan.
pub(crate) struct Comparison<'a> {
    policy: &'a Policy,
    /// The baseline's entries, sorted by path.
    entries: &'a Entries,
    hasher: &'a mut FileHasher,
    /// When this scan started (every violation it finds carries it).
    now: String,
    /// What it found.
    pub(crate) violations: Vec<Violation>,
    /// Paths examined.
    pub(crate) watched: u32,
    /// Which baseline entries were found, a bit each (what a walk did not find is missing);
    /// allocated when first needed.
    seen: Vec<u64>,
    /// The index after the last entry found: a walk's sorted batch finds its entries one
    /// after another, so the next is tried before a search of a million paths.
    next: usize,
}

impl<'a> Comparison<'a> {
    pub(crate) fn new(
        policy: &'a Policy,
        entries: &'a Entries,
        hasher: &'a mut FileHasher,
    ) -> Comparison<'a> {
        Comparison {
            policy,
            entries,
            hasher,
            now: now_rfc3339(),
            violations: Vec::new(),
            watched: 0,
            seen: Vec::new(),
            next: 0,
        }
    }

    /// The file memory the comparison reads through.
    pub(crate) fn hasher(&mut self) -> &mut FileHasher {
        self.hasher
    }

    /// The index of the baseline entry for `key`, if there is one.
    pub(crate) fn index_of(&mut self, key: &str) -> Option<usize> {
        let found = if self.next < self.entries.len() && self.entries.path(self.next) == key {
            Some(self.next)
        } else {
            self.entries.index_of(key)
        };
        if let Some(i) = found {
            self.next = i + 1;
        }
        found
    }

    pub(crate) fn set_seen(&mut self, i: usize, value: bool) {
        if self.seen.is_empty() {
            self.seen = vec![0; self.entries.len().div_ceil(64)];
        }
        if let Some(word) = self.seen.get_mut(i / 64) {
            let bit = 1u64 << (i % 64);
            if value {
                *word |= bit;
            } else {
                *word &= !bit;
            }
        }
    }

    pub(crate) fn was_seen(&self, i: usize) -> bool {
        self.seen
            .get(i / 64)
            .is_some_and(|w| w & (1u64 << (i % 64)) != 0)
    }

    pub(crate) fn flag(
        &mut self,
        path: String,
        category: Category,
        expected: &str,
        actual: Actual,
    ) {
        self.violations.push(Violation {
            detected_at: self.now.clone(),
            category,
            path,
            expected_hash: expected.to_owned(),
            actual_hash: actual,
            action: category.action(),
        });
    }

    /// Every file the policy lists.
    pub(crate) fn listed(&mut self) {
        let policy = self.policy;
        for (path, category) in &policy.files {
            self.file(path, *category);
        }
    }

    /// A watched regular file: absent from the baseline, or not what the baseline says.
    pub(crate) fn file(&mut self, path: &Path, category: Category) {
        self.file_stated(path, category, None);
    }

    /// As [`Comparison::file`], with the `lstat` just taken where there is one.
    pub(crate) fn file_stated(
        &mut self,
        path: &Path,
        category: Category,
        stated: Option<std::fs::Metadata>,
    ) {
        self.watched += 1;
        let key = path_str(path);
        let Some(index) = self.index_of(&key) else {
            // Not read either way; a hard link or bind mount of a secret says what it is.
            let meta = stated.or_else(|| std::fs::symlink_metadata(path).ok());
            let marker = match meta {
                Some(m) if self.hasher.reads.secrets.is_inode(&m) => protocol::Finding::SecretFile,
                _ => protocol::Finding::Unregistered,
            };
            self.flag(key, category, report::NONE, marker.into());
            return;
        };
        self.set_seen(index, true);
        let Some(entry) = self.entries.get(index) else {
            return;
        };
        let sealing = self.hasher.seal_required(path, entry.category);
        // A size change is a violation at once; reading the file would only confirm it.
        let given = Given {
            entry: Some(Expect::of(index, &entry)),
            size: None,
            stated,
        };
        let outcome = self.hasher.check(path, given);
        let matches = matches!(&outcome, Outcome::Hashed { hash, size } if *hash == entry.hash && *size == entry.size);
        if !matches {
            self.flag(key, entry.category, &entry.hash.to_hex(), actual(&outcome));
        } else if sealing && !self.hasher.seals.is_sealed(path) {
            let marker = protocol::Finding::NotSealed.into();
            self.flag(key, entry.category, &entry.hash.to_hex(), marker);
        }
    }

    /// What walking (part of) a model dir found, and the baselined files in that part
    /// (`scope`) it did not find.
    pub(crate) fn walked(&mut self, scope: &Scope, found: &[(PathBuf, Found)]) {
        self.forget_seen(scope);
        self.walked_part(found);
        self.missing(scope);
    }

    /// As [`Comparison::walked`] for one regular file at `path` (the whole scope), with the
    /// `lstat` that found it.
    pub(crate) fn walked_file(&mut self, scope: &Scope, path: &Path, meta: std::fs::Metadata) {
        self.forget_seen(scope);
        if self.policy.registry_manifest.as_deref() != Some(path) {
            self.file_stated(path, Category::ModelFile, Some(meta));
        }
        self.missing(scope);
    }

    /// Clears what earlier walks found in `scope`: a check walks it afresh.
    pub(crate) fn forget_seen(&mut self, scope: &Scope) {
        for i in scope.indices() {
            self.set_seen(i, false);
        }
    }

    /// Part of what a walk found (one directory's entries, say).
    pub(crate) fn walked_part(&mut self, found: &[(PathBuf, Found)]) {
        for (path, what) in found {
            if self.policy.registry_manifest.as_ref() == Some(path) {
                continue;
            }
            match what {
                Found::File => self.file(path, Category::ModelFile),
                Found::Anomaly(kind) => {
                    self.watched += 1;
                    let key = path_str(path);
                    let index = self.index_of(&key);
                    if let Some(i) = index {
                        self.set_seen(i, true);
                    }
                    let expected = index.map_or_else(
                        || report::NONE.to_owned(),
                        |i| {
                            self.entries
                                .get(i)
                                .map(|e| e.hash.to_hex())
                                .unwrap_or_default()
                        },
                    );
                    self.flag(key, Category::ModelFile, &expected, (*kind).into());
                }
            }
        }
    }

    /// The baselined files in `scope` that the walks since [`Comparison::forget_seen`] did
    /// not find.
    pub(crate) fn missing(&mut self, scope: &Scope) {
        for i in scope.indices() {
            let Some(entry) = self.entries.get(i) else {
                continue;
            };
            if !self.was_seen(i) {
                self.flag(
                    entry.path.to_owned(),
                    entry.category,
                    &entry.hash.to_hex(),
                    protocol::Finding::Missing.into(),
                );
            }
        }
    }

    /// The model dirs against the registry `manifest` that governs them.
    pub(crate) fn registry(&mut self, manifest: &Path) {
        let dirs = &self.policy.model_dirs;
        for (path, expected, actual) in
            crate::verifying::registry::check(self.hasher, dirs, manifest)
        {
            self.watched += 1;
            self.flag(path, Category::ModelFile, &expected, actual);
        }
    }

    /// Baselined paths the policy no longer covers (a reload narrowed it): still findings.
    pub(crate) fn uncovered(&mut self, baseline: &Manifest) {
        let policy = self.policy;
        let listed: HashSet<&[u8]> = policy
            .files
            .iter()
            .map(|(p, _)| p.as_os_str().as_bytes())
            .collect();
        let covered = |p: &[u8]| listed.contains(p) || in_model_dir(policy, p);
        for entry in baseline
            .entries
            .iter()
            .filter(|e| !covered(e.path.as_bytes()))
        {
            self.flag(
                entry.path.to_owned(),
                entry.category,
                &entry.hash.to_hex(),
                protocol::Finding::Removed.into(),
            );
        }
    }
}
