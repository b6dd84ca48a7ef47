//! Errors at the hasher's boundaries, worded for the operator who must fix them.

use std::path::{Path, PathBuf};

use thiserror::Error;

/// The policy file could not be used.
#[derive(Debug, Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("policy {}: cannot read: {why}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// The OS or bound error.
        why: String,
    },
    /// The YAML does not parse or does not fit the schema (unknown key, wrong type).
    #[error("policy{}: {why}", at(path))]
    Syntax {
        /// The policy file, once known.
        path: Option<PathBuf>,
        /// The parser's message, with line and column.
        why: String,
    },
    /// A key's value is out of range or form.
    #[error("policy{}: key `{key}` (line {line}): {why}", at(path))]
    Invalid {
        /// The policy file, once known.
        path: Option<PathBuf>,
        /// The key at fault.
        key: &'static str,
        /// Line of the value at fault.
        line: u64,
        /// What is wrong.
        why: String,
    },
}

fn at(path: &Option<PathBuf>) -> String {
    path.as_ref()
        .map(|p| format!(" {}", p.display()))
        .unwrap_or_default()
}

impl PolicyError {
    /// Names the file the error came from.
    pub fn in_file(self, file: &Path) -> PolicyError {
        match self {
            PolicyError::Syntax { why, .. } => PolicyError::Syntax {
                path: Some(file.to_owned()),
                why,
            },
            PolicyError::Invalid { key, line, why, .. } => PolicyError::Invalid {
                path: Some(file.to_owned()),
                key,
                line,
                why,
            },
            other => other,
        }
    }
}

/// The HMAC key file exists but cannot be used.
#[derive(Debug, Error)]
pub enum KeyError {
    /// It exists but could not be read.
    #[error("HMAC key {}: exists but cannot be read: {why}", path.display())]
    Unreadable {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        why: String,
    },
    /// Open to others, or writable by its group (refused as ssh refuses such a key).
    #[error("HMAC key {}: mode {mode:04o} lets others use it or its group write it; `chmod 600 {}` (0640 is accepted)", path.display(), path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory above it is world-writable (not sticky): anyone could swap it by rename.
    #[error("HMAC key {}: the directory {} above it is world-writable, so anyone could replace the key by rename; `chmod o-w {}`", path.display(), dir.display(), dir.display())]
    OpenDir {
        /// The key file.
        path: PathBuf,
        /// The world-writable directory.
        dir: PathBuf,
    },
    /// Our unit's stand-in for a credential whose source was missing.
    #[error("HMAC key: {why}")]
    NotProvisioned {
        /// Which store file is missing.
        why: String,
    },
    /// Shorter than 32 bytes or longer than 4096.
    #[error("HMAC key {}: {len} bytes; a key must be 32 to 4096 bytes (e.g. `openssl rand 32 > {}`)", path.display(), path.display())]
    BadLength {
        /// The key file.
        path: PathBuf,
        /// Its length.
        len: usize,
    },
}

/// The baseline store could not be opened, read or written.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The TPM counter the store is anchored to could not be read or counted.
    #[error("TPM: {0}")]
    Tpm(String),
    /// A new generation would pass the bound both processes accept (only an api that lied
    /// about its memory can bring a store near it).
    #[error("no generation above {max} can be committed: remove the api's memory record if it claims one this high")]
    GenerationsExhausted {
        /// The bound.
        max: u64,
    },
    /// The state dir could not be created.
    #[error("state dir {}: cannot create: {why}", dir.display())]
    CreateDir {
        /// The state dir.
        dir: PathBuf,
        /// The OS error.
        why: std::io::Error,
    },
    /// Another hasher holds the store's lock.
    #[error("state dir {} is in use by another integrity-hasher: {why}", dir.display())]
    InUse {
        /// The state dir.
        dir: PathBuf,
        /// Who holds it.
        why: imsys::lockfile::LockError,
    },
    /// A store file exists but could not be read.
    #[error("{}: cannot read: {why}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        why: std::io::Error,
    },
    /// A store file is larger than anything this hasher writes.
    #[error("{}: larger than {cap} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The bound.
        cap: usize,
    },
    /// A store file could not be written (the old one stays).
    #[error("{}: cannot write: {why}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error (ENOSPC on a full disk).
        why: std::io::Error,
    },
}

/// The service token file exists but must not be used.
#[derive(Debug, Error)]
pub enum TokenError {
    /// Open to others, or writable by its group (refused as the key is).
    #[error("service token {}: mode {mode:04o} lets others use it or its group write it; `chmod 600 {}` (0640 is accepted)", path.display(), path.display())]
    Exposed {
        /// The token file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// A directory above it is world-writable (not sticky): anyone could swap it by rename.
    #[error("service token {}: the directory {} above it is world-writable, so anyone could replace the token by rename; `chmod o-w {}`", path.display(), dir.display(), dir.display())]
    OpenDir {
        /// The token file.
        path: PathBuf,
        /// The world-writable directory.
        dir: PathBuf,
    },
}

/// A new baseline disagrees with the release baseline, or the release baseline is unusable.
#[derive(Debug, Error)]
pub enum ReleaseError {
    /// The file could not be read.
    #[error("{}: {why}", path.display())]
    Read {
        /// The release baseline.
        path: PathBuf,
        /// Why.
        why: crate::reading::ReadError,
    },
    /// The file is not the release baseline's JSON.
    #[error("{}: {why}", path.display())]
    Parse {
        /// The release baseline.
        path: PathBuf,
        /// The parser's message, with line and column.
        why: serde_json::Error,
    },
    /// A format version this hasher does not know.
    #[error("{}: release baseline version {found} is not 1, the only one known", path.display())]
    Version {
        /// The release baseline.
        path: PathBuf,
        /// The version it declares.
        found: u64,
    },
    /// A `source_commit` too long or with control characters.
    #[error("{}: source_commit is longer than 128 bytes or holds control characters", path.display())]
    BadCommit {
        /// The release baseline.
        path: PathBuf,
    },
    /// An entry without a valid SHA-256.
    #[error("{}: entry {entry} has no valid sha256", path.display())]
    BadEntry {
        /// The release baseline.
        path: PathBuf,
        /// The entry's path.
        entry: String,
    },
    /// Files of the new baseline differ from the release's.
    #[error("{count} file(s) differ from the release baseline of {commit}: {shown}")]
    Differs {
        /// How many differ.
        count: usize,
        /// The release's source commit.
        commit: String,
        /// The first 20, each with both digests.
        shown: String,
    },
}

/// Why a baseline could not be made (the old one, if any, stays).
#[derive(Debug, Error)]
pub enum BaselineRefused {
    /// The api closed the channel while the files were read: a model whose read it cut short
    /// would be left out, and nobody is left to take the baseline.
    #[error("{0}")]
    ApiGone(#[from] crate::reading::ApiGone),
    /// A listed file is not a readable regular file: a baseline must never bless an absent or
    /// redirected file.
    #[error("{}: cannot be baselined: {why}", path.display())]
    Unreadable {
        /// The listed file.
        path: PathBuf,
        /// What is at the path instead.
        why: String,
    },
    /// A model dir is missing.
    #[error("{}: model dir does not exist or is not a directory", dir.display())]
    NoModelDir {
        /// The model dir.
        dir: PathBuf,
    },
    /// More files than a baseline may hold.
    #[error("{count} files watched; the limit is {limit}")]
    TooMany {
        /// Files found.
        count: usize,
        /// The bound.
        limit: usize,
    },
    /// The release baseline refuses it.
    #[error(transparent)]
    Release(#[from] ReleaseError),
}

pub use crate::sys::HandOverError;

/// The channel to the api failed; the hasher exits (the api or systemd starts a new one).
#[derive(Debug, Error)]
pub enum ChannelError {
    /// Sending or receiving failed.
    #[error("channel failed: {0}")]
    Io(nix::errno::Errno),
    /// Waiting on the channel and the watcher failed.
    #[error("poll failed: {0}")]
    Poll(nix::errno::Errno),
}
