//! The secrets this process keeps (the HMAC key, the service token), as the reader must know
//! them: a watched file that is one (the same inode: a hard link, a bind mount; the same bytes:
//! a copy) is never read, or its digest never given out. Filled while the key and the token
//! are loaded at start, then handed, read-only, to every read.

use std::os::unix::fs::MetadataExt;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What identifies the secrets this process read: their inodes (a hard link or a bind mount of
/// one shares it) and the SHA-256 of their bytes (a copy shares it; for a key longer than 64
/// bytes that digest is itself an equivalent HMAC key, so it must never be published).
#[derive(Default)]
pub struct Secrets {
    inodes: Vec<(u64, u64)>,
    digests: Vec<zeroize::Zeroizing<[u8; 32]>>,
    /// The secrets' files, held open so their inodes cannot be freed and given to a watched
    /// file while they are compared with it.
    open: Vec<std::fs::File>,
}

impl Secrets {
    /// Remembers a secret in use, just read from `file` (kept open: its inode) with these
    /// `bytes` (their digest). Only secrets the process keeps: an empty file is no secret.
    pub(crate) fn remember(&mut self, file: std::fs::File, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        if let Ok(m) = file.metadata() {
            self.inodes.push((m.dev(), m.ino()));
            self.open.push(file);
        }
        self.digests
            .push(zeroize::Zeroizing::new(Sha256::digest(bytes).into()));
    }

    /// Whether `m` describes the inode of a secret this process read.
    pub(crate) fn is_inode(&self, m: &std::fs::Metadata) -> bool {
        self.inodes.contains(&(m.dev(), m.ino()))
    }

    /// Whether `digest` is the SHA-256 of a secret this process read.
    pub(super) fn is_digest(&self, digest: &[u8; 32]) -> bool {
        let found = self
            .digests
            .iter()
            .fold(0u8, |acc, d| acc | d.as_slice().ct_eq(digest).unwrap_u8());
        found == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_is_known_by_its_inode_and_by_its_bytes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (path, other) = (dir.path().join("key"), dir.path().join("other"));
        std::fs::write(&path, b"secret bytes").expect("write");
        std::fs::write(&other, b"other bytes").expect("write");
        let mut s = Secrets::default();
        s.remember(std::fs::File::open(&path).expect("open"), b"secret bytes");
        let meta = |p: &std::path::Path| std::fs::metadata(p).expect("stat");
        assert!(s.is_inode(&meta(&path)));
        assert!(!s.is_inode(&meta(&other)));
        assert!(s.is_digest(&Sha256::digest(b"secret bytes").into()));
        assert!(!s.is_digest(&Sha256::digest(b"other bytes").into()));
        let mut empty = Secrets::default();
        empty.remember(std::fs::File::open(&other).expect("open"), b"");
        assert!(!empty.is_inode(&meta(&other)), "an empty file is no secret");
    }
}
