//! One big file on every core. A full sequential read of a large file also takes the SHA-256
//! of each fixed 64 MiB chunk; a later re-verification of that file then reads its chunks on up
//! to `hash_threads` threads at once. Every chunk matching proves the content is the one whose
//! whole-file digest was taken in that same read (the digest reported is that one). A chunk
//! that differs, or a file that changes while read, falls back to a full sequential read,
//! which reports the actual digest and takes the new content's chunks.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use sha2::{Digest, Sha256};

use crate::reading::budget::BUF_SIZE;
use crate::reading::context::ReadContext;
use crate::reading::version::Version;

/// Bytes per chunk.
pub(crate) const CHUNK: u64 = 64 << 20;
/// Files of at least this size get chunk digests: two chunks, so two threads have work.
pub(crate) const MIN_SIZE: u64 = 2 * CHUNK;

/// The chunk digests of content being read in order.
pub(super) struct ChunkHasher {
    sha: Sha256,
    in_chunk: u64,
    out: Vec<[u8; 32]>,
}

impl Default for ChunkHasher {
    fn default() -> Self {
        ChunkHasher {
            sha: Sha256::new(),
            in_chunk: 0,
            out: Vec::new(),
        }
    }
}

impl ChunkHasher {
    /// Feeds the next bytes of the content.
    pub(crate) fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = usize::try_from(CHUNK - self.in_chunk).unwrap_or(usize::MAX);
            let take = room.min(data.len());
            self.sha.update(&data[..take]);
            self.in_chunk += take as u64;
            data = &data[take..];
            if self.in_chunk == CHUNK {
                self.out.push(self.sha.finalize_reset().into());
                self.in_chunk = 0;
            }
        }
    }

    /// The digests, the last chunk possibly short.
    pub(crate) fn finish(mut self) -> Vec<[u8; 32]> {
        if self.in_chunk > 0 {
            self.out.push(self.sha.finalize().into());
        }
        self.out
    }
}

/// What one full read found: the whole-file digest, the size and the chunk digests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    /// SHA-256 of the whole content.
    pub(crate) hash: protocol::hexfmt::Sha256Digest,
    /// Its size.
    pub(crate) size: u64,
    /// SHA-256 of each [`CHUNK`] of it.
    pub(crate) chunks: Vec<[u8; 32]>,
}

/// What reading the chunks showed.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every chunk matched: the content is the known one, in this version.
    Same(Version),
    /// A chunk differs.
    Differs,
    /// Could not tell (unreadable, or changed as the read ended): read it whole.
    Unknown,
    /// Written to in the middle of the read: the next check reads it (its write's event asks
    /// for one), not this one.
    Changed,
}

/// Reads `path`'s chunks on up to `threads` threads and compares them with `known` (its pages
/// written back first when `prove`: see `reading::proof`); returns the verdict and the bytes
/// read.
pub(crate) fn verify(
    path: &Path,
    known: &Known,
    threads: usize,
    reads: &ReadContext,
    prove: bool,
) -> (Verdict, u64) {
    let Ok(file) = crate::reading::resolve::open_no_symlinks(path) else {
        return (Verdict::Unknown, 0);
    };
    let Ok(before) = file.metadata() else {
        return (Verdict::Unknown, 0);
    };
    let expected_chunks = known.size.div_ceil(CHUNK);
    if !before.file_type().is_file()
        || reads.secrets.is_inode(&before)
        || before.size() != known.size
        || known.chunks.len() as u64 != expected_chunks
    {
        return (Verdict::Unknown, 0);
    }
    // The pages written back before the chunks are read, as a whole read would (a proof that
    // fails leaves the file to a whole read, which tries again).
    if let crate::reading::proof::Proof::Unproven(_) =
        crate::reading::proof::prepare(&file, &before, prove)
    {
        return (Verdict::Unknown, 0);
    }
    let next = AtomicUsize::new(0);
    let found = Found::default();
    let opened = Version::of(&before);
    let bytes = AtomicU64::new(0);
    let work = || {
        let mut buf = vec![0u8; BUF_SIZE].into_boxed_slice();
        let mut looks = crate::reading::current::Looks::new(opened, &reads.lifeline);
        while !found.any() {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(want) = known.chunks.get(i) else {
                break;
            };
            let start = i as u64 * CHUNK;
            let len = CHUNK.min(known.size - start);
            match chunk_digest(&file, start, len, &mut buf, reads, &mut looks) {
                Ok(got) => {
                    bytes.fetch_add(len, Ordering::Relaxed);
                    if &got != want {
                        found.differs.store(true, Ordering::Relaxed);
                    }
                }
                Err(e) if crate::reading::current::changed_while_read(&e) => {
                    found.changed.store(true, Ordering::Relaxed);
                }
                Err(_) => found.failed.store(true, Ordering::Relaxed),
            }
        }
    };
    std::thread::scope(|s| {
        let wanted = threads.clamp(1, known.chunks.len());
        let helpers: Vec<_> = (1..wanted)
            .map_while(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
            .collect();
        work();
        for h in helpers {
            if h.join().is_err() {
                found.failed.store(true, Ordering::Relaxed);
            }
        }
    });
    crate::sys::advise_done(&file);
    let after = file.metadata().ok().map(|m| Version::of(&m));
    (found.verdict(opened, after), bytes.load(Ordering::Relaxed))
}

/// What the chunk readers found, shared between them; any of it stops them all.
#[derive(Default)]
struct Found {
    differs: AtomicBool,
    failed: AtomicBool,
    changed: AtomicBool,
}

impl Found {
    fn any(&self) -> bool {
        self.differs.load(Ordering::Relaxed)
            || self.failed.load(Ordering::Relaxed)
            || self.changed.load(Ordering::Relaxed)
    }

    /// The verdict once every reader stopped, the file at version `after` then.
    fn verdict(&self, opened: Version, after: Option<Version>) -> Verdict {
        if self.changed.load(Ordering::Relaxed) {
            return Verdict::Changed;
        }
        match after {
            Some(v) if v == opened && !self.failed.load(Ordering::Relaxed) => {
                if self.differs.load(Ordering::Relaxed) {
                    Verdict::Differs
                } else {
                    Verdict::Same(v)
                }
            }
            _ => Verdict::Unknown,
        }
    }
}

/// SHA-256 of `len` bytes at `start`, read through `buf` under the budget.
fn chunk_digest(
    file: &File,
    start: u64,
    len: u64,
    buf: &mut [u8],
    reads: &ReadContext,
    looks: &mut crate::reading::current::Looks,
) -> std::io::Result<[u8; 32]> {
    let mut sha = Sha256::new();
    let mut done = 0u64;
    while done < len {
        looks.check(file)?;
        let want = usize::try_from(len - done)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = match file.read_at(&mut buf[..want], start + done) {
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha.update(&buf[..n]);
        done += n as u64;
        reads.throttle(n as u64);
    }
    crate::sys::advise_done_range(file, start, len);
    Ok(sha.finalize().into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_digests_are_the_digests_of_each_chunk() {
        let data: Vec<u8> = (0..(2 * CHUNK + 5)).map(|i| (i % 251) as u8).collect();
        let mut c = ChunkHasher::default();
        // Fed in odd pieces that straddle the boundaries.
        for piece in data.chunks(7_777_777) {
            c.update(piece);
        }
        let got = c.finish();
        let want: Vec<[u8; 32]> = data
            .chunks(usize::try_from(CHUNK).expect("fits"))
            .map(|c| Sha256::digest(c).into())
            .collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got, want);
    }

    #[test]
    fn a_write_in_the_middle_of_a_chunked_read_ends_it() {
        // Four chunks of zeros (sparse) under a 32 MiB/s budget: 8 s to read them all.
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big");
        let size = 4 * CHUNK;
        std::fs::File::create(&path)
            .expect("create")
            .set_len(size)
            .expect("set_len");
        let zeros: [u8; 32] =
            Sha256::digest(vec![0u8; usize::try_from(CHUNK).expect("fits")]).into();
        let known = Known {
            hash: protocol::hexfmt::Sha256Digest([0; 32]),
            size,
            chunks: vec![zeros; 4],
        };
        let mut reads = ReadContext::default();
        reads.set_limit(Some(32 << 20));
        // The same byte: the content does not change, its version does.
        let writer =
            crate::reading::current::write_later(&path, std::time::Duration::from_millis(300), 0);
        let (verdict, read) = verify(&path, &known, 2, &reads, true);
        writer.join().expect("writer");
        // Read to the end, the chunks would match and the version check there say Unknown.
        assert_eq!(verdict, Verdict::Changed, "the read ran on after the write");
        assert!(read < size, "read {read} of {size}");
        // Left alone, the same content is proven by its chunks.
        let (verdict, _) = verify(&path, &known, 2, &ReadContext::default(), false);
        assert!(matches!(verdict, Verdict::Same(_)), "{verdict:?}");
    }

    #[test]
    fn a_change_anywhere_is_seen_and_same_content_is_proven() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("big");
        let size = 2 * CHUNK + 1234;
        let data: Vec<u8> = (0..size).map(|i| (i % 253) as u8).collect();
        std::fs::write(&path, &data).expect("write");
        let mut c = ChunkHasher::default();
        c.update(&data);
        let known = Known {
            hash: protocol::hexfmt::Sha256Digest(Sha256::digest(&data).into()),
            size,
            chunks: c.finish(),
        };
        let reads = ReadContext::default();
        for threads in [1, 2, 4] {
            let (v, read) = verify(&path, &known, threads, &reads, false);
            assert!(matches!(v, Verdict::Same(_)), "{threads}: {v:?}");
            assert_eq!(read, size);
        }
        // One byte in each chunk in turn, the last (short) one included.
        for at in [0, CHUNK + 17, 2 * CHUNK + 1000] {
            let mut changed = data.clone();
            changed[usize::try_from(at).expect("fits")] ^= 1;
            std::fs::write(&path, &changed).expect("write");
            let (v, _) = verify(&path, &known, 2, &reads, true);
            assert_eq!(v, Verdict::Differs, "byte {at}");
        }
        // Another size: not comparable chunk by chunk.
        std::fs::write(&path, &data[..100]).expect("write");
        assert_eq!(verify(&path, &known, 2, &reads, false).0, Verdict::Unknown);
    }
}
