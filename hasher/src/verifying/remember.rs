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

use crate::error::StoreError;
use crate::storing::Store;
use crate::storing::{write_sidefile, Reading};

/// The file's name in the store.
pub(crate) const FILE: &str = "versions.bin";
const MAGIC: &str = "integrity-monitor versions v1";

fn header(boot: &str, baseline: &str, count: usize) -> String {
    format!("{MAGIC} boot={boot} baseline={baseline} count={count}\n")
}

/// Writes `slots` (see [`crate::verifying::hashing::FileHasher::remembered`]) for `baseline` in `boot`.
pub(crate) fn save(
    store: &Store,
    key: &[u8],
    boot: &str,
    baseline: &str,
    slots: &[(u64, u64)],
) -> Result<(), StoreError> {
    let head = header(boot, baseline, slots.len());
    write_sidefile(store, key, FILE, &head, |put| {
        for (version, due) in slots {
            let mut record = [0u8; 16];
            record[..8].copy_from_slice(&version.to_le_bytes());
            record[8..].copy_from_slice(&due.to_le_bytes());
            put(&record)?;
        }
        Ok(())
    })
}

/// What was saved for `baseline` (of `count` entries) in `boot`, each record as `each` makes
/// it; `Err` says why nothing is taken (none saved, another boot or baseline, or a file that
/// does not verify).
pub(in crate::verifying) fn load<T>(
    store: &Store,
    key: &[u8],
    boot: &str,
    baseline: &str,
    count: usize,
    each: impl Fn(u64, u64) -> T,
) -> Result<Vec<T>, String> {
    let mut file = Reading::open(store, key, FILE)?;
    if file.head != header(boot, baseline, count).as_bytes() {
        let ours = String::from_utf8_lossy(&file.head).contains(&format!(" boot={boot} "));
        return Err(if ours {
            format!("{FILE} was written for another baseline")
        } else {
            format!("{FILE} was written in another boot (or is not one): every file is read")
        });
    }
    let mut out = Vec::with_capacity(count);
    for _ in 0..count {
        let version = u64::from_le_bytes(file.take::<8>()?);
        let due = u64::from_le_bytes(file.take::<8>()?);
        out.push(each(version, due));
    }
    file.finish()?;
    Ok(out)
}

/// How often at most what the slots remember is written (after a full sweep or a completed
/// cycle of the spread sweep; the first time at once).
pub(in crate::verifying) const SAVE_EVERY: std::time::Duration =
    std::time::Duration::from_secs(300);

/// Bytes read since the last save past which it is written again at once: reading them again
/// on a restart costs far more than the save (~16 bytes a file).
pub(in crate::verifying) const SAVE_AFTER_BYTES: u64 = 1 << 30;

/// The boot this hasher runs in, read before the sandbox (`None`: nothing is kept).
pub(crate) fn boot_id() -> Option<String> {
    let text = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = text.trim();
    let uuid = id.len() == 36 && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    uuid.then(|| id.to_owned())
}

/// Gives `hasher` what the store remembers for `current` in `boot`, if it verifies.
pub(in crate::verifying) fn recall(
    store: &Store,
    key: &[u8],
    boot: &str,
    current: &crate::storing::Current,
    hasher: &mut crate::verifying::hashing::FileHasher,
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
pub(crate) fn keep(
    store: &Store,
    key: &[u8],
    boot: &str,
    current: &crate::storing::Current,
    hasher: &crate::verifying::hashing::FileHasher,
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
