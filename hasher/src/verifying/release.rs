//! The release baseline shipped with the OS image: a rebaseline can never bless a file the
//! release says is different, and a release transition is believed only from a file beneath
//! `/usr`, reached with no symlink, on a read-only mount, owned by root (its provenance, taken
//! from the descriptor it is read by). Beneath `/usr`, because under the hasher's unit
//! (`ProtectSystem=strict`) every mount looks read-only: what the image makes read-only for the
//! whole system is its `/usr`.

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

/// Where the release file came from, as its path and descriptor say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Provenance {
    /// Its path lies beneath `/usr`.
    pub(in crate::verifying) in_usr: bool,
    /// A component of its path is a symlink.
    pub(in crate::verifying) through_symlink: bool,
    /// Its filesystem is mounted read-only (as `/usr` is on the image-based appliance).
    pub(in crate::verifying) read_only: bool,
    /// Its owner.
    pub(crate) owner: u32,
}

impl Provenance {
    /// Why a transition may not rest on it, if it may not.
    pub(crate) fn doubt(&self, path: &Path) -> Option<String> {
        if !self.in_usr {
            return Some(format!(
                "{} is not beneath /usr: only a release file in the image's read-only tree can drive a release transition",
                path.display()
            ));
        }
        if self.through_symlink {
            return Some(format!(
                "{} is reached through a symlink: a release transition needs the file itself",
                path.display()
            ));
        }
        if !self.read_only {
            return Some(format!(
                "{} is not on a read-only mount: only a file that came with the booted image can drive a release transition",
                path.display()
            ));
        }
        (self.owner != 0).then(|| {
            format!(
                "{} is owned by uid {}, not root",
                path.display(),
                self.owner
            )
        })
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<(T, Provenance), ReleaseError> {
    use std::os::unix::fs::MetadataExt;
    let read = |why: std::io::Error| ReleaseError::Read {
        path: path.to_owned(),
        why: why.into(),
    };
    let (file, through_symlink) = match crate::reading::open_no_symlinks(path) {
        Ok(f) => (f, false),
        // Still read for a rebaseline's check; only a transition refuses it.
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            (std::fs::File::open(path).map_err(read)?, true)
        }
        Err(e) => return Err(read(e)),
    };
    let in_usr = path.starts_with("/usr") && path != Path::new("/usr");
    let owner = file.metadata().map_err(read)?.uid();
    let read_only = nix::sys::statfs::fstatfs(&file)
        .map_err(|e| read(e.into()))?
        .flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY);
    let bytes =
        crate::reading::read_bounded_file(file, MAX_BYTES).map_err(|why| ReleaseError::Read {
            path: path.to_owned(),
            why,
        })?;
    let parsed = serde_json::from_slice(&bytes).map_err(|why| ReleaseError::Parse {
        path: path.to_owned(),
        why,
    })?;
    Ok((
        parsed,
        Provenance {
            in_usr,
            through_symlink,
            read_only,
            owner,
        },
    ))
}

/// A release baseline as loaded and checked: the commit it was built from and, per path,
/// the SHA-256 and size the image ships.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Release {
    /// Its `source_commit` (may be empty in hand-made files).
    pub(crate) commit: String,
    /// Path → (digest, size).
    pub(crate) files: HashMap<String, (Sha256Digest, u64)>,
}

impl Release {
    /// Reads and checks the release baseline at `path` (format version, every digest).
    pub(crate) fn load(path: &Path) -> Result<Release, ReleaseError> {
        Release::load_with_provenance(path).map(|(r, _)| r)
    }

    /// As [`Release::load`], with where the file read came from.
    pub(crate) fn load_with_provenance(path: &Path) -> Result<(Release, Provenance), ReleaseError> {
        let (release, provenance): (ReleaseBaseline, _) = read_json(path)?;
        if release.version != RELEASE_VERSION {
            return Err(ReleaseError::Version {
                path: path.to_owned(),
                found: release.version,
            });
        }
        if !protocol::standing::commit_ok(&release.source_commit) {
            return Err(ReleaseError::BadCommit {
                path: path.to_owned(),
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
        Ok((
            Release {
                commit: release.source_commit,
                files,
            },
            provenance,
        ))
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
