//! The store's generation anchored in the TPM's NV counter, which only goes up: the signed
//! generation record pins the counter (its index, Name and `base`), and the counter must read
//! `base + generation`.
//!
//! Crash order. A commit reads the counter `c` (with the auth value: proof the key's holder
//! may count it), writes the store pinned so that its target is `c + 1` (fsync, rename,
//! fsync), then increments. At start, the counter at the target is as it should be; one below
//! it is a commit whose increment a crash cut off: the increment is finished; anything else,
//! a missing TPM or index, another index at the handle, or a record pinned while the policy
//! says `tpm: off`, rejects the store (`recovery_required`), naming the counter and the
//! generation: a rollback of the store caught whatever became of the audit log. A store not
//! pinned while the TPM holds the monitor's counter is rejected too (a store from before
//! enrolment put back).

use protocol::generation::TpmPin;
use protocol::standing::{Anchor as Kind, Guard};

use crate::error::StoreError;
use crate::storing::store::Store;
use crate::tpm::{Counter, Found};

/// The TPM as start-up found it.
#[derive(Debug)]
pub(crate) enum Tpm {
    /// `tpm: off`: never opened.
    Off,
    /// Not there (the device is missing or does not answer): why.
    Missing(String),
    /// Open, with the counter's handle and auth value.
    At(Counter),
}

/// The counter a store is anchored to, and what is known of it.
#[derive(Debug, Default)]
pub(crate) struct Anchor {
    counter: Option<Counter>,
    /// The counter's value, while it is known to match the store's pin.
    count: Option<u64>,
}

fn hex(bytes: &[u8]) -> String {
    protocol::hexfmt::encode(bytes)
}

impl Anchor {
    /// Checks the store's pin against the TPM at start (`generation`: the adopted baseline's,
    /// `None` when nothing was adopted). `Err` is why the store is rejected.
    pub(crate) fn check(
        tpm: Tpm,
        store: &Store,
        generation: Option<u64>,
    ) -> (Anchor, Result<(), String>) {
        let pin = store.pin();
        let (mut counter, absent) = match tpm {
            Tpm::At(c) => (Some(c), None),
            Tpm::Off => (None, Some("the policy says tpm: off".to_owned())),
            Tpm::Missing(why) => (None, Some(why)),
        };
        let verdict = match (generation, pin, counter.as_mut()) {
            (None, _, _) => Ok(None),
            (Some(g), Some(pin), None) => Err(format!(
                "generation.json (generation {g}) is anchored to TPM NV counter 0x{:08x}, but {}: the counter cannot be checked, so the store is not trusted (re-enrol: docs/operations.md#the-tpm-counter)",
                pin.index,
                absent.unwrap_or_default()
            )),
            (Some(g), Some(pin), Some(c)) => pinned(c, &pin, g).map(Some),
            (Some(g), None, Some(c)) => unpinned(c, g).map(|()| None),
            (Some(_), None, None) => Ok(None),
        };
        let anchor = Anchor {
            count: verdict.clone().ok().flatten(),
            counter,
        };
        (anchor, verdict.map(drop))
    }

    /// Before a commit of `generation`: pins the store so that the counter's next value is
    /// its target (`true`: increment after the commit). Without a usable counter the store is
    /// unpinned (a new generation under `tpm: off`, or with no TPM or no enrolled index).
    pub(super) fn before_commit(
        &mut self,
        store: &Store,
        generation: u64,
    ) -> Result<bool, StoreError> {
        let Some(counter) = self.counter.as_mut() else {
            store.set_pin(None);
            return Ok(false);
        };
        let fail = |what: &str, e: &dyn std::fmt::Display| {
            StoreError::Tpm(format!(
                "NV counter 0x{:08x}: {what}: {e}; nothing was committed",
                counter_index(store)
            ))
        };
        // Known to match the pin since the last check: nothing to look at again.
        if let (Some(c), Some(pin)) = (self.count, store.pin()) {
            let base = c
                .checked_add(1)
                .and_then(|t| t.checked_sub(generation))
                .ok_or_else(|| fail("out of range", &c))?;
            store.set_pin(Some(TpmPin { base, ..pin }));
            self.count = None;
            return Ok(true);
        }
        let name = match counter.look().map_err(|e| fail("cannot look", &e))? {
            Found::Ours(name) => name,
            Found::Unwritten => {
                // Defined by tpm-enroll but never counted: its first increment.
                counter
                    .increment()
                    .map_err(|e| fail("first increment refused", &e))?;
                match counter.look().map_err(|e| fail("cannot look", &e))? {
                    Found::Ours(name) => name,
                    other => return Err(fail("not the monitor's", &format!("{other:?}"))),
                }
            }
            Found::Absent | Found::Foreign(_) => {
                store.set_pin(None);
                self.count = None;
                return Ok(false);
            }
        };
        let c = match self.count {
            Some(c) => c,
            None => counter
                .read()
                .map_err(|e| fail("cannot read it with this key's auth value", &e))?,
        };
        let base = c
            .checked_add(1)
            .and_then(|t| t.checked_sub(generation))
            .ok_or_else(|| fail("out of range", &c))?;
        store.set_pin(Some(TpmPin {
            index: counter.index(),
            name: hex(&name),
            base,
        }));
        self.count = None;
        Ok(true)
    }

    /// After a commit pinned by [`Anchor::before_commit`]: the increment. A failure leaves the
    /// counter one below the store's target, which the next start finishes (or rejects).
    pub(super) fn after_commit(&mut self, store: &Store) {
        let (Some(counter), Some(pin)) = (self.counter.as_mut(), store.pin()) else {
            return;
        };
        match counter.increment().and_then(|()| counter.read()) {
            Ok(c) => self.count = Some(c),
            Err(e) => {
                self.count = None;
                tracing::error!(index = format!("0x{:08x}", pin.index), error = %e, "the TPM counter could not be incremented after the commit: the next start finishes it or rejects the store");
            }
        }
    }

    /// What guards the baseline now.
    pub(crate) fn guard(&self) -> Guard {
        match (&self.counter, self.count) {
            (Some(c), Some(count)) => Guard {
                anchor: Kind::Tpm,
                tpm_index: Some(c.index()),
                tpm_counter: Some(count),
            },
            _ => Guard::default(),
        }
    }
}

fn counter_index(store: &Store) -> u32 {
    store.pin().map_or(crate::tpm::DEFAULT_INDEX, |p| p.index)
}

/// A pinned store at generation `g`: the counter's value when it matches (after finishing an
/// interrupted increment), or why the store is rejected.
fn pinned(c: &mut Counter, pin: &TpmPin, g: u64) -> Result<u64, String> {
    let at = format!(
        "TPM NV counter 0x{:08x} on {}",
        pin.index,
        c.device().display()
    );
    if pin.index != c.index() {
        return Err(format!(
            "generation.json is pinned to NV index 0x{:08x}, the hasher counts 0x{:08x}: re-enrol",
            pin.index,
            c.index()
        ));
    }
    match c.look() {
        Ok(Found::Ours(name)) if hex(&name) == pin.name => {}
        Ok(Found::Ours(name)) => return Err(format!("{at}: its Name {} is not the one generation.json pins ({}): another index was put at the handle", hex(&name), pin.name)),
        Ok(other) => return Err(format!("{at}: {} (generation.json pins it at generation {g}): a cleared TPM or a replaced board needs re-enrolment (docs/operations.md#the-tpm-counter)", describe(&other))),
        Err(e) => return Err(format!("{at}: cannot look: {e}")),
    }
    let count = c.read().map_err(|e| format!("{at}: cannot read: {e}"))?;
    let target = pin
        .target(g)
        .ok_or_else(|| format!("{at}: base out of range"))?;
    if count == target {
        return Ok(count);
    }
    if count.checked_add(1) == Some(target) {
        tracing::warn!(
            counter = count,
            target,
            generation = g,
            "a commit's increment was cut off: finishing it"
        );
        c.increment().map_err(|e| format!("{at} reads {count}, one below generation {g}'s {target}, and cannot be incremented: {e}"))?;
        return c.read().map_err(|e| format!("{at}: cannot read: {e}"));
    }
    Err(format!("{at} reads {count}, but the store's generation {g} needs {target} (base {}): the store was rolled back (with the audit log, if the api did not notice), or the counter moved outside the monitor", pin.base))
}

/// An adopted store with no pin at generation `g`: fine unless the TPM holds the monitor's
/// counter (then this store is older than its enrolment).
fn unpinned(c: &mut Counter, g: u64) -> Result<(), String> {
    match c.look() {
        Ok(found @ (Found::Ours(_) | Found::Unwritten)) => Err(format!(
            "the TPM holds this monitor's NV counter 0x{:08x} ({}), but generation.json (generation {g}) pins none: a store from before enrolment was put back, or tpm-enroll was not finished (run it again)",
            c.index(),
            describe(&found)
        )),
        Ok(Found::Foreign(why)) => {
            tracing::warn!(index = format!("0x{:08x}", c.index()), why, "another NV index sits at the monitor's handle: not anchored in the TPM");
            Ok(())
        }
        Ok(Found::Absent) => Ok(()),
        Err(e) => {
            tracing::warn!(error = %e, "the TPM does not answer: the store is not anchored in it");
            Ok(())
        }
    }
}

fn describe(found: &Found) -> String {
    match found {
        Found::Absent => "no index at that handle".to_owned(),
        Found::Foreign(why) => format!("another index at that handle: {why}"),
        Found::Unwritten => "defined, never counted".to_owned(),
        Found::Ours(name) => format!("Name {}", hex(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storing::ledger::Ledger;
    use crate::tpm::Device;
    use crate::tpm::Swtpm;
    use crate::tpm::DEFAULT_INDEX;
    use protocol::message::StoreStatus;

    const KEY: &[u8] = &[5u8; 32];

    fn tpm(swtpm: &Swtpm) -> Tpm {
        let device = Device::open(swtpm.socket()).expect("swtpm");
        Tpm::At(Counter::new(device, DEFAULT_INDEX, KEY))
    }

    /// A restart: the store's files in a fresh directory (the first one stays locked by this
    /// process), loaded, and checked against the TPM.
    fn restart(from: &std::path::Path, with: Tpm) -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in ["baseline.json", "generation.json"] {
            if from.join(name).exists() {
                std::fs::copy(from.join(name), dir.path().join(name)).expect("copy");
            }
        }
        let store = Store::open(dir.path()).expect("store");
        let loaded = store.load(Some(KEY));
        let (ledger, _) = Ledger::anchored(store, loaded, with);
        (dir, ledger)
    }

    fn commit(ledger: &mut Ledger) -> u64 {
        let generation = ledger.next_generation();
        let manifest = protocol::baseline::Manifest::of_entries(
            format!("2026-12-06T00:00:{generation:02}Z"),
            Some(generation),
            protocol::entries::Entries::default(),
            Some(KEY),
        );
        ledger.commit(manifest, None, Some(KEY)).expect("commit");
        generation
    }

    fn snapshot(from: &std::path::Path) -> tempfile::TempDir {
        let to = tempfile::tempdir().expect("tempdir");
        for name in ["baseline.json", "generation.json"] {
            std::fs::copy(from.join(name), to.path().join(name)).expect("copy");
        }
        to
    }

    fn rejected(ledger: &Ledger) -> String {
        match ledger.status() {
            StoreStatus::Rejected { reason, .. } => reason.clone(),
            other => panic!("not rejected: {other:?}"),
        }
    }

    /// Enrolled as tpm-enroll leaves it: defined and counted once.
    fn enrolled(swtpm: &Swtpm) {
        let Tpm::At(mut c) = tpm(swtpm) else { return };
        c.define().expect("define");
        c.increment().expect("increment");
    }

    #[test]
    fn store_and_audit_log_rolled_back_together_are_caught_by_the_counter() {
        let swtpm = Swtpm::start();
        enrolled(&swtpm);
        let dir = tempfile::tempdir().expect("tempdir");
        let (_d, mut ledger) = restart(dir.path(), tpm(&swtpm));
        assert_eq!(commit(&mut ledger), 1, "the first baseline is pinned");
        let pin = ledger.store().pin().expect("pinned");
        assert_eq!(ledger.guard().anchor, Kind::Tpm);
        assert_eq!(ledger.guard().tpm_counter, pin.target(1));
        let old = snapshot(ledger.store().dir());
        commit(&mut ledger);
        commit(&mut ledger);
        assert_eq!(ledger.guard().tpm_counter, pin.target(3));
        let now = snapshot(ledger.store().dir());
        drop(ledger);
        // A restart of the current store: adopted, the TPM the anchor.
        let (_d, ledger) = restart(now.path(), tpm(&swtpm));
        assert!(!ledger.rejected());
        assert_eq!(ledger.guard().tpm_counter, pin.target(3));
        drop(ledger);
        // The attack: generation 1's files put back, validly signed, with the api told
        // nothing (its audit log rolled back too: no Prior). The counter reads 2 past it.
        let (_d, ledger) = restart(old.path(), tpm(&swtpm));
        let why = rejected(&ledger);
        let count = pin.target(3).unwrap_or_default();
        assert!(why.contains("0x013f4d49"), "{why}");
        assert!(why.contains(&format!("reads {count}")), "{why}");
        assert!(why.contains("generation 1 needs"), "{why}");
        assert_eq!(ledger.guard().anchor, Kind::AuditLog, "not trusted");
    }

    #[test]
    fn a_crash_between_commit_and_increment_recovers_by_itself() {
        let swtpm = Swtpm::start();
        enrolled(&swtpm);
        let dir = tempfile::tempdir().expect("tempdir");
        let (_d, mut ledger) = restart(dir.path(), tpm(&swtpm));
        commit(&mut ledger);
        // Generation 2 committed as a commit does it, then the process dies before the
        // increment: the store is one ahead of the counter.
        let manifest = protocol::baseline::Manifest::of_entries(
            "2026-12-06T00:00:02Z".into(),
            Some(2),
            protocol::entries::Entries::default(),
            Some(KEY),
        );
        assert!(ledger.anchor.before_commit(&ledger.store, 2).expect("pins"));
        ledger
            .store()
            .commit(manifest, None, Some(KEY))
            .expect("store");
        let target = ledger.store().pin().and_then(|p| p.target(2));
        let cut = snapshot(ledger.store().dir());
        drop(ledger);
        let (_d, ledger) = restart(cut.path(), tpm(&swtpm));
        assert!(!ledger.rejected(), "{:?}", ledger.status());
        assert_eq!(ledger.guard().tpm_counter, target, "the increment finished");
        drop(ledger);
        // And once finished, the same store starts as it should; it is not finished twice.
        let (_d, ledger) = restart(cut.path(), tpm(&swtpm));
        assert_eq!(ledger.guard().tpm_counter, target);
    }

    #[test]
    fn a_pinned_store_without_its_tpm_or_counter_is_rejected_even_under_auto() {
        let swtpm = Swtpm::start();
        enrolled(&swtpm);
        let dir = tempfile::tempdir().expect("tempdir");
        let (_d, mut ledger) = restart(dir.path(), tpm(&swtpm));
        commit(&mut ledger);
        let pinned = snapshot(ledger.store().dir());
        drop(ledger);
        // /dev/tpmrm0 hidden (auto finds none), or the policy edited to tpm: off.
        for (with, said) in [
            (Tpm::Missing("/dev/tpmrm0: not found".into()), "not found"),
            (Tpm::Off, "tpm: off"),
        ] {
            let (_d, ledger) = restart(pinned.path(), with);
            let why = rejected(&ledger);
            assert!(why.contains(said) && why.contains("0x013f4d49"), "{why}");
        }
        // The index removed (a cleared TPM) or swapped for an ordinary one root can write.
        let Tpm::At(mut c) = tpm(&swtpm) else { return };
        c.undefine().expect("undefine");
        drop(c);
        let (_d, ledger) = restart(pinned.path(), tpm(&swtpm));
        assert!(rejected(&ledger).contains("no index at that handle"));
        drop(ledger);
        let Tpm::At(mut c) = tpm(&swtpm) else { return };
        let mut ordinary = crate::tpm::NvPublic::counter(DEFAULT_INDEX);
        ordinary.attributes = crate::tpm::attr::AUTHWRITE | crate::tpm::attr::OWNERREAD;
        c.raw(&crate::tpm::define_space(&ordinary, b"root"))
            .expect("define");
        drop(c);
        let (_d, ledger) = restart(pinned.path(), tpm(&swtpm));
        assert!(rejected(&ledger).contains("another index at that handle"));
    }

    #[test]
    fn a_store_from_before_enrolment_put_back_is_rejected() {
        let swtpm = Swtpm::start();
        let dir = tempfile::tempdir().expect("tempdir");
        // Not enrolled: commits are not pinned, the audit log is the anchor.
        let (_d, mut ledger) = restart(dir.path(), tpm(&swtpm));
        commit(&mut ledger);
        assert_eq!(ledger.store().pin(), None);
        assert_eq!(ledger.guard().anchor, Kind::AuditLog);
        let before = snapshot(ledger.store().dir());
        drop(ledger);
        enrolled(&swtpm);
        let (_d, ledger) = restart(before.path(), tpm(&swtpm));
        let why = rejected(&ledger);
        assert!(why.contains("pins none"), "{why}");
        // Without a TPM the unpinned store is what it always was.
        let (_d, ledger) = restart(before.path(), Tpm::Missing("none".into()));
        assert!(!ledger.rejected());
    }
}
