//! Which files need reading: the metadata fast path, the full re-verification backstop, and
//! the spreading of full reads over threads. Reading itself is in [`crate::reading::Reader`].

mod links;
mod memory;
mod prefetch;
mod proving;
mod sealed;
mod settling;

pub(crate) use settling::read_kernel_window;
pub(in crate::verifying) use settling::Settled;

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use protocol::hexfmt::Sha256Digest;

use crate::reading::Proof;
use crate::reading::ReadContext;
use crate::reading::Sealing;
use crate::reading::{FsKind, Kinds};
pub use crate::reading::{Outcome, Version};
use crate::reading::{ReadResult, Reader};
use crate::verifying::slots::{Expect, Slot, Slots};

/// The first byte of a digest written as hex (0 where it is not): what spreads its file's
/// next full read (see `FileHasher::spread`).
pub(crate) fn lead(hex: &str) -> u8 {
    hex.get(..2)
        .and_then(|b| u8::from_str_radix(b, 16).ok())
        .unwrap_or(0)
}

/// A directory artifact's digest, and the version of every file it covered (the registry's
/// entry in this cache, kept here so that forgetting a path also forgets the artifacts under it).
pub(in crate::verifying) struct DirCached {
    pub(crate) files: Vec<(PathBuf, Version)>,
    pub(crate) digest: String,
    pub(crate) total: u64,
    pub(crate) due: Instant,
}

/// A path's key in the cache: 128 bits of SipHash under a key drawn at random for this
/// process (two domain-separated 64-bit outputs), so two watched paths share a key with odds
/// of about 2^-128, and no one who does not know the key can choose paths that do. Versions
/// are fingerprinted under a key of their own (see [`PathKeys::version`]).
struct PathKeys {
    paths: std::hash::RandomState,
    /// SHA-256 with one 64-byte key block absorbed.
    versions: sha2::Sha256,
}

impl Default for PathKeys {
    fn default() -> Self {
        use std::hash::BuildHasher;
        // Random for this process; made stable by [`FileHasher::key_versions`].
        let random = std::hash::RandomState::new();
        let mut key = [0u8; 64];
        for (i, chunk) in (0u8..).zip(key.chunks_exact_mut(8)) {
            chunk.copy_from_slice(&random.hash_one((3u8, i)).to_le_bytes());
        }
        PathKeys {
            paths: std::hash::RandomState::new(),
            versions: keyed(&key),
        }
    }
}

/// SHA-256 that has absorbed `key` as its first block.
fn keyed(key: &[u8; 64]) -> sha2::Sha256 {
    let mut h = <sha2::Sha256 as sha2::Digest>::new();
    sha2::Digest::update(&mut h, key);
    h
}

impl PathKeys {
    fn of(&self, path: &Path) -> u128 {
        use std::hash::BuildHasher;
        use std::os::unix::ffi::OsStrExt;
        let bytes = path.as_os_str().as_bytes();
        let half = |domain: u8| u128::from(self.paths.hash_one((domain, bytes)));
        (half(0) << 64) | half(1)
    }

    /// A version's fingerprint: 64 bits of SHA-256 over a secret key block and the version
    /// (one more block), so a change of any of its fields (ctime among them, which only the
    /// kernel sets) leaves it the same with odds of about 2^-64, and no one without the key
    /// can choose metadata that collides.
    fn version(&self, v: &Version) -> u64 {
        let mut h = self.versions.clone();
        sha2::Digest::update(&mut h, v.to_bytes());
        let d = sha2::Digest::finalize(h);
        let mut first = [0u8; 8];
        first.copy_from_slice(&d[..8]);
        u64::from_le_bytes(first)
    }
}

/// What is remembered of a file that has no baseline entry or does not match it (a matching
/// one is remembered in its entry's [`Slot`]).
struct Cached {
    /// [`PathKeys::version`] of the version read.
    version: u64,
    /// The digest as bytes: half the memory of its hex, for every watched file.
    hash: [u8; 32],
    size: u64,
    /// When this version must be read again regardless (the full re-verification backstop),
    /// in milliseconds since the hasher's `born`.
    due_ms: u64,
}

/// What a check is given of a file before it looks (not to be confused with
/// [`crate::reading::Known`], what a read learned of a large file's chunks).
#[derive(Debug)]
pub struct Given {
    /// Its baseline entry: a version that matched the entry before answers from its slot.
    pub(in crate::verifying) entry: Option<Expect>,
    /// The size it must have, where there is no entry (a registry's file artifact).
    pub(in crate::verifying) size: Option<u64>,
    /// The `lstat` the caller has just taken of it, standing in for the check's own.
    pub(in crate::verifying) stated: Option<Metadata>,
}

impl Given {
    /// Nothing known: the file is read unless its version was read before.
    pub const NOTHING: Given = Given {
        entry: None,
        size: None,
        stated: None,
    };
}

/// Seconds since the epoch now (0 before it).
fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Hashes files through buffers allocated up front, remembering the version each digest
/// belongs to so an unchanged file costs one `statx`.
pub struct FileHasher {
    pub(crate) reader: Reader,
    /// Bytes read since creation.
    pub(crate) bytes_hashed: u64,
    /// Files answered from the metadata fast path since creation.
    pub(in crate::verifying) fast_hits: u64,
    /// Large files proven unchanged by reading their chunks on several threads.
    pub(in crate::verifying) chunked_reads: u64,
    /// Keyed by [`PathKeys`], not by the path: a million paths are not held twice.
    cache: HashMap<u128, Cached>,
    /// Files that matched their baseline entry, in the entry's place.
    slots: Slots,
    keys: PathKeys,
    /// What the cache's deadlines count from.
    born: Instant,
    /// Checks made (what reads issued ahead keep ahead of).
    checks: std::sync::Arc<AtomicUsize>,
    /// Every file is read again at least this often.
    pub(in crate::verifying) full_rehash: Duration,
    /// The read budget, the api's lifeline and the secrets, for every read.
    pub(crate) reads: ReadContext,
    /// Arms the sentinel for a long read.
    pub(crate) arm: crate::live::Arm,
    /// Directory artifacts' digests, with the version of every file they covered.
    pub(in crate::verifying) dirs: HashMap<PathBuf, DirCached>,
    /// Larger files are reported, never read (a 1 TiB sparse file must not keep it reading).
    pub(crate) max_file_size: u64,
    /// Files read at once by [`FileHasher::prefetch`] (1: none; the checks read as they go),
    /// and threads reading one large file's chunks at once.
    pub(crate) threads: usize,
    /// What full reads of large files found, kept across changes (it describes content, not
    /// a version): the next re-verification of that file reads its chunks in parallel.
    known: HashMap<PathBuf, crate::reading::Known>,
    /// Chunk digests were learned since the store was last told.
    chunks_learned: bool,
    /// Changed files awaiting the read that proves them.
    pub(in crate::verifying) settling: settling::Settling,
    /// What each device's filesystem lets its files' metadata say.
    kinds: Kinds,
    /// Watched files with more than one link, and their own watches.
    pub(crate) links: links::Links,
    /// Sealed files' contents bound to their fs-verity digests.
    pub(crate) seals: crate::verifying::seals::Seals,
}

impl Default for FileHasher {
    fn default() -> Self {
        FileHasher {
            reader: Reader::default(),
            bytes_hashed: 0,
            fast_hits: 0,
            chunked_reads: 0,
            cache: HashMap::new(),
            slots: Slots::default(),
            keys: PathKeys::default(),
            born: Instant::now(),
            checks: Default::default(),
            full_rehash: Duration::from_secs(24 * 3600),
            reads: ReadContext::default(),
            arm: crate::live::Arm::default(),
            dirs: HashMap::new(),
            max_file_size: crate::policy::DEFAULT_MAX_FILE_SIZE,
            threads: 1,
            known: HashMap::new(),
            chunks_learned: false,
            settling: settling::Settling::default(),
            kinds: Kinds::default(),
            links: links::Links::default(),
            seals: crate::verifying::seals::Seals::default(),
        }
    }
}

impl FileHasher {
    /// A hasher with the policy's backstop period, read budget and thread count, whose reads
    /// are stopped by `reads`' lifeline and never give out its secrets.
    pub(in crate::verifying) fn for_policy(
        policy: &crate::policy::Policy,
        reads: ReadContext,
    ) -> FileHasher {
        let mut hasher = FileHasher {
            reads,
            ..FileHasher::default()
        };
        hasher.apply(policy);
        hasher
    }

    /// Takes the policy's backstop period, read budget and thread count (at start and reload).
    pub(in crate::verifying) fn apply(&mut self, policy: &crate::policy::Policy) {
        self.full_rehash = policy.full_rehash_interval;
        self.set_rate_limit(policy.hash_rate_limit);
        self.set_threads(policy.hash_threads);
        self.max_file_size = policy.max_file_size;
        if self.seals.mode != policy.fsverity {
            // What seals answered for stands no longer (`off`), or now may: read all again.
            self.forget_all();
            self.seals.mode = policy.fsverity;
        }
        self.reader.seals = policy.fsverity.enabled();
        self.settling
            .set_window(policy.settle_window.unwrap_or_default());
    }

    /// Sets how many threads read at once. With more than one, full reads of large files also
    /// take their chunk digests (a second SHA-256 over the same bytes) for later re-verification.
    pub fn set_threads(&mut self, threads: usize) {
        self.threads = threads.max(1);
        self.reader.take_chunks = self.threads > 1;
    }

    /// Sets the read budget in bytes per second shared by every reading thread.
    pub(in crate::verifying) fn set_rate_limit(&mut self, limit: Option<u64>) {
        self.reads.set_limit(limit);
    }

    /// Examines `path`, answering from memory when its version is unchanged and its
    /// re-verification is not due (from its entry's slot when `given` names the entry),
    /// otherwise reading it in full; a regular file whose size is not the one `given` says is
    /// reported at once, unread (one `statx` for both checks).
    pub fn check(&mut self, path: &Path, given: Given) -> Outcome {
        let size = given.entry.map(|e| e.size).or(given.size);
        self.check_with(path, size, given.entry, given.stated)
    }

    fn check_with(
        &mut self,
        path: &Path,
        expected_size: Option<u64>,
        expect: Option<Expect>,
        stated: Option<Metadata>,
    ) -> Outcome {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let meta = stated.map_or_else(|| std::fs::symlink_metadata(path), Ok);
        let kind = match &meta {
            Ok(m) if m.file_type().is_file() => self.kinds.of(m.dev(), path),
            _ => FsKind::Tracked,
        };
        let unread = match (&meta, kind) {
            (_, FsKind::Untrusted(name)) => Some(Outcome::Untrusted(name)),
            (Ok(m), _)
                if m.file_type().is_file() && expected_size.is_some_and(|e| e != m.size()) =>
            {
                Some(Outcome::SizeChanged(m.size()))
            }
            _ => None,
        };
        if let Some(outcome) = unread {
            if let Some(e) = expect {
                self.slots.clear(e.index);
            }
            self.settling.after(path, settling::Settled::Moot);
            return outcome;
        }
        let linked = meta
            .as_ref()
            .is_ok_and(|m| m.file_type().is_file() && m.nlink() > 1);
        // Asked whatever the filesystem: a read at every sweep does not see a write between
        // sweeps, a watch on the file does.
        let covered = !linked || self.links.covers(path);
        let fast = kind.trusts_metadata() && !self.settling.awaits(path) && covered;
        if let (Ok(m), true) = (&meta, fast) {
            let now = Instant::now();
            if let Some(e) = expect.filter(|e| self.slot_fresh(path, e, m, now)) {
                self.fast_hits += 1;
                return Outcome::Hashed {
                    hash: e.hash,
                    size: e.size,
                };
            }
            if let Some(c) = self.fresh(path, m, now) {
                let answer = Outcome::Hashed {
                    hash: Sha256Digest(c.hash),
                    size: c.size,
                };
                self.fast_hits += 1;
                return answer;
            }
        }
        if let Ok(m) = &meta {
            if let Some(answer) = self.sealed_answer(path, m, expect) {
                // A sealed file's content cannot change: nothing is left to prove.
                self.settling.after(path, settling::Settled::Proven);
                return answer;
            }
            if self.remembered_another(path, expect, m) {
                // A change no event named (a sweep's stat found it): settle it too.
                self.settling.note(path);
            }
        }
        self.hash_stated(path, meta.ok(), expect)
    }

    /// True when `e`'s slot remembers the version `m` describes, and it is not due.
    fn slot_fresh(&self, path: &Path, e: &Expect, m: &Metadata, now: Instant) -> bool {
        self.slots
            .get(e.index, || self.keys.of(path))
            .is_some_and(|slot| {
                m.file_type().is_file()
                    && self.keys.version(&Version::of(m)) == slot.version
                    && self.ms_since_born(now) < slot.due_ms
            })
    }

    /// Reads `path` for a new baseline (a read the prefetch made is taken, not re-read), and
    /// what its entry's slot will remember; nothing is kept here, so making a baseline of a
    /// million files fills no table of them.
    pub(in crate::verifying) fn check_new(&mut self, path: &Path) -> (Outcome, Slot) {
        self.checks.fetch_add(1, Ordering::Relaxed);
        let meta = std::fs::symlink_metadata(path).ok();
        let now = Instant::now();
        let key = self.keys.of(path);
        let prefetched = meta
            .as_ref()
            .and_then(|m| self.fresh(path, m, now))
            .is_some();
        if let Some(c) = self.cache.remove(&key).filter(|_| prefetched) {
            let slot = Slot {
                version: c.version,
                due_ms: c.due_ms,
            };
            let hash = Sha256Digest(c.hash);
            return (Outcome::Hashed { hash, size: c.size }, slot);
        }
        let prove = self.must_prove(path, None, meta.as_ref());
        let (result, chunks, sealing, proof) = self.read_now(path, meta, prove);
        self.settle(path, &result, proof);
        let (outcome, version) = result;
        self.learn_seal(path, &outcome, sealing);
        let slot = match (&outcome, version.filter(|v| self.trusts(v, path))) {
            (Outcome::Hashed { hash, size }, Some(version)) => {
                self.keep_chunks(path, *hash, *size, chunks);
                Slot {
                    version: self.keys.version(&version),
                    due_ms: self.due_ms(hash.0[0]),
                }
            }
            _ => Slot::default(),
        };
        (outcome, slot)
    }

    /// True when no file's digest is remembered: the next sweep reads every file.
    pub(in crate::verifying) fn remembers_nothing(&self) -> bool {
        self.cache.is_empty() && self.slots.is_empty()
    }

    /// The count of checks made so far, shared with a read-ahead helper.
    pub(crate) fn progress(&self) -> std::sync::Arc<AtomicUsize> {
        self.checks.clone()
    }

    /// Reads `path` in full, remembering it as a check would.
    #[cfg(test)]
    pub(crate) fn hash(&mut self, path: &Path) -> Outcome {
        self.hash_stated(path, None, None)
    }

    /// As [`FileHasher::hash`], with the `lstat` the caller has just taken (`None`: take one),
    /// remembered in the slot of `expect` when it matches it.
    fn hash_stated(
        &mut self,
        path: &Path,
        stated: Option<Metadata>,
        expect: Option<Expect>,
    ) -> Outcome {
        let stated = stated.or_else(|| std::fs::symlink_metadata(path).ok());
        let prove = self.must_prove(path, expect, stated.as_ref());
        let (result, chunks, sealing, proof) = self.read_now(path, stated, prove);
        self.learn_seal(path, &result.0, sealing);
        self.settle(path, &result, proof);
        self.remember(path, result, chunks, expect)
    }

    /// Reads `path` now (by its chunks when it is a large file read before), remembering
    /// nothing: its outcome, its chunks' digests, what the read saw of its seal and what it
    /// proved (`prove`: see [`FileHasher::must_prove`]).
    fn read_now(
        &mut self,
        path: &Path,
        stated: Option<Metadata>,
        prove: bool,
    ) -> (ReadResult, Vec<[u8; 32]>, Sealing, Proof) {
        let stated = stated.or_else(|| std::fs::symlink_metadata(path).ok());
        if let Some(m) = &stated {
            if m.file_type().is_file() && m.size() > self.max_file_size {
                return (
                    (Outcome::TooLarge(m.size()), None),
                    Vec::new(),
                    Sealing::Unknown,
                    Proof::Unasked,
                );
            }
        }
        if let Some((result, chunks)) = self.verify_chunks(path, prove) {
            let proof = if prove { Proof::Proven } else { Proof::Unasked };
            return (result, chunks, Sealing::Unknown, proof);
        }
        self.reader.prove = prove;
        if stated
            .as_ref()
            .is_some_and(|m| crate::reading::is_long(m.size()))
        {
            self.arm.long_read();
        }
        let before = self.reader.bytes;
        let result = self.reader.read_stated(path, &self.reads, stated);
        self.bytes_hashed += self.reader.bytes - before;
        let chunks = std::mem::take(&mut self.reader.last_chunks);
        (
            result,
            chunks,
            self.reader.last_seal,
            self.reader.last_proof,
        )
    }

    /// A large file read before is re-verified by its chunks, on every hashing thread; `None`
    /// when that cannot settle it (then it is read whole).
    fn verify_chunks(&mut self, path: &Path, prove: bool) -> Option<(ReadResult, Vec<[u8; 32]>)> {
        if self.threads < 2 {
            return None;
        }
        let known = self.known.get(path)?.clone();
        self.arm.long_read();
        let (verdict, read) =
            crate::reading::verify_chunks(path, &known, self.threads, &self.reads, prove);
        self.bytes_hashed += read;
        let version = match verdict {
            crate::reading::Verdict::Same(version) => version,
            crate::reading::Verdict::Changed => {
                return Some(((crate::reading::changed_outcome(), None), Vec::new()));
            }
            crate::reading::Verdict::Differs | crate::reading::Verdict::Unknown => return None,
        };
        self.chunked_reads += 1;
        let outcome = Outcome::Hashed {
            hash: known.hash,
            size: known.size,
        };
        Some(((outcome, Some(version)), known.chunks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn hashes_known_content_and_classifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let mut h = FileHasher::default();
        assert_eq!(
            h.hash(&f),
            Outcome::Hashed {
                hash: Sha256Digest::from_hex(
                    "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
                )
                .expect("hex"),
                size: 3
            }
        );
        assert_eq!(h.hash(&dir.path().join("nope")), Outcome::Missing);
        assert_eq!(h.hash(&dir.path().join("f/under-a-file")), Outcome::Missing);
        assert_eq!(h.hash(dir.path()), Outcome::NotRegular);
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &l).expect("symlink");
        assert_eq!(h.hash(&l), Outcome::Symlink);
    }

    fn digest_of(data: &[u8]) -> protocol::hexfmt::Sha256Digest {
        protocol::hexfmt::Sha256Digest(Sha256::digest(data).into())
    }

    #[test]
    fn unchanged_files_cost_a_stat_and_every_change_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("model.gguf");
        std::fs::write(&f, b"original weights").expect("write");
        let mut h = FileHasher::default();
        let first = h.check(&f, Given::NOTHING);
        let read = h.bytes_hashed;
        assert_eq!(h.check(&f, Given::NOTHING), first);
        assert_eq!(
            (h.bytes_hashed, h.fast_hits),
            (read, 1),
            "unchanged: answered from metadata, not read"
        );
        // Named by inotify: read again although the metadata is the same.
        h.forget(&f);
        assert_eq!(h.check(&f, Given::NOTHING), first);
        assert_eq!((h.bytes_hashed, h.fast_hits), (2 * read, 1));
        let read = h.bytes_hashed;

        // Touched, same content: re-read (the version moved), same digest.
        let file = std::fs::File::options().write(true).open(&f).expect("open");
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .expect("touch");
        assert_eq!(h.check(&f, Given::NOTHING), first);
        assert!(h.bytes_hashed > read, "a touched file is read again");

        // Same size, content changed, mtime put back: ctime still moved, so it is caught.
        let mtime = std::fs::metadata(&f)
            .expect("stat")
            .modified()
            .expect("mtime");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, b"tampered weights").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&f)
            .expect("open")
            .set_modified(mtime)
            .expect("restore mtime");
        assert_eq!(
            h.check(&f, Given::NOTHING),
            Outcome::Hashed {
                hash: digest_of(b"tampered weights"),
                size: 16
            }
        );

        // Replaced by rename: a new inode, caught.
        std::fs::write(dir.path().join("new"), b"renamed  weights").expect("write");
        std::fs::rename(dir.path().join("new"), &f).expect("rename");
        assert_eq!(
            h.check(&f, Given::NOTHING),
            Outcome::Hashed {
                hash: digest_of(b"renamed  weights"),
                size: 16
            }
        );
    }

    #[test]
    fn prefetch_reads_each_stale_file_once_and_a_later_change_is_still_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let paths: Vec<PathBuf> = (0..9u8)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, vec![i; 1000 * usize::from(i + 1)]).expect("write");
                p
            })
            .collect();
        let mut h = FileHasher {
            threads: 3,
            ..FileHasher::default()
        };
        // One path announced with a size it no longer has: left for its check to report.
        let sized: Vec<(&Path, Option<Expect>)> = paths
            .iter()
            .enumerate()
            .map(|(index, p)| {
                let expect = Expect {
                    index,
                    hash: protocol::hexfmt::Sha256Digest([0; 32]),
                    size: 1,
                };
                (p.as_path(), (p == &paths[0]).then_some(expect))
            })
            .collect();
        h.prefetch(sized.iter().copied());
        let total: u64 = (1..=9).map(|i| 1000 * i).sum();
        assert_eq!(h.bytes_hashed, total - 1000);
        h.prefetch(sized.iter().copied());
        assert_eq!(h.bytes_hashed, total - 1000, "nothing stale: nothing read");
        std::fs::write(&paths[5], vec![0xee; 6000]).expect("tamper");
        assert_eq!(
            h.check(&paths[5], Given::NOTHING),
            Outcome::Hashed {
                hash: digest_of(&[0xee; 6000]),
                size: 6000
            }
        );
        for p in &paths[1..] {
            assert_eq!(
                h.check(p, Given::NOTHING),
                FileHasher::default().hash(p),
                "{}",
                p.display()
            );
        }
    }

    #[test]
    fn the_backstop_rereads_unchanged_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let mut h = FileHasher {
            full_rehash: Duration::from_millis(200),
            ..FileHasher::default()
        };
        h.check(&f, Given::NOTHING);
        h.check(&f, Given::NOTHING);
        assert_eq!(h.bytes_hashed, 3);
        std::thread::sleep(Duration::from_millis(250));
        h.check(&f, Given::NOTHING);
        assert_eq!(
            h.bytes_hashed, 6,
            "due for full re-verification: read again"
        );
    }

    #[test]
    fn a_file_over_max_file_size_is_reported_unread() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("big");
        let f = std::fs::File::create(&p).expect("create");
        f.set_len(1 << 40).expect("a sparse 1 TiB file");
        let mut h = FileHasher {
            max_file_size: 1 << 30,
            ..FileHasher::default()
        };
        assert_eq!(h.check(&p, Given::NOTHING), Outcome::TooLarge(1 << 40));
        assert_eq!(h.bytes_hashed, 0, "not a byte read");
    }

    #[test]
    fn a_read_is_abandoned_when_its_file_is_deleted() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("slow");
        std::fs::write(&p, vec![7u8; 4 << 20]).expect("write");
        let mut h = FileHasher::default();
        // 1 MiB/s: the whole read would take 4 s.
        h.set_rate_limit(Some(1 << 20));
        let gone = p.clone();
        let deleter = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(500));
            std::fs::remove_file(gone).expect("rm");
        });
        let started = Instant::now();
        let outcome = h.check(&p, Given::NOTHING);
        deleter.join().expect("deleter");
        assert!(
            matches!(&outcome, Outcome::Unreadable(why) if why.contains("deleted")),
            "{outcome:?}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "abandoned, not read to the end"
        );
    }

    #[test]
    fn rate_limit_holds_reads_to_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, vec![7u8; 3 * 1024 * 1024]).expect("write");
        let mut h = FileHasher::default();
        h.set_rate_limit(Some(8 * 1024 * 1024));
        let t = Instant::now();
        h.hash(&f);
        // 3 MiB at 8 MiB/s takes at least ~0.3 s; unthrottled it takes milliseconds.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_file_growing_while_read_is_never_reported_with_a_stale_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        let start = vec![1u8; 8 * 1024 * 1024];
        std::fs::write(&f, &start).expect("write");
        let original = digest_of(&start);
        let path = f.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            for _ in 0..200 {
                file.write_all(&[2u8; 4096]).expect("append");
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let mut h = FileHasher::default();
        let mut outcomes = Vec::new();
        while !writer.is_finished() {
            outcomes.push(h.hash(&f));
        }
        writer.join().expect("writer");
        for o in outcomes {
            if let Outcome::Hashed { hash, size } = o {
                assert!(
                    !(hash == original && size != start.len() as u64),
                    "a digest must describe the bytes it claims"
                );
                let now = std::fs::read(&f).expect("read");
                assert!(size <= now.len() as u64);
                assert_eq!(
                    hash,
                    digest_of(&now[..usize::try_from(size).expect("fits")]),
                    "digest matches a real version of the file"
                );
            }
        }
    }

    #[test]
    fn a_large_file_is_reverified_by_its_chunks_and_a_change_still_gives_its_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("model.gguf");
        let size = crate::reading::MIN_CHUNKED + 4321;
        let data: Vec<u8> = (0..size).map(|i| (i % 249) as u8).collect();
        std::fs::write(&f, &data).expect("write");
        let mut h = FileHasher::default();
        h.set_threads(2);
        let whole = Outcome::Hashed {
            hash: digest_of(&data),
            size,
        };
        assert_eq!(h.check(&f, Given::NOTHING), whole);
        assert_eq!(
            h.reader.bytes, size,
            "the first read is one sequential read"
        );
        // Named by inotify: proven by its chunks, read on every thread after the writeback.
        h.forget(&f);
        h.settling.note(&f);
        assert_eq!(h.check(&f, Given::NOTHING), whole);
        assert_eq!(h.reader.bytes, size, "no whole read this time");
        assert_eq!(h.settling.pending(), 0, "proven");
        assert_eq!(
            h.bytes_hashed,
            2 * size,
            "but every byte was read, in chunks"
        );
        // A change in the second chunk: found, then read whole for its digest.
        let mut changed = data.clone();
        changed[usize::try_from(crate::reading::CHUNK + 5).expect("fits")] ^= 0xff;
        std::fs::write(&f, &changed).expect("write");
        h.forget(&f);
        assert_eq!(
            h.check(&f, Given::NOTHING),
            Outcome::Hashed {
                hash: digest_of(&changed),
                size
            }
        );
        // One thread: whole reads only.
        let mut one = FileHasher::default();
        one.check(&f, Given::NOTHING);
        one.forget(&f);
        one.check(&f, Given::NOTHING);
        assert_eq!(one.reader.bytes, 2 * size);
    }

    #[test]
    fn large_file_streams_through_the_fixed_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("big");
        let data: Vec<u8> = (0..(3 * crate::reading::BUF_SIZE + 123))
            .map(|i| u8::try_from(i % 251).expect("below 251"))
            .collect();
        std::fs::write(&f, &data).expect("write");
        let mut h = FileHasher::default();
        let expected = digest_of(&data);
        assert_eq!(
            h.hash(&f),
            Outcome::Hashed {
                hash: expected,
                size: data.len() as u64
            }
        );
        assert_eq!(h.bytes_hashed, data.len() as u64);
    }
}
