//! The model registry (`registry_manifest:`): when set, every model dir follows it instead of
//! the per-file baseline (the Go service's rule; the manifest may live anywhere, and is re-read
//! at every check, never frozen into a baseline). Every top-level entry of each dir must be
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

use crate::reading::budget::Budget;
use crate::reading::reader::Reader;
use crate::reading::version::{Outcome, Version};
use crate::verifying::hashing::{DirCached, FileHasher, Known};
use crate::verifying::walk::Found;
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
        let bytes = crate::reading::fsread::read_bounded(path, MAX_MANIFEST)
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
    /// The fingerprint of its files' seals before it is read, when every one is sealed.
    sealed: Option<[u8; 32]>,
}

/// Walks `dir` and checks the artifact's bounds without reading any content.
fn plan(dir: &Path) -> Result<Plan, String> {
    let found = crate::verifying::walk::walk(dir, MAX_DIR_ENTRIES + 1);
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
        sealed: None,
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
        let file = crate::reading::resolve::open_no_symlinks(f)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let before = file.metadata().map_err(|e| e.to_string())?;
        if crate::reading::secrets::is_secret_inode(&before) {
            return Err(format!(
                "{}: is the HMAC key or the service token; never read",
                f.display()
            ));
        }
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
            Ok(mut p) => match hasher.dirs.get(dir) {
                Some(c) if c.files == p.files && Instant::now() < c.due => {
                    hasher.fast_hits += 1;
                    answers[i] = Some(Ok((c.digest.clone(), c.total)));
                }
                _ => match crate::verifying::dirseals::answer(hasher, &p.dir, &p.files) {
                    Ok(sealed) => answers[i] = Some(Ok(sealed)),
                    Err(fingerprint) => {
                        p.sealed = fingerprint;
                        todo.push((i, p));
                    }
                },
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
            if let Some(before) = p.sealed {
                let read = (digest.as_str(), *total);
                crate::verifying::dirseals::learn(hasher, &p.dir, &p.files, before, read);
            }
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

/// Checks every model dir in `dirs` against the manifest at `manifest` (each enrolled
/// `filename` is looked for in each dir, as the Go service does); every finding is returned.
pub fn check(hasher: &mut FileHasher, dirs: &[PathBuf], manifest: &Path) -> Vec<Finding> {
    let invalid_manifest = || {
        (
            shown(manifest),
            report::NONE.into(),
            protocol::Finding::ManifestInvalid.as_str().into(),
        )
    };
    let registry = match Registry::load(manifest) {
        Ok(r) => r,
        Err(why) => {
            tracing::warn!(
                why,
                "registry manifest unusable: the model dirs are not trusted"
            );
            return vec![invalid_manifest()];
        }
    };
    let mut out = Vec::new();
    for why in &registry.refused {
        tracing::warn!(why, manifest = %manifest.display(), "registry entry refused");
        out.push(invalid_manifest());
    }
    for dir in dirs {
        out.extend(unenrolled(&registry, dir, manifest));
    }
    // Directory artifacts first, all together: they may share the hasher's threads.
    let enrolled = || {
        dirs.iter().flat_map(|dir| {
            registry
                .models
                .iter()
                .map(move |m| (m, dir.join(&m.filename)))
        })
    };
    let dir_artifacts: Vec<PathBuf> = enrolled()
        .map(|(_, p)| p)
        .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.file_type().is_dir()))
        .collect();
    let mut dir_digests: Vec<(PathBuf, DirDigest)> = dir_artifacts
        .iter()
        .cloned()
        .zip(directory_digests(hasher, &dir_artifacts))
        .collect();
    for (m, path) in enrolled() {
        let actual = match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_dir() => {
                let digest = dir_digests
                    .iter()
                    .position(|(p, _)| *p == path)
                    .map(|i| dir_digests.swap_remove(i).1)
                    .unwrap_or_else(|| directory_digest(hasher, &path));
                dir_finding(hasher, m, &path, digest)
            }
            meta => artifact_finding(hasher, m, &path, meta),
        };
        if let Some(actual) = actual {
            out.push((shown(&path), m.sha256.clone(), actual));
        }
    }
    out
}

fn shown(p: &Path) -> String {
    report::display_path(p.as_os_str().as_bytes())
}

/// The one top-level name a model dir may hold unenrolled: a manifest of that name is the
/// registry's bookkeeping, skipped as the Go service skips it, wherever the manifest itself is.
const MANIFEST_NAME: &str = "manifest.json";

/// Every top-level entry of `dir` must be enrolled (the manifest itself aside).
fn unenrolled(registry: &Registry, dir: &Path, manifest: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    for (path, what) in top_level(dir) {
        if let Found::Anomaly(kind) = what {
            out.push((shown(&path), report::NONE.into(), kind.as_str().into()));
            continue;
        }
        if path == manifest || path.file_name().is_some_and(|n| n == MANIFEST_NAME) {
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
                protocol::Finding::Unregistered.as_str().into(),
            ));
        }
    }
    out
}

/// What is wrong with the enrolled artifact `m` at `path`, if anything (the actual digest or
/// a marker), given what `lstat` found there (a directory: [`dir_finding`]).
fn artifact_finding(
    hasher: &mut FileHasher,
    m: &Model,
    path: &Path,
    meta: std::io::Result<std::fs::Metadata>,
) -> Option<String> {
    match meta {
        Err(_) => Some(protocol::Finding::Missing.as_str().to_owned()),
        Ok(meta) if meta.file_type().is_file() => {
            let sealing = hasher.seal_required(path, protocol::Category::ModelFile);
            let known = Known {
                size: Some(m.size),
                ..Known::NOTHING
            };
            match hasher.check(path, known) {
                Outcome::Hashed { hash, size } if hash == m.sha256 && size == m.size => (sealing
                    && !hasher.seals.is_sealed(path))
                .then(|| protocol::Finding::NotSealed.as_str().into()),
                Outcome::Hashed { hash, .. } => Some(hash),
                Outcome::SizeChanged(_) => Some(protocol::Finding::SizeChanged.as_str().into()),
                Outcome::TooLarge(_) => Some(protocol::Finding::TooLarge.as_str().into()),
                Outcome::Secret => Some(protocol::Finding::SecretFile.as_str().into()),
                Outcome::SealChanged(_) => Some(protocol::Finding::SealChanged.as_str().into()),
                _ => Some(protocol::Finding::ArtifactInvalid.as_str().into()),
            }
        }
        Ok(meta) if meta.file_type().is_symlink() => {
            Some(protocol::Finding::Symlink.as_str().into())
        }
        Ok(_) => Some(protocol::Finding::ArtifactInvalid.as_str().into()),
    }
}

/// What is wrong with the enrolled directory artifact `m` at `path`, given its `digest`.
fn dir_finding(
    hasher: &mut FileHasher,
    m: &Model,
    path: &Path,
    digest: DirDigest,
) -> Option<String> {
    match digest {
        Ok((hash, size)) if hash == m.sha256 && size == m.size => {
            let sealing = hasher.seal_required(path, protocol::Category::ModelFile);
            (sealing && !crate::verifying::dirseals::all_sealed(path))
                .then(|| protocol::Finding::NotSealed.as_str().into())
        }
        Ok((_, size)) if size != m.size => Some(protocol::Finding::SizeChanged.as_str().into()),
        Ok((hash, _)) => Some(hash),
        Err(why) => {
            tracing::warn!(path = %path.display(), why, "registry artifact invalid");
            Some(protocol::Finding::ArtifactInvalid.as_str().into())
        }
    }
}

/// The entries directly in `dir`, read through a descriptor opened with no symlink in any
/// component (a registry dir swapped for a symlink lists nothing, and is a finding).
fn top_level(dir: &Path) -> Vec<(PathBuf, Found)> {
    use nix::fcntl::OFlag;
    let Ok(fd) = crate::reading::resolve::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
        return vec![(
            dir.to_owned(),
            Found::Anomaly(protocol::Finding::Unreadable),
        )];
    };
    let Ok(mut handle) = nix::dir::Dir::from_fd(fd) else {
        return vec![(
            dir.to_owned(),
            Found::Anomaly(protocol::Finding::Unreadable),
        )];
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

#[cfg(test)]
mod tests {
    use crate::policy::Policy;
    use crate::verifying::verifier::Verifier;

    /// The appliance's layout: the manifest in `registry/`, the models in `vault/models`.
    #[test]
    fn a_manifest_outside_the_model_dir_governs_it_and_is_reported_by_its_own_path() {
        let dir = tempfile::tempdir().expect("tempdir");
        let r = dir.path();
        let models = r.join("vault/models");
        std::fs::create_dir_all(models.join("sd/unet")).expect("mkdir");
        std::fs::create_dir_all(r.join("registry")).expect("mkdir");
        std::fs::write(models.join("m.gguf"), "weights").expect("write");
        std::fs::write(models.join("sd/unet/w.bin"), "unet").expect("write");
        let manifest = r.join("registry/manifest.json");
        let mut sd = sha2::Sha256::new();
        use sha2::Digest;
        sd.update(b"SecAI-Directory-Hash-v1\0");
        sd.update(10u64.to_be_bytes());
        sd.update(b"unet/w.bin");
        sd.update(4u64.to_be_bytes());
        sd.update(b"unet");
        let sd = protocol::hexfmt::encode(&sd.finalize());
        let m = protocol::sign::sha256_hex(b"weights");
        let good = format!(
            "{{\"version\":1,\"models\":[{{\"name\":\"m\",\"filename\":\"m.gguf\",\"sha256\":\"{m}\",\"size_bytes\":7}},{{\"name\":\"sd\",\"filename\":\"sd\",\"sha256\":\"{sd}\",\"size_bytes\":4}}]}}"
        );
        std::fs::write(&manifest, &good).expect("write");
        let yaml = format!(
            "version: 1\nmodel_dirs: [{d}/vault/models]\nregistry_manifest: {d}/registry/manifest.json\n",
            d = r.display()
        );
        let policy = Policy::parse(&yaml).expect("a manifest outside the model dir is accepted");
        let baseline = Verifier::fresh_baseline(&policy).expect("baseline");
        assert!(
            baseline.entries.is_empty(),
            "never frozen into the baseline"
        );
        let mut v = Verifier::bare(policy.clone());
        v.adopt_as(baseline, &"0".repeat(64));
        let mut found = || -> Vec<(String, String)> {
            v.sweep_all(false)
                .expect("swept")
                .violations
                .into_iter()
                .map(|v| (v.path, v.actual_hash))
                .collect()
        };
        let shown = |p: &std::path::Path| p.display().to_string();
        assert_eq!(
            found(),
            vec![],
            "a file and a directory artifact, both enrolled"
        );
        // A manifest.json in the model dir is the registry's bookkeeping: skipped.
        std::fs::write(models.join("manifest.json"), "{}").expect("write");
        assert_eq!(found(), vec![]);
        // A tampered model is found in the dir the manifest does not sit in.
        std::fs::write(models.join("m.gguf"), "weighTs").expect("write");
        let got = found();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].0, shown(&models.join("m.gguf")));
        std::fs::write(models.join("m.gguf"), "weights").expect("write");
        assert_eq!(found(), vec![]);
        // The manifest itself, by its own path: invalid, replaced by a symlink or a directory,
        // missing.
        let bad = vec![(shown(&manifest), "manifest_invalid".to_owned())];
        std::fs::write(&manifest, "{not json").expect("write");
        assert_eq!(found(), bad, "invalid");
        std::fs::remove_file(&manifest).expect("rm");
        std::fs::write(r.join("elsewhere.json"), &good).expect("write");
        std::os::unix::fs::symlink(r.join("elsewhere.json"), &manifest).expect("symlink");
        assert_eq!(found(), bad, "replaced by a symlink");
        std::fs::remove_file(&manifest).expect("rm");
        std::fs::create_dir(&manifest).expect("mkdir");
        assert_eq!(found(), bad, "replaced by a directory");
        std::fs::remove_dir(&manifest).expect("rmdir");
        assert_eq!(found(), bad, "missing");
        std::fs::write(&manifest, &good).expect("write");
        assert_eq!(found(), vec![], "put back");
    }

    #[test]
    fn a_manifest_deeper_inside_a_model_dir_is_refused_naming_the_key() {
        let e = Policy::parse("model_dirs: [/m]\nregistry_manifest: /m/artifact/manifest.json\n")
            .expect_err("inside an artifact");
        assert!(e.to_string().contains("registry_manifest"), "{e}");
        assert!(e.to_string().contains("line 2"), "{e}");
        Policy::parse("model_dirs: [/m]\nregistry_manifest: /m/manifest.json\n")
            .expect("directly in the dir");
    }
}
