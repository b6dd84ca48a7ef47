//! The release baseline shipped with the OS image: a rebaseline can never bless a file the
//! release says is different.

use crate::error::ReleaseError;
use std::collections::HashMap;
use std::path::Path;

use protocol::entries::Entries;
use protocol::hexfmt::Sha256Digest;
use serde::Deserialize;

/// Largest manifest read.
const MAX_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Deserialize)]
struct ReleaseFile {
    path: String,
    sha256: String,
    size: u64,
}

/// The appliance build's format: `{"version":1,"source_commit":"<40 hex>","files":[…]}`.
#[derive(Debug, Deserialize)]
struct ReleaseBaseline {
    version: u64,
    #[serde(default)]
    source_commit: String,
    files: Vec<ReleaseFile>,
}

/// The only release baseline format version known.
const RELEASE_VERSION: u64 = 1;

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, ReleaseError> {
    let bytes = crate::reading::fsread::read_bounded(path, MAX_BYTES).map_err(|why| {
        ReleaseError::Read {
            path: path.to_owned(),
            why,
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|why| ReleaseError::Parse {
        path: path.to_owned(),
        why,
    })
}

/// A release baseline as loaded and checked: the commit it was built from and, per path,
/// the SHA-256 and size the image ships.
pub struct Release {
    /// Its `source_commit` (may be empty in hand-made files).
    pub commit: String,
    /// Path → (digest, size).
    pub files: HashMap<String, (Sha256Digest, u64)>,
}

impl Release {
    /// Reads and checks the release baseline at `path` (format version, every digest).
    pub fn load(path: &Path) -> Result<Release, ReleaseError> {
        let release: ReleaseBaseline = read_json(path)?;
        if release.version != RELEASE_VERSION {
            return Err(ReleaseError::Version {
                path: path.to_owned(),
                found: release.version,
            });
        }
        let mut files = HashMap::with_capacity(release.files.len());
        for f in release.files {
            let Some(digest) = Sha256Digest::from_hex(&f.sha256) else {
                return Err(ReleaseError::BadEntry {
                    path: path.to_owned(),
                    entry: f.path,
                });
            };
            files.insert(f.path, (digest, f.size));
        }
        Ok(Release {
            commit: release.source_commit,
            files,
        })
    }
}

/// Checks new baseline entries against the release baseline; `Err` names every file that
/// differs (capped) so an operator sees what the rebaseline would have blessed.
pub fn check_release(path: &Path, entries: &Entries) -> Result<String, ReleaseError> {
    let release = Release::load(path)?;
    let expected = &release.files;
    let mismatches: Vec<String> = entries
        .iter()
        .filter_map(|e| {
            let (hash, size) = expected.get(e.path)?;
            (*hash != e.hash || *size != e.size).then(|| {
                format!(
                    "{} (release {} expects {}, found {})",
                    e.path,
                    release.commit,
                    hash.to_hex(),
                    e.hash.to_hex()
                )
            })
        })
        .collect();
    if mismatches.is_empty() {
        Ok(format!("version {RELEASE_VERSION} ({})", release.commit))
    } else {
        let shown: Vec<&String> = mismatches.iter().take(20).collect();
        Err(ReleaseError::Differs {
            count: mismatches.len(),
            commit: release.commit,
            shown: shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("; "),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::baseline::Entry;
    use protocol::Category;

    fn entry(path: &str, hash: &str) -> Entry {
        Entry {
            path: path.into(),
            hash: protocol::hexfmt::Sha256Digest::from_hex(hash).expect("64 hex digits"),
            category: Category::ServiceBinary,
            size: 3,
        }
    }

    #[test]
    fn release_mismatch_is_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("release.json");
        let good = "a".repeat(64);
        std::fs::write(&p, format!("{{\"version\":1,\"source_commit\":\"abcdef0123456789abcdef0123456789abcdef01\",\"files\":[{{\"path\":\"/usr/bin/x\",\"sha256\":\"{good}\",\"size\":3}}]}}")).expect("write");
        assert!(check_release(
            &p,
            &vec![
                entry("/usr/bin/x", &good),
                entry("/etc/local", &"c".repeat(64))
            ]
            .into()
        )
        .is_ok());
        let e = check_release(&p, &vec![entry("/usr/bin/x", &"b".repeat(64))].into())
            .expect_err("refused");
        assert!(
            matches!(&e, ReleaseError::Differs { count: 1, shown, .. } if shown.contains("/usr/bin/x")),
            "{e}"
        );
        assert!(check_release(&dir.path().join("missing.json"), &Entries::new()).is_err());
    }
}
