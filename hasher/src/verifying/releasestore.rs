//! The releases the store has had in force (`releases.bin`): the OS image's release adopted
//! with the current baseline (its commit and digests), the one in force just before it (the
//! only one a rollback of the deployment may return to), and the commits in force before that
//! (never returned to). HMAC-signed under the key and bound to the baseline's digest (the side
//! files' frame), so it is believed only beside the baseline it was written with.

use std::collections::HashMap;

use protocol::hexfmt::Sha256Digest;
use protocol::report::MAX_PATH_LEN;

use crate::storing::Store;
use crate::storing::{put_path, read_records, sidefile_header, write_sidefile, Reading};
use crate::verifying::release::Release;

const NAME: &str = "releases.bin";
const MAGIC: &str = "integrity-monitor-releases-v1";
/// Commits remembered as once in force, besides the current and the previous one.
pub(in crate::verifying) const MAX_SEEN: usize = 64;
/// Most files one release may list here (a release file is at most 16 MiB of JSON).
const MAX_FILES: u32 = 200_000;

/// The releases in force with a baseline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct InForce {
    /// The release in force.
    pub(crate) current: Release,
    /// The one before it, if any: a deployment rolled back brings it back.
    pub(crate) previous: Option<Release>,
    /// Commits in force before the previous one, oldest first (at most [`MAX_SEEN`]).
    pub(crate) seen: Vec<String>,
}

impl InForce {
    /// `next` now in force after this: the current one becomes the previous, and the previous
    /// one joins what was seen.
    pub(crate) fn then(&self, next: Release) -> InForce {
        let mut seen = self.seen.clone();
        if let Some(p) = &self.previous {
            if p.commit != next.commit && !seen.contains(&p.commit) {
                seen.push(p.commit.clone());
            }
        }
        seen.retain(|c| *c != next.commit && *c != self.current.commit);
        let excess = seen.len().saturating_sub(MAX_SEEN);
        seen.drain(..excess);
        InForce {
            current: next,
            previous: Some(self.current.clone()),
            seen,
        }
    }
}

/// Writes `in_force` for the baseline with digest `baseline` (failures are logged: a lost
/// record means the next release is taken only if the files match it).
pub(crate) fn keep(store: &Store, key: &[u8], baseline: &str, in_force: &InForce) {
    let count = 2 + in_force.seen.len();
    let head = sidefile_header(MAGIC, baseline, count);
    let none = Release {
        commit: String::new(),
        files: HashMap::new(),
    };
    let written = write_sidefile(store, key, NAME, &head, |put| {
        put_release(put, &in_force.current)?;
        put_release(put, in_force.previous.as_ref().unwrap_or(&none))?;
        for c in &in_force.seen {
            put_release(
                put,
                &Release {
                    commit: c.clone(),
                    files: HashMap::new(),
                },
            )?;
        }
        Ok(())
    });
    if let Err(e) = written {
        tracing::error!(error = %e, "the release in force could not be recorded");
    }
}

fn put_release(
    put: &mut dyn FnMut(&[u8]) -> std::io::Result<()>,
    r: &Release,
) -> std::io::Result<()> {
    // A commit is written as a path is, with a prefix so an empty one has a length.
    put_path(put, &format!("c{}", r.commit))?;
    let mut files: Vec<_> = r.files.iter().collect();
    files.sort_by(|a, b| a.0.cmp(b.0));
    put(&u32::try_from(files.len()).unwrap_or(u32::MAX).to_le_bytes())?;
    for (path, (digest, size)) in files {
        put_path(put, path)?;
        put(&digest.0)?;
        put(&size.to_le_bytes())?;
    }
    Ok(())
}

fn read_release(r: &mut Reading) -> Result<Release, String> {
    let commit = r.path(protocol::standing::MAX_COMMIT_LEN + 1)?;
    let commit = commit
        .strip_prefix('c')
        .ok_or("releases.bin: a record without its commit")?
        .to_owned();
    let count = u32::from_le_bytes(r.take::<4>()?);
    if count > MAX_FILES {
        return Err(format!("releases.bin: {count} files in one release"));
    }
    let mut files = HashMap::with_capacity(count as usize);
    for _ in 0..count {
        let path = r.path(MAX_PATH_LEN)?;
        let digest = Sha256Digest(r.take::<32>()?);
        let size = u64::from_le_bytes(r.take::<8>()?);
        files.insert(path, (digest, size));
    }
    Ok(Release { commit, files })
}

/// The releases recorded in force with the baseline with digest `baseline`; `Err` says why
/// none can be believed.
pub(crate) fn load(store: &Store, key: &[u8], baseline: &str) -> Result<InForce, String> {
    let mut releases = read_records(
        store,
        key,
        (NAME, MAGIC),
        baseline,
        2 + MAX_SEEN,
        read_release,
    )?
    .into_iter();
    let current = releases.next().ok_or("releases.bin: no release in force")?;
    let previous = releases.next().filter(|p| !p.commit.is_empty());
    Ok(InForce {
        current,
        previous,
        seen: releases.map(|r| r.commit).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn release(commit: &str, c: u8) -> Release {
        Release {
            commit: commit.into(),
            files: [("/usr/bin/x".to_owned(), (Sha256Digest([c; 32]), 3))]
                .into_iter()
                .collect(),
        }
    }

    #[test]
    fn kept_and_recalled_for_its_baseline_only_and_refused_altered() {
        let dir = tempfile::tempdir().expect("dir");
        let store = Store::open(dir.path()).expect("store");
        let key = [7u8; 32];
        let manifest = protocol::baseline::Manifest::of_entries(
            "t".into(),
            Some(1),
            protocol::entries::Entries::default(),
            Some(&key),
        );
        let current = store.commit(manifest, None, Some(&key)).expect("stored");
        let current = current.digest;
        assert!(load(&store, &key, &current).is_err(), "none yet");
        let first = InForce {
            current: release("a", 1),
            previous: None,
            seen: Vec::new(),
        };
        let then = first.then(release("b", 2)).then(release("c", 3));
        assert_eq!(then.previous.as_ref().map(|p| p.commit.as_str()), Some("b"));
        assert_eq!(then.seen, vec!["a".to_owned()]);
        keep(&store, &key, &current, &then);
        assert_eq!(load(&store, &key, &current), Ok(then.clone()));
        // Back to the previous one and forward again: nothing is forgotten, nothing repeats.
        let back = then.then(release("b", 2));
        assert_eq!(back.previous.as_ref().map(|p| p.commit.as_str()), Some("c"));
        assert_eq!(back.seen, vec!["a".to_owned()]);
        // Another key, another baseline, an altered byte: not believed.
        assert!(load(&store, &[8u8; 32], &current).is_err());
        assert!(load(&store, &key, &"f".repeat(64)).is_err());
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).expect("read");
        let at = bytes.len() / 2;
        bytes[at] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        assert!(load(&store, &key, &current).is_err());
    }
}
