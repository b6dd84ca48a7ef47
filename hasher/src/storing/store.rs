//! The hasher's own baseline store: `baseline.json` (the signed manifest, carrying its
//! generation) and `generation.json` (a signed record of the current generation and the
//! baseline's digest), in a directory only the hasher may write. Writes are atomic (temp file,
//! fsync, rename, fsync of the directory); the baseline is written before the record, so an
//! interrupted commit leaves a baseline exactly one generation ahead, which is rolled forward.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use protocol::baseline::{BaselineError, Manifest};
use protocol::generation::{GenerationRecord, TpmPin};
use protocol::message::StoreEvent;

use crate::error::StoreError;

/// Largest stored baseline read: one of [`protocol::baseline::MAX_ENTRIES`] entries of
/// typical paths (about 170 bytes of JSON each) with room to spare. It is parsed as it is
/// read, so this bounds the time a load takes, not the memory.
pub(super) const MAX_STORED: usize = 512 * 1024 * 1024;

/// Where the appliance keeps the integrity baseline.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/secure-ai/integrity";
const BASELINE: &str = "baseline.json";
const RECORD: &str = "generation.json";
const LOCK: &str = ".lock";
/// How long a new hasher waits for the store's previous holder to exit.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// An open, locked store.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    /// The baseline's file name (`baseline.json`, or the name `BASELINE_PATH` gives).
    name: String,
    /// The TPM counter the record is pinned to: as loaded, then as set; every record written
    /// carries it.
    pin: std::sync::Mutex<Option<TpmPin>>,
}

/// A baseline the store holds and that verified.
#[derive(Debug, Clone)]
pub struct Current {
    /// The parsed manifest.
    pub(crate) manifest: Manifest,
    /// The length of the manifest as stored (its bytes stay on disk: [`Store::read_part`]).
    pub(crate) len: u64,
    /// Hex SHA-256 of `bytes`.
    pub(crate) digest: String,
    /// Its generation (0 for a baseline made before generations existed).
    pub(crate) generation: u64,
    /// The OS release the generation record names in force with it, if any.
    pub(crate) release: Option<String>,
}

/// What loading found.
#[derive(Debug)]
pub(crate) enum Loaded {
    /// Nothing was ever stored: first initialization.
    Empty,
    /// A baseline verified; and what was repaired or converted on the way, if anything.
    Adopted(Box<Current>, Option<StoreEvent>),
    /// Something is there that does not verify; `highest` is the newest generation seen.
    Rejected {
        /// What was found, for the operator and the audit log.
        reason: String,
        /// The highest generation either file claims, so a new commit goes past it.
        highest: u64,
    },
}

impl Store {
    /// Opens (creating it 0700 if missing) and locks the store. A second hasher on the same
    /// store is refused, naming the first one's pid.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Store::open_named(dir, BASELINE)
    }

    /// As [`Store::open`], with the baseline under another file name.
    pub(crate) fn open_named(dir: &Path, name: &str) -> Result<Store, StoreError> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|why| StoreError::CreateDir {
                dir: dir.to_owned(),
                why,
            })?;
        // A hasher whose api just went away may still be on its way out: wait for it briefly.
        imsys::lockfile::acquire(&dir.join(LOCK), LOCK_WAIT).map_err(|why| StoreError::InUse {
            dir: dir.to_owned(),
            why,
        })?;
        Ok(Store {
            dir: dir.to_owned(),
            name: name.to_owned(),
            pin: std::sync::Mutex::new(None),
        })
    }

    /// The TPM counter the record is pinned to (as loaded, or as last set).
    pub(crate) fn pin(&self) -> Option<TpmPin> {
        self.pin.lock().map(|p| p.clone()).unwrap_or(None)
    }

    /// Pins every record written from now on to `pin` (`None`: no TPM counter).
    pub(crate) fn set_pin(&self, pin: Option<TpmPin>) {
        if let Ok(mut p) = self.pin.lock() {
            *p = pin;
        }
    }

    /// The directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of the stored baseline.
    pub(crate) fn baseline_path(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    /// Up to `len` bytes of the stored baseline from `offset`, read from the file (the api
    /// checks what it relays against the adopted digest: a file changed under the store is
    /// caught there).
    pub(crate) fn read_part(&self, offset: u64, len: usize) -> Result<Vec<u8>, StoreError> {
        let path = self.baseline_path();
        let fail = |why: std::io::Error| StoreError::Read {
            path: path.clone(),
            why,
        };
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
            .map_err(fail)?;
        let mut part = vec![0u8; len];
        let mut filled = 0;
        while filled < len {
            match file.read_at(&mut part[filled..], offset + filled as u64) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(fail(e)),
            }
        }
        part.truncate(filled);
        Ok(part)
    }

    /// The store file `name`, or `None` when there is none.
    pub(crate) fn open_file(&self, name: &str) -> Result<Option<File>, StoreError> {
        let path = self.dir.join(name);
        match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(why) => Err(StoreError::Read { path, why }),
        }
    }

    fn read(&self, name: &str, cap: usize) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.dir.join(name);
        let Some(file) = self.open_file(name)? else {
            return Ok(None);
        };
        let mut bytes = Vec::new();
        file.take(cap as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|why| StoreError::Read {
                path: path.clone(),
                why,
            })?;
        if bytes.len() > cap {
            return Err(StoreError::TooLarge { path, cap });
        }
        Ok(Some(bytes))
    }

    /// Reads and verifies what the store holds.
    pub(crate) fn load(&self, key: Option<&[u8]>) -> Loaded {
        let rejected = |reason: String, highest: u64| Loaded::Rejected { reason, highest };
        let baseline = match self.open_file(&self.name) {
            Ok(b) => b,
            Err(why) => return rejected(why.to_string(), 0),
        };
        let record = match self.read(RECORD, protocol::generation::MAX_LEN) {
            Ok(Some(bytes)) => match GenerationRecord::parse_verified(&bytes, key) {
                Ok(r) => {
                    self.set_pin(r.tpm.clone());
                    Some(r)
                }
                Err(why) => return rejected(format!("{RECORD}: {why}"), 0),
            },
            Ok(None) => None,
            Err(why) => return rejected(why.to_string(), 0),
        };
        let Some(file) = baseline else {
            return match record {
                None => Loaded::Empty,
                Some(r) => rejected(
                    format!("{BASELINE} is missing but {RECORD} says generation {} (baseline {}) is current: the baseline was deleted", r.generation, r.baseline_digest),
                    r.generation,
                ),
            };
        };
        let record_gen = record.as_ref().map_or(0, |r| r.generation);
        let (manifest, event, digest, len) = match self.parse_stored(file, key, record.is_none()) {
            Ok(m) => m,
            Err(why) => return rejected(why, record_gen),
        };
        let current = Current {
            digest,
            generation: manifest.generation.unwrap_or(0),
            manifest,
            len,
            release: None,
        };
        self.against_record(current, record, event, key)
    }

    /// What a rejected store's baseline still says, for the operator: its manifest parsed
    /// without being trusted (bounded like a load), and whether it verifies under `key`.
    /// `None` when there is no baseline file or it does not parse.
    pub(crate) fn load_unverified(&self, key: Option<&[u8]>) -> Option<(Manifest, bool)> {
        let file = self.open_file(&self.name).ok()??;
        let reader = std::io::BufReader::with_capacity(SINK_BUF, file).take(MAX_STORED as u64);
        let manifest = Manifest::parse_from(reader).ok()?;
        let verifies = key.is_some() && manifest.verify(key).is_ok();
        Some((manifest, verifies))
    }

    /// The stored baseline parsed and verified as it is read (never held whole), with the
    /// SHA-256 hex and length of its bytes.
    fn parse_stored(
        &self,
        file: File,
        key: Option<&[u8]>,
        first: bool,
    ) -> Result<(Manifest, Option<StoreEvent>, String, u64), String> {
        let path = self.baseline_path();
        let mut tee =
            Tee::new(std::io::BufReader::with_capacity(SINK_BUF, file).take(MAX_STORED as u64 + 1));
        let parsed = Manifest::parse_from(&mut tee);
        // What the parser left unread counts too: the digest is of the whole file.
        let rest = std::io::copy(&mut tee, &mut std::io::sink());
        if tee.len > MAX_STORED as u64 {
            return Err(StoreError::TooLarge {
                path,
                cap: MAX_STORED,
            }
            .to_string());
        }
        if let Err(why) = rest {
            return Err(StoreError::Read { path, why }.to_string());
        }
        let (manifest, event) =
            verified(parsed, key, first).map_err(|e| format!("{BASELINE}: {e}"))?;
        Ok((
            manifest,
            event,
            protocol::hexfmt::encode(&sha2::Digest::finalize(tee.sha)),
            tee.len,
        ))
    }

    /// Adopts `current` if the generation record agrees (or it is the next generation, whose
    /// record a crash kept from being written); anything else is a rollback or a deletion.
    fn against_record(
        &self,
        current: Current,
        record: Option<GenerationRecord>,
        event: Option<StoreEvent>,
        key: Option<&[u8]>,
    ) -> Loaded {
        let generation = current.generation;
        let highest = generation.max(record.as_ref().map_or(0, |r| r.generation));
        let rejected = |reason: String| Loaded::Rejected { reason, highest };
        match record {
            None if generation == 0 => Loaded::Adopted(Box::new(current), event),
            None => rejected(format!(
                "{RECORD} is missing but {BASELINE} is generation {generation}: the record was deleted"
            )),
            Some(r) if r.generation == generation && r.baseline_digest == current.digest => {
                Loaded::Adopted(
                    Box::new(Current {
                        release: r.release,
                        ..current
                    }),
                    None,
                )
            }
            Some(r) if generation == r.generation + 1 => match self.write_record(&current, key) {
                Ok(()) => Loaded::Adopted(
                    Box::new(current),
                    Some(StoreEvent::RolledForward { from: r.generation }),
                ),
                Err(why) => rejected(why.to_string()),
            },
            Some(r) if generation < r.generation => rejected(format!(
                "{BASELINE} is generation {generation} but {RECORD} says {} is current: an older baseline was put back",
                r.generation
            )),
            Some(r) => rejected(format!(
                "{BASELINE} (generation {generation}, sha256 {}) disagrees with {RECORD} (generation {}, sha256 {})",
                current.digest, r.generation, r.baseline_digest
            )),
        }
    }

    /// Stores `manifest` as the current baseline, with the OS release in force with it if
    /// any: the baseline first, then the record. The manifest is serialized straight to the
    /// file (its bytes are never held whole).
    pub fn commit(
        &self,
        manifest: Manifest,
        release: Option<String>,
        key: Option<&[u8]>,
    ) -> Result<Current, StoreError> {
        let (digest, len) = self.write_atomic_with(&self.name, |sink| {
            serde_json::to_writer(&mut *sink, &manifest).map_err(std::io::Error::other)
        })?;
        let current = Current {
            digest,
            generation: manifest.generation.unwrap_or(0),
            manifest,
            len,
            release,
        };
        self.write_record(&current, key)?;
        Ok(current)
    }

    /// Names `release` in force with `current` in its generation record (the same generation
    /// and baseline: a store from before releases were recorded, now recording one).
    pub(crate) fn name_release(
        &self,
        generation: u64,
        digest: &str,
        release: &str,
        key: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        let record = GenerationRecord::pinned(
            generation,
            digest.to_owned(),
            Some(release.to_owned()),
            self.pin(),
            key,
        );
        self.write_atomic(RECORD, &record.to_json())
    }

    /// Writes the record of `now`, pinned as the store is (enrolment re-pins this way).
    pub(crate) fn write_record(&self, now: &Current, key: Option<&[u8]>) -> Result<(), StoreError> {
        let record = GenerationRecord::pinned(
            now.generation,
            now.digest.clone(),
            now.release.clone(),
            self.pin(),
            key,
        );
        self.write_atomic(RECORD, &record.to_json())
    }

    fn write_atomic(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.write_atomic_with(name, |sink| std::io::Write::write_all(sink, bytes))
            .map(drop)
    }

    /// Writes what `fill` writes atomically to `name`; returns its SHA-256 hex and length.
    pub(crate) fn write_atomic_with(
        &self,
        name: &str,
        fill: impl FnOnce(&mut std::io::BufWriter<Sink>) -> std::io::Result<()>,
    ) -> Result<(String, u64), StoreError> {
        let path = self.dir.join(name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let fail = |why: std::io::Error| StoreError::Write {
            path: path.clone(),
            why,
        };
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(fail(e)),
            _ => {}
        }
        let written = (|| {
            let f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&tmp)?;
            let mut sink = std::io::BufWriter::with_capacity(SINK_BUF, Sink::new(f));
            fill(&mut sink)?;
            let sink = sink.into_inner().map_err(|e| e.into_error())?;
            sink.file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            File::open(&self.dir)?.sync_all()?;
            Ok((
                protocol::hexfmt::encode(&sha2::Digest::finalize(sink.sha)),
                sink.len,
            ))
        })();
        written.map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            fail(e)
        })
    }
}

/// Buffer between the serializer and the store file.
const SINK_BUF: usize = 256 * 1024;

/// A store file being written: with `pwrite` (the sandbox lets plain write(2) reach stderr
/// only), digesting what it writes.
pub(crate) struct Sink {
    file: File,
    len: u64,
    sha: sha2::Sha256,
}

impl Sink {
    fn new(file: File) -> Sink {
        use sha2::Digest;
        Sink {
            file,
            len: 0,
            sha: sha2::Sha256::new(),
        }
    }
}

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.file.write_at(buf, self.len)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A reader that digests and counts what passes through it.
struct Tee<R> {
    inner: R,
    len: u64,
    sha: sha2::Sha256,
}

impl<R> Tee<R> {
    fn new(inner: R) -> Tee<R> {
        use sha2::Digest;
        Tee {
            inner,
            len: 0,
            sha: sha2::Sha256::new(),
        }
    }
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use sha2::Digest;
        let n = self.inner.read(buf)?;
        self.sha.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The baseline parsed, verified under `key`. With no generation record yet (`first`), a
/// baseline the Go service signed its way under the same key is accepted too: an appliance
/// upgraded from it. Never once the store has a record (that would be a rollback).
fn verified(
    parsed: Result<Manifest, BaselineError>,
    key: Option<&[u8]>,
    first: bool,
) -> Result<(Manifest, Option<StoreEvent>), BaselineError> {
    let manifest = parsed?;
    match manifest.verify(key) {
        Ok(()) => Ok((manifest, None)),
        Err(BaselineError::BadHmac) if first && key.is_some_and(|k| manifest.verify_go(k)) => {
            Ok((manifest, Some(StoreEvent::MigratedFromGo)))
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::baseline::Entry;
    use protocol::message::Category;

    use protocol::sign::sha256_hex;

    const KEY: &[u8] = &[7u8; 32];

    fn manifest(generation: u64, hash: char) -> Manifest {
        let entries = vec![Entry {
            path: "/a".into(),
            hash: protocol::hexfmt::Sha256Digest::from_hex(&hash.to_string().repeat(64))
                .expect("hex"),
            category: Category::TrustMaterial,
            size: 1,
        }];
        Manifest::with_generation(
            "2026-01-01T00:00:00Z".into(),
            Some(generation),
            entries,
            Some(KEY),
        )
    }

    #[test]
    fn a_commit_streams_the_stored_form_and_digests_what_it_wrote() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        // Larger than the sink's buffer, so the digest spans several writes.
        let entries: Vec<Entry> = (0..5000)
            .map(|i| Entry {
                path: format!("/m/{i:06}"),
                hash: protocol::hexfmt::Sha256Digest::from_hex(&"e".repeat(64)).expect("hex"),
                category: Category::ModelFile,
                size: i,
            })
            .collect();
        let m =
            Manifest::with_generation("2026-01-01T00:00:00Z".into(), Some(1), entries, Some(KEY));
        let expected = m.to_json();
        assert!(expected.len() > 2 * SINK_BUF);
        let current = store.commit(m, None, Some(KEY)).expect("commits");
        let stored = std::fs::read(store.baseline_path()).expect("reads");
        assert_eq!(stored, expected);
        assert_eq!(current.len, stored.len() as u64);
        assert_eq!(current.digest, sha256_hex(&stored));
        assert!(matches!(store.load(Some(KEY)), Loaded::Adopted(..)));
    }

    #[test]
    fn a_stored_baseline_too_large_or_with_trailing_bytes_is_refused_naming_why() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        let mut bytes = manifest(0, 'a').to_json();
        bytes.extend_from_slice(b" {}");
        std::fs::write(store.baseline_path(), &bytes).expect("writes");
        let why = reason(store.load(Some(KEY)));
        assert!(
            why.starts_with("baseline.json: ") && why.contains("trailing"),
            "{why}"
        );
        let f = std::fs::File::create(store.baseline_path()).expect("create");
        f.set_len(MAX_STORED as u64 + 1)
            .expect("a sparse file past the cap");
        let why = reason(store.load(Some(KEY)));
        assert!(why.contains("larger than"), "{why}");
    }

    fn reason(l: Loaded) -> String {
        match l {
            Loaded::Rejected { reason, .. } => reason,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    #[test]
    fn empty_commit_load_and_the_lock() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        assert!(matches!(store.load(Some(KEY)), Loaded::Empty));
        store
            .commit(manifest(1, 'a'), None, Some(KEY))
            .expect("commits");
        match store.load(Some(KEY)) {
            Loaded::Adopted(c, None) => assert_eq!(c.generation, 1),
            other => panic!("{other:?}"),
        }
        let second = Store::open(dir.path()).expect_err("locked");
        assert!(
            matches!(&second, StoreError::InUse { dir: d, .. } if d == dir.path()),
            "{second}"
        );
        assert!(
            second
                .to_string()
                .contains("in use by another integrity-hasher"),
            "{second}"
        );
    }

    #[test]
    fn rollback_deletion_and_disagreement_are_rejected() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        store
            .commit(manifest(1, 'a'), None, Some(KEY))
            .expect("commits");
        let old = std::fs::read(store.baseline_path()).expect("reads");
        store
            .commit(manifest(2, 'b'), None, Some(KEY))
            .expect("commits");
        // An older, validly signed baseline put back.
        std::fs::write(store.baseline_path(), &old).expect("writes");
        assert!(reason(store.load(Some(KEY))).contains("older baseline was put back"));
        // The baseline deleted, the record intact.
        std::fs::remove_file(store.baseline_path()).expect("rm");
        assert!(reason(store.load(Some(KEY))).contains("was deleted"));
        // Same generation, another content (signed with the key: only a key holder can).
        std::fs::write(store.baseline_path(), manifest(2, 'c').to_json()).expect("writes");
        assert!(reason(store.load(Some(KEY))).contains("disagrees"));
        // The record deleted.
        store
            .commit(manifest(3, 'd'), None, Some(KEY))
            .expect("commits");
        std::fs::remove_file(dir.path().join(RECORD)).expect("rm");
        assert!(reason(store.load(Some(KEY))).contains("record was deleted"));
    }

    #[test]
    fn an_interrupted_commit_rolls_forward() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("opens");
        store
            .commit(manifest(1, 'a'), None, Some(KEY))
            .expect("commits");
        // The baseline of generation 2 landed, the record did not.
        std::fs::write(store.baseline_path(), manifest(2, 'b').to_json()).expect("writes");
        match store.load(Some(KEY)) {
            Loaded::Adopted(c, Some(StoreEvent::RolledForward { from })) => {
                assert_eq!((c.generation, from), (2, 1));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(store.load(Some(KEY)), Loaded::Adopted(_, None)));
    }
}
