//! The baseline's life as the store records it: what loading found (to tell the api at
//! hello), what it repaired, and the generation the next commit takes, always past every
//! generation either store file ever claimed.

use protocol::message::{BaselineSummary, StoreEvent, StoreStatus};
use protocol::standing::{Prior, Reference, MAX_GENERATION};

use crate::error::StoreError;
use crate::storing::anchor::{Anchor, Tpm};
use crate::storing::store::{Current, Loaded, Store};

/// The store and what it has held.
pub(crate) struct Ledger {
    pub(crate) store: Store,
    /// What the store held at start, until a new baseline is committed.
    status: StoreStatus,
    /// What loading the store repaired or converted.
    event: Option<StoreEvent>,
    /// The next commit's generation.
    next_generation: u64,
    /// The TPM counter the store is anchored to, if any.
    pub(crate) anchor: Anchor,
}

/// A baseline as the api is told of it.
pub(crate) fn summary(c: &Current, rollback: protocol::standing::Guard) -> BaselineSummary {
    BaselineSummary {
        digest: c.digest.clone(),
        entries: u32::try_from(c.manifest.entries.len()).unwrap_or(u32::MAX),
        signed: c.manifest.is_signed(),
        created_at: c.manifest.created_at.clone(),
        generation: c.generation,
        release: None,
        rollback,
    }
}

impl Ledger {
    /// The ledger of `store` after loading found `loaded`, and the baseline to adopt, if any,
    /// with no TPM (`tpm: off`).
    #[cfg(test)]
    pub(crate) fn new(store: Store, loaded: Loaded) -> (Ledger, Option<Current>) {
        Ledger::anchored(store, loaded, Tpm::Off)
    }

    /// As the tests' `Ledger::new`, the store's generation checked against the TPM's counter: a store
    /// the counter says was rolled back is rejected.
    pub(crate) fn anchored(store: Store, loaded: Loaded, tpm: Tpm) -> (Ledger, Option<Current>) {
        let generation = match &loaded {
            Loaded::Adopted(current, _) => Some(current.generation),
            Loaded::Empty | Loaded::Rejected { .. } => None,
        };
        let (anchor, verdict) = Anchor::check(tpm, &store, generation);
        let loaded = match verdict {
            Ok(()) => loaded,
            Err(reason) => Loaded::Rejected {
                reason,
                highest: generation.unwrap_or(0),
            },
        };
        let (mut ledger, baseline) = Ledger::loaded(store, loaded);
        ledger.anchor = anchor;
        if let StoreStatus::Adopted(s) = &mut ledger.status {
            s.rollback = ledger.anchor.guard();
        }
        (ledger, baseline)
    }

    fn loaded(store: Store, loaded: Loaded) -> (Ledger, Option<Current>) {
        let mut event = None;
        let (baseline, status, highest) = match loaded {
            Loaded::Empty => (None, StoreStatus::Empty, 0),
            Loaded::Adopted(current, repaired) => {
                if let Some(repaired) = repaired {
                    tracing::warn!(event = ?repaired, "baseline store converted or repaired");
                }
                event = repaired;
                let status = StoreStatus::Adopted(summary(&current, Default::default()));
                let generation = current.generation;
                (Some(*current), status, generation)
            }
            Loaded::Rejected { reason, highest } => {
                tracing::error!(reason, "stored baseline rejected");
                (
                    None,
                    StoreStatus::Rejected {
                        reason,
                        reference: None,
                    },
                    highest,
                )
            }
        };
        let ledger = Ledger {
            store,
            status,
            event,
            next_generation: highest.saturating_add(1),
            anchor: Anchor::default(),
        };
        (ledger, baseline)
    }

    /// Holds the store to what the api remembers (`prior`, checked for form by the caller):
    /// no commit takes a generation at or below the remembered one, and a store that rolls
    /// it back (older, another at the same generation, emptied) is rejected. Returns the
    /// reason when this rejected it. The api may be compromised: all it can do with this is
    /// make the hasher trust less, or skip generations.
    pub(crate) fn hold_to(&mut self, prior: &Prior) -> Option<String> {
        // At most the bound less one, so the next commit is still within it.
        let remembered = prior.generation().min(MAX_GENERATION - 1);
        self.next_generation = self.next_generation.max(remembered.saturating_add(1));
        let why = self.status.rolls_back(prior)?;
        tracing::error!(
            reason = why,
            "the store rolls back what the api remembers: rejected"
        );
        self.status = StoreStatus::Rejected {
            reason: why.clone(),
            reference: None,
        };
        self.event = None;
        Some(why)
    }

    /// Says what scans compare with while the store is rejected.
    pub(crate) fn refer(&mut self, to: Reference) {
        if let StoreStatus::Rejected { reference, .. } = &mut self.status {
            *reference = Some(to);
        }
    }

    /// Whether the store's baseline is rejected.
    pub(crate) fn rejected(&self) -> bool {
        matches!(self.status, StoreStatus::Rejected { .. })
    }

    /// What guards the baseline against a rollback now.
    pub(crate) fn guard(&self) -> protocol::standing::Guard {
        self.anchor.guard()
    }

    /// The store itself.
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// What the store held at start (or the baseline committed since).
    pub(crate) fn status(&self) -> &StoreStatus {
        &self.status
    }

    /// What loading repaired or converted, until a new baseline is committed.
    pub(crate) fn event(&self) -> Option<StoreEvent> {
        self.event
    }

    /// The generation the next commit takes.
    pub(crate) fn next_generation(&self) -> u64 {
        self.next_generation
    }

    /// Stores `manifest` (made with [`Ledger::next_generation`]) as the baseline; the old one
    /// stays when it cannot be stored.
    pub fn commit(
        &mut self,
        manifest: protocol::baseline::Manifest,
        release: Option<String>,
        key: Option<&[u8]>,
    ) -> Result<Current, StoreError> {
        if manifest.generation.is_some_and(|g| g > MAX_GENERATION) {
            return Err(StoreError::GenerationsExhausted {
                max: MAX_GENERATION,
            });
        }
        let generation = manifest.generation.unwrap_or(0);
        let count = self.anchor.before_commit(&self.store, generation)?;
        let current = self.store.commit(manifest, release, key)?;
        if count {
            self.anchor.after_commit(&self.store);
        }
        self.next_generation = current
            .generation
            .max(self.next_generation)
            .saturating_add(1);
        self.status = StoreStatus::Adopted(summary(&current, self.anchor.guard()));
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
        // The api remembering less changes nothing; remembering more lifts the next commit.
        assert_eq!(ledger.hold_to(&Prior::Nothing), None);
        assert_eq!(ledger.next_generation(), 8);
        let digest = "d".repeat(64);
        let prior = |generation| Prior::Adopted {
            generation,
            digest: digest.clone(),
        };
        assert_eq!(ledger.hold_to(&prior(5)), None, "already rejected");
        assert_eq!(ledger.next_generation(), 8);
        ledger.hold_to(&prior(11));
        assert_eq!(ledger.next_generation(), 12);
        ledger.hold_to(&prior(u64::MAX));
        assert_eq!(ledger.next_generation(), MAX_GENERATION, "bounded");
        ledger.next_generation = 8;
        let generation = ledger.next_generation();
        let manifest = protocol::baseline::Manifest::of_entries(
            "2026-12-06T00:00:00Z".into(),
            Some(generation),
            protocol::entries::Entries::default(),
            Some(&[1u8; 32]),
        );
        let current = ledger
            .commit(manifest, None, Some(&[1u8; 32]))
            .expect("stored");
        assert_eq!(current.generation, 8);
        assert_eq!(ledger.next_generation(), 9);
        assert_eq!(
            ledger.status(),
            &StoreStatus::Adopted(summary(&current, Default::default()))
        );
        assert_eq!(ledger.event(), None);
        // What was stored loads back as the adopted baseline (the store stays locked for
        // the life of the process, as the hasher's does).
        match ledger.store().load(Some(&[1u8; 32])) {
            Loaded::Adopted(c, None) => assert_eq!((c.digest, c.generation), (current.digest, 8)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_store_older_than_the_api_remembers_or_emptied_is_rejected_and_committed_past() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = [1u8; 32];
        let store = Store::open(dir.path()).expect("store");
        let manifest = |generation| {
            protocol::baseline::Manifest::of_entries(
                "2026-12-06T00:00:00Z".into(),
                Some(generation),
                protocol::entries::Entries::default(),
                Some(&key),
            )
        };
        let one = store.commit(manifest(1), None, Some(&key)).expect("stored");
        let (mut ledger, baseline) =
            Ledger::new(store, Loaded::Adopted(Box::new(one.clone()), None));
        assert!(baseline.is_some());
        let remembered = Prior::Adopted {
            generation: 4,
            digest: "e".repeat(64),
        };
        let why = ledger.hold_to(&remembered).expect("a rollback");
        assert!(why.contains("older than generation 4"), "{why}");
        assert!(ledger.rejected());
        assert_eq!(
            ledger.next_generation(),
            5,
            "past what the api saw, not the store"
        );
        let current = ledger
            .commit(manifest(ledger.next_generation()), None, Some(&key))
            .expect("stored");
        assert_eq!(current.generation, 5);
        assert!(!ledger.rejected());

        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let (mut ledger, _) = Ledger::new(store, Loaded::Empty);
        let trace = Prior::Trace {
            what: "a rotated audit log".into(),
        };
        assert!(
            ledger.hold_to(&trace).is_some(),
            "emptied after rotation: no first start"
        );
        assert!(ledger.rejected());
        assert_eq!(ledger.next_generation(), 1);
    }
}
