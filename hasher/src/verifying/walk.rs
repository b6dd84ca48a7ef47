//! Walking a model dir: every entry beneath it, bounded, with no symlink followed in any
//! component (each directory is opened with `RESOLVE_NO_SYMLINKS`), names kept as bytes and
//! shown with an injective escape, and every bound turned into a finding, never a silent stop.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::dir::{Dir, Type};
use nix::errno::Errno;
use nix::fcntl::OFlag;
use protocol::report::{self, MAX_PATH_LEN};

/// Deepest directory nesting followed under a model dir.
pub(in crate::verifying) const MAX_DEPTH: usize = 32;

/// A path found while walking, with what it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Found {
    /// A regular file.
    File,
    /// Something that must not be in a model dir, or a bound hit: the `actual_hash` marker.
    Anomaly(protocol::Finding),
}

/// One walk result: the path as the hasher uses it, and how it is shown (differs only for
/// names that are not UTF-8 or too long, which are always anomalies).
pub(crate) type Entry = (PathBuf, Found);

fn open_dir(path: &Path) -> nix::Result<Dir> {
    Dir::from_fd(crate::reading::open_resolved(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
    )?)
}

fn anomaly_of(path: &Path, errno: Errno) -> protocol::Finding {
    match errno {
        // A component was swapped for a symlink (or is one): never followed.
        Errno::ELOOP => protocol::Finding::Symlink,
        // O_DIRECTORY|O_NOFOLLOW on a symlink says ENOTDIR.
        Errno::ENOTDIR
            if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            protocol::Finding::Symlink
        }
        Errno::ENOTDIR => protocol::Finding::NotRegular,
        Errno::ENAMETOOLONG => protocol::Finding::PathTooLong,
        _ => protocol::Finding::Unreadable,
    }
}

/// The display path of a name that cannot be used as it is, or `None` when it can.
pub(crate) fn unusable(path: &Path) -> Option<(PathBuf, protocol::Finding)> {
    let bytes = path.as_os_str().as_bytes();
    if std::str::from_utf8(bytes).is_err() {
        return Some((
            report::display_path(bytes).into(),
            protocol::Finding::InvalidName,
        ));
    }
    if bytes.len() > MAX_PATH_LEN {
        return Some((
            report::display_path(bytes).into(),
            protocol::Finding::PathTooLong,
        ));
    }
    None
}

/// Every path under `dir`, sorted by its bytes (cheap to compare, unlike `Path`'s
/// component-wise order). A dir that does not exist gives nothing; one that is a symlink or
/// unreadable gives one anomaly for itself.
pub(crate) fn walk(dir: &Path, limit: usize) -> Vec<Entry> {
    walk_from(dir, 0, limit)
}

/// As [`walk`], for a dir already `depth` levels below its model dir (the depth bound counts
/// from the model dir).
pub(in crate::verifying) fn walk_from(dir: &Path, depth: usize, limit: usize) -> Vec<Entry> {
    let mut out: Vec<Entry> = Walk::new(dir, depth, limit).flatten().collect();
    sort(&mut out);
    out
}

/// A walk handed over as it goes: each item is what one directory holds (sorted,
/// subdirectories walked later), so a model dir of a million files is never held whole and
/// the caller pulls each part when it is ready for it. Every entry of the walk is in exactly
/// one part; past `limit` entries the walk ends with a `limit_exceeded` finding for its dir.
pub(crate) struct Walk {
    /// The model dir (or the dir below it) the walk began at.
    root: PathBuf,
    /// Directories not opened yet, with their depth below the model dir.
    stack: Vec<(PathBuf, usize)>,
    /// Entries seen so far, against `limit`.
    seen: usize,
    limit: usize,
}

impl Walk {
    /// A walk of `dir`, already `depth` levels below its model dir, bounded at `limit` entries.
    pub(crate) fn new(dir: &Path, depth: usize, limit: usize) -> Walk {
        Walk {
            root: dir.to_owned(),
            stack: vec![(dir.to_owned(), depth)],
            seen: 0,
            limit,
        }
    }

    /// What the directory `d` holds, its subdirectories pushed for later; `None` when the
    /// bound was hit (the part then ends with the finding and the walk is over).
    fn read_dir(&mut self, d: &Path, depth: usize, batch: &mut Vec<Entry>) -> Option<()> {
        let mut handle = match open_dir(d) {
            Ok(h) => h,
            Err(Errno::ENOENT) if d == self.root => return Some(()),
            Err(e) => {
                batch.push((d.to_owned(), Found::Anomaly(anomaly_of(d, e))));
                return Some(());
            }
        };
        for entry in handle.iter() {
            self.seen += 1;
            if self.seen > self.limit {
                // Not seen whole: a finding of its own, so the state cannot stay trusted.
                tracing::error!(dir = %self.root.display(), limit = self.limit, "model dir holds more entries than max_watched_files: reported as limit_exceeded");
                batch.push((
                    self.root.clone(),
                    Found::Anomaly(protocol::Finding::LimitExceeded),
                ));
                return None;
            }
            let Ok(entry) = entry else {
                batch.push((d.to_owned(), Found::Anomaly(protocol::Finding::Unreadable)));
                break;
            };
            let name = entry.file_name().to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            let path = d.join(OsStr::from_bytes(name));
            if let Some((shown, marker)) = unusable(&path) {
                batch.push((shown, Found::Anomaly(marker)));
                continue;
            }
            let kind = match entry.file_type() {
                Some(t) => Some(t),
                // No d_type from this filesystem: ask lstat. Only the kind is taken from it;
                // whatever is opened later is opened with no symlink in any component.
                None => std::fs::symlink_metadata(&path)
                    .ok()
                    .map(|m| type_of(m.file_type())),
            };
            match kind {
                Some(Type::Directory) if depth < MAX_DEPTH => self.stack.push((path, depth + 1)),
                Some(Type::Directory) => {
                    batch.push((path, Found::Anomaly(protocol::Finding::TooDeep)))
                }
                Some(Type::File) => batch.push((path, Found::File)),
                Some(Type::Symlink) => {
                    batch.push((path, Found::Anomaly(protocol::Finding::Symlink)))
                }
                Some(_) => batch.push((path, Found::Anomaly(protocol::Finding::NotRegular))),
                None => batch.push((path, Found::Anomaly(protocol::Finding::Unreadable))),
            }
        }
        Some(())
    }
}

impl Iterator for Walk {
    type Item = Vec<Entry>;

    fn next(&mut self) -> Option<Vec<Entry>> {
        while let Some((d, depth)) = self.stack.pop() {
            let mut batch = Vec::new();
            if self.read_dir(&d, depth, &mut batch).is_none() {
                self.stack.clear();
            }
            if !batch.is_empty() {
                sort(&mut batch);
                return Some(batch);
            }
        }
        None
    }
}

fn sort(out: &mut [Entry]) {
    out.sort_unstable_by(|a, b| a.0.as_os_str().as_bytes().cmp(b.0.as_os_str().as_bytes()));
}

pub(crate) fn type_of(t: std::fs::FileType) -> Type {
    if t.is_dir() {
        Type::Directory
    } else if t.is_file() {
        Type::File
    } else if t.is_symlink() {
        Type::Symlink
    } else {
        Type::Fifo
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(out: &[Entry]) -> Vec<(String, Found)> {
        out.iter()
            .map(|(p, f)| (p.to_string_lossy().into_owned(), *f))
            .collect()
    }

    #[test]
    fn names_are_never_merged_and_bounds_are_findings() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("models");
        std::fs::create_dir_all(&m).expect("mkdir");
        std::fs::write(m.join("ok\u{FFFD}"), "a").expect("write");
        std::fs::write(m.join(OsStr::from_bytes(b"ok\xff")), "b").expect("write");
        std::fs::write(m.join(OsStr::from_bytes(b"ok\xfe")), "c").expect("write");
        let mut deep = m.clone();
        for _ in 0..=MAX_DEPTH {
            deep = deep.join("d");
        }
        std::fs::create_dir_all(&deep).expect("mkdir");
        let out = walk(&m, 1000);
        let found = kinds(&out);
        let invalid: Vec<_> = found
            .iter()
            .filter(|(_, f)| *f == Found::Anomaly(protocol::Finding::InvalidName))
            .collect();
        assert_eq!(invalid.len(), 2, "{found:?}");
        assert!(found.contains(&(format!("{}/ok\u{FFFD}", m.display()), Found::File)));
        assert!(
            found
                .iter()
                .any(|(_, f)| *f == Found::Anomaly(protocol::Finding::TooDeep)),
            "{found:?}"
        );
    }

    #[test]
    fn a_walk_hands_over_every_entry_once_a_directory_at_a_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("models");
        for sub in ["a", "a/b", "c"] {
            std::fs::create_dir_all(m.join(sub)).expect("mkdir");
            for f in ["z", "y"] {
                std::fs::write(m.join(sub).join(f), "x").expect("write");
            }
        }
        std::fs::write(m.join("top"), "x").expect("write");
        std::os::unix::fs::symlink("/etc", m.join("c/link")).expect("symlink");
        let batches: Vec<Vec<Entry>> = Walk::new(&m, 0, 1000).collect();
        assert_eq!(batches.len(), 4, "one per directory: {batches:?}");
        for b in &batches {
            let parents: std::collections::HashSet<_> = b
                .iter()
                .map(|(p, _)| p.parent().map(Path::to_owned))
                .collect();
            assert_eq!(parents.len(), 1, "one directory's entries: {b:?}");
            assert!(b.windows(2).all(|w| w[0].0 < w[1].0), "sorted: {b:?}");
        }
        let mut all: Vec<Entry> = batches.into_iter().flatten().collect();
        sort(&mut all);
        assert_eq!(
            all,
            walk(&m, 1000),
            "the same entries as a whole walk, none twice"
        );
        assert_eq!(all.len(), 8);
    }

    #[test]
    fn past_its_bound_a_walk_ends_with_one_finding_for_its_dir() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("models");
        for sub in ["a", "b", "c"] {
            std::fs::create_dir_all(m.join(sub)).expect("mkdir");
            for f in 0..4 {
                std::fs::write(m.join(sub).join(format!("f{f}")), "x").expect("write");
            }
        }
        // 3 dirs and 12 files: 15 entries, 6 allowed.
        let parts: Vec<Vec<Entry>> = Walk::new(&m, 0, 6).collect();
        let all: Vec<&Entry> = parts.iter().flatten().collect();
        let limit = Found::Anomaly(protocol::Finding::LimitExceeded);
        assert_eq!(
            all.iter().filter(|(_, f)| *f == limit).count(),
            1,
            "{parts:?}"
        );
        let last = parts
            .last()
            .and_then(|p| p.iter().find(|(_, f)| *f == limit));
        assert_eq!(
            last.map(|(p, _)| p),
            Some(&m),
            "the last part names the dir"
        );
        assert!(
            all.len() <= 7,
            "nothing past the bound but the finding: {parts:?}"
        );
    }

    #[test]
    fn a_directory_swapped_for_a_symlink_is_not_followed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let m = dir.path().join("models");
        let secret = dir.path().join("secret");
        std::fs::create_dir_all(&m).expect("mkdir");
        std::fs::create_dir_all(&secret).expect("mkdir");
        std::fs::write(secret.join("key"), "k").expect("write");
        std::os::unix::fs::symlink(&secret, m.join("sub")).expect("symlink");
        let found = kinds(&walk(&m, 1000));
        assert_eq!(
            found,
            vec![(
                format!("{}/sub", m.display()),
                Found::Anomaly(protocol::Finding::Symlink)
            )]
        );
        // The model dir itself replaced by a symlink: one finding, nothing read beyond it.
        let moved = dir.path().join("models.real");
        std::fs::rename(&m, &moved).expect("rename");
        std::os::unix::fs::symlink(&secret, &m).expect("symlink");
        let found = kinds(&walk(&m, 1000));
        assert_eq!(
            found,
            vec![(
                m.display().to_string(),
                Found::Anomaly(protocol::Finding::Symlink)
            )]
        );
    }
}
