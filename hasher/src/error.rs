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
    /// Readable or writable by others than its owner (refused as ssh refuses such a key).
    #[error("HMAC key {}: mode {mode:04o} lets others than its owner read or write it; `chmod 600 {}`", path.display(), path.display())]
    Exposed {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
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
