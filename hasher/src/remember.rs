//! What the slots remember, kept in the store across a restart within one boot: for each
//! baseline entry, the fingerprint of the version last verified against it and when it falls
//! due. A restarted hasher then reads only the files whose version changed, so a million files
//! are trusted again after a stat each rather than a read each.
//!
//! Why within one boot only: while the kernel runs, a file's (dev, ino, size, mtime, ctime)
//! cannot stay the same through a change except for someone who can set the clock (root, who
//! can read the HMAC key anyway). Across a reboot the disk may have been edited offline, ctime
//! included, so the file names the boot it was written in and is ignored in any other: the
//! first start after a boot reads every byte. It is HMAC-signed under the baseline key and
//! names the baseline it belongs to; without a key nothing is kept.
//!
//! Format: the line `integrity-monitor versions v1 boot=<boot_id> baseline=<digest>
//! count=<n>`, then n × 16 bytes (fingerprint, due time in seconds since the epoch; both
//! little-endian u64), then the hex HMAC-SHA256 of everything before it.

use std::io::{BufRead, BufReader, Read, Write};

use protocol::sign::MacWriter;

use crate::error::StoreError;
use crate::store::Store;

/// The file's name in the store.
pub const FILE: &str = "versions.bin";
const MAGIC: &str = "integrity-monitor versions v1";
/// Longest header line read.
const MAX_HEADER: u64 = 512;

fn header(boot: &str, baseline: &str, count: usize) -> String {
    format!("{MAGIC} boot={boot} baseline={baseline} count={count}\n")
}

/// Writes `slots` (see [`crate::hashing::FileHasher::remembered`]) for `baseline` in `boot`.
pub fn save(
    store: &Store,
    key: &[u8],
    boot: &str,
    baseline: &str,
    slots: &[(u64, u64)],
) -> Result<(), StoreError> {
    store
        .write_atomic_with(FILE, |sink| {
            let mut mac = MacWriter::new(key);
            let head = header(boot, baseline, slots.len());
            sink.write_all(head.as_bytes())?;
            mac.write_all(head.as_bytes())?;
            for (version, due) in slots {
                let mut record = [0u8; 16];
                record[..8].copy_from_slice(&version.to_le_bytes());
                record[8..].copy_from_slice(&due.to_le_bytes());
                sink.write_all(&record)?;
                mac.write_all(&record)?;
            }
            sink.write_all(protocol::hexfmt::encode(&mac.finish()).as_bytes())
        })
        .map(drop)
}

/// What was saved for `baseline` (of `count` entries) in `boot`, each record as `each` makes
/// it; `Err` says why nothing is taken (none saved, another boot or baseline, or a file that
/// does not verify).
pub fn load<T>(
    store: &Store,
    key: &[u8],
    boot: &str,
    baseline: &str,
    count: usize,
    each: impl Fn(u64, u64) -> T,
) -> Result<Vec<T>, String> {
    let file = match store.open_file(FILE) {
        Ok(Some(f)) => f,
        Ok(None) => return Err("none stored".into()),
        Err(e) => return Err(e.to_string()),
    };
    let mut reader = BufReader::with_capacity(64 * 1024, file);
    let mut head = Vec::new();
    let read = (&mut reader).take(MAX_HEADER).read_until(b'\n', &mut head);
    read.map_err(|e| format!("{FILE}: cannot read: {e}"))?;
    if head != header(boot, baseline, count).as_bytes() {
        let ours = String::from_utf8_lossy(&head).contains(&format!(" boot={boot} "));
        return Err(if ours {
            format!("{FILE} was written for another baseline")
        } else {
            format!("{FILE} was written in another boot (or is not one): every file is read")
        });
    }
    let mut mac = MacWriter::new(key);
    let _ = mac.write_all(&head);
    let mut out = Vec::with_capacity(count);
    let mut record = [0u8; 16];
    for _ in 0..count {
        reader
            .read_exact(&mut record)
            .map_err(|e| format!("{FILE}: truncated: {e}"))?;
        let _ = mac.write_all(&record);
        let (version, due) = record.split_at(8);
        let word = |b: &[u8]| u64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        out.push(each(word(version), word(due)));
    }
    let mut tag = String::new();
    let tail = reader.take(65).read_to_string(&mut tag);
    tail.map_err(|e| format!("{FILE}: cannot read its HMAC: {e}"))?;
    if !mac.matches_hex(&tag) {
        return Err(format!(
            "{FILE}: HMAC does not verify (altered, or written under another key)"
        ));
    }
    Ok(out)
}

/// How often at most what the slots remember is written (after a full sweep or a completed
/// cycle of the spread sweep; the first time at once).
pub const SAVE_EVERY: std::time::Duration = std::time::Duration::from_secs(300);

/// The boot this hasher runs in, read before the sandbox (`None`: nothing is kept).
pub fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    let uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    uuid.then(|| id.to_owned())
}

/// Gives `hasher` what the store remembers for `current` in `boot`, if it verifies.
pub fn recall(
    store: &Store,
    key: &[u8],
    boot: &str,
    current: &crate::store::Current,
    hasher: &mut crate::hashing::FileHasher,
) {
    let count = current.manifest.entries.len();
    let slot_of = |version, due| hasher.slot_of(version, due);
    match load(store, key, boot, &current.digest, count, slot_of) {
        Ok(slots) => {
            let known = slots.iter().filter(|s| s.due_ms != 0).count();
            hasher.adopt(&current.digest, slots);
            tracing::info!(
                known,
                entries = count,
                "versions verified before the restart recalled: only files changed since are read"
            );
        }
        Err(why) => tracing::info!(why, "no versions recalled: every file is read"),
    }
}

/// Writes what `hasher` remembers for `current` in `boot`, when its slots are bound to it.
pub fn keep(
    store: &Store,
    key: &[u8],
    boot: &str,
    current: &crate::store::Current,
    hasher: &crate::hashing::FileHasher,
) {
    let (bound, slots) = hasher.remembered();
    if bound != current.digest {
        return;
    }
    match save(store, key, boot, bound, &slots) {
        Ok(()) => tracing::debug!(entries = slots.len(), "versions kept for a restart"),
        Err(e) => tracing::warn!(error = %e, "versions not kept: a restart reads every file"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = &[9u8; 32];

    #[test]
    fn only_the_same_boot_baseline_and_key_recall_and_any_edit_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let slots = vec![(1, 100), (0, 0), (u64::MAX, 7)];
        let pair = |v, d| (v, d);
        let loaded = |count| load(&store, KEY, "b1", "d1", count, pair);
        assert_eq!(loaded(3), Err("none stored".into()));
        save(&store, KEY, "b1", "d1", &slots).expect("saved");
        assert_eq!(loaded(3), Ok(slots.clone()));
        let refused = |boot, digest, count, key| {
            load(&store, key, boot, digest, count, pair).expect_err("refused")
        };
        assert!(refused("b2", "d1", 3, KEY).contains("another boot"));
        assert!(refused("b1", "d2", 3, KEY).contains("another baseline"));
        assert!(refused("b1", "d1", 4, KEY).contains("another baseline"));
        assert!(refused("b1", "d1", 3, &[8u8; 32]).contains("HMAC"));
        let path = dir.path().join(FILE);
        let good = std::fs::read(&path).expect("read");
        let at = header("b1", "d1", 3).len() + 3;
        let mut edited = good.clone();
        edited[at] ^= 1;
        std::fs::write(&path, &edited).expect("write");
        assert!(refused("b1", "d1", 3, KEY).contains("HMAC"));
        std::fs::write(&path, &good[..good.len() - 10]).expect("write");
        assert!(refused("b1", "d1", 3, KEY).contains("HMAC"));
        std::fs::write(&path, &good[..at]).expect("write");
        assert!(refused("b1", "d1", 3, KEY).contains("truncated"));
        let mut longer = good.clone();
        longer.extend_from_slice(b"0");
        std::fs::write(&path, &longer).expect("write");
        assert!(refused("b1", "d1", 3, KEY).contains("HMAC"));
    }
}
