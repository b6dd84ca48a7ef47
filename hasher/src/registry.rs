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

use crate::budget::Budget;
use crate::hashing::{DirCached, FileHasher};
use crate::reader::Reader;
use crate::version::{Outcome, Version};
use crate::walk::Found;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

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

/// A directory artifact's digest and total size, or why it is not a valid artifact.
pub type DirDigest = Result<(String, u64), String>;

/// The files of a directory artifact, checked against the bounds, with their versions.
struct Plan {
    dir: PathBuf,
    files: Vec<(PathBuf, Version)>,
}

/// Walks `dir` and checks the artifact's bounds without reading any content.
fn plan(dir: &Path) -> Result<Plan, String> {
    let found = crate::walk::walk(dir, MAX_DIR_ENTRIES + 1);
    if found.len() > MAX_DIR_ENTRIES {
        return Err(format!("more than {MAX_DIR_ENTRIES} entries"));
    }
    let mut files = Vec::with_capacity(found.len());
    for (path, what) in &found {
        match what {
            Found::File => files.push(path.clone()),
            Found::Anomaly(kind) => return Err(format!("{}: {kind}", path.display())),
        }
    }
    if files.len() > MAX_DIR_FILES {
        return Err(format!("more than {MAX_DIR_FILES} files"));
    }
    let mut versions = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        let m = std::fs::symlink_metadata(&f).map_err(|e| format!("{}: {e}", f.display()))?;
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
        versions.push((f, Version::of(&m)));
    }
    Ok(Plan {
        dir: dir.to_owned(),
        files: versions,
    })
}

/// Streams a planned artifact through `reader` under `budget`: its digest and total size.
fn compute(
    plan: &Plan,
    reader: &mut Reader,
    budget: &Mutex<Budget>,
) -> Result<(String, u64), String> {
    let mut sha = Sha256::new();
    sha.update(DIR_DOMAIN);
    let prefix = plan.dir.as_os_str().as_bytes().len() + 1;
    let mut total = 0u64;
    for (f, version) in &plan.files {
        let rel = &f.as_os_str().as_bytes()[prefix..];
        if rel.len() > MAX_REL_PATH || std::str::from_utf8(rel).is_err() {
            return Err(format!(
                "{}: relative path not UTF-8 or too long",
                f.display()
            ));
        }
        let file =
            crate::resolve::open_no_symlinks(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let before = file.metadata().map_err(|e| e.to_string())?;
        if Version::of(&before) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        sha.update((rel.len() as u64).to_be_bytes());
        sha.update(rel);
        sha.update(before.size().to_be_bytes());
        let n = reader
            .feed(&file, &mut sha, budget, *version)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let after = file.metadata().map_err(|e| e.to_string())?;
        if n != before.size() || Version::of(&after) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        total += n;
    }
    Ok((protocol::hexfmt::encode(&sha.finalize()), total))
}

/// `SecAI-Directory-Hash-v1` of each of `dirs`: SHA-256 over the domain, then for every regular
/// file beneath, in byte order of its `/`-separated relative path: u64 big-endian length of
/// that path, the path, u64 big-endian file size, the content. Each answer is the digest and the
/// total size, or why the dir is not a valid artifact. Answered from memory while no file's
/// version moved; otherwise streamed under the read budget, up to `hash_threads` artifacts at
/// once (largest first), each thread with its own buffer.
pub fn directory_digests(hasher: &mut FileHasher, dirs: &[PathBuf]) -> Vec<DirDigest> {
    let mut answers: Vec<Option<DirDigest>> = vec![None; dirs.len()];
    let mut todo: Vec<(usize, Plan)> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        match plan(dir) {
            Err(why) => answers[i] = Some(Err(why)),
            Ok(p) => match hasher.dirs.get(dir) {
                Some(c) if c.files == p.files && Instant::now() < c.due => {
                    hasher.fast_hits += 1;
                    answers[i] = Some(Ok((c.digest.clone(), c.total)));
                }
                _ => todo.push((i, p)),
            },
        }
    }
    let size = |p: &Plan| p.files.iter().map(|(_, v)| v.size()).sum::<u64>();
    todo.sort_by_key(|(_, p)| std::cmp::Reverse(size(p)));
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, DirDigest)>> = Mutex::new(Vec::new());
    let budget = &hasher.budget;
    let work = |reader: &mut Reader| loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some((i, p)) = todo.get(k) else { break };
        let r = compute(p, reader, budget);
        results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*i, r));
    };
    let before = hasher.reader.bytes;
    let extra = hasher.threads.min(todo.len()).saturating_sub(1);
    let spent: u64 = std::thread::scope(|s| {
        let helpers: Vec<_> = (0..extra)
            .map_while(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(s, || {
                        let mut reader = Reader::default();
                        work(&mut reader);
                        reader.bytes
                    })
                    .ok()
            })
            .collect();
        // This thread works too; what a thread that could not start would have done, it does.
        work(&mut hasher.reader);
        helpers.into_iter().filter_map(|h| h.join().ok()).sum()
    });
    hasher.bytes_hashed += spent + (hasher.reader.bytes - before);
    for (i, r) in results.into_inner().unwrap_or_else(|e| e.into_inner()) {
        if let (Ok((digest, total)), Some((_, p))) = (&r, todo.iter().find(|(j, _)| *j == i)) {
            let due = Instant::now() + hasher.spread(digest);
            hasher.dirs.insert(
                p.dir.clone(),
                DirCached {
                    files: p.files.clone(),
                    digest: digest.clone(),
                    total: *total,
                    due,
                },
            );
        }
        answers[i] = Some(r);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("not hashed".into())))
        .collect()
}

/// One directory artifact's digest (see [`directory_digests`]).
pub fn directory_digest(hasher: &mut FileHasher, dir: &Path) -> DirDigest {
    directory_digests(hasher, &[dir.to_owned()])
        .pop()
        .unwrap_or_else(|| Err("not hashed".into()))
}

/// A finding about one registry path: (path, expected digest, actual marker or digest).
pub type Finding = (String, String, String);

/// Checks the model dir `dir` against the manifest at `manifest`; every finding is returned.
pub fn check(hasher: &mut FileHasher, dir: &Path, manifest: &Path) -> Vec<Finding> {
    let invalid_manifest = || {
        (
            shown(manifest),
            report::NONE.into(),
            MANIFEST_INVALID.into(),
        )
    };
    let registry = match Registry::load(manifest) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                why,
                "registry manifest unusable: its model dir is not trusted"
            );
            return vec![invalid_manifest()];
        }
    };
    let mut out = Vec::new();
    for why in &registry.refused {
        tracing::warn!(why, manifest = %manifest.display(), "registry entry refused");
        out.push(invalid_manifest());
    }
    out.extend(unenrolled(&registry, dir, manifest));
    // Directory artifacts first, all together: they may share the hasher's threads.
    let dir_artifacts: Vec<PathBuf> = registry
        .models
        .iter()
        .map(|m| dir.join(&m.filename))
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir()))
        .collect();
    let mut dir_digests: Vec<(PathBuf, DirDigest)> = dir_artifacts
        .iter()
        .cloned()
        .zip(directory_digests(hasher, &dir_artifacts))
        .collect();
    for m in &registry.models {
        let path = dir.join(&m.filename);
        let mut digest_of_dir = |hasher: &mut FileHasher| {
            dir_digests
                .iter()
                .position(|(p, _)| *p == path)
                .map(|i| dir_digests.swap_remove(i).1)
                .unwrap_or_else(|| directory_digest(hasher, &path))
        };
        if let Some(actual) = artifact_finding(hasher, m, &path, &mut digest_of_dir) {
            out.push((shown(&path), m.sha256.clone(), actual));
        }
    }
    out
}

fn shown(p: &Path) -> String {
    report::display_path(p.as_os_str().as_bytes())
}

/// Every top-level entry of `dir` must be enrolled (the manifest itself aside).
fn unenrolled(registry: &Registry, dir: &Path, manifest: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
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
    out
}

/// What is wrong with the enrolled artifact `m` at `path`, if anything (the actual digest or
/// a marker); a directory's digest comes from `digest_of_dir`.
fn artifact_finding(
    hasher: &mut FileHasher,
    m: &Model,
    path: &Path,
    digest_of_dir: &mut dyn FnMut(&mut FileHasher) -> DirDigest,
) -> Option<String> {
    match std::fs::symlink_metadata(path) {
        Err(_) => Some(report::MISSING.to_owned()),
        Ok(meta) if meta.file_type().is_file() => {
            match hasher.check_expecting(path, Some(m.size)) {
                Outcome::Hashed { hash, size } if hash == m.sha256 && size == m.size => None,
                Outcome::Hashed { hash, .. } => Some(hash),
                Outcome::SizeChanged(_) => Some(report::SIZE_CHANGED.into()),
                Outcome::TooLarge(_) => Some(report::TOO_LARGE.into()),
                _ => Some(ARTIFACT_INVALID.into()),
            }
        }
        Ok(meta) if meta.file_type().is_dir() => match digest_of_dir(hasher) {
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
    }
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
