//! The bindings of sealed files ([`crate::verifying::seals`]), kept in the store so that after
//! a restart or a reboot a sealed file is proven by its seal, not read. Each record says that
//! the content whose fs-verity digest is D has SHA-256 S and size N: a fact learned by one
//! read through verity, which no later state of the file can make false (another content has
//! another D). The file is HMAC-signed under the baseline key and names the baseline it was
//! written under (bindings written under another are not taken); without a key nothing is kept.
//!
//! Format: the line `integrity-monitor seals v1 baseline=<digest> count=<n>`, then n records
//! (path length u32, path bytes, SHA-256 32 bytes, size u64, verity algorithm u16, digest
//! length u8, the digest; integers little-endian), then the hex HMAC-SHA256 of all before it.

use std::path::PathBuf;

use crate::error::StoreError;
use crate::reading::Seal;
use crate::storing::{put_path, read_records, sidefile_header, write_sidefile, Reading};
use crate::storing::{Current, Store};
use crate::verifying::hashing::FileHasher;
use crate::verifying::seals::Binding;

/// The file's name in the store.
pub(crate) const FILE: &str = "seals.bin";
const MAGIC: &str = "integrity-monitor seals v1";
/// Records read at most (as many bindings as are held).
const MAX_RECORDS: usize = crate::verifying::seals::MAX_BINDINGS;
/// Longest path a record may hold.
const MAX_PATH: usize = 4096;

fn header(baseline: &str, count: usize) -> String {
    sidefile_header(MAGIC, baseline, count)
}

/// Writes `bindings` under the baseline with digest `digest`; how many.
pub(crate) fn save<'a>(
    store: &Store,
    key: &[u8],
    digest: &str,
    bindings: impl Iterator<Item = (&'a std::path::Path, &'a Binding)>,
) -> Result<usize, StoreError> {
    let kept: Vec<(String, &Binding)> = bindings
        .map(|(p, b)| (crate::verifying::paths::path_str(p), b))
        .filter(|(p, _)| !p.is_empty() && p.len() <= MAX_PATH)
        .take(MAX_RECORDS)
        .collect();
    write_sidefile(store, key, FILE, &header(digest, kept.len()), |put| {
        for (path, b) in &kept {
            put_path(put, path)?;
            put(&b.sha)?;
            put(&b.size.to_le_bytes())?;
            put(&b.seal.algorithm().to_le_bytes())?;
            let d = b.seal.digest();
            put(&[u8::try_from(d.len()).unwrap_or(0)])?;
            put(d)?;
        }
        Ok(())
    })?;
    Ok(kept.len())
}

/// One record as read: its path, SHA-256, size and seal.
type Record = (String, [u8; 32], u64, Seal);

fn record(file: &mut Reading) -> Result<Record, String> {
    let path = file.path(MAX_PATH)?;
    let sha = file.take::<32>()?;
    let size = u64::from_le_bytes(file.take::<8>()?);
    let algorithm = u16::from_le_bytes(file.take::<2>()?);
    let [n] = file.take::<1>()?;
    let mut digest = vec![0u8; usize::from(n).min(imsys::verity::MAX_DIGEST)];
    file.fill(&mut digest)?;
    let seal = Seal::new(algorithm, &digest)
        .ok_or_else(|| format!("{FILE}: a seal of algorithm {algorithm} with {n} bytes"))?;
    Ok((path, sha, size, seal))
}

/// The bindings stored under the baseline with digest `digest`; `Err` says why none are taken
/// (none stored, another baseline, a file that does not verify).
pub(in crate::verifying) fn load(
    store: &Store,
    key: &[u8],
    digest: &str,
) -> Result<Vec<Record>, String> {
    read_records(store, key, (FILE, MAGIC), digest, MAX_RECORDS, record)
}

/// Writes the bindings `hasher` holds under the baseline `current`.
pub(crate) fn keep(store: &Store, key: &[u8], current: &Current, hasher: &FileHasher) {
    let dirs = crate::verifying::dirseals::save(store, key, &current.digest, &hasher.seals);
    if let Err(e) = dirs {
        tracing::warn!(error = %e, "directory seal bindings not kept");
    }
    match save(store, key, &current.digest, hasher.seals.all()) {
        Ok(files) => tracing::debug!(files, "seal bindings kept"),
        Err(e) => tracing::warn!(
            error = %e,
            "seal bindings not kept: after a restart, sealed files are read once more"
        ),
    }
}

/// Gives `hasher` the bindings stored for `current`, if they verify; each falls due for its
/// backstop read as a file read now would.
pub(in crate::verifying) fn recall(
    store: &Store,
    key: &[u8],
    current: &Current,
    hasher: &mut FileHasher,
) {
    if !hasher.seals.enabled() {
        return;
    }
    match load(store, key, &current.digest) {
        Ok(records) => {
            tracing::info!(files = records.len(), "seal bindings recalled");
            for (path, sha, size, seal) in records {
                let due_ms = hasher.due_ms(sha[0]);
                let binding = Binding {
                    sha,
                    size,
                    seal,
                    due_ms,
                    in_force: true,
                };
                hasher.seals.recall(PathBuf::from(path), binding);
            }
        }
        Err(why) => tracing::info!(why, "no seal bindings recalled"),
    }
    if let Ok(dirs) = crate::verifying::dirseals::load(store, key, &current.digest) {
        tracing::info!(dirs = dirs.len(), "directory seal bindings recalled");
        for (path, mut seal) in dirs {
            seal.due_ms = hasher.due_ms(crate::verifying::hashing::lead(&seal.digest));
            hasher.seals.learn_dir(&path, seal);
        }
    }
    hasher.seals.take_changed();
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[7u8; 32];

    fn binding(fill: u8) -> Binding {
        Binding {
            sha: [fill; 32],
            size: u64::from(fill) * 1000,
            seal: Seal::new(imsys::verity::ALG_SHA256, &[fill ^ 0x55; 32]).expect("seal"),
            due_ms: 0,
            in_force: true,
        }
    }

    #[test]
    fn bindings_are_recalled_only_under_the_key_and_the_baseline_and_any_edit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let held = [
            (PathBuf::from("/m/a.gguf"), binding(1)),
            (PathBuf::from("/m/b.gguf"), binding(2)),
        ];
        let iter = || held.iter().map(|(p, b)| (p.as_path(), b));
        assert_eq!(load(&store, KEY, "d1"), Err("none stored".into()));
        assert_eq!(save(&store, KEY, "d1", iter()).expect("saved"), 2);
        let got = load(&store, KEY, "d1").expect("recalled");
        let want: Vec<Record> = held
            .iter()
            .map(|(p, b)| (p.display().to_string(), b.sha, b.size, b.seal))
            .collect();
        assert_eq!(got, want);
        let refused = |digest, key| load(&store, key, digest).expect_err("refused");
        assert!(refused("d2", KEY).contains("another baseline"));
        assert!(refused("d1", &[8u8; 32]).contains("HMAC"));
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).expect("read");
        for at in [header("d1", 2).len() + 5, good.len() - 70, good.len() - 1] {
            let mut edited = good.clone();
            edited[at] ^= 1;
            std::fs::write(&path, &edited).expect("write");
            assert!(load(&store, KEY, "d1").is_err(), "byte {at} edited");
        }
        std::fs::write(&path, &good[..good.len() - 80]).expect("write");
        assert!(load(&store, KEY, "d1").is_err(), "truncated");
    }
}
