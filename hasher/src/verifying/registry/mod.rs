//! The model registry (`registry_manifest:`): when set, every model dir follows it instead of
//! the per-file baseline (the Go service's rule; the manifest may live anywhere, and is re-read
//! at every check, never frozen into a baseline). Every top-level entry of each dir must be
//! enrolled (a file, or a directory of a sharded checkpoint or a diffusers tree, by its
//! `SecAI-Directory-Hash-v1`), and every enrolled artifact must be there with its digest and
//! size. A promoted artifact is trusted without a rebaseline.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use protocol::hexfmt::Sha256Digest;
use protocol::report;
use protocol::Actual;
use serde::Deserialize;

use crate::reading::Outcome;
use crate::verifying::hashing::{FileHasher, Given};
use crate::verifying::walk::Found;

mod dirhash;
pub(in crate::verifying) use dirhash::{directory_digest, directory_digests, DirDigest};

/// Largest manifest read.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;

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
pub(crate) struct Model {
    /// One top-level entry of the model dir.
    pub(in crate::verifying) filename: String,
    /// Its digest: SHA-256 of a file, `SecAI-Directory-Hash-v1` of a directory.
    pub(crate) sha256: Sha256Digest,
    /// Its size (a directory's: the total of its files').
    pub(crate) size: u64,
}

/// The manifest, read strictly: what is enrolled, and what is wrong with the rest.
#[derive(Debug, Default)]
pub struct Registry {
    /// Canonical entries, file names unique.
    pub(crate) models: Vec<Model>,
    /// Entries refused, each with why (for a violation of its own).
    pub(crate) refused: Vec<String>,
}

impl Registry {
    /// Reads the manifest; `Err` when the manifest as a whole cannot be used.
    pub fn load(path: &Path) -> Result<Registry, String> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if !meta.file_type().is_file() {
            return Err(format!("{}: not a regular file", path.display()));
        }
        let bytes = crate::reading::read_bounded(path, MAX_MANIFEST)
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
                && m.size_bytes >= 0;
            let sha256 = Sha256Digest::from_hex(&m.sha256).filter(|_| canonical);
            let Some(sha256) = sha256 else {
                registry.refused.push(format!(
                    "entry {:?} ({:?}) is not canonical",
                    m.name, m.filename
                ));
                continue;
            };
            if !seen.insert(m.filename.clone()) {
                registry
                    .refused
                    .push(format!("file name {:?} is enrolled twice", m.filename));
            } else {
                registry.models.push(Model {
                    filename: m.filename,
                    sha256,
                    size: m.size_bytes.unsigned_abs(),
                });
            }
        }
        Ok(registry)
    }

    /// The entry enrolling `filename`.
    pub(crate) fn get(&self, filename: &str) -> Option<&Model> {
        self.models.iter().find(|m| m.filename == filename)
    }
}

/// A finding about one registry path: (path, expected digest, actual marker or digest).
pub(crate) type Finding = (String, String, Actual);

/// Checks every model dir in `dirs` against the manifest at `manifest` (each enrolled
/// `filename` is looked for in each dir, as the Go service does); every finding is returned.
pub(in crate::verifying) fn check(
    hasher: &mut FileHasher,
    dirs: &[PathBuf],
    manifest: &Path,
) -> Vec<Finding> {
    let invalid_manifest = || {
        (
            shown(manifest),
            report::NONE.into(),
            protocol::Finding::ManifestInvalid.into(),
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
            out.push((shown(&path), m.sha256.to_hex(), actual));
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
            out.push((shown(&path), report::NONE.into(), kind.into()));
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
                protocol::Finding::Unregistered.into(),
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
) -> Option<Actual> {
    match meta {
        Err(_) => Some(protocol::Finding::Missing.into()),
        Ok(meta) if meta.file_type().is_file() => {
            let sealing = hasher.seal_required(path, protocol::Category::ModelFile);
            let given = Given {
                size: Some(m.size),
                ..Given::NOTHING
            };
            match hasher.check(path, given) {
                Outcome::Hashed { hash, size } if hash == m.sha256 && size == m.size => (sealing
                    && !hasher.seals.is_sealed(path))
                .then(|| protocol::Finding::NotSealed.into()),
                Outcome::Hashed { hash, .. } => Some(Actual::Digest(hash)),
                other => {
                    use protocol::Finding;
                    let finding = match other.finding() {
                        // The lstat just found a file: gone, swapped or unreadable now, it
                        // is not the artifact enrolled.
                        Some(
                            Finding::Missing
                            | Finding::Symlink
                            | Finding::NotRegular
                            | Finding::Unreadable,
                        )
                        | None => Finding::ArtifactInvalid,
                        Some(f) => f,
                    };
                    Some(finding.into())
                }
            }
        }
        Ok(meta) if meta.file_type().is_symlink() => Some(protocol::Finding::Symlink.into()),
        Ok(_) => Some(protocol::Finding::ArtifactInvalid.into()),
    }
}

/// What is wrong with the enrolled directory artifact `m` at `path`, given its `digest`.
fn dir_finding(
    hasher: &mut FileHasher,
    m: &Model,
    path: &Path,
    digest: DirDigest,
) -> Option<Actual> {
    match digest {
        Ok((hash, size)) if hash == m.sha256.to_hex() && size == m.size => {
            let sealing = hasher.seal_required(path, protocol::Category::ModelFile);
            (sealing && !crate::verifying::dirseals::all_sealed(path, &hasher.reads.secrets))
                .then(|| protocol::Finding::NotSealed.into())
        }
        Ok((_, size)) if size != m.size => Some(protocol::Finding::SizeChanged.into()),
        // A directory digest is made as 64 hex digits; were it not, it is no artifact.
        Ok((hash, _)) => Some(
            Sha256Digest::from_hex(&hash)
                .map_or(protocol::Finding::ArtifactInvalid.into(), Actual::Digest),
        ),
        Err(why) => {
            tracing::warn!(path = %path.display(), why, "registry artifact invalid");
            Some(protocol::Finding::ArtifactInvalid.into())
        }
    }
}

/// The entries directly in `dir`, read through a descriptor opened with no symlink in any
/// component (a registry dir swapped for a symlink lists nothing, and is a finding).
fn top_level(dir: &Path) -> Vec<(PathBuf, Found)> {
    use nix::fcntl::OFlag;
    let Ok(fd) = crate::reading::open_resolved(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else {
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

/// `SecAI-Directory-Hash-v1` written out from its definition, independently of the code (for
/// tests).
#[cfg(test)]
pub(crate) fn dir_hash_by_hand(files: &[(&str, &[u8])]) -> String {
    use sha2::{Digest, Sha256};
    let mut sorted = files.to_vec();
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut h = Sha256::new();
    h.update(b"SecAI-Directory-Hash-v1\0");
    for (rel, content) in sorted {
        h.update((rel.len() as u64).to_be_bytes());
        h.update(rel.as_bytes());
        h.update((content.len() as u64).to_be_bytes());
        h.update(content);
    }
    protocol::hexfmt::encode(&h.finalize())
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
        let sd = super::dir_hash_by_hand(&[("unet/w.bin", b"unet")]);
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
                .map(|v| (v.path, v.actual_hash.to_string()))
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
