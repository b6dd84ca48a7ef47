//! The baseline's life as the store records it: what loading found (to tell the api at
//! hello), what it repaired, and the generation the next commit takes, always past every
//! generation either store file ever claimed.

use protocol::message::{BaselineSummary, StoreEvent, StoreStatus};

use crate::error::StoreError;
use crate::storing::store::{Current, Loaded, Store};

/// The store and what it has held.
pub struct Ledger {
    store: Store,
    /// What the store held at start, until a new baseline is committed.
    status: StoreStatus,
    /// What loading the store repaired or converted.
    event: Option<StoreEvent>,
    /// The next commit's generation.
    next_generation: u64,
}

/// A baseline as the api is told of it.
pub fn summary(c: &Current) -> BaselineSummary {
    BaselineSummary {
        digest: c.digest.clone(),
        entries: u32::try_from(c.manifest.entries.len()).unwrap_or(u32::MAX),
        signed: c.manifest.is_signed(),
        created_at: c.manifest.created_at.clone(),
        generation: c.generation,
    }
}

impl Ledger {
    /// The ledger of `store` after loading found `loaded`, and the baseline to adopt, if any.
    pub fn new(store: Store, loaded: Loaded) -> (Ledger, Option<Current>) {
        let mut event = None;
        let (baseline, status, highest) = match loaded {
            Loaded::Empty => (None, StoreStatus::Empty, 0),
            Loaded::Adopted(current, repaired) => {
                if let Some(repaired) = repaired {
                    tracing::warn!(event = ?repaired, "baseline store converted or repaired");
                }
                event = repaired;
                let status = StoreStatus::Adopted(summary(&current));
                let generation = current.generation;
                (Some(*current), status, generation)
            }
            Loaded::Rejected { reason, highest } => {
                tracing::error!(reason, "stored baseline rejected");
                (None, StoreStatus::Rejected { reason }, highest)
            }
        };
        let ledger = Ledger {
            store,
            status,
            event,
            next_generation: highest.saturating_add(1),
        };
        (ledger, baseline)
    }

    /// The store itself.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// What the store held at start (or the baseline committed since).
    pub fn status(&self) -> &StoreStatus {
        &self.status
    }

    /// What loading repaired or converted, until a new baseline is committed.
    pub fn event(&self) -> Option<StoreEvent> {
        self.event
    }

    /// The generation the next commit takes.
    pub fn next_generation(&self) -> u64 {
        self.next_generation
    }

    /// Stores `manifest` (made with [`Ledger::next_generation`]) as the baseline; the old one
    /// stays when it cannot be stored.
    pub fn commit(
        &mut self,
        manifest: protocol::baseline::Manifest,
        key: Option<&[u8]>,
    ) -> Result<Current, StoreError> {
        let current = self.store.commit(manifest, key)?;
        self.next_generation = current
            .generation
            .max(self.next_generation)
            .saturating_add(1);
        self.status = StoreStatus::Adopted(summary(&current));
        self.event = None;
        Ok(current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_goes_past_every_generation_the_store_claimed_and_is_the_new_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let loaded = Loaded::Rejected {
            reason: "record names another baseline".into(),
            highest: 7,
        };
        let (mut ledger, baseline) = Ledger::new(store, loaded);
        assert!(baseline.is_none(), "nothing rejected is adopted");
        assert!(matches!(ledger.status(), StoreStatus::Rejected { .. }));
        assert_eq!(ledger.next_generation(), 8);
        let generation = ledger.next_generation();
        let manifest = protocol::baseline::Manifest::of_entries(
            "2026-12-06T00:00:00Z".into(),
            Some(generation),
            protocol::entries::Entries::default(),
            Some(&[1u8; 32]),
        );
        let current = ledger.commit(manifest, Some(&[1u8; 32])).expect("stored");
        assert_eq!(current.generation, 8);
        assert_eq!(ledger.next_generation(), 9);
        assert_eq!(ledger.status(), &StoreStatus::Adopted(summary(&current)));
        assert_eq!(ledger.event(), None);
        // What was stored loads back as the adopted baseline (the store stays locked for
        // the life of the process, as the hasher's does).
        match ledger.store().load(Some(&[1u8; 32])) {
            Loaded::Adopted(c, None) => assert_eq!((c.digest, c.generation), (current.digest, 8)),
            other => panic!("{other:?}"),
        }
    }
}
