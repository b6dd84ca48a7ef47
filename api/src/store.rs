//! The api's state dir: the signed baseline, written atomically, read back at start.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use protocol::MAX_MESSAGE;

/// Default state dir.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/secure-ai/integrity";
const FILE: &str = "baseline.json";

/// Where the baseline lives.
#[derive(Debug, Clone)]
pub struct BaselineStore {
    dir: PathBuf,
}

impl BaselineStore {
    /// A store in `dir`.
    pub fn new(dir: &Path) -> BaselineStore {
        BaselineStore {
            dir: dir.to_owned(),
        }
    }

    /// The baseline file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE)
    }

    /// The stored bytes, `None` when there is no baseline yet (first boot).
    pub fn read(&self) -> std::io::Result<Option<Vec<u8>>> {
        let file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(self.path())
        {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut bytes = Vec::new();
        file.take(MAX_MESSAGE as u64 + 1).read_to_end(&mut bytes)?;
        if bytes.len() > MAX_MESSAGE {
            return Err(std::io::Error::other(format!(
                "{} is larger than {MAX_MESSAGE} bytes",
                self.path().display()
            )));
        }
        Ok(Some(bytes))
    }

    /// Replaces the baseline atomically: temp file, fsync, rename, fsync of the dir. On error
    /// the old file is untouched.
    pub fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let tmp = self.dir.join(format!(".{FILE}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o640)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            std::fs::rename(&tmp, self.path())?;
            // O_DIRECTORY: the sandbox refuses read-only opens of anything but a directory.
            OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY)
                .open(&self.dir)?
                .sync_all()
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn write_read_replace() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = BaselineStore::new(dir.path());
        assert_eq!(s.read().expect("read"), None);
        s.write(b"one").expect("write");
        s.write(b"two").expect("write");
        assert_eq!(s.read().expect("read").as_deref(), Some(&b"two"[..]));
        assert_eq!(
            std::fs::read_dir(dir.path()).expect("ls").count(),
            1,
            "no temp file left"
        );
    }
}
