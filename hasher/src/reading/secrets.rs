//! The secrets this process keeps (the HMAC key, the service token), as the reader must know
//! them: a watched file that is one (the same inode: a hard link, a bind mount; the same bytes:
//! a copy) is never read, or its digest never given out.

use std::os::unix::fs::MetadataExt;
use std::sync::Mutex;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What identifies the secrets this process read: their inodes (a hard link or a bind mount of
/// one shares it) and the SHA-256 of their bytes (a copy shares it; for a key longer than 64
/// bytes that digest is itself an equivalent HMAC key, so it must never be published).
struct Secrets {
    inodes: Vec<(u64, u64)>,
    digests: Vec<zeroize::Zeroizing<[u8; 32]>>,
    /// The secrets' files, held open so their inodes cannot be freed and given to a watched
    /// file while they are compared with it.
    open: Vec<std::fs::File>,
}

static SECRETS: Mutex<Secrets> = Mutex::new(Secrets {
    inodes: Vec::new(),
    digests: Vec::new(),
    open: Vec::new(),
});

fn secrets() -> std::sync::MutexGuard<'static, Secrets> {
    SECRETS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Remembers a secret in use, just read from `file` (kept open: its inode) with these
/// `bytes` (their digest). Only secrets the process keeps: an empty file is no secret.
pub fn remember_secret(file: std::fs::File, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let mut s = secrets();
    if let Ok(m) = file.metadata() {
        s.inodes.push((m.dev(), m.ino()));
        s.open.push(file);
    }
    s.digests
        .push(zeroize::Zeroizing::new(Sha256::digest(bytes).into()));
}

/// Whether `m` describes the inode of a secret this process read.
pub fn is_secret_inode(m: &std::fs::Metadata) -> bool {
    secrets().inodes.contains(&(m.dev(), m.ino()))
}

/// Whether `digest` (lower-case hex) is the SHA-256 of a secret this process read.
pub fn is_secret_digest(digest: &str) -> bool {
    let Some(raw) = protocol::hexfmt::Sha256Digest::from_hex(digest) else {
        return false;
    };
    let found = secrets()
        .digests
        .iter()
        .fold(0u8, |acc, d| acc | d.as_slice().ct_eq(&raw.0).unwrap_u8());
    found == 1
}
