//! The verifier: the policy in force, the adopted baseline, the file memory and the sweeps,
//! owned in one place; the server hands it requests and the time between them and touches
//! none of its parts. Its work lives beside what it does: full sweeps and new baselines in
//! `scan`, checks of named paths in `rescan`, the slices of the spread sweep in `spread`,
//! taking in changes and settle reads in `settle`; here, its life (made, adopting a
//! baseline, reloaded) and keeping its file memory for a restart.

use std::collections::HashSet;
use std::path::PathBuf;
use std::time::Instant;

use crate::policy::Policy;
use crate::storing::{Current, Store};
use crate::verifying::cycle::Cycle;
use crate::verifying::hashing::FileHasher;
use crate::verifying::slots::Slot;
use crate::verifying::sweep::Sweep;

/// What decides whether the files are the ones the baseline names.
pub struct Verifier {
    /// The policy in force.
    pub(super) policy: Policy,
    /// What sweeps compare with: the adopted baseline, or a reference while the store is
    /// rejected (`adopted` false).
    pub(super) baseline: Option<Current>,
    /// Whether `baseline` is the adopted one (not a reference).
    adopted: bool,
    /// The file memory: what was read, and when each file falls due again.
    pub(super) hasher: FileHasher,
    /// The last report's sequence number.
    pub(super) seq: u64,
    /// The last full sweep's findings, brought up to date by each scan of the changes.
    pub(super) sweep: Option<Sweep>,
    /// Paths the kernel named since the last scan, and whether they are all that changed.
    pub(super) named: HashSet<PathBuf>,
    pub(super) named_complete: bool,
    /// The sweep spread over the interval, and when its next slice is due.
    pub(super) cycle: Option<Cycle>,
    pub(super) next_slice: Instant,
    /// When the file memory was last kept, and the bytes read by then.
    kept_at: Option<(Instant, u64)>,
}

/// Where the file memory is kept for a restart: the store, the key its side files are signed
/// with, and the boot it belongs to (versions are kept only within one boot).
#[derive(Clone, Copy)]
pub struct Keeping<'a> {
    /// The baseline store.
    pub(crate) store: &'a Store,
    /// The HMAC key.
    pub(crate) key: &'a [u8],
    /// This boot's id, if known.
    pub(crate) boot: Option<&'a str>,
}

impl Verifier {
    /// A verifier for `policy` and the baseline loaded at start, recalling what the store
    /// remembers of it (`keeping`: with a key only); its reads are handed `reads`.
    pub fn new(
        policy: Policy,
        baseline: Option<Current>,
        keeping: Option<Keeping>,
        reads: crate::reading::ReadContext,
    ) -> Verifier {
        let mut hasher = FileHasher::for_policy(&policy, reads);
        if let Some(k) = keeping {
            hasher.key_versions(k.key);
        }
        if let (Some(k), Some(current)) = (keeping, &baseline) {
            if let Some(boot) = k.boot {
                crate::verifying::remember::recall(k.store, k.key, boot, current, &mut hasher);
            }
            crate::verifying::chunkstore::recall(k.store, k.key, current, &mut hasher);
            hasher.take_chunks_learned();
            crate::verifying::sealstore::recall(k.store, k.key, current, &mut hasher);
        }
        Verifier {
            policy,
            adopted: baseline.is_some(),
            baseline,
            hasher,
            seq: 0,
            sweep: None,
            named: HashSet::new(),
            named_complete: false,
            cycle: None,
            next_slice: Instant::now(),
            kept_at: None,
        }
    }

    /// Long reads arm the running sentinel with `arm`.
    pub(crate) fn arm_with(&mut self, arm: crate::live::Arm) {
        self.hasher.arm = arm;
    }

    /// The policy in force.
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The adopted baseline, if any.
    pub(crate) fn baseline(&self) -> Option<&Current> {
        self.baseline.as_ref().filter(|_| self.adopted)
    }

    /// Takes the kernel's writeback window read at start: the settle window where the policy
    /// sets none.
    pub(crate) fn set_kernel_window(&mut self, window: std::time::Duration) {
        self.hasher.settling.set_kernel_window(window);
        self.hasher.apply(&self.policy);
    }

    /// Watched files with several links to watch themselves, found since the last call.
    pub(crate) fn take_linked(&mut self) -> Vec<std::path::PathBuf> {
        self.hasher.links.take_wanted()
    }

    /// The watcher could not watch these linked files: they are read at every sweep.
    pub(crate) fn linked_unwatched(&mut self, files: Vec<std::path::PathBuf>) {
        self.hasher.links.refused(files);
    }

    /// The kernel's writeback window read at start.
    pub(crate) fn kernel_window(&self) -> std::time::Duration {
        self.hasher.settling.kernel_window()
    }

    /// Names the OS release recorded in force with the adopted baseline.
    pub(crate) fn name_release(&mut self, release: Option<String>) {
        if let (Some(b), true) = (&mut self.baseline, self.adopted) {
            b.release = release;
        }
    }

    /// What sweeps compare with while the store is rejected: `reference` (see
    /// `verifying::reference`), or nothing. The baseline loaded at start, if any, is no
    /// longer in force.
    pub(crate) fn refer(&mut self, reference: Option<Current>) {
        if let Some(r) = &reference {
            self.hasher.adopt(&r.digest, Vec::new());
        }
        self.baseline = reference;
        self.adopted = false;
        self.sweep = None;
        self.cycle = None;
        self.kept_at = None;
    }

    /// Adopts a baseline just made and stored; `slots` (from [`Verifier::make_baseline`])
    /// are what was read to make it, standing for the first sweep against it.
    pub fn adopt(&mut self, current: Current, slots: Vec<Slot>) {
        self.hasher.adopt(&current.digest, slots);
        // The seal bindings are kept anew under the new baseline's digest.
        self.hasher.seals.touch();
        self.baseline = Some(current);
        self.adopted = true;
        self.sweep = None;
        self.cycle = None;
        self.kept_at = None;
    }

    /// Puts a reloaded policy in force (the key path is the caller's to refuse changing).
    pub(crate) fn reload(&mut self, policy: Policy) {
        self.hasher.apply(&policy);
        self.hasher
            .seals
            .retain(|p| crate::verifying::paths::watches(&policy, p));
        self.hasher
            .settling
            .retain(|p| crate::verifying::paths::watches(&policy, p));
        // The server put a new watcher in place: linked files are watched anew.
        self.hasher.links.forget_all();
        self.policy = policy;
        // Findings against the old policy's watch set say nothing about the new one's.
        self.sweep = None;
        self.cycle = None;
    }

    /// Says in `report` how many changed files await their settle read and how many are
    /// proven by their seal.
    pub(crate) fn stamp(&self, report: &mut protocol::report::ScanReport) {
        report.unsettled = u32::try_from(self.hasher.settling.pending()).unwrap_or(u32::MAX);
        let sealed = u32::try_from(self.hasher.seals.in_force()).unwrap_or(u32::MAX);
        report.sealed_files = sealed.min(report.watched_files);
    }

    /// When the verifier next has work of its own: a settle read, or the next slice of the
    /// spread sweep while there is a sweep to keep.
    pub(crate) fn next_due(&self) -> Option<Instant> {
        let slice = self.sweep.as_ref().map(|_| self.next_slice);
        [self.hasher.settling.next_due(), slice]
            .into_iter()
            .flatten()
            .min()
    }

    /// Keeps what the file memory knows for a restart: at once the first time after a start
    /// or a new baseline, or when `now` (the api closed the channel), and after any check
    /// once [`crate::verifying::remember::SAVE_AFTER_BYTES`] were read since the last save;
    /// else at most every [`crate::verifying::remember::SAVE_EVERY`].
    pub(crate) fn keep(&mut self, keeping: Option<Keeping>, now: bool) {
        use crate::verifying::{chunkstore, remember, sealstore};
        // Nothing is kept under a reference: the store keeps only what belongs to a baseline.
        let (Some(k), Some(current), true) = (keeping, &self.baseline, self.adopted) else {
            return;
        };
        // Chunk digests and seal bindings describe content, not a boot: kept whenever new
        // ones were learned (a few large files: small and rare writes).
        if self.hasher.take_chunks_learned() {
            chunkstore::keep(k.store, k.key, current, &self.hasher);
        }
        if self.hasher.seals.take_changed() {
            sealstore::keep(k.store, k.key, current, &self.hasher);
        }
        let Some(boot) = k.boot else {
            return;
        };
        let read = self.hasher.bytes_hashed;
        if !now
            && self.kept_at.is_some_and(|(t, bytes)| {
                t.elapsed() < remember::SAVE_EVERY
                    && read.saturating_sub(bytes) < remember::SAVE_AFTER_BYTES
            })
        {
            return;
        }
        remember::keep(k.store, k.key, boot, current, &self.hasher);
        self.kept_at = Some((Instant::now(), read));
    }
}

#[cfg(test)]
impl Verifier {
    /// A verifier with no store and no key, the policy in force.
    pub(crate) fn bare(policy: Policy) -> Verifier {
        Verifier::new(policy, None, None, Default::default())
    }

    /// Takes `manifest` as the adopted baseline, as if stored with `digest`, keeping what the
    /// file memory holds (a sweep against another digest finds no slot bound to it).
    pub(crate) fn adopt_as(&mut self, manifest: protocol::baseline::Manifest, digest: &str) {
        self.baseline = Some(Current {
            manifest,
            len: 0,
            digest: digest.to_owned(),
            generation: 1,
            release: None,
        });
        self.adopted = true;
        self.sweep = None;
        self.cycle = None;
    }

    /// A fresh verifier's full sweep of `manifest` under `policy`: every file read.
    pub(crate) fn fresh_sweep(
        policy: &Policy,
        manifest: &protocol::baseline::Manifest,
        digest: &str,
    ) -> protocol::report::ScanReport {
        let mut v = Verifier::bare(policy.clone());
        v.adopt_as(manifest.clone(), digest);
        v.sweep_all(false).expect("a baseline is adopted")
    }

    /// A new baseline of `policy`'s files made by a fresh verifier.
    pub(crate) fn fresh_baseline(
        policy: &Policy,
    ) -> Result<protocol::baseline::Manifest, crate::error::BaselineRefused> {
        Verifier::bare(policy.clone())
            .make_baseline(None, 1)
            .map(|(m, _)| m)
    }
}
