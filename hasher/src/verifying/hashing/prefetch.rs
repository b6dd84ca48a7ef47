//! Reading many stale files at once on `hash_threads` threads, ahead of the checks that
//! will ask for them.

use super::*;

impl FileHasher {
    /// Reads, up to `threads` files at once and largest first, every regular file among
    /// `paths` with no remembered digest or one due for re-verification (first scan, backstop,
    /// paths inotify named), so the checks that follow find them cached. With one thread it
    /// does nothing: the checks read as they go. Only those files are stat'ed here, so a steady
    /// tick costs no more than with one thread; a remembered file whose metadata moved without
    /// an event is read by its check, as is any file that changes after this.
    /// A path given with an expected size is skipped when its size differs: its check reports
    /// the change unread.
    pub(in crate::verifying) fn prefetch<'a>(
        &mut self,
        paths: impl IntoIterator<Item = (&'a Path, Option<Expect>)>,
    ) {
        if self.threads <= 1 {
            return;
        }
        let mut todo = self.stale(paths);
        if todo.len() < 2 {
            return;
        }
        todo.sort_by_key(|t| std::cmp::Reverse(t.1));
        let next = AtomicUsize::new(0);
        type Done = (usize, ReadResult, Vec<[u8; 32]>, Sealing, Proof);
        let done: Mutex<Vec<Done>> = Mutex::new(Vec::with_capacity(todo.len()));
        let (reads, arm) = (&self.reads, &self.arm);
        let take_chunks = self.threads > 1;
        let seals = self.reader.seals;
        let bytes: u64 = std::thread::scope(|s| {
            let work = || {
                let mut reader = Reader::default();
                reader.take_chunks = take_chunks;
                reader.seals = seals;
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((path, size, _, prove)) = todo.get(i) else {
                        break;
                    };
                    reader.prove = *prove;
                    if crate::reading::is_long(*size) {
                        arm.long_read();
                    }
                    let result = reader.read(path, reads);
                    let chunks = std::mem::take(&mut reader.last_chunks);
                    done.lock().unwrap_or_else(|p| p.into_inner()).push((
                        i,
                        result,
                        chunks,
                        reader.last_seal,
                        reader.last_proof,
                    ));
                }
                reader.bytes
            };
            let wanted = self.threads.min(todo.len());
            let workers: Vec<_> = (0..wanted)
                .map_while(|_| std::thread::Builder::new().spawn_scoped(s, work).ok())
                .collect();
            if workers.len() < wanted {
                // Threads that could not start leave their files to the checks.
                tracing::warn!(
                    wanted,
                    started = workers.len(),
                    "fewer hashing threads than hash_threads asks (TasksMax?)"
                );
            }
            workers.into_iter().filter_map(|w| w.join().ok()).sum()
        });
        self.bytes_hashed += bytes;
        let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
        for (i, result, chunks, sealing, proof) in done {
            if let Some((path, _, expect, _)) = todo.get(i) {
                self.learn_seal(path, &result.0, sealing);
                self.settle(path, &result, proof);
                self.remember(path, result, chunks, *expect);
            }
        }
    }

    /// The regular files among `paths` that a check would read: none remembered, or due
    /// (not large files read before, nor sealed files their seals answer for), with their sizes.
    fn stale<'a>(
        &self,
        paths: impl IntoIterator<Item = (&'a Path, Option<Expect>)>,
    ) -> Vec<(&'a Path, u64, Option<Expect>, bool)> {
        let now_ms = self.ms_since_born(Instant::now());
        paths
            .into_iter()
            .filter(|(p, e)| {
                let slot = e.and_then(|e| self.slots.get(e.index, || self.keys.of(p)));
                let due = slot
                    .map(|s| s.due_ms)
                    .or_else(|| self.cache.get(&self.keys.of(p)).map(|c| c.due_ms));
                due.is_none_or(|due| now_ms >= due)
            })
            // A large file read before is left to its check, which reads its chunks on every
            // thread rather than the whole file on one.
            .filter(|(p, _)| !self.known.contains_key(*p))
            // A sealed file its binding answers for is not read at all.
            .filter(|(p, _)| !self.seals.may_answer(p, now_ms))
            .filter_map(|(p, expected)| {
                let m = std::fs::symlink_metadata(p).ok()?;
                let wanted = m.file_type().is_file() && expected.is_none_or(|e| e.size == m.size());
                let prove = self.must_prove(p, expected, Some(&m));
                wanted.then_some((p, m.size(), expected, prove))
            })
            .collect()
    }
}
