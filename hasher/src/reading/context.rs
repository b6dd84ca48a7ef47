//! What every read is handed from outside its file, made once at start and handed down: the
//! read budget all reading threads share, the api's lifeline, and the secrets a read must never
//! give out. A unit test makes its own (`Default`: no limit, no channel, no secrets).

use std::sync::{Arc, Mutex};

use crate::reading::budget::Budget;
use crate::reading::lifeline::Lifeline;
use crate::reading::secrets::Secrets;

/// The read budget, the lifeline and the secrets, for every reading thread.
#[derive(Default)]
pub struct ReadContext {
    budget: Mutex<Budget>,
    /// The api's hang-up, looked at between buffers.
    pub(crate) lifeline: Lifeline,
    /// The secrets this process keeps.
    pub(crate) secrets: Arc<Secrets>,
}

impl ReadContext {
    /// Reads under no limit yet, stopped by `lifeline`, never giving out `secrets`.
    pub(crate) fn new(lifeline: Lifeline, secrets: Arc<Secrets>) -> ReadContext {
        ReadContext {
            budget: Mutex::new(Budget::new(None)),
            lifeline,
            secrets,
        }
    }

    /// Sets the read budget in bytes per second (`None`: unlimited).
    pub(crate) fn set_limit(&mut self, limit: Option<u64>) {
        self.budget = Mutex::new(Budget::new(limit));
    }

    /// Accounts `n` bytes against the shared budget, pausing the reader when it is spent (a
    /// pause the api's hang-up cuts short).
    pub(crate) fn throttle(&self, n: u64) {
        // A poisoned lock only means another reader panicked mid-accounting; the count is still usable.
        let pause = self
            .budget
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .spend(n);
        if !pause.is_zero() {
            self.lifeline.sleep(pause);
        }
    }
}
