//! The chunk digests of large baselined files, kept in the store: the first re-verification
//! after a start (or a reboot) reads a large file on every hashing thread, not sequentially.
//!
//! Unlike what the slots remember ([`crate::verifying::remember`]), these say nothing about a file's
//! state, only about the content the baseline names: each record holds the whole-file digest
//! and size its chunks were taken with (in one read), and is used only while the baseline's
//! entry for that path has that digest and size. So they hold across a reboot: an offline edit
//! changes a chunk, and a chunk that differs sends the file to a full sequential read. The file
//! is HMAC-signed under the baseline key and names the baseline digest; without a key nothing
//! is kept.
//!
//! Format: the line `integrity-monitor chunks v1 baseline=<digest> count=<n>`, then n records
//! (path length u32, path bytes, the 64-byte hex whole-file digest, size u64, chunk count u32,
//! the chunks' 32-byte digests; integers little-endian), then the hex HMAC-SHA256 of
//! everything before it.

use std::path::PathBuf;

use protocol::baseline::Manifest;

use crate::error::StoreError;
use crate::reading::{Known, CHUNK, MIN_CHUNKED};
use crate::storing::Store;
use crate::storing::{put_path, read_records, sidefile_header, write_sidefile, Reading};

/// The file's name in the store.
pub(crate) const FILE: &str = "chunks.bin";
const MAGIC: &str = "integrity-monitor chunks v1";
/// Records read at most (each is a file of at least [`MIN_CHUNKED`]: 128 MiB).
const MAX_RECORDS: usize = 100_000;
/// Longest path a record may hold.
const MAX_PATH: usize = 4096;
/// Chunks one record may hold (64 MiB each: 64 TiB).
const MAX_CHUNKS: u64 = 1 << 20;

fn header(baseline: &str, count: usize) -> String {
    sidefile_header(MAGIC, baseline, count)
}

/// Whether `baseline` names this content at `path` (the only records worth keeping or using).
fn named(baseline: &Manifest, path: &str, known: &Known) -> bool {
    baseline.entries.index_of(path).is_some_and(|i| {
        baseline
            .entries
            .get(i)
            .is_some_and(|e| e.size == known.size && e.hash == known.hash)
    })
}

/// Writes the records of `known` that `baseline` (with digest `digest`) names; how many.
pub(crate) fn save<'a>(
    store: &Store,
    key: &[u8],
    digest: &str,
    baseline: &Manifest,
    known: impl Iterator<Item = (&'a std::path::Path, &'a Known)>,
) -> Result<usize, StoreError> {
    let kept: Vec<(String, &Known)> = known
        .map(|(p, k)| (crate::verifying::paths::path_str(p), k))
        .filter(|(p, k)| k.size >= MIN_CHUNKED && named(baseline, p, k))
        .take(MAX_RECORDS)
        .collect();
    write_sidefile(store, key, FILE, &header(digest, kept.len()), |put| {
        for (path, k) in &kept {
            put_path(put, path)?;
            put(k.hash.to_hex().as_bytes())?;
            put(&k.size.to_le_bytes())?;
            put(&u32::try_from(k.chunks.len())
                .unwrap_or(u32::MAX)
                .to_le_bytes())?;
            for c in &k.chunks {
                put(c)?;
            }
        }
        Ok(())
    })?;
    Ok(kept.len())
}

/// One record as read, before it is checked against the baseline.
fn record(file: &mut Reading) -> Result<(String, Known), String> {
    let path = file.path(MAX_PATH)?;
    let hash = file.take::<64>()?;
    let hash = std::str::from_utf8(&hash)
        .ok()
        .and_then(protocol::hexfmt::Sha256Digest::from_hex)
        .ok_or_else(|| format!("{FILE}: a bad digest"))?;
    let size = u64::from_le_bytes(file.take::<8>()?);
    let count = u64::from(u32::from_le_bytes(file.take::<4>()?));
    if count > MAX_CHUNKS || count != size.div_ceil(CHUNK) {
        return Err(format!("{FILE}: {count} chunks for {size} bytes"));
    }
    // At most MAX_CHUNKS, checked above; the capacity is only a hint either way.
    let mut chunks = Vec::with_capacity(usize::try_from(count).unwrap_or(0));
    for _ in 0..count {
        chunks.push(file.take::<32>()?);
    }
    Ok((path, Known { hash, size, chunks }))
}

/// The records stored for the baseline with digest `digest` that it names; `Err` says why
/// none are taken (none stored, another baseline, a file that does not verify).
pub(in crate::verifying) fn load(
    store: &Store,
    key: &[u8],
    digest: &str,
    baseline: &Manifest,
) -> Result<Vec<(PathBuf, Known)>, String> {
    let out = read_records(store, key, (FILE, MAGIC), digest, MAX_RECORDS, record)?;
    Ok(out
        .into_iter()
        .filter(|(p, k)| named(baseline, p, k))
        .map(|(p, k)| (PathBuf::from(p), k))
        .collect())
}

/// Writes the chunk digests `hasher` holds that the baseline `current` names.
pub(crate) fn keep(
    store: &Store,
    key: &[u8],
    current: &crate::storing::Current,
    hasher: &crate::verifying::hashing::FileHasher,
) {
    let known = hasher.known_chunks();
    match save(store, key, &current.digest, &current.manifest, known) {
        Ok(files) => tracing::debug!(files, "chunk digests kept"),
        Err(e) => tracing::warn!(
            error = %e,
            "chunk digests not kept: a large file's first re-verification reads it in order"
        ),
    }
}

/// Gives `hasher` the chunk digests stored for `current`, if they verify.
pub(in crate::verifying) fn recall(
    store: &Store,
    key: &[u8],
    current: &crate::storing::Current,
    hasher: &mut crate::verifying::hashing::FileHasher,
) {
    match load(store, key, &current.digest, &current.manifest) {
        Ok(records) => {
            tracing::info!(files = records.len(), "chunk digests recalled");
            for (path, known) in records {
                hasher.learn_chunks(path, known);
            }
        }
        Err(why) => tracing::info!(why, "no chunk digests recalled"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::baseline::Entry;
    use protocol::category::Category;

    const KEY: &[u8] = &[7u8; 32];

    fn known(size: u64, fill: u8) -> Known {
        Known {
            hash: protocol::hexfmt::Sha256Digest([fill; 32]),
            size,
            chunks: vec![[fill; 32]; usize::try_from(size.div_ceil(CHUNK)).expect("fits")],
        }
    }

    fn baseline(entries: &[(&str, &Known)]) -> Manifest {
        let entries = entries
            .iter()
            .map(|(p, k)| Entry {
                path: (*p).into(),
                hash: k.hash,
                size: k.size,
                category: Category::ModelFile,
            })
            .collect::<Vec<_>>();
        Manifest::new("2026-01-01T00:00:00Z".into(), entries, Some(KEY))
    }

    #[test]
    fn only_the_baselines_content_under_the_key_is_recalled_and_any_edit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let (a, b, small) = (
            known(3 * CHUNK + 5, 0xaa),
            known(2 * CHUNK, 0xbb),
            known(9, 1),
        );
        let other = known(3 * CHUNK + 5, 0xcc);
        // b's entry has another digest: its chunks are of content the baseline does not name.
        let m = baseline(&[("/m/a", &a), ("/m/b", &other), ("/m/s", &small)]);
        let held = [
            (PathBuf::from("/m/a"), a.clone()),
            (PathBuf::from("/m/b"), b.clone()),
            (PathBuf::from("/m/s"), small.clone()),
            (PathBuf::from("/m/gone"), a.clone()),
        ];
        let iter = || held.iter().map(|(p, k)| (p.as_path(), k));
        assert_eq!(load(&store, KEY, "d1", &m), Err("none stored".into()));
        assert_eq!(save(&store, KEY, "d1", &m, iter()).expect("saved"), 1);
        assert_eq!(
            load(&store, KEY, "d1", &m),
            Ok(vec![(PathBuf::from("/m/a"), a.clone())])
        );
        let refused = |digest, key| load(&store, key, digest, &m).expect_err("refused");
        assert!(refused("d2", KEY).contains("another baseline"));
        assert!(refused("d1", &[8u8; 32]).contains("HMAC"));
        // Another baseline for the same digest string (a forged pairing) names other content.
        let m2 = baseline(&[("/m/a", &other)]);
        assert_eq!(load(&store, KEY, "d1", &m2), Ok(vec![]));
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).expect("read");
        for at in [header("d1", 1).len() + 2, good.len() - 70, good.len() - 1] {
            let mut edited = good.clone();
            edited[at] ^= 1;
            std::fs::write(&path, &edited).expect("write");
            assert!(load(&store, KEY, "d1", &m).is_err(), "byte {at} edited");
        }
        std::fs::write(&path, &good[..good.len() - 100]).expect("write");
        assert!(load(&store, KEY, "d1", &m).is_err(), "truncated");
    }

    /// A baseline made on two threads keeps its large file's chunks; a new hasher (a restart,
    /// a reboot) recalls them and proves the file by its chunks; an edit is still found.
    #[test]
    fn a_restarted_hasher_reads_a_large_file_by_the_chunks_the_baseline_kept() {
        use crate::policy::Policy;
        use crate::verifying::hashing::FileHasher;
        use crate::verifying::slots::Expect;
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(&dir.path().join("state")).expect("store");
        let big = dir.path().join("models/big");
        std::fs::create_dir_all(dir.path().join("models")).expect("mkdir");
        let data: Vec<u8> = (0..MIN_CHUNKED + 4097).map(|i| (i % 249) as u8).collect();
        std::fs::write(&big, &data).expect("write");
        let yaml = format!("model_dirs: [{}/models]\n", dir.path().display());
        let policy = Policy::parse(&yaml).expect("policy");
        let mut first = crate::verifying::verifier::Verifier::bare(policy);
        first.hasher.set_threads(2);
        let (m, _) = first.make_baseline(Some(KEY), 1).expect("base");
        let held = first.hasher.known_chunks();
        assert_eq!(save(&store, KEY, "d", &m, held).expect("saved"), 1);
        let check = |hasher: &mut FileHasher| {
            let i = m
                .entries
                .index_of(&big.display().to_string())
                .expect("entry");
            let expect = Expect::of(i, &m.entries.get(i).expect("entry"));
            let given = crate::verifying::hashing::Given {
                entry: Some(expect),
                ..crate::verifying::hashing::Given::NOTHING
            };
            let outcome = hasher.check(&big, given);
            (outcome, m.entries.get(i).expect("entry").hash)
        };
        let restarted = || {
            let mut h = FileHasher::default();
            h.set_threads(2);
            for (p, k) in load(&store, KEY, "d", &m).expect("recalled") {
                h.learn_chunks(p, k);
            }
            h
        };
        let mut h = restarted();
        let (outcome, want) = check(&mut h);
        assert!(
            matches!(&outcome, crate::reading::Outcome::Hashed { hash, .. } if *hash == want),
            "{outcome:?}"
        );
        assert_eq!(
            h.chunked_reads, 1,
            "proven by its chunks, not read in order"
        );
        let mut edited = data;
        edited[usize::try_from(CHUNK).expect("fits") + 3] ^= 1;
        std::fs::write(&big, &edited).expect("write");
        let mut h = restarted();
        let (outcome, want) = check(&mut h);
        assert!(
            matches!(&outcome, crate::reading::Outcome::Hashed { hash, .. } if *hash != want),
            "{outcome:?}"
        );
        assert_eq!(h.chunked_reads, 0);
    }
}
