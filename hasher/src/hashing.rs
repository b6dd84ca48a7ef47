//! Streaming SHA-256 of one file through a fixed buffer, never following symlinks.

use std::collections::HashMap;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// Read buffer size: large enough for full SHA-NI speed, small enough to keep RSS flat.
pub const BUF_SIZE: usize = 256 * 1024;
/// Attempts before a file that changes under every read is reported unreadable.
const ATTEMPTS: usize = 3;

/// What examining one path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A regular file and its content digest (hex) and size.
    Hashed {
        /// Lower-case hex SHA-256.
        hash: String,
        /// Bytes hashed.
        size: u64,
    },
    /// Nothing at the path.
    Missing,
    /// A symlink; never followed.
    Symlink,
    /// A directory, fifo, socket or device.
    NotRegular,
    /// Exists but could not be read, or kept changing while read.
    Unreadable(String),
    /// A regular file whose size differs from the one expected: not read.
    SizeChanged(u64),
}

/// What identifies one version of a file: `(dev, ino, size, mtime, ctime)`. ctime is set by
/// the kernel on every change and cannot be set from user space, so a content change with a
/// restored mtime still changes the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Version([i64; 7]);

impl Version {
    fn of(m: &Metadata) -> Version {
        Version([
            m.dev() as i64,
            m.ino() as i64,
            m.size() as i64,
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ])
    }
}

struct Cached {
    version: Version,
    hash: String,
    size: u64,
    /// When this version must be read again regardless (the full re-verification backstop).
    due: Instant,
}

/// Hashes files one at a time through one buffer allocated up front, remembering the version
/// each digest belongs to so an unchanged file costs one `statx`.
pub struct FileHasher {
    buf: Box<[u8]>,
    /// Bytes read since creation.
    pub bytes_hashed: u64,
    /// Files answered from the metadata fast path since creation.
    pub fast_hits: u64,
    cache: HashMap<PathBuf, Cached>,
    /// Every file is read again at least this often.
    pub full_rehash: Duration,
    /// Read budget in bytes per second (`None`: unlimited).
    pub rate_limit: Option<u64>,
    budget: Option<(Instant, u64)>,
}

impl Default for FileHasher {
    fn default() -> Self {
        FileHasher {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            bytes_hashed: 0,
            fast_hits: 0,
            cache: HashMap::new(),
            full_rehash: Duration::from_secs(24 * 3600),
            rate_limit: None,
            budget: None,
        }
    }
}

enum Attempt {
    Done(Outcome, Option<Version>),
    Changed,
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    (
        a.dev(),
        a.ino(),
        a.size(),
        a.mtime(),
        a.mtime_nsec(),
        a.ctime(),
        a.ctime_nsec(),
    ) == (
        b.dev(),
        b.ino(),
        b.size(),
        b.mtime(),
        b.mtime_nsec(),
        b.ctime(),
        b.ctime_nsec(),
    )
}

impl FileHasher {
    /// A hasher with the policy's backstop period and read budget.
    pub fn for_policy(policy: &crate::policy::Policy) -> FileHasher {
        FileHasher {
            full_rehash: policy.full_rehash_interval,
            rate_limit: policy.hash_rate_limit,
            ..FileHasher::default()
        }
    }

    /// Examines `path`, answering from the cache when its version is unchanged and its
    /// re-verification is not due; otherwise reads it in full.
    pub fn check(&mut self, path: &Path) -> Outcome {
        self.check_expecting(path, None)
    }

    /// As [`FileHasher::check`]; a regular file whose size is not `expected_size` is reported
    /// at once, unread (one `statx` for both checks).
    pub fn check_expecting(&mut self, path: &Path, expected_size: Option<u64>) -> Outcome {
        let now = Instant::now();
        let meta = std::fs::symlink_metadata(path);
        if let (Ok(m), Some(expected)) = (&meta, expected_size) {
            if m.file_type().is_file() && m.size() != expected {
                return Outcome::SizeChanged(m.size());
            }
        }
        if let (Ok(m), Some(c)) = (meta, self.cache.get(path)) {
            if m.file_type().is_file() && Version::of(&m) == c.version && now < c.due {
                self.fast_hits += 1;
                return Outcome::Hashed {
                    hash: c.hash.clone(),
                    size: c.size,
                };
            }
        }
        self.hash(path)
    }

    /// The current size of `path` when it is a regular file (one `statx`, no read).
    pub fn size_now(path: &Path) -> Option<u64> {
        std::fs::symlink_metadata(path)
            .ok()
            .filter(|m| m.file_type().is_file())
            .map(|m| m.size())
    }

    /// Forgets every remembered digest: the next check of each file reads it in full.
    pub fn forget_all(&mut self) {
        self.cache.clear();
    }

    /// Reads `path` in full; a file that changes while it is read is read again.
    pub fn hash(&mut self, path: &Path) -> Outcome {
        for _ in 0..ATTEMPTS {
            if let Attempt::Done(outcome, version) = self.attempt(path) {
                match (&outcome, version) {
                    (Outcome::Hashed { hash, size }, Some(version)) => {
                        let due = Instant::now() + self.spread(hash);
                        let cached = Cached {
                            version,
                            hash: hash.clone(),
                            size: *size,
                            due,
                        };
                        self.cache.insert(path.to_owned(), cached);
                    }
                    _ => {
                        self.cache.remove(path);
                    }
                }
                return outcome;
            }
        }
        self.cache.remove(path);
        Outcome::Unreadable("changed on every read attempt".to_owned())
    }

    /// The backstop period for one file, spread over [interval/2, interval] by its digest so
    /// files hashed together at start do not all fall due at once.
    fn spread(&self, hash: &str) -> Duration {
        let b = u32::from_str_radix(hash.get(..2).unwrap_or("00"), 16).unwrap_or(0);
        self.full_rehash / 2 + self.full_rehash / 2 * b / 255
    }

    fn throttle(&mut self, n: u64) {
        let Some(limit) = self.rate_limit.filter(|l| *l > 0) else {
            return;
        };
        let (start, spent) = self.budget.get_or_insert((Instant::now(), 0));
        *spent += n;
        let allowed = Duration::from_secs_f64(*spent as f64 / limit as f64);
        let elapsed = start.elapsed();
        if allowed > elapsed {
            std::thread::sleep(allowed - elapsed);
        }
        if elapsed > Duration::from_secs(1) {
            self.budget = None;
        }
    }

    fn attempt(&mut self, path: &Path) -> Attempt {
        let before = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return Attempt::Done(from_io(&e), None),
        };
        if before.file_type().is_symlink() {
            return Attempt::Done(Outcome::Symlink, None);
        }
        if !before.file_type().is_file() {
            return Attempt::Done(Outcome::NotRegular, None);
        }
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Attempt::Done(Outcome::Symlink, None)
            }
            Err(e) => return Attempt::Done(from_io(&e), None),
        };
        let opened = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Attempt::Done(from_io(&e), None),
        };
        if !same_version(&before, &opened) {
            return Attempt::Changed;
        }
        crate::sys::advise_sequential(&file);
        let digest = match self.stream(&mut file) {
            Ok(d) => d,
            Err(e) => return Attempt::Done(from_io(&e), None),
        };
        crate::sys::advise_done(&file);
        match file.metadata() {
            Ok(after) if same_version(&opened, &after) && digest.1 == after.size() => {
                Attempt::Done(
                    Outcome::Hashed {
                        hash: digest.0,
                        size: digest.1,
                    },
                    Some(Version::of(&after)),
                )
            }
            Ok(_) => Attempt::Changed,
            Err(e) => Attempt::Done(from_io(&e), None),
        }
    }

    fn stream(&mut self, file: &mut File) -> std::io::Result<(String, u64)> {
        let mut sha = Sha256::new();
        let mut size = 0u64;
        loop {
            let n = match file.read(&mut self.buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            sha.update(&self.buf[..n]);
            size += n as u64;
            self.throttle(n as u64);
        }
        self.bytes_hashed += size;
        Ok((protocol::hexfmt::encode(&sha.finalize()), size))
    }
}

fn from_io(e: &std::io::Error) -> Outcome {
    match e.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => Outcome::Missing,
        Some(libc::ELOOP) => Outcome::Symlink,
        Some(libc::ENXIO) => Outcome::NotRegular,
        _ => Outcome::Unreadable(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_known_content_and_classifies() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let mut h = FileHasher::default();
        assert_eq!(
            h.hash(&f),
            Outcome::Hashed {
                hash: "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".into(),
                size: 3
            }
        );
        assert_eq!(h.hash(&dir.path().join("nope")), Outcome::Missing);
        assert_eq!(h.hash(&dir.path().join("f/under-a-file")), Outcome::Missing);
        assert_eq!(h.hash(dir.path()), Outcome::NotRegular);
        let l = dir.path().join("link");
        std::os::unix::fs::symlink(&f, &l).expect("symlink");
        assert_eq!(h.hash(&l), Outcome::Symlink);
    }

    fn digest_of(data: &[u8]) -> String {
        protocol::hexfmt::encode(&Sha256::digest(data))
    }

    #[test]
    fn unchanged_files_cost_a_stat_and_every_change_is_seen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("model.gguf");
        std::fs::write(&f, b"original weights").expect("write");
        let mut h = FileHasher::default();
        let first = h.check(&f);
        let read = h.bytes_hashed;
        assert_eq!(h.check(&f), first);
        assert_eq!(
            (h.bytes_hashed, h.fast_hits),
            (read, 1),
            "unchanged: answered from metadata, not read"
        );

        // Touched, same content: re-read (the version moved), same digest.
        let file = std::fs::File::options().write(true).open(&f).expect("open");
        file.set_modified(std::time::SystemTime::now() + Duration::from_secs(5))
            .expect("touch");
        assert_eq!(h.check(&f), first);
        assert!(h.bytes_hashed > read, "a touched file is read again");

        // Same size, content changed, mtime put back: ctime still moved, so it is caught.
        let mtime = std::fs::metadata(&f)
            .expect("stat")
            .modified()
            .expect("mtime");
        std::thread::sleep(Duration::from_millis(20));
        std::fs::write(&f, b"tampered weights").expect("write");
        std::fs::File::options()
            .write(true)
            .open(&f)
            .expect("open")
            .set_modified(mtime)
            .expect("restore mtime");
        assert_eq!(
            h.check(&f),
            Outcome::Hashed {
                hash: digest_of(b"tampered weights"),
                size: 16
            }
        );

        // Replaced by rename: a new inode, caught.
        std::fs::write(dir.path().join("new"), b"renamed  weights").expect("write");
        std::fs::rename(dir.path().join("new"), &f).expect("rename");
        assert_eq!(
            h.check(&f),
            Outcome::Hashed {
                hash: digest_of(b"renamed  weights"),
                size: 16
            }
        );
    }

    #[test]
    fn the_backstop_rereads_unchanged_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, b"abc").expect("write");
        let mut h = FileHasher {
            full_rehash: Duration::from_millis(200),
            ..FileHasher::default()
        };
        h.check(&f);
        h.check(&f);
        assert_eq!(h.bytes_hashed, 3);
        std::thread::sleep(Duration::from_millis(250));
        h.check(&f);
        assert_eq!(
            h.bytes_hashed, 6,
            "due for full re-verification: read again"
        );
    }

    #[test]
    fn rate_limit_holds_reads_to_the_budget() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        std::fs::write(&f, vec![7u8; 3 * 1024 * 1024]).expect("write");
        let mut h = FileHasher {
            rate_limit: Some(8 * 1024 * 1024),
            ..FileHasher::default()
        };
        let t = Instant::now();
        h.hash(&f);
        // 3 MiB at 8 MiB/s takes at least ~0.3 s; unthrottled it takes milliseconds.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn a_file_growing_while_read_is_never_reported_with_a_stale_digest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("f");
        let start = vec![1u8; 8 * 1024 * 1024];
        std::fs::write(&f, &start).expect("write");
        let original = digest_of(&start);
        let path = f.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write;
            let mut file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .expect("open");
            for _ in 0..200 {
                file.write_all(&[2u8; 4096]).expect("append");
                std::thread::sleep(Duration::from_micros(200));
            }
        });
        let mut h = FileHasher::default();
        let mut outcomes = Vec::new();
        while !writer.is_finished() {
            outcomes.push(h.hash(&f));
        }
        writer.join().expect("writer");
        for o in outcomes {
            if let Outcome::Hashed { hash, size } = o {
                assert!(
                    !(hash == original && size != start.len() as u64),
                    "a digest must describe the bytes it claims"
                );
                let now = std::fs::read(&f).expect("read");
                assert!(size <= now.len() as u64);
                assert_eq!(
                    hash,
                    digest_of(&now[..size as usize]),
                    "digest matches a real version of the file"
                );
            }
        }
    }

    #[test]
    fn large_file_streams_through_the_fixed_buffer() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("big");
        let data: Vec<u8> = (0..(3 * BUF_SIZE + 123)).map(|i| (i % 251) as u8).collect();
        std::fs::write(&f, &data).expect("write");
        let mut h = FileHasher::default();
        let expected = protocol::hexfmt::encode(&Sha256::digest(&data));
        assert_eq!(
            h.hash(&f),
            Outcome::Hashed {
                hash: expected,
                size: data.len() as u64
            }
        );
        assert_eq!(h.bytes_hashed, data.len() as u64);
    }
}
