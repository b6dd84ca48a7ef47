//! What is remembered of each baselined file that matched its entry, in the entry's place: the
//! version read and when it falls due, 16 bytes a file. The entry itself holds the digest and
//! size, so a million matching files cost 16 MB here rather than a hash table of their digests
//! (what does not match its entry, or has none, is remembered by path in the hasher's cache).

use std::collections::HashSet;

use protocol::hexfmt::Sha256Digest;

/// One baselined file's remembered version (0 for `due_ms`: nothing remembered).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Slot {
    /// The keyed fingerprint of the version read (see `hashing::PathKeys::version`).
    pub(crate) version: u64,
    /// When it must be read again regardless, in ms since the hasher was born.
    pub(crate) due_ms: u64,
}

/// The baseline entry a check expects to find: where it is, and its digest and size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::verifying) struct Expect {
    /// The entry's index in the baseline the slots are bound to.
    pub(crate) index: usize,
    /// The entry's digest.
    pub(crate) hash: Sha256Digest,
    /// The entry's size.
    pub(crate) size: u64,
}

impl Expect {
    /// What a check expects of entry `index`, `entry`.
    pub(crate) fn of(index: usize, entry: &protocol::entries::EntryRef<'_>) -> Expect {
        Expect {
            index,
            hash: entry.hash,
            size: entry.size,
        }
    }
}

/// Most paths held as forgotten before everything is forgotten instead (each is cleared when
/// its file is next read; a deleted file's stays until then).
const MAX_STALE: usize = 100_000;

/// The slots of one baseline's entries.
#[derive(Default)]
pub(in crate::verifying) struct Slots {
    /// The digest of the baseline they belong to: another baseline's indices mean other files.
    bound: String,
    slots: Vec<Slot>,
    /// How many hold a version.
    set: usize,
    /// Keys of paths the kernel named since they were read: their slots answer nothing.
    stale: HashSet<u128>,
}

impl Slots {
    /// Binds to the baseline with digest `baseline` and `entries` entries; slots of any other
    /// baseline are dropped.
    pub(crate) fn bind(&mut self, baseline: &str, entries: usize) {
        if self.bound != baseline || self.slots.len() != entries {
            *self = Slots {
                bound: baseline.to_owned(),
                slots: vec![Slot::default(); entries],
                ..Slots::default()
            };
        }
    }

    /// Takes `slots` (one per entry, as a new baseline was made) for the baseline `baseline`.
    pub(in crate::verifying) fn adopt(&mut self, baseline: &str, slots: Vec<Slot>) {
        *self = Slots {
            bound: baseline.to_owned(),
            set: slots.iter().filter(|s| s.due_ms != 0).count(),
            slots,
            stale: HashSet::new(),
        };
    }

    /// The version remembered for entry `index`, unless its path (`key`) was named since.
    pub(crate) fn get(&self, index: usize, key: impl FnOnce() -> u128) -> Option<Slot> {
        let slot = *self.slots.get(index)?;
        if slot.due_ms == 0 || (!self.stale.is_empty() && self.stale.contains(&key())) {
            return None;
        }
        Some(slot)
    }

    /// Remembers entry `index` as read at `slot`; `key` is its path's.
    pub(crate) fn set(&mut self, index: usize, key: u128, slot: Slot) {
        if let Some(s) = self.slots.get_mut(index) {
            if s.due_ms == 0 && slot.due_ms != 0 {
                self.set += 1;
            }
            *s = slot;
            self.stale.remove(&key);
        }
    }

    /// Forgets entry `index`.
    pub(crate) fn clear(&mut self, index: usize) {
        if let Some(s) = self.slots.get_mut(index) {
            if s.due_ms != 0 {
                self.set -= 1;
            }
            *s = Slot::default();
        }
    }

    /// Marks the path with key `key` as named by the kernel: its slot answers nothing until
    /// its file is read again.
    pub(in crate::verifying) fn forget(&mut self, key: u128) {
        if self.set == 0 {
            return;
        }
        if self.stale.len() >= MAX_STALE {
            self.forget_all();
        } else {
            self.stale.insert(key);
        }
    }

    /// Forgets every slot (they stay bound).
    pub(in crate::verifying) fn forget_all(&mut self) {
        self.slots.fill(Slot::default());
        self.set = 0;
        self.stale = HashSet::new();
    }

    /// The digest of the baseline they are bound to.
    pub(crate) fn bound(&self) -> &str {
        &self.bound
    }

    /// Every slot, in the order of the entries.
    pub(crate) fn all(&self) -> &[Slot] {
        &self.slots
    }

    /// True when no slot holds a version.
    pub(crate) fn is_empty(&self) -> bool {
        self.set == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const READ: Slot = Slot {
        version: 7,
        due_ms: 100,
    };

    #[test]
    fn a_slot_answers_for_its_baseline_until_forgotten_or_rebound() {
        let mut s = Slots::default();
        s.bind("a", 3);
        assert_eq!(s.get(1, || 9), None);
        s.set(1, 9, READ);
        assert_eq!(s.get(1, || 9), Some(READ));
        assert!(!s.is_empty());
        s.forget(9);
        assert_eq!(s.get(1, || 9), None, "named by the kernel");
        s.set(1, 9, READ);
        assert_eq!(s.get(1, || 9), Some(READ), "read again");
        s.bind("a", 3);
        assert_eq!(
            s.get(1, || 9),
            Some(READ),
            "the same baseline keeps its slots"
        );
        s.bind("b", 3);
        assert_eq!(
            s.get(1, || 9),
            None,
            "another baseline's indices mean other files"
        );
        assert!(s.is_empty());
        s.adopt("c", vec![Slot::default(), READ]);
        assert_eq!(
            (s.get(1, || 9), s.get(0, || 8), s.get(5, || 1)),
            (Some(READ), None, None)
        );
        s.clear(1);
        assert!(s.is_empty());
    }
}
