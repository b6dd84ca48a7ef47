//! What the hasher knows of sealed files: for each, the SHA-256 and size of its content bound
//! to its fs-verity digest, learned by one whole read through verity (the digest measured
//! before and after). A verity digest names the content through its Merkle tree, so while a
//! file's seal is the one bound, its content is the bound content: a check measures the seal
//! (O(1)) and reads nothing, after a reboot too (the bindings are kept signed in the store:
//! `sealstore`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::policy::FsVerity;
use crate::reading::Seal;

/// One sealed file's binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::verifying) struct Binding {
    /// SHA-256 of the content read through the seal.
    pub(crate) sha: [u8; 32],
    /// Its size.
    pub(crate) size: u64,
    /// The file's fs-verity digest then.
    pub(crate) seal: Seal,
    /// When the backstop reads the file again regardless (ms since the hasher's `born`): a
    /// data block edited offline under an intact tree is found only by a read (EIO).
    pub(in crate::verifying) due_ms: u64,
    /// The file was found with this seal at its last check that looked.
    pub(crate) in_force: bool,
}

/// Most bindings held: sealed files are models, a few large files each; past this many (a
/// million small files sealed), further ones are read as unsealed files are, so the hasher's
/// A directory artifact's digest bound to the fingerprint of its files' seals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::verifying) struct DirSeal {
    /// SHA-256 over every file's relative path, size and seal, in the artifact's order.
    pub(in crate::verifying) fingerprint: [u8; 32],
    /// Its `SecAI-Directory-Hash-v1` (hex) and total size.
    pub(crate) digest: String,
    /// The total size of its files.
    pub(crate) total: u64,
    /// When the backstop reads it again regardless (ms since the hasher's `born`).
    pub(in crate::verifying) due_ms: u64,
}

/// memory stays bounded (about 200 bytes a binding).
pub(in crate::verifying) const MAX_BINDINGS: usize = 100_000;

/// The bindings, by path, and the policy's `fsverity` mode.
#[derive(Debug, Default)]
pub(crate) struct Seals {
    /// The policy's `fsverity`.
    pub(crate) mode: FsVerity,
    bindings: HashMap<PathBuf, Binding>,
    /// Directory artifacts whose every file is sealed, by path.
    dirs: HashMap<PathBuf, DirSeal>,
    /// Bindings were learned or dropped since the store was last told.
    changed: bool,
}

impl Seals {
    /// Whether seals are measured and used.
    pub(crate) fn enabled(&self) -> bool {
        self.mode.enabled()
    }

    /// The binding of `path`, if any.
    pub(in crate::verifying) fn get(&self, path: &Path) -> Option<&Binding> {
        self.bindings.get(path)
    }

    /// Binds the content read at `path` to its seal.
    pub(in crate::verifying) fn learn(
        &mut self,
        path: &Path,
        sha: [u8; 32],
        size: u64,
        seal: Seal,
        due_ms: u64,
    ) {
        let new = Binding {
            sha,
            size,
            seal,
            due_ms,
            in_force: true,
        };
        let held = self.bindings.get(path);
        if held.is_none() && self.bindings.len() >= MAX_BINDINGS {
            return;
        }
        let same = held.is_some_and(|b| (b.sha, b.size, b.seal) == (sha, size, seal));
        self.changed |= !same;
        self.bindings.insert(path.to_owned(), new);
    }

    /// The binding of the directory artifact at `dir`, if any.
    pub(in crate::verifying) fn dir(&self, dir: &Path) -> Option<&DirSeal> {
        self.dirs.get(dir)
    }

    /// Binds a directory artifact's digest to its files' seals (recalled, or read now).
    pub(in crate::verifying) fn learn_dir(&mut self, dir: &Path, seal: DirSeal) {
        if self.dirs.len() >= MAX_BINDINGS && !self.dirs.contains_key(dir) {
            return;
        }
        let same = self.dirs.get(dir).is_some_and(|d| {
            (d.fingerprint, &d.digest, d.total) == (seal.fingerprint, &seal.digest, seal.total)
        });
        self.changed |= !same;
        self.dirs.insert(dir.to_owned(), seal);
    }

    /// Every directory binding, by path.
    pub(in crate::verifying) fn all_dirs(&self) -> impl Iterator<Item = (&Path, &DirSeal)> {
        self.dirs.iter().map(|(p, d)| (p.as_path(), d))
    }

    /// Takes a binding recalled from the store (it is in force until a check says otherwise).
    pub(in crate::verifying) fn recall(&mut self, path: PathBuf, binding: Binding) {
        if self.bindings.len() < MAX_BINDINGS {
            self.bindings.insert(path, binding);
        }
    }

    /// `path` was found without a seal: its binding, if any, is dropped.
    pub(crate) fn unsealed(&mut self, path: &Path) {
        self.changed |= self.bindings.remove(path).is_some();
    }

    /// Whether `path`'s binding holds (`false`: found otherwise, or not bound).
    pub(in crate::verifying) fn set_in_force(&mut self, path: &Path, in_force: bool) {
        if let Some(b) = self.bindings.get_mut(path) {
            b.in_force = in_force;
        }
    }

    /// Whether `path` was found sealed, with its bound seal, at its last check that looked.
    pub(in crate::verifying) fn is_sealed(&self, path: &Path) -> bool {
        self.bindings.get(path).is_some_and(|b| b.in_force)
    }

    /// Whether a check of `path` may be answered by its seal (bound, not due for its backstop
    /// read): reading it ahead would be wasted.
    pub(in crate::verifying) fn may_answer(&self, path: &Path, now_ms: u64) -> bool {
        self.enabled() && self.bindings.get(path).is_some_and(|b| now_ms < b.due_ms)
    }

    /// How many files were found sealed, with their bound seals.
    pub(crate) fn in_force(&self) -> usize {
        self.bindings.values().filter(|b| b.in_force).count()
    }

    /// Every binding, by path.
    pub(in crate::verifying) fn all(&self) -> impl Iterator<Item = (&Path, &Binding)> {
        self.bindings.iter().map(|(p, b)| (p.as_path(), b))
    }

    /// Keeps only the bindings of paths `watched` says are watched (a reload narrowed it).
    pub(crate) fn retain(&mut self, watched: impl Fn(&Path) -> bool) {
        let before = self.bindings.len() + self.dirs.len();
        self.bindings.retain(|p, _| watched(p));
        self.dirs.retain(|p, _| watched(p));
        self.changed |= self.bindings.len() + self.dirs.len() != before;
    }

    /// Has the bindings kept again (a new baseline: the store holds them under the old one).
    pub(in crate::verifying) fn touch(&mut self) {
        self.changed = true;
    }

    /// Whether bindings changed since the last call (what the store holds is stale).
    pub(in crate::verifying) fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seal(fill: u8) -> Seal {
        Seal::new(imsys::verity::ALG_SHA256, &[fill; 32]).expect("seal")
    }

    #[test]
    fn a_binding_answers_until_due_and_only_a_change_is_kept_again() {
        let mut s = Seals::default();
        let p = Path::new("/m/a.gguf");
        s.learn(p, [1; 32], 10, seal(1), 500);
        assert!(s.take_changed(), "a new binding is kept");
        assert!(s.is_sealed(p) && s.may_answer(p, 499) && !s.may_answer(p, 500));
        s.learn(p, [1; 32], 10, seal(1), 900);
        assert!(!s.take_changed(), "the same binding again: nothing to keep");
        s.set_in_force(p, false);
        assert!(!s.is_sealed(p) && s.in_force() == 0 && s.get(p).is_some());
        s.mode = FsVerity::Off;
        assert!(!s.may_answer(p, 0), "off: seals never answer");
        s.mode = FsVerity::Auto;
        s.unsealed(p);
        assert!(s.get(p).is_none() && s.take_changed());
        s.learn(p, [2; 32], 10, seal(2), 900);
        s.learn(Path::new("/other/b"), [3; 32], 10, seal(3), 900);
        s.take_changed();
        s.retain(|q| q.starts_with("/m"));
        assert_eq!((s.in_force(), s.take_changed()), (1, true));
    }

    #[test]
    fn bindings_are_bounded() {
        let mut s = Seals::default();
        for i in 0..MAX_BINDINGS {
            s.learn(Path::new(&format!("/m/{i}")), [1; 32], 1, seal(1), 9);
        }
        s.learn(Path::new("/m/one-more"), [1; 32], 1, seal(1), 9);
        assert!(
            s.get(Path::new("/m/one-more")).is_none(),
            "read as unsealed"
        );
        s.learn(Path::new("/m/7"), [2; 32], 1, seal(2), 9);
        assert_eq!(
            s.get(Path::new("/m/7")).map(|b| b.sha),
            Some([2; 32]),
            "a held one still moves"
        );
    }
}
