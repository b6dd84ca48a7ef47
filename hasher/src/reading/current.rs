//! Whether a file being read is still the version that was opened: looked at between
//! buffers of a long read, so a write in the middle of reading a 70 GB model ends the read
//! at once instead of being found at its end.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use crate::reading::lifeline::Lifeline;
use crate::reading::version::Version;

/// What a file found changed in the middle of a long read is reported as. A scan reports it
/// unverified and the write's event has the next check read it; a new baseline leaves such a
/// model out (so it is reported until baselined again) and refuses such a listed file: a
/// digest of a file being written is not its content.
pub(crate) const CHANGED_WHILE_READ: &str = "changed while it was read (it is being written)";

/// A long read stopped because its file changed: the rest would be a digest of nothing.
#[derive(Debug)]
struct ChangedWhileRead;

impl std::fmt::Display for ChangedWhileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(CHANGED_WHILE_READ)
    }
}

impl std::error::Error for ChangedWhileRead {}

/// Whether `e` is a read stopped by [`Looks::check`] because the file changed.
pub(super) fn changed_while_read(e: &std::io::Error) -> bool {
    e.get_ref().is_some_and(|r| r.is::<ChangedWhileRead>())
}

/// What [`CHANGED_WHILE_READ`] reports: the file unverified, no version to remember.
pub(crate) fn changed_outcome() -> crate::reading::version::Outcome {
    crate::reading::version::Outcome::Unreadable(CHANGED_WHILE_READ.to_owned())
}

/// A long read's look at its file, between buffers, every [`crate::reading::lifeline::CHECK_EVERY`]:
/// the api is still there (else the read stops: [`crate::reading::lifeline::ApiGone`]) and the file is neither deleted nor moved
/// from the version `opened` it had when the read began. A write in the middle of reading a
/// 70 GB model ends the read at once: finishing it would only find the change at the end, and
/// the write's own event asks for a check of the new content anyway.
pub(super) struct Looks<'a> {
    last: Instant,
    opened: Version,
    lifeline: &'a Lifeline,
}

impl Looks<'_> {
    /// Looks for a read, starting now, of a file at version `opened`, on `lifeline`.
    pub(crate) fn new(opened: Version, lifeline: &Lifeline) -> Looks<'_> {
        Looks {
            last: Instant::now(),
            opened,
            lifeline,
        }
    }

    /// `Err` when the read should stop: the api gone, the file deleted or replaced, or changed.
    pub(crate) fn check(&mut self, file: &File) -> std::io::Result<()> {
        if !self
            .lifeline
            .check(&mut self.last)
            .map_err(std::io::Error::other)?
        {
            return Ok(());
        }
        let Ok(now) = file.metadata() else {
            return Ok(());
        };
        if now.nlink() == 0 {
            // Deleted, or replaced by a rename, while read: no digest of it can matter.
            return Err(std::io::Error::other("deleted or replaced while read"));
        }
        if Version::of(&now) != self.opened {
            return Err(std::io::Error::other(ChangedWhileRead));
        }
        Ok(())
    }
}

/// Test helper: writes `byte` at offset 0 of `path` once `after` has passed, from another
/// thread (the file's version moves whether or not its content does).
#[cfg(test)]
pub(crate) fn write_later(
    path: &std::path::Path,
    after: std::time::Duration,
    byte: u8,
) -> std::thread::JoinHandle<()> {
    use std::os::unix::fs::FileExt;
    let path = path.to_owned();
    std::thread::spawn(move || {
        std::thread::sleep(after);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open");
        f.write_all_at(&[byte], 0).expect("write");
    })
}
