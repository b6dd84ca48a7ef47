//! What a hasher whose store was rejected compares the files with, so the operator sees what
//! differs while the state stays `recovery_required`: per watched path, the OS image's release
//! baseline where it lists the path, else the rejected store's entry (verified or not, said
//! so). It is never a baseline in force: nothing is signed with it, nothing of it is kept, and
//! the api never lets a scan against it make the state trusted.

use protocol::baseline::Manifest;
use protocol::entries::Entries;
use protocol::standing::{FromStore, Reference};

use crate::policy::Policy;
use crate::storing::Current;
use crate::verifying::paths::category_of;
use crate::verifying::release::Release;

/// The reference for `policy` from the release baseline and what the rejected store still
/// says; `None` when neither has anything to compare with.
pub(crate) fn build(
    policy: &Policy,
    release: Option<&Release>,
    store: Option<(&Manifest, FromStore)>,
    created_at: String,
) -> Option<(Current, Reference)> {
    let mut entries = Entries::new();
    let from_store = store.map_or(FromStore::Nothing, |(_, from)| from);
    if let Some((manifest, _)) = store {
        for e in manifest.entries.iter() {
            let (hash, size) = release
                .and_then(|r| r.files.get(e.path))
                .copied()
                .unwrap_or((e.hash, e.size));
            entries.push(e.path, hash, e.category, size).ok()?;
        }
    }
    let mut from_release = false;
    if let Some(r) = release {
        let mut listed: Vec<_> = r.files.iter().collect();
        listed.sort_by(|a, b| a.0.cmp(b.0));
        for (path, (hash, size)) in listed {
            let in_store = store.is_some_and(|(m, _)| m.entries.index_of(path).is_some());
            let Some(category) = category_of(policy, path) else {
                continue;
            };
            from_release = true;
            if !in_store {
                entries.push(path, *hash, category, *size).ok()?;
            }
        }
    }
    if entries.is_empty() || (!from_release && from_store == FromStore::Nothing) {
        return None;
    }
    let manifest = Manifest::of_entries(created_at, None, entries, None);
    let (digest, len) = digest_of(&manifest);
    let reference = Reference {
        digest: digest.clone(),
        entries: u32::try_from(manifest.entries.len()).unwrap_or(u32::MAX),
        release: release.filter(|_| from_release).map(|r| {
            r.commit
                .chars()
                .take(protocol::standing::MAX_COMMIT_LEN)
                .collect()
        }),
        store: from_store,
    };
    let current = Current {
        manifest,
        len,
        digest,
        generation: 0,
        release: None,
    };
    Some((current, reference))
}

/// SHA-256 (hex) and length of the manifest's JSON, serialized straight into the hash.
fn digest_of(manifest: &Manifest) -> (String, u64) {
    struct Hashing(sha2::Sha256, u64);
    impl std::io::Write for Hashing {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            sha2::Digest::update(&mut self.0, buf);
            self.1 += buf.len() as u64;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut h = Hashing(<sha2::Sha256 as sha2::Digest>::new(), 0);
    // Writing into a hash never fails, and a manifest of strings and integers serializes.
    let _ = serde_json::to_writer(&mut h, manifest);
    (protocol::hexfmt::encode(&sha2::Digest::finalize(h.0)), h.1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use protocol::baseline::Entry;
    use protocol::hexfmt::Sha256Digest;
    use protocol::Category;

    fn digest(c: char) -> Sha256Digest {
        Sha256Digest::from_hex(&c.to_string().repeat(64)).expect("hex")
    }

    #[test]
    fn the_release_wins_for_what_it_lists_the_store_for_the_rest_and_unwatched_is_left_out() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bin = dir.path().join("bin");
        let models = dir.path().join("models");
        std::fs::create_dir(&models).expect("mkdir");
        std::fs::write(&bin, "x").expect("write");
        let policy_path = dir.path().join("policy.yaml");
        std::fs::write(
            &policy_path,
            format!(
                "service_binaries: [{}]\nmodel_dirs: [{}]\n",
                bin.display(),
                models.display()
            ),
        )
        .expect("write");
        let policy = Policy::load(&policy_path).expect("policy");
        let bin_s = bin.display().to_string();
        let model = format!("{}/m.gguf", models.display());
        let store = Manifest::new(
            "t".into(),
            vec![
                Entry {
                    path: bin_s.clone(),
                    hash: digest('a'),
                    category: Category::ServiceBinary,
                    size: 1,
                },
                Entry {
                    path: model.clone(),
                    hash: digest('b'),
                    category: Category::ModelFile,
                    size: 2,
                },
            ],
            None,
        );
        let release = Release {
            commit: "c0ffee".into(),
            files: [
                (bin_s.clone(), (digest('c'), 1)),
                ("/usr/not/watched".to_owned(), (digest('d'), 1)),
            ]
            .into_iter()
            .collect(),
        };
        let (current, reference) = build(
            &policy,
            Some(&release),
            Some((&store, FromStore::Unverified)),
            "t".into(),
        )
        .expect("a reference");
        let got: Vec<(String, Sha256Digest)> = current
            .manifest
            .entries
            .iter()
            .map(|e| (e.path.to_owned(), e.hash))
            .collect();
        assert_eq!(got, vec![(bin_s, digest('c')), (model, digest('b'))]);
        assert_eq!(reference.release.as_deref(), Some("c0ffee"));
        assert_eq!(reference.store, FromStore::Unverified);
        assert!(reference.well_formed());
        assert_eq!(reference.digest, current.digest);
        // Nothing to compare with: no reference at all.
        assert!(build(&policy, None, None, "t".into()).is_none());
        let only_unwatched = Release {
            commit: "x".into(),
            files: [("/usr/not/watched".to_owned(), (digest('d'), 1))]
                .into_iter()
                .collect(),
        };
        assert!(build(&policy, Some(&only_unwatched), None, "t".into()).is_none());
    }
}
