//! A directory artifact's digest, `SecAI-Directory-Hash-v1` (a sharded checkpoint or a
//! diffusers tree enrolled as one entry): its files planned within bounds without reading
//! them, then streamed under the read budget, several artifacts at once, and remembered with
//! the version of every file they covered.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::reading::ReadContext;
use crate::reading::Reader;
use crate::reading::Version;
use crate::verifying::hashing::Settled;
use crate::verifying::hashing::{DirCached, FileHasher};
use crate::verifying::walk::Found;

/// Domain of the directory digest.
const DIR_DOMAIN: &[u8] = b"SecAI-Directory-Hash-v1\0";
/// Bounds of one directory artifact.
const MAX_DIR_ENTRIES: usize = 25_000;
const MAX_DIR_FILES: usize = 20_000;
const MAX_FILE: u64 = 50 << 30;
const MAX_TOTAL: u64 = 64 << 30;
const MAX_REL_PATH: usize = 4096;

/// A directory artifact's digest and total size, or why it is not a valid artifact.
pub(in crate::verifying) type DirDigest = Result<(String, u64), String>;

/// The files of a directory artifact, checked against the bounds, with their versions.
struct Plan {
    dir: PathBuf,
    files: Vec<(PathBuf, Version)>,
    /// The fingerprint of its files' seals before it is read, when every one is sealed.
    sealed: Option<[u8; 32]>,
    /// Its files' pages are written back before each is read (`reading::proof`).
    prove: bool,
}

/// Walks `dir` and checks the artifact's bounds without reading any content.
fn plan(dir: &Path) -> Result<Plan, String> {
    let found = crate::verifying::walk::walk(dir, MAX_DIR_ENTRIES + 1);
    if found.len() > MAX_DIR_ENTRIES {
        return Err(format!("more than {MAX_DIR_ENTRIES} entries"));
    }
    let mut files = Vec::with_capacity(found.len());
    for (path, what) in &found {
        match what {
            Found::File => files.push(path.clone()),
            Found::Anomaly(kind) => return Err(format!("{}: {kind}", path.display())),
        }
    }
    if files.len() > MAX_DIR_FILES {
        return Err(format!("more than {MAX_DIR_FILES} files"));
    }
    let mut versions = Vec::with_capacity(files.len());
    let mut total = 0u64;
    for f in files {
        let m = std::fs::symlink_metadata(&f).map_err(|e| format!("{}: {e}", f.display()))?;
        if m.nlink() != 1 {
            return Err(format!(
                "{}: hard-linked ({} links)",
                f.display(),
                m.nlink()
            ));
        }
        if m.size() > MAX_FILE {
            return Err(format!("{}: larger than 50 GiB", f.display()));
        }
        total = total.saturating_add(m.size());
        if total > MAX_TOTAL {
            return Err("larger than 64 GiB in total".into());
        }
        versions.push((f, Version::of(&m)));
    }
    Ok(Plan {
        dir: dir.to_owned(),
        files: versions,
        sealed: None,
        prove: true,
    })
}

/// Streams a planned artifact through `reader` under `reads`' budget: its digest and total size.
fn compute(plan: &Plan, reader: &mut Reader, reads: &ReadContext) -> Result<(String, u64), String> {
    let mut sha = Sha256::new();
    sha.update(DIR_DOMAIN);
    let prefix = plan.dir.as_os_str().as_bytes().len() + 1;
    let mut total = 0u64;
    for (f, version) in &plan.files {
        let rel = &f.as_os_str().as_bytes()[prefix..];
        if rel.len() > MAX_REL_PATH || std::str::from_utf8(rel).is_err() {
            return Err(format!(
                "{}: relative path not UTF-8 or too long",
                f.display()
            ));
        }
        let file =
            crate::reading::open_no_symlinks(f).map_err(|e| format!("{}: {e}", f.display()))?;
        let before = file.metadata().map_err(|e| e.to_string())?;
        if reads.secrets.is_inode(&before) {
            return Err(format!(
                "{}: is the HMAC key or the service token; never read",
                f.display()
            ));
        }
        if Version::of(&before) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        // A changed file's pages are clean before it is read (see `reading::proof`).
        if let crate::reading::Proof::Unproven(why) =
            crate::reading::prepare_proof(&file, &before, plan.prove)
        {
            return Err(format!("{}: not proven: {why}", f.display()));
        }
        sha.update((rel.len() as u64).to_be_bytes());
        sha.update(rel);
        sha.update(before.size().to_be_bytes());
        let n = reader
            .feed(&file, &mut sha, reads, *version)
            .map_err(|e| format!("{}: {e}", f.display()))?;
        let after = file.metadata().map_err(|e| e.to_string())?;
        if n != before.size() || Version::of(&after) != *version {
            return Err(format!("{}: changed while hashed", f.display()));
        }
        total += n;
    }
    Ok((protocol::hexfmt::encode(&sha.finalize()), total))
}

/// `SecAI-Directory-Hash-v1` of each of `dirs`: SHA-256 over the domain, then for every regular
/// file beneath, in byte order of its `/`-separated relative path: u64 big-endian length of
/// that path, the path, u64 big-endian file size, the content. Each answer is the digest and the
/// total size, or why the dir is not a valid artifact. Answered from memory while no file's
/// version moved; otherwise streamed under the read budget, up to `hash_threads` artifacts at
/// once (largest first), each thread with its own buffer.
pub(in crate::verifying) fn directory_digests(
    hasher: &mut FileHasher,
    dirs: &[PathBuf],
) -> Vec<DirDigest> {
    let mut answers: Vec<Option<DirDigest>> = vec![None; dirs.len()];
    let mut todo: Vec<(usize, Plan)> = Vec::new();
    for (i, dir) in dirs.iter().enumerate() {
        match plan(dir).and_then(|p| trusted(hasher, p)) {
            Err(why) => answers[i] = Some(Err(why)),
            Ok(mut p) => match hasher.dirs.get(dir) {
                Some(c) if c.files == p.files && Instant::now() < c.due => {
                    hasher.fast_hits += 1;
                    answers[i] = Some(Ok((c.digest.clone(), c.total)));
                }
                cached => {
                    // Read again unchanged (the backstop): no writeback needed; see
                    // `reading::proof`.
                    let known = cached.is_some_and(|c| c.files == p.files);
                    p.prove = !known || p.files.iter().any(|(f, _)| hasher.settling.awaits(f));
                    match crate::verifying::dirseals::answer(hasher, &p.dir, &p.files) {
                        Ok(sealed) => {
                            settled(hasher, &p.files, Settled::Proven);
                            answers[i] = Some(Ok(sealed));
                        }
                        Err(fingerprint) => {
                            p.sealed = fingerprint;
                            todo.push((i, p));
                        }
                    }
                }
            },
        }
    }
    let results = read_planned(hasher, &mut todo);
    for (i, r) in results {
        if let Some((_, p)) = todo.iter().find(|(j, _)| *j == i) {
            remember(hasher, p, &r);
        }
        answers[i] = Some(r);
    }
    answers
        .into_iter()
        .map(|a| a.unwrap_or_else(|| Err("not hashed".into())))
        .collect()
}

/// `p`, unless one of its files is on a filesystem whose server decides what a read returns
/// (see `reading::fskind`): then why it is never read.
fn trusted(hasher: &mut FileHasher, p: Plan) -> Result<Plan, String> {
    for (f, v) in &p.files {
        if let crate::reading::FsKind::Untrusted(fs) = hasher.kind_of(v, f) {
            return Err(format!(
                "{}: on {fs}, whose server decides what a read returns; never read",
                f.display()
            ));
        }
    }
    Ok(p)
}

/// Reads the planned artifacts, up to `hash_threads` at once (largest first): each one's
/// answer, by its index.
fn read_planned(hasher: &mut FileHasher, todo: &mut [(usize, Plan)]) -> Vec<(usize, DirDigest)> {
    let size = |p: &Plan| p.files.iter().map(|(_, v)| v.size()).sum::<u64>();
    todo.sort_by_key(|(_, p)| std::cmp::Reverse(size(p)));
    let todo = &*todo;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<(usize, DirDigest)>> = Mutex::new(Vec::new());
    let reads = &hasher.reads;
    let work = |reader: &mut Reader| loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some((i, p)) = todo.get(k) else { break };
        let r = compute(p, reader, reads);
        results
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((*i, r));
    };
    let before = hasher.reader.bytes;
    let extra = hasher.threads.min(todo.len()).saturating_sub(1);
    let spent: u64 = std::thread::scope(|s| {
        let helpers: Vec<_> = (0..extra)
            .map_while(|_| {
                std::thread::Builder::new()
                    .spawn_scoped(s, || {
                        let mut reader = Reader::default();
                        work(&mut reader);
                        reader.bytes
                    })
                    .ok()
            })
            .collect();
        // This thread works too; what a thread that could not start would have done, it does.
        work(&mut hasher.reader);
        helpers.into_iter().filter_map(|h| h.join().ok()).sum()
    });
    hasher.bytes_hashed += spent + (hasher.reader.bytes - before);
    results.into_inner().unwrap_or_else(|e| e.into_inner())
}

/// Remembers what reading `p` gave (`r`): its files settled, and its digest with the version of
/// every file it covered, unless a write there can leave the metadata as it was.
fn remember(hasher: &mut FileHasher, p: &Plan, r: &DirDigest) {
    // Each file was read after its pages were clean, or the artifact is a finding.
    let outcome = if r.is_ok() {
        Settled::Proven
    } else {
        Settled::Moot
    };
    settled(hasher, &p.files, outcome);
    let Ok((digest, total)) = r else {
        return;
    };
    if !p.files.iter().all(|(f, v)| hasher.trusts(v, f)) {
        // On a filesystem where a write can leave the metadata as it was: read again at every
        // sweep.
        return;
    }
    if let Some(before) = p.sealed {
        let read = (digest.as_str(), *total);
        crate::verifying::dirseals::learn(hasher, &p.dir, &p.files, before, read);
    }
    let due = Instant::now() + hasher.spread(crate::verifying::hashing::lead(digest));
    hasher.dirs.insert(
        p.dir.clone(),
        DirCached {
            files: p.files.clone(),
            digest: digest.clone(),
            total: *total,
            due,
        },
    );
}

/// Notes for the files pending proof what a directory artifact's check established of each.
fn settled(hasher: &mut FileHasher, files: &[(PathBuf, Version)], outcome: Settled) {
    for (f, _) in files {
        hasher.settling.after(f, outcome);
    }
}

/// One directory artifact's digest (see [`directory_digests`]).
pub(in crate::verifying) fn directory_digest(hasher: &mut FileHasher, dir: &Path) -> DirDigest {
    directory_digests(hasher, &[dir.to_owned()])
        .pop()
        .unwrap_or_else(|| Err("not hashed".into()))
}
