//! Small bounded reads of configuration files: never more than a cap into memory.

use std::fs::File;
use std::io::Read;
use std::path::Path;

use thiserror::Error;
use zeroize::Zeroizing;

/// Why a bounded read failed.
#[derive(Debug, Error)]
pub enum ReadError {
    /// The file holds more than the cap.
    #[error("larger than the {cap}-byte limit")]
    TooLarge {
        /// The cap, in bytes.
        cap: u64,
    },
    /// The file could not be opened or read.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The content is not UTF-8.
    #[error("not UTF-8 text")]
    NotText,
}

/// Reads at most `cap` bytes of `path`; a larger file is an error, not a truncation.
pub(crate) fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    read_bounded_file(File::open(path)?, cap)
}

/// As [`read_bounded`], from a file already open (whose descriptor was asked about first).
pub(crate) fn read_bounded_file(file: File, cap: u64) -> Result<Vec<u8>, ReadError> {
    let mut bytes = Vec::new();
    file.take(cap + 1).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(ReadError::TooLarge { cap });
    }
    Ok(bytes)
}

/// As [`read_bounded`] for a secret: read into one buffer allocated up front, so no copy is
/// left behind by a reallocation, and wiped (its whole capacity) when dropped.
#[cfg(test)]
fn read_secret(path: &Path, cap: usize) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_secret_file(path, cap).map(|(bytes, _)| bytes)
}

/// As [`read_bounded`] for a secret (one buffer allocated up front, so no copy is left behind
/// by a reallocation, wiped when dropped), with the file still open: the caller that keeps the secret keeps the
/// file too (`secrets::Secrets::remember`), so its inode cannot be freed and reused while
/// watched files are compared with it.
pub(crate) fn read_secret_file(
    path: &Path,
    cap: usize,
) -> Result<(Zeroizing<Vec<u8>>, File), ReadError> {
    let mut file = File::open(path)?;
    let mut buf = Zeroizing::new(vec![0u8; cap + 1]);
    let mut len = 0;
    while len < buf.len() {
        match file.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    if len > cap {
        return Err(ReadError::TooLarge { cap: cap as u64 });
    }
    buf.truncate(len);
    Ok((buf, file))
}

/// As [`read_bounded`], and the content must be UTF-8.
pub(crate) fn read_bounded_text(path: &Path, cap: u64) -> Result<String, ReadError> {
    String::from_utf8(read_bounded(path, cap)?).map_err(|_| ReadError::NotText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_are_errors_not_truncations() {
        let dir = tempfile::tempdir().expect("dir");
        let p = dir.path().join("f");
        std::fs::write(&p, b"12345").expect("write");
        assert_eq!(read_bounded(&p, 5).expect("fits"), b"12345");
        assert!(matches!(
            read_bounded(&p, 4),
            Err(ReadError::TooLarge { cap: 4 })
        ));
        assert_eq!(read_secret(&p, 5).expect("fits").as_slice(), b"12345");
        assert!(matches!(
            read_secret(&p, 4),
            Err(ReadError::TooLarge { cap: 4 })
        ));
        assert!(matches!(
            read_secret(&dir.path().join("none"), 4),
            Err(ReadError::Io(_))
        ));
        std::fs::write(&p, b"\xff").expect("write");
        assert!(matches!(read_bounded_text(&p, 5), Err(ReadError::NotText)));
    }
}
