//! What the file memory keeps of each file: its slot (a baseline entry's version and due
//! time), the path-keyed cache for the rest, large files' chunk digests, and forgetting.

use super::*;

impl FileHasher {
    /// Fingerprints versions under a key derived from `secret` (the HMAC key), so what the
    /// slots remember can be stored and still mean the same after a restart. Forgets all.
    pub(in crate::verifying) fn key_versions(&mut self, secret: &[u8]) {
        let derived =
            protocol::sign::hmac_raw(secret, &[b"integrity-monitor.version-fingerprint.v1"]);
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&derived);
        self.keys.versions = keyed(&block);
        self.forget_all();
    }

    /// What the slots remember, for the store: the baseline they are bound to, and for each
    /// entry its version's fingerprint and when it falls due in seconds since the epoch
    /// (`(0, 0)`: nothing remembered).
    pub(crate) fn remembered(&self) -> (&str, Vec<(u64, u64)>) {
        let now = Instant::now();
        let (now_ms, wall) = (self.ms_since_born(now), unix_now());
        let slots = self.slots.all().iter().map(|s| {
            if s.due_ms == 0 {
                return (0, 0);
            }
            (s.version, wall + s.due_ms.saturating_sub(now_ms) / 1000)
        });
        (self.slots.bound(), slots.collect())
    }

    /// The slot for what a store remembered of one entry (see [`FileHasher::remembered`]):
    /// a due time past, or further off than the backstop period, is due now.
    pub(in crate::verifying) fn slot_of(&self, version: u64, due: u64) -> Slot {
        let ahead = due.saturating_sub(unix_now());
        if version == 0 || ahead == 0 || ahead > self.full_rehash.as_secs() {
            return Slot::default();
        }
        Slot {
            version,
            due_ms: self.ms_since_born(Instant::now()) + ahead * 1000,
        }
    }

    /// Binds the slots to the baseline with digest `baseline` and `entries` entries (what
    /// they remember of another baseline is dropped).
    pub(crate) fn bind(&mut self, baseline: &str, entries: usize) {
        self.slots.bind(baseline, entries);
    }

    /// Takes the slots a new baseline's making filled (see [`FileHasher::check_new`]), in the
    /// order of its entries, for the baseline with digest `baseline`.
    pub(in crate::verifying) fn adopt(&mut self, baseline: &str, slots: Vec<Slot>) {
        self.slots.adopt(baseline, slots);
    }

    pub(super) fn fresh(&self, path: &Path, m: &Metadata, now: Instant) -> Option<&Cached> {
        self.cache.get(&self.keys.of(path)).filter(|c| {
            m.file_type().is_file()
                && self.keys.version(&Version::of(m)) == c.version
                && self.ms_since_born(now) < c.due_ms
        })
    }

    /// Milliseconds since the hasher was made (what due times count in).
    pub(crate) fn ms_now(&self) -> u64 {
        self.ms_since_born(Instant::now())
    }

    pub(super) fn ms_since_born(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.born).as_millis()).unwrap_or(u64::MAX)
    }

    /// Forgets the digest of `path`: its next check reads it in full.
    pub fn forget(&mut self, path: &Path) {
        self.links.forget(path);
        let key = self.keys.of(path);
        self.cache.remove(&key);
        self.slots.forget(key);
        self.dirs
            .retain(|dir, _| !path.starts_with(dir) && !dir.starts_with(path));
    }

    /// Forgets every remembered digest: the next check of each file reads it in full.
    pub fn forget_all(&mut self) {
        self.cache = HashMap::new();
        self.slots.forget_all();
        self.dirs.clear();
    }

    /// Keeps a large file's chunk digests for its next re-verification.
    pub(super) fn keep_chunks(
        &mut self,
        path: &Path,
        hash: Sha256Digest,
        size: u64,
        chunks: Vec<[u8; 32]>,
    ) {
        if !chunks.is_empty() {
            let known = crate::reading::Known { hash, size, chunks };
            self.learn_chunks(path.to_owned(), known);
        }
    }

    /// Takes the chunk digests of content at `path` (read now, or recalled from the store).
    pub(in crate::verifying) fn learn_chunks(
        &mut self,
        path: PathBuf,
        known: crate::reading::Known,
    ) {
        if self.known.get(&path) != Some(&known) {
            self.known.insert(path, known);
            self.chunks_learned = true;
        }
    }

    /// The chunk digests held, by path.
    pub(in crate::verifying) fn known_chunks(
        &self,
    ) -> impl Iterator<Item = (&Path, &crate::reading::Known)> {
        self.known.iter().map(|(p, k)| (p.as_path(), k))
    }

    /// Whether chunk digests were learned since the last call (what the store holds is stale).
    pub(in crate::verifying) fn take_chunks_learned(&mut self) -> bool {
        std::mem::take(&mut self.chunks_learned)
    }

    /// When a version read now whose digest begins with the byte `lead` is due to be read
    /// again.
    pub(crate) fn due_ms(&self, lead: u8) -> u64 {
        self.ms_since_born(Instant::now())
            .saturating_add(u64::try_from(self.spread(lead).as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn remember(
        &mut self,
        path: &Path,
        result: ReadResult,
        chunks: Vec<[u8; 32]>,
        expect: Option<Expect>,
    ) -> Outcome {
        let key = self.keys.of(path);
        let result = match result {
            // Where a write can leave the metadata as it was, nothing is remembered: the next
            // check reads the file again.
            (outcome, Some(v)) if !self.trusts(&v, path) => (outcome, None),
            kept => kept,
        };
        let (Outcome::Hashed { hash, size }, Some(version)) = result else {
            self.cache.remove(&key);
            if let Some(e) = expect {
                self.slots.clear(e.index);
            }
            return result.0;
        };
        self.keep_chunks(path, hash, size, chunks);
        let (version, due_ms) = (self.keys.version(&version), self.due_ms(hash.0[0]));
        match expect {
            Some(e) if e.size == size && e.hash == hash => {
                self.cache.remove(&key);
                self.slots.set(e.index, key, Slot { version, due_ms });
            }
            _ => {
                if let Some(e) = expect {
                    self.slots.clear(e.index);
                }
                let cached = Cached {
                    version,
                    hash: hash.0,
                    size,
                    due_ms,
                };
                self.cache.insert(key, cached);
            }
        }
        Outcome::Hashed { hash, size }
    }

    /// The backstop period for one file, spread over [interval/2, interval] by its digest's
    /// first byte `lead` so files hashed together at start do not all fall due at once.
    pub(crate) fn spread(&self, lead: u8) -> Duration {
        self.full_rehash / 2 + self.full_rehash / 2 * u32::from(lead) / 255
    }
}
