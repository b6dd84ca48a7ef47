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
use crate::tpm::counter::{Counter, Found};

/// The TPM as start-up found it.
#[derive(Debug)]
pub enum Tpm {
    /// `tpm: off`: never opened.
    Off,
    /// Not there (the device is missing or does not answer): why.
    Missing(String),
    /// Open, with the counter's handle and auth value.
    At(Counter),
}

/// The counter a store is anchored to, and what is known of it.
#[derive(Debug, Default)]
pub struct Anchor {
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
    pub fn check(tpm: Tpm, store: &Store, generation: Option<u64>) -> (Anchor, Result<(), String>) {
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
    pub fn before_commit(&mut self, store: &Store, generation: u64) -> Result<bool, StoreError> {
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
    pub fn after_commit(&mut self, store: &Store) {
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
    pub fn guard(&self) -> Guard {
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
    store
        .pin()
        .map_or(crate::tpm::counter::DEFAULT_INDEX, |p| p.index)
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
