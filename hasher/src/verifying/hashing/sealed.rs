//! Checks answered by a file's fs-verity seal: while a sealed file's verity digest is the one
//! bound to its content ([`crate::verifying::seals`]), its digest is known without a read.

use super::*;
use crate::reading::Sealing;

impl FileHasher {
    /// The outcome of `path` from its seal, when its binding can give one: its bound digest when
    /// the seal measured now is the bound one; `SealChanged` at once when the seal differs and
    /// the bound content is what the baseline names (another seal is other content). `None`:
    /// read it (no binding, its backstop read is due, no seal now, or a seal nothing says of).
    pub(super) fn sealed_answer(
        &mut self,
        path: &Path,
        meta: &Metadata,
        expect: Option<Expect>,
    ) -> Option<Outcome> {
        if !self.seals.enabled() || !meta.file_type().is_file() {
            return None;
        }
        let now_ms = self.ms_since_born(Instant::now());
        let bound = self.seals.get(path).filter(|b| now_ms < b.due_ms)?.clone();
        // No seal now (cleared, or the file replaced by an unsealed one): the ordinary read.
        let (seal, opened) = crate::reading::look_seal(path, &self.reads.secrets)?;
        let key = self.keys.of(path);
        let names_bound = expect.filter(|e| e.hash.0 == bound.sha && e.size == bound.size);
        if seal != bound.seal {
            self.seals.set_in_force(path, false);
            let e = names_bound?;
            self.slots.clear(e.index);
            self.cache.remove(&key);
            return Some(Outcome::SealChanged(seal.to_string()));
        }
        let version = self.keys.version(&Version::of(&opened));
        let due_ms = bound.due_ms;
        match names_bound {
            Some(e) => {
                self.cache.remove(&key);
                self.slots.set(e.index, key, Slot { version, due_ms });
            }
            None => {
                if let Some(e) = expect {
                    self.slots.clear(e.index);
                }
                let cached = Cached {
                    version,
                    hash: bound.sha,
                    size: bound.size,
                    due_ms,
                };
                self.cache.insert(key, cached);
            }
        }
        self.seals.set_in_force(path, true);
        Some(Outcome::Hashed {
            hash: protocol::hexfmt::Sha256Digest(bound.sha),
            size: bound.size,
        })
    }

    /// Takes what a whole read of `path` learned of its seal: a sealed file's content is bound
    /// to its seal; a file found unsealed loses its binding; a read that failed leaves the
    /// binding but not in force.
    pub(super) fn learn_seal(&mut self, path: &Path, outcome: &Outcome, sealing: Sealing) {
        match (outcome, sealing) {
            (Outcome::Hashed { hash, size }, Sealing::Sealed(seal)) => {
                let due_ms = self.due_ms(hash.0[0]);
                self.seals.learn(path, hash.0, *size, seal, due_ms);
            }
            (_, Sealing::Unsealed) => self.seals.unsealed(path),
            (Outcome::Hashed { .. }, Sealing::Unknown) => {}
            _ => self.seals.set_in_force(path, false),
        }
    }

    /// Whether `path`, of `category`, must be sealed (`fsverity: require`, a model file); then
    /// a seal it has no binding for (sealed in place since its last read: enabling fs-verity
    /// need not move its version) has its next check read it, once, to bind it.
    pub(in crate::verifying) fn seal_required(
        &mut self,
        path: &Path,
        category: protocol::Category,
    ) -> bool {
        if self.seals.mode != crate::policy::FsVerity::Require
            || category != protocol::Category::ModelFile
        {
            return false;
        }
        if !self.seals.is_sealed(path)
            && crate::reading::look_seal(path, &self.reads.secrets).is_some()
        {
            self.forget(path);
        }
        true
    }
}
