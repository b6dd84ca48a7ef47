//! Which reads of the file memory prove what they read (see `reading::proof`), what a read
//! settled for the files pending proof, and what a file's filesystem lets its metadata say.

use super::*;

impl FileHasher {
    /// The version remembered for `path` (its slot's, else the cache's), if any.
    pub(super) fn version_known(&self, path: &Path, expect: Option<Expect>) -> Option<u64> {
        let slot = expect
            .and_then(|e| self.slots.get(e.index, || self.keys.of(path)))
            .map(|s| s.version);
        let cached = || self.cache.get(&self.keys.of(path)).map(|c| c.version);
        slot.or_else(cached).filter(|v| *v != 0)
    }

    /// Whether a version other than the one `m` describes was remembered for `path`.
    pub(super) fn remembered_another(
        &self,
        path: &Path,
        expect: Option<Expect>,
        m: &Metadata,
    ) -> bool {
        let now = self.keys.version(&Version::of(m));
        self.version_known(path, expect).is_some_and(|v| v != now)
    }

    /// Whether a read of `path` (now at `m`) must prove its content (`reading::proof`): it
    /// awaits proof, or its version is not the one remembered from a proven read. Every version
    /// remembered came from such a read (a read that could not prove stays pending), so only
    /// the backstop's re-read of an unchanged file goes without a writeback.
    pub(super) fn must_prove(
        &self,
        path: &Path,
        expect: Option<Expect>,
        m: Option<&Metadata>,
    ) -> bool {
        let known = m.is_some_and(|m| {
            self.version_known(path, expect) == Some(self.keys.version(&Version::of(m)))
        });
        self.settling.awaits(path) || !known
    }

    /// Notes what a read of `path` established for the files pending proof.
    pub(super) fn settle(&mut self, path: &Path, result: &ReadResult, proof: Proof) {
        use settling::Settled;
        let settled = match (&result.0, proof) {
            (Outcome::Hashed { .. }, Proof::Unproven(why)) => {
                tracing::info!(path = %path.display(), why, "read not proven: read again soon");
                Settled::Unproven
            }
            (Outcome::Hashed { .. }, _) => Settled::Proven,
            (Outcome::Unreadable(why), _) if why == crate::reading::CHANGED_WHILE_READ => {
                Settled::Unproven
            }
            _ => Settled::Moot,
        };
        self.settling.after(path, settled);
    }

    /// Whether the metadata of `version` (of `path`) may answer for it later: not on a
    /// filesystem where a write can leave it as it was (see [`crate::reading::FsKind`]).
    pub(crate) fn trusts(&mut self, version: &Version, path: &Path) -> bool {
        self.kind_of(version, path).trusts_metadata()
    }

    /// What the filesystem of `path` (at `version`) lets its metadata say.
    pub(crate) fn kind_of(&mut self, version: &Version, path: &Path) -> FsKind {
        self.kinds.of(version.dev(), path)
    }
}
