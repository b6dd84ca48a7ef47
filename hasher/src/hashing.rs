//! Streaming SHA-256 of one file through a fixed buffer, never following symlinks.

use std::fs::{File, Metadata, OpenOptions};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

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
}

/// Hashes files one at a time through one buffer allocated up front.
pub struct FileHasher {
    buf: Box<[u8]>,
    /// Bytes read since creation.
    pub bytes_hashed: u64,
}

impl Default for FileHasher {
    fn default() -> Self {
        FileHasher {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            bytes_hashed: 0,
        }
    }
}

enum Attempt {
    Done(Outcome),
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
    /// Examines `path`; a file that changes while it is read is read again.
    pub fn hash(&mut self, path: &Path) -> Outcome {
        for _ in 0..ATTEMPTS {
            if let Attempt::Done(outcome) = self.attempt(path) {
                return outcome;
            }
        }
        Outcome::Unreadable("changed on every read attempt".to_owned())
    }

    fn attempt(&mut self, path: &Path) -> Attempt {
        let before = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) => return Attempt::Done(from_io(&e)),
        };
        if before.file_type().is_symlink() {
            return Attempt::Done(Outcome::Symlink);
        }
        if !before.file_type().is_file() {
            return Attempt::Done(Outcome::NotRegular);
        }
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(path)
        {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
                return Attempt::Done(Outcome::Symlink)
            }
            Err(e) => return Attempt::Done(from_io(&e)),
        };
        let opened = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Attempt::Done(from_io(&e)),
        };
        if !same_version(&before, &opened) {
            return Attempt::Changed;
        }
        crate::sys::advise_sequential(&file);
        let digest = match self.stream(&mut file) {
            Ok(d) => d,
            Err(e) => return Attempt::Done(from_io(&e)),
        };
        crate::sys::advise_done(&file);
        match file.metadata() {
            Ok(after) if same_version(&opened, &after) && digest.1 == after.size() => {
                Attempt::Done(Outcome::Hashed {
                    hash: digest.0,
                    size: digest.1,
                })
            }
            Ok(_) => Attempt::Changed,
            Err(e) => Attempt::Done(from_io(&e)),
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
