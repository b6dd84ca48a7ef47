//! What examining one path found, and the metadata that names one version of a file: the
//! vocabulary shared by the reader, the chunk digests, the cache and the registry.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

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
    /// A regular file larger than `max_file_size`: not read.
    TooLarge(u64),
}

/// What identifies one version of a file: `(dev, ino, size, mtime, ctime)`. ctime is set by
/// the kernel on every change and cannot be set from user space, so a content change with a
/// restored mtime still changes the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version([i64; 7]);

impl Version {
    /// The file size this version has.
    pub fn size(&self) -> u64 {
        u64::try_from(self.0[2]).unwrap_or(0)
    }

    /// The version `m` describes.
    pub(crate) fn of(m: &Metadata) -> Version {
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
