//! What examining one path found, and the metadata that names one version of a file: the
//! vocabulary shared by the reader, the chunk digests, the cache and the registry.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;

/// What examining one path found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A regular file and its content digest and size.
    Hashed {
        /// Its SHA-256, as read.
        hash: protocol::hexfmt::Sha256Digest,
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
    /// The HMAC key or the service token (same inode, or same bytes): its digest is never
    /// given out.
    Secret,
    /// A sealed file whose fs-verity digest (shown) is not the one bound to the content the
    /// baseline names: other content, found without a read.
    SealChanged(String),
    /// On a filesystem whose server decides what a read returns (its name): never read.
    Untrusted(&'static str),
}

impl Outcome {
    /// The finding a check reports for this outcome in place of a digest (`None`: it has
    /// one). Every outcome names its finding here, so a new one is an arm the compiler asks for.
    pub(crate) fn finding(&self) -> Option<protocol::Finding> {
        use protocol::Finding;
        match self {
            Outcome::Hashed { .. } => None,
            Outcome::Missing => Some(Finding::Missing),
            Outcome::Symlink => Some(Finding::Symlink),
            Outcome::NotRegular => Some(Finding::NotRegular),
            Outcome::Unreadable(_) => Some(Finding::Unreadable),
            Outcome::SizeChanged(_) => Some(Finding::SizeChanged),
            Outcome::TooLarge(_) => Some(Finding::TooLarge),
            Outcome::Secret => Some(Finding::SecretFile),
            Outcome::SealChanged(_) => Some(Finding::SealChanged),
            Outcome::Untrusted(_) => Some(Finding::UntrustedFilesystem),
        }
    }
}

/// What identifies one version of a file: `(dev, ino, size, mtime, ctime)`. ctime is set by
/// the kernel on every change and cannot be set from user space, so a content change with a
/// restored mtime still changes the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Version([i64; 7]);

impl Version {
    /// The device this version's file is on.
    pub(crate) fn dev(&self) -> u64 {
        // Held as i64 bit for bit (see `of`): the same bits back.
        self.0[0].cast_unsigned()
    }

    /// The file size this version has.
    pub(crate) fn size(&self) -> u64 {
        u64::try_from(self.0[2]).unwrap_or(0)
    }

    /// The version `m` describes.
    pub(crate) fn of(m: &Metadata) -> Version {
        Version([
            // Identities, compared and fingerprinted, never counted: kept bit for bit.
            m.dev().cast_signed(),
            m.ino().cast_signed(),
            m.size().cast_signed(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec(),
        ])
    }

    /// The version as 48 bytes (nanoseconds fit 32 bits): with its padding, one SHA-256 block.
    pub(crate) fn to_bytes(self) -> [u8; 48] {
        let mut out = [0u8; 48];
        let [dev, ino, size, mtime, mtime_ns, ctime, ctime_ns] = self.0;
        let wide = [dev, ino, size, mtime, ctime];
        for (chunk, v) in out.chunks_exact_mut(8).zip(wide) {
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        // Nanoseconds are below 10^9: the low 32 bits are all of them.
        out[40..44].copy_from_slice(&mtime_ns.to_le_bytes()[..4]);
        out[44..48].copy_from_slice(&ctime_ns.to_le_bytes()[..4]);
        out
    }
}
