//! Reading one file in full: streamed through a fixed buffer, dropped from the page cache
//! behind the read, and checked against change.
//!
//! Measured and left out: a read-ahead thread filling buffers while this one hashes (the
//! kernel's copy is 17% of a warm read) was slower, not faster, on a 2-core VM: the hashing
//! core then pulls every byte from the other core's cache. mmap windows were at best 8%
//! faster (0.60-0.81 s per GiB against 0.65, by window size and MAP_POPULATE), not worth a
//! concurrent truncation turning into SIGBUS in the process that holds the key.

use std::fs::{File, Metadata};
use std::io::{ErrorKind, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::reading::budget::BUF_SIZE;
use crate::reading::context::ReadContext;
use crate::reading::resolve::open_no_symlinks;
use crate::reading::version::{Outcome, Version};

/// Pages already hashed are dropped from the cache in steps of this many bytes.
pub(crate) const DROP_BEHIND: u64 = 8 * 1024 * 1024;

/// Whether reading a file of `size` bytes is a long read: the caller arms the sentinel for it
/// (a write meanwhile is announced at once, not when the read ends).
pub(crate) fn is_long(size: u64) -> bool {
    size >= DROP_BEHIND
}
/// Attempts before a file that changes under every read is reported unreadable.
const ATTEMPTS: usize = 3;

/// What one read of a path gave: the outcome, and the version it describes when hashed.
pub(crate) type ReadResult = (Outcome, Option<Version>);

enum Attempt {
    Done(ReadResult),
    Changed,
}

/// One reading thread's buffer, allocated once.
pub(crate) struct Reader {
    buf: Box<[u8]>,
    /// Bytes read by this reader since creation.
    pub(crate) bytes: u64,
    chunker: Option<crate::reading::chunks::ChunkHasher>,
    /// Take chunk digests of large files (only worth their CPU when threads can use them).
    pub(crate) take_chunks: bool,
    /// Chunk digests of the last file read in full, when it was large (see [`crate::reading::chunks`]).
    pub(crate) last_chunks: Vec<[u8; 32]>,
    /// Measure each file's fs-verity seal before and after its read (the policy's `fsverity`).
    pub(crate) seals: bool,
    /// What the last read in full learned of its file's seal.
    pub(crate) last_seal: crate::reading::verity::Sealing,
    /// Whether the next read proves its file's content first (see [`crate::reading::proof`]):
    /// the caller's to say, read by read.
    pub(crate) prove: bool,
    /// What the last read in full established beyond its digest.
    pub(crate) last_proof: crate::reading::proof::Proof,
}

impl Default for Reader {
    fn default() -> Self {
        Reader {
            buf: vec![0u8; BUF_SIZE].into_boxed_slice(),
            bytes: 0,
            chunker: None,
            take_chunks: false,
            last_chunks: Vec::new(),
            seals: false,
            last_seal: crate::reading::verity::Sealing::Unknown,
            prove: false,
            last_proof: crate::reading::proof::Proof::Unasked,
        }
    }
}

/// What a whole read of `file` says of its seal: sealed when the digest measured before the
/// read (`before`; `None`: not measured) is the one measured after it.
fn sealing(
    before: Option<Option<crate::reading::verity::Seal>>,
    file: &File,
) -> crate::reading::verity::Sealing {
    use crate::reading::verity::Sealing;
    match (
        before,
        before.map(|_| crate::reading::verity::measure(file)),
    ) {
        (Some(Some(a)), Some(Some(b))) if a == b => Sealing::Sealed(a),
        (Some(None), Some(None)) => Sealing::Unsealed,
        _ => Sealing::Unknown,
    }
}

fn same_version(a: &Metadata, b: &Metadata) -> bool {
    Version::of(a) == Version::of(b)
}

impl Reader {
    /// Reads `path` in full; a file that changes while it is read is read again.
    pub(crate) fn read(&mut self, path: &Path, reads: &ReadContext) -> ReadResult {
        self.read_stated(path, reads, None)
    }

    /// As [`Reader::read`], with the `lstat` the caller has just taken standing in for the
    /// first attempt's own (a path lookup is most of what reading a small file costs).
    pub(crate) fn read_stated(
        &mut self,
        path: &Path,
        reads: &ReadContext,
        mut stated: Option<Metadata>,
    ) -> ReadResult {
        self.last_chunks.clear();
        self.last_seal = crate::reading::verity::Sealing::Unknown;
        self.last_proof = crate::reading::proof::Proof::Unasked;
        if reads.lifeline.cut() {
            // Another read found the api gone: nobody will take this one's answer.
            let gone = crate::reading::lifeline::ApiGone;
            return (Outcome::Unreadable(gone.to_string()), None);
        }
        for _ in 0..ATTEMPTS {
            if let Attempt::Done(result) = self.attempt(path, reads, stated.take()) {
                return result;
            }
        }
        (
            Outcome::Unreadable("changed on every read attempt".to_owned()),
            None,
        )
    }

    fn attempt(&mut self, path: &Path, reads: &ReadContext, stated: Option<Metadata>) -> Attempt {
        let before = match stated.map_or_else(|| std::fs::symlink_metadata(path), Ok) {
            Ok(m) => m,
            Err(e) => return Attempt::Done((from_io(&e), None)),
        };
        if before.file_type().is_symlink() {
            return Attempt::Done((Outcome::Symlink, None));
        }
        if !before.file_type().is_file() {
            return Attempt::Done((Outcome::NotRegular, None));
        }
        if reads.secrets.is_inode(&before) {
            return Attempt::Done((Outcome::Secret, None));
        }
        let file = match open_no_symlinks(path) {
            Ok(f) => f,
            Err(e) => return Attempt::Done((from_io(&e), None)),
        };
        let opened = match file.metadata() {
            Ok(m) => m,
            Err(e) => return Attempt::Done((from_io(&e), None)),
        };
        if reads.secrets.is_inode(&opened) {
            return Attempt::Done((Outcome::Secret, None));
        }
        if !same_version(&before, &opened) {
            return Attempt::Changed;
        }
        // Before the read, not after: the ctime checked below must already cover any write
        // through a mapping made once the pages are clean.
        let proof = crate::reading::proof::prepare(&file, &opened, self.prove);
        // Files under one drop-behind step keep their pages, as any reader's would: dropping
        // them made every later read of a small file (a restart, the backstop) a disk read,
        // 50 µs each here, for a cache footprint of at most one step per file.
        if opened.size() >= DROP_BEHIND {
            crate::sys::advise_sequential(&file);
        }
        let sealed_before = self.seals.then(|| crate::reading::verity::measure(&file));
        self.chunker = (self.take_chunks && opened.size() >= crate::reading::chunks::MIN_SIZE)
            .then(crate::reading::chunks::ChunkHasher::default);
        let digest = match self.stream(&file, reads, Version::of(&opened)) {
            Ok(d) => d,
            Err(e) if crate::reading::current::changed_while_read(&e) => {
                // Not read again now: the file is being written, and the write's event has
                // the next check read it (this one reports it unverified meanwhile).
                return Attempt::Done((crate::reading::current::changed_outcome(), None));
            }
            Err(e) => return Attempt::Done((from_io(&e), None)),
        };
        // A copy of a secret: read, but its digest goes no further.
        if reads.secrets.is_digest(&digest.0) {
            self.chunker = None;
            return Attempt::Done((Outcome::Secret, None));
        }
        match file.metadata() {
            Ok(after) if same_version(&opened, &after) && digest.1 == after.size() => {
                self.last_seal = sealing(sealed_before, &file);
                self.last_proof = proof;
                self.last_chunks = self
                    .chunker
                    .take()
                    .map(crate::reading::chunks::ChunkHasher::finish)
                    .unwrap_or_default();
                Attempt::Done((
                    Outcome::Hashed {
                        hash: protocol::hexfmt::Sha256Digest(digest.0),
                        size: digest.1,
                    },
                    Some(Version::of(&after)),
                ))
            }
            Ok(_) => Attempt::Changed,
            Err(e) => Attempt::Done((from_io(&e), None)),
        }
    }

    /// Reads and hashes through the one buffer.
    fn stream(
        &mut self,
        file: &File,
        reads: &ReadContext,
        opened: Version,
    ) -> std::io::Result<([u8; 32], u64)> {
        let mut sha = Sha256::new();
        let size = match self.chunker.take() {
            Some(chunker) => {
                let (size, chunker) = self.feed_with_chunks(file, &mut sha, reads, chunker, opened);
                self.chunker = chunker;
                size?
            }
            None => self.feed(file, &mut sha, reads, opened)?,
        };
        Ok((sha.finalize().into(), size))
    }

    /// As [`Reader::feed`], with the chunk digests taken on a helper thread from the same
    /// buffers (two circulate), so a first read costs the time of one SHA-256, not two. Returns
    /// the chunker with its digests (`None` when the read failed).
    fn feed_with_chunks(
        &mut self,
        file: &File,
        sha: &mut Sha256,
        reads: &ReadContext,
        chunker: crate::reading::chunks::ChunkHasher,
        opened: Version,
    ) -> (
        std::io::Result<u64>,
        Option<crate::reading::chunks::ChunkHasher>,
    ) {
        use std::sync::mpsc::sync_channel;
        let (to_helper, work) = sync_channel::<(Box<[u8]>, usize)>(2);
        let (give_back, returned) = sync_channel::<Box<[u8]>>(2);
        let mut free = vec![
            std::mem::take(&mut self.buf),
            vec![0u8; BUF_SIZE].into_boxed_slice(),
        ];
        let (result, chunker) = std::thread::scope(|s| {
            let helper = std::thread::Builder::new().spawn_scoped(s, move || {
                let mut chunker = chunker;
                while let Ok((buf, n)) = work.recv() {
                    chunker.update(&buf[..n]);
                    if give_back.send(buf).is_err() {
                        break;
                    }
                }
                chunker
            });
            let Ok(helper) = helper else {
                // No thread to spare (TasksMax): this read goes without chunk digests.
                return (None, None);
            };
            let result = pump(file, sha, reads, opened, &mut free, &returned, &to_helper);
            drop(to_helper);
            let chunker = helper.join().ok();
            free.extend(returned.try_iter());
            (Some(result), chunker)
        });
        // The reader's own buffer back, whatever happened.
        self.buf = free
            .into_iter()
            .find(|b| b.len() == BUF_SIZE)
            .unwrap_or_else(|| vec![0u8; BUF_SIZE].into_boxed_slice());
        match result {
            None => (self.feed(file, sha, reads, opened), None),
            Some(Ok(size)) => {
                drop_all(file, size);
                self.bytes += size;
                (Ok(size), chunker)
            }
            Some(Err(e)) => (Err(e), None),
        }
    }

    /// Streams `file` into `sha` through the one buffer, under the read budget, dropping the
    /// pages behind; returns the bytes read. Stops early if the file moves from version
    /// `opened` ([`crate::reading::current::Looks`]).
    pub(crate) fn feed(
        &mut self,
        file: &File,
        sha: &mut Sha256,
        reads: &ReadContext,
        opened: Version,
    ) -> std::io::Result<u64> {
        let mut size = 0u64;
        let mut dropped = 0u64;
        let mut looks = crate::reading::current::Looks::new(opened, &reads.lifeline);
        loop {
            looks.check(file)?;
            let n = read_some(file, &mut self.buf)?;
            if n == 0 {
                break;
            }
            sha.update(&self.buf[..n]);
            size += n as u64;
            dropped = drop_behind(file, dropped, size);
            reads.throttle(n as u64);
        }
        drop_all(file, size);
        self.bytes += size;
        Ok(size)
    }
}

/// The read loop of [`Reader::feed_with_chunks`]: each buffer is taken from `free` (or as the
/// helper gives it back), read into, hashed into `sha`, then passed to the helper.
fn pump(
    file: &File,
    sha: &mut Sha256,
    reads: &ReadContext,
    opened: Version,
    free: &mut Vec<Box<[u8]>>,
    returned: &std::sync::mpsc::Receiver<Box<[u8]>>,
    to_helper: &std::sync::mpsc::SyncSender<(Box<[u8]>, usize)>,
) -> std::io::Result<u64> {
    let mut size = 0u64;
    let mut dropped = 0u64;
    let mut looks = crate::reading::current::Looks::new(opened, &reads.lifeline);
    loop {
        let Some(mut buf) = free.pop().or_else(|| returned.recv().ok()) else {
            return Err(std::io::Error::other("chunk helper stopped"));
        };
        if let Err(e) = looks.check(file) {
            free.push(buf);
            return Err(e);
        }
        let n = match read_some(file, &mut buf) {
            Ok(n) => n,
            Err(e) => {
                free.push(buf);
                return Err(e);
            }
        };
        if n == 0 {
            free.push(buf);
            return Ok(size);
        }
        sha.update(&buf[..n]);
        size += n as u64;
        dropped = drop_behind(file, dropped, size);
        reads.throttle(n as u64);
        if let Err(back) = to_helper.send((buf, n)) {
            free.push(back.0 .0);
            return Err(std::io::Error::other("chunk helper stopped"));
        }
    }
}

fn read_some(mut file: &File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match file.read(buf) {
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            other => return other,
        }
    }
}

/// Drops the pages before `read` from the cache once a step's worth has accumulated, so a
/// 70 GB model never fills the page cache; returns the new dropped mark.
fn drop_behind(file: &File, dropped: u64, read: u64) -> u64 {
    if read - dropped < DROP_BEHIND {
        return dropped;
    }
    crate::sys::advise_done_range(file, dropped, read - dropped);
    read
}

/// Drops a large file's pages once it is hashed (a 70 GB model must not evict the
/// appliance's working set); a file under one drop-behind step keeps them.
fn drop_all(file: &File, size: u64) {
    if size >= DROP_BEHIND {
        crate::sys::advise_done(file);
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

    /// 256 MiB (sparse), read under a 32 MiB/s budget: 8 s to read whole, were it not stopped.
    fn slow_read() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = dir.path().join("big");
        std::fs::File::create(&f)
            .expect("create")
            .set_len(256 << 20)
            .expect("set_len");
        (dir, f)
    }

    fn digest_of(data: &[u8]) -> protocol::hexfmt::Sha256Digest {
        protocol::hexfmt::Sha256Digest(Sha256::digest(data).into())
    }

    #[test]
    fn a_write_in_the_middle_of_a_long_read_ends_it_unverified() {
        let (_dir, f) = slow_read();
        let mut reads = ReadContext::default();
        reads.set_limit(Some(32 << 20));
        let mut reader = Reader::default();
        let writer =
            crate::reading::current::write_later(&f, std::time::Duration::from_millis(300), 1);
        let (outcome, version) = reader.read(&f, &reads);
        writer.join().expect("writer");
        // Read to the end, the change would be seen there and the file read again, whole.
        assert_eq!(
            outcome,
            Outcome::Unreadable(crate::reading::current::CHANGED_WHILE_READ.to_owned()),
            "the read ran on after the write"
        );
        assert!(version.is_none());
        assert_eq!(reader.bytes, 0, "no read was completed");
        // Left alone, the same file reads and hashes as ever.
        let (outcome, _) = reader.read(&f, &ReadContext::default());
        assert!(matches!(outcome, Outcome::Hashed { size, .. } if size == 256 << 20));
    }

    #[test]
    fn reads_agree_with_sha256_at_every_size_edge() {
        let dir = tempfile::tempdir().expect("tempdir");
        let reads = ReadContext::default();
        let mut reader = Reader::default();
        let min = usize::try_from(DROP_BEHIND).expect("fits");
        for len in [
            0,
            1,
            BUF_SIZE,
            min - 1,
            min,
            min + 1,
            min + 3 * BUF_SIZE + 17,
        ] {
            let data: Vec<u8> = (0..len)
                .map(|i| u8::try_from(i % 251).expect("below 251"))
                .collect();
            let f = dir.path().join(format!("f{len}"));
            std::fs::write(&f, &data).expect("write");
            let (outcome, version) = reader.read(&f, &reads);
            assert_eq!(
                outcome,
                Outcome::Hashed {
                    hash: digest_of(&data),
                    size: len as u64
                },
                "length {len}"
            );
            assert!(version.is_some());
        }
    }

    #[test]
    fn a_reader_whose_api_is_gone_stops_and_says_so() {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let (dir, f) = slow_read();
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .expect("socketpair");
        let lifeline = crate::reading::lifeline::Lifeline::to(ours);
        let mut reads = ReadContext::new(lifeline.clone(), Default::default());
        reads.set_limit(Some(32 << 20));
        let mut reader = Reader::default();
        let hang_up = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(theirs);
        });
        let started = std::time::Instant::now();
        let (outcome, version) = reader.read(&f, &reads);
        hang_up.join().expect("hang-up");
        let gone = crate::reading::lifeline::ApiGone.to_string();
        assert_eq!(outcome, Outcome::Unreadable(gone.clone()));
        assert!(version.is_none());
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "the read ran on after the api left"
        );
        assert!(lifeline.cut(), "the server sees what the read found");
        // Every later read stops before it opens its file: nobody is left to take the answer.
        let small = dir.path().join("small");
        std::fs::write(&small, b"x").expect("write");
        assert_eq!(reader.read(&small, &reads).0, Outcome::Unreadable(gone));
    }
}
