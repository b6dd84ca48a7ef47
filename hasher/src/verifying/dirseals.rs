//! Directory artifacts (a registry's sharded checkpoint or diffusers tree) whose every file is
//! sealed: their `SecAI-Directory-Hash-v1` is a function of each file's relative path, size and
//! content, and a file's seal names its content, so the digest is bound to a fingerprint of
//! the (path, size, seal) of every file — learned by one whole read with the fingerprint
//! measured before and after it — and answers, with no read, while the fingerprint is the same.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::reading::Secrets;
use crate::reading::Version;
use crate::verifying::hashing::{DirCached, FileHasher};
pub(in crate::verifying) use crate::verifying::seals::DirSeal;

/// Domain of a directory's seal fingerprint.
const DOMAIN: &[u8] = b"integrity-monitor.dir-seals.v1\0";

/// The fingerprint of `files` (the artifact's plan: every regular file beneath `dir`, in order,
/// with the version planned), when every one is sealed and still that version; `None` else.
pub(in crate::verifying) fn fingerprint(
    dir: &Path,
    files: &[(PathBuf, Version)],
    secrets: &Secrets,
) -> Option<[u8; 32]> {
    let mut sha = Sha256::new();
    sha.update(DOMAIN);
    for (path, version) in files {
        let (seal, opened) = crate::reading::look_seal(path, secrets)?;
        if Version::of(&opened) != *version {
            return None;
        }
        let rel = path.strip_prefix(dir).ok()?.as_os_str().as_encoded_bytes();
        sha.update((rel.len() as u64).to_be_bytes());
        sha.update(rel);
        sha.update(version.size().to_be_bytes());
        sha.update(seal.algorithm().to_be_bytes());
        sha.update([u8::try_from(seal.digest().len()).unwrap_or(0)]);
        sha.update(seal.digest());
    }
    Some(sha.finalize().into())
}

/// Whether every regular file of the directory artifact at `dir` is sealed now (what
/// `fsverity: require` asks of a directory artifact; one open and one ioctl a file).
pub(in crate::verifying) fn all_sealed(dir: &Path, secrets: &Secrets) -> bool {
    let files = crate::verifying::walk::walk(dir, crate::verifying::seals::MAX_BINDINGS);
    files.iter().all(|(path, what)| {
        matches!(what, crate::verifying::walk::Found::File)
            && crate::reading::look_seal(path, secrets).is_some()
    })
}

/// The digest and total of the planned artifact at `dir` from its seals, when bound and not
/// due (`Ok`); else the fingerprint measured now, if every file is sealed, for binding it
/// after the read (`Err`).
pub(crate) fn answer(
    hasher: &mut FileHasher,
    dir: &Path,
    files: &[(PathBuf, Version)],
) -> Result<(String, u64), Option<[u8; 32]>> {
    if !hasher.seals.enabled() {
        return Err(None);
    }
    let Some(now) = fingerprint(dir, files, &hasher.reads.secrets) else {
        return Err(None);
    };
    let now_ms = hasher.ms_now();
    let bound = hasher
        .seals
        .dir(dir)
        .filter(|b| b.fingerprint == now && now_ms < b.due_ms)
        .cloned()
        .ok_or(Some(now))?;
    let ahead = Duration::from_millis(bound.due_ms.saturating_sub(now_ms));
    let cached = DirCached {
        files: files.to_vec(),
        digest: bound.digest.clone(),
        total: bound.total,
        due: Instant::now() + ahead,
    };
    hasher.dirs.insert(dir.to_owned(), cached);
    Ok((bound.digest, bound.total))
}

/// Binds the digest just read for the artifact at `dir` to `before`, the fingerprint measured
/// before the read, when the one measured now is the same.
pub(in crate::verifying) fn learn(
    hasher: &mut FileHasher,
    dir: &Path,
    files: &[(PathBuf, Version)],
    before: [u8; 32],
    (digest, total): (&str, u64),
) {
    if fingerprint(dir, files, &hasher.reads.secrets) == Some(before) {
        let due_ms = hasher.due_ms(crate::verifying::hashing::lead(digest));
        let seal = DirSeal {
            fingerprint: before,
            digest: digest.to_owned(),
            total,
            due_ms,
        };
        hasher.seals.learn_dir(dir, seal);
    }
}

/// The directory bindings' file in the store: the line `integrity-monitor dir-seals v1
/// baseline=<digest> count=<n>`, then per artifact its path, fingerprint (32 bytes), digest
/// (32 bytes) and total (u64 little-endian), then the hex HMAC of all before it.
pub(crate) const FILE: &str = "dirseals.bin";
const MAGIC: &str = "integrity-monitor dir-seals v1";
const MAX_PATH: usize = 4096;

/// Writes the directory bindings under the baseline with digest `baseline`; how many.
pub(crate) fn save(
    store: &crate::storing::Store,
    key: &[u8],
    baseline: &str,
    seals: &crate::verifying::seals::Seals,
) -> Result<usize, crate::error::StoreError> {
    use crate::storing::{put_path, sidefile_header, write_sidefile};
    let kept: Vec<(String, [u8; 32], &DirSeal)> = seals
        .all_dirs()
        .filter_map(|(p, d)| {
            let raw = protocol::hexfmt::Sha256Digest::from_hex(&d.digest)?;
            let path = crate::verifying::paths::path_str(p);
            (!path.is_empty() && path.len() <= MAX_PATH).then_some((path, raw.0, d))
        })
        .collect();
    let head = sidefile_header(MAGIC, baseline, kept.len());
    write_sidefile(store, key, FILE, &head, |put| {
        for (path, digest, d) in &kept {
            put_path(put, path)?;
            put(&d.fingerprint)?;
            put(digest)?;
            put(&d.total.to_le_bytes())?;
        }
        Ok(())
    })?;
    Ok(kept.len())
}

/// The directory bindings stored under the baseline with digest `baseline` (their `due_ms`
/// left 0 for the caller to set); `Err` says why none are taken.
pub(in crate::verifying) fn load(
    store: &crate::storing::Store,
    key: &[u8],
    baseline: &str,
) -> Result<Vec<(PathBuf, DirSeal)>, String> {
    let max = crate::verifying::seals::MAX_BINDINGS;
    crate::storing::read_records(store, key, (FILE, MAGIC), baseline, max, |file| {
        let path = PathBuf::from(file.path(MAX_PATH)?);
        let fingerprint = file.take::<32>()?;
        let digest = protocol::hexfmt::encode(&file.take::<32>()?);
        let total = u64::from_le_bytes(file.take::<8>()?);
        let seal = DirSeal {
            fingerprint,
            digest,
            total,
            due_ms: 0,
        };
        Ok((path, seal))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_bindings_round_trip_under_the_key_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = crate::storing::Store::open(dir.path()).expect("store");
        let mut seals = crate::verifying::seals::Seals::default();
        let seal = DirSeal {
            fingerprint: [3; 32],
            digest: "ab".repeat(32),
            total: 12345,
            due_ms: 0,
        };
        seals.learn_dir(Path::new("/m/shards"), seal.clone());
        assert_eq!(save(&store, &[7; 32], "d1", &seals).expect("saved"), 1);
        let got = load(&store, &[7; 32], "d1").expect("loaded");
        assert_eq!(got, vec![(PathBuf::from("/m/shards"), seal)]);
        assert!(load(&store, &[8; 32], "d1").is_err(), "another key");
        assert!(load(&store, &[7; 32], "d2").is_err(), "another baseline");
    }
}
