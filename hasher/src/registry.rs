//! The model registry (`registry_manifest:`): when set, the model dir holding the manifest
//! follows it instead of the per-file baseline. Every top-level entry of that dir must be
//! enrolled (a file, or a directory of a sharded checkpoint or a diffusers tree, by its
//! `SecAI-Directory-Hash-v1`), and every enrolled artifact must be there with its digest and
//! size. A promoted artifact is trusted without a rebaseline.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use protocol::hexfmt::is_sha256_hex;
use protocol::report;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::hashing::{FileHasher, Outcome, Version};
use crate::walk::Found;

/// Largest manifest read.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;
/// Domain of the directory digest.
const DIR_DOMAIN: &[u8] = b"SecAI-Directory-Hash-v1\0";
/// Bounds of one directory artifact.
const MAX_DIR_ENTRIES: usize = 25_000;
const MAX_DIR_FILES: usize = 20_000;
const MAX_FILE: u64 = 50 << 30;
const MAX_TOTAL: u64 = 64 << 30;
const MAX_REL_PATH: usize = 4096;

use protocol::report::{ARTIFACT_INVALID, MANIFEST_INVALID};

#[derive(Debug, Deserialize)]
struct RawModel {
    #[serde(default)]
    name: String,
    filename: String,
    sha256: String,
    size_bytes: i64,
}

#[derive(Debug, Deserialize)]
struct RawManifest {
    version: u64,
    #[serde(default)]
    models: Vec<RawModel>,
}

/// One enrolled artifact.
#[derive(Debug, Clone)]
pub struct Model {
    /// One top-level entry of the model dir.
    pub filename: String,
    /// Its digest: SHA-256 of a file, `SecAI-Directory-Hash-v1` of a directory.
    pub sha256: String,
    /// Its size (a directory's: the total of its files').
    pub size: u64,
}

/// The manifest, read strictly: what is enrolled, and what is wrong with the rest.
#[derive(Debug, Default)]
pub struct Registry {
    /// Canonical entries, file names unique.
    pub models: Vec<Model>,
    /// Entries refused, each with why (for a violation of its own).
    pub refused: Vec<String>,
}

impl Registry {
    /// Reads the manifest; `Err` when the manifest as a whole cannot be used.
    pub fn load(path: &Path) -> Result<Registry, String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.file_type().is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let bytes = crate::fsread::read_bounded(path, MAX_MANIFEST)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let raw: RawManifest =
            serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if raw.version != 1 {
            return Err(format!(
                "{}: registry manifest version {} is not 1",
                path.display(),
                raw.version
            ));
        }
        let mut registry = Registry::default();
        let mut seen = HashSet::new();
        for m in raw.models {
            let canonical = !m.name.is_empty()
                && !m.filename.is_empty()
                && m.filename != "."
                && m.filename != ".."
                && !m.filename.contains('/')
                && !m.filename.contains('\0')
                && is_sha256_hex(&m.sha256)
                && m.size_bytes >= 0;
            if !canonical {
                registry.refused.push(format!(
                    "entry {:?} ({:?}) is not canonical",
                    m.name, m.filename
                ));
            } else if !seen.insert(m.filename.clone()) {
                registry
                    .refused
                    .push(format!("file name {:?} is enrolled twice", m.filename));
            } else {
                registry.models.push(Model {
                    filename: m.filename,
                    sha256: m.sha256,
                    size: m.size_bytes.unsigned_abs(),
                });
            }
        }
        Ok(registry)
    }

    /// The entry enrolling `filename`.
    pub fn get(&self, filename: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.filename == filename)
    }
}

/// A directory artifact's digest, and the version of every file it covered.
pub struct DirCached {
    files: Vec<(PathBuf, Version)>,
    digest: String,
    total: u64,
    due: Instant,
}

/// `SecAI-Directory-Hash-v1` of `dir`: SHA-256 over the domain, then for every regular file
/// beneath, in byte order of its `/`-separated relative path: u64 big-endian length of that
/// path, the path, u64 big-endian file size, the content. Returns the digest and the total
/// size; `Err` says why `dir` is not a valid artifact. Streamed through the hasher's buffer
/// under its read budget; answered from memory while no file's version moved.
pub fn directory_digest(hasher: &mut FileHasher, dir: &Path) -> Result<(String, u64), String> {
    let found = crate::walk::walk(dir);
    if found.len() > MAX_DIR_ENTRIES {
        return Err(format!("more than {MAX_DIR_ENTRIES} entries"));
    }
    let mut files = Vec::with_capacity(found.len());
    for (path, what) in &found {
        match what {
            Found::File => files.push(path.clone()),
            Found::Anomaly(kind) => {
                return Err(format!("{}: {kind}", path.display()));
            }
        }
    }
    if files.len() > MAX_DIR_FILES {
        return Err(format!("more than {MAX_DIR_FILES} files"));
    }
    let mut versions = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in &files {
        let m = std::fs::symlink_metadata(f).map_err(|e| format!("{}: {e}", f.display()))?;
        if m.nlink() != 1 {
            return Err(format!(
                "{}: hard-linked ({} links)",
                f.display(),
                m.nlink()
            ));
        }
        if m.size() > MAX_FILE {
            return Err(format!("{}: larger than 50 GiB", f.display()));
        }
        total = total.saturating_add(m.size());
        if total > MAX_TOTAL {
            return Err("larger than 64 GiB in total".into());
        }
        versions.push((f.clone(), Version::of(&m)));
    }
    if let Some(c) = hasher.dirs.get(dir) {
        if c.files == versions && Instant::now() < c.due {
            hasher.fast_hits += 1;
            return Ok((c.digest.clone(), c.total));
        }
    }
    let mut sha = Sha256::new();
    sha.update(DIR_DOMAIN);
    let prefix = dir.as_os_str().as_bytes().len() + 1;
    let mut total = 0u64;
    for (f, version) in &versions {
        let rel = &f.as_os_str().as_bytes()[prefix..];
        if rel.len() > MAX_REL_PATH || std::str::from_utf8(rel).is_err() {
            return Err(format!(
                "{}: relative path not UTF-8 or too long",
                f.display()
            ));
        }
        let file =
            crate::reader::open_no_symlinks(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let before = file.metadata().map_err(|e| e.to_string())?;
        if Version::of(&before) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        sha.update((rel.len() as u64).to_be_bytes());
        sha.update(rel);
        sha.update(before.size().to_be_bytes());
        let read_before = hasher.reader.bytes;
        let n = hasher
            .reader
            .feed(&file, &mut sha, &hasher.budget)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        hasher.bytes_hashed += hasher.reader.bytes - read_before;
        let after = file.metadata().map_err(|e| e.to_string())?;
        if n != before.size() || Version::of(&after) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        total += n;
    }
    let digest = protocol::hexfmt::encode(&sha.finalize());
    let due = Instant::now() + hasher.spread(&digest);
    hasher.dirs.insert(
        dir.to_owned(),
        DirCached {
            files: versions,
            digest: digest.clone(),
            total,
            due,
        },
    );
    Ok((digest, total))
}

/// A finding about one registry path: (path, expected digest, actual marker or digest).
pub type Finding = (String, String, String);

/// Checks the model dir `dir` against the manifest at `manifest`; every finding is returned.
pub fn check(hasher: &mut FileHasher, dir: &Path, manifest: &Path) -> Vec<Finding> {
    let shown = |p: &Path| report::display_path(p.as_os_str().as_bytes());
    let mut out = Vec::new();
    let registry = match Registry::load(manifest) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                why,
                "registry manifest unusable: its model dir is not trusted"
            );
            out.push((
                shown(manifest),
                report::NONE.into(),
                MANIFEST_INVALID.into(),
            ));
            return out;
        }
    };
    for why in &registry.refused {
        tracing::warn!(why, manifest = %manifest.display(), "registry entry refused");
        out.push((
            shown(manifest),
            report::NONE.into(),
            MANIFEST_INVALID.into(),
        ));
    }
    // Every top-level entry must be enrolled (the manifest itself aside).
    for (path, what) in top_level(dir) {
        if let Found::Anomaly(kind) = what {
            out.push((shown(&path), report::NONE.into(), kind.into()));
            continue;
        }
        if path == manifest {
            continue;
        }
        let enrolled = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| registry.get(n))
            .is_some();
        if !enrolled {
            out.push((
                shown(&path),
                report::NONE.into(),
                report::UNREGISTERED.into(),
            ));
        }
    }
    for m in &registry.models {
        let path = dir.join(&m.filename);
        let actual = match std::fs::symlink_metadata(&path) {
            Err(_) => Some(report::MISSING.to_owned()),
            Ok(meta) if meta.file_type().is_file() => {
                match hasher.check_expecting(&path, Some(m.size)) {
                    Outcome::Hashed { hash, size } if hash == m.sha256 && size == m.size => None,
                    Outcome::Hashed { hash, .. } => Some(hash),
                    Outcome::SizeChanged(_) => Some(report::SIZE_CHANGED.into()),
                    Outcome::TooLarge(_) => Some(report::TOO_LARGE.into()),
                    _ => Some(ARTIFACT_INVALID.into()),
                }
            }
            Ok(meta) if meta.file_type().is_dir() => match directory_digest(hasher, &path) {
                Ok((hash, size)) if hash == m.sha256 && size == m.size => None,
                Ok((_, size)) if size != m.size => Some(report::SIZE_CHANGED.into()),
                Ok((hash, _)) => Some(hash),
                Err(why) => {
                    tracing::warn!(path = %path.display(), why, "registry artifact invalid");
                    Some(ARTIFACT_INVALID.into())
                }
            },
            Ok(meta) if meta.file_type().is_symlink() => Some(report::SYMLINK.into()),
            Ok(_) => Some(ARTIFACT_INVALID.into()),
        };
        if let Some(actual) = actual {
            out.push((shown(&path), m.sha256.clone(), actual));
        }
    }
    out
}

/// The entries directly in `dir`, read through a descriptor opened with no symlink in any
/// component (a registry dir swapped for a symlink lists nothing, and is a finding).
fn top_level(dir: &Path) -> Vec<(PathBuf, Found)> {
    use nix::fcntl::OFlag;
    let Ok(fd) = crate::resolve::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return vec![(dir.to_owned(), Found::Anomaly(report::UNREADABLE))];
    };
    let Ok(mut handle) = nix::dir::Dir::from_fd(fd) else {
        return vec![(dir.to_owned(), Found::Anomaly(report::UNREADABLE))];
    };
    handle
        .iter()
        .filter_map(Result::ok)
        .filter(|e| !matches!(e.file_name().to_bytes(), b"." | b".."))
        .map(|e| {
            let name = std::ffi::OsStr::from_bytes(e.file_name().to_bytes());
            (dir.join(name), Found::File)
        })
        .collect()
}
