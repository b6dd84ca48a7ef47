//! The read budget every reading thread shares (`hash_rate_limit`), and the buffer size each
//! one reads with.

use std::time::{Duration, Instant};

/// Read buffer size: large enough for full SHA-NI speed, small enough to keep RSS flat.
pub(crate) const BUF_SIZE: usize = 256 * 1024;
/// A read budget in bytes per second shared by every reading thread.
#[derive(Debug, Default)]
pub(super) struct Budget {
    limit: Option<u64>,
    window: Option<(Instant, u64)>,
}

impl Budget {
    /// A budget of `limit` bytes per second (`None`: unlimited).
    pub(crate) fn new(limit: Option<u64>) -> Budget {
        Budget {
            limit: limit.filter(|l| *l > 0),
            window: None,
        }
    }

    /// Accounts `n` bytes read; returns how long the reader must pause to stay in budget.
    pub(crate) fn spend(&mut self, n: u64) -> Duration {
        let Some(limit) = self.limit else {
            return Duration::ZERO;
        };
        let (start, spent) = self.window.get_or_insert((Instant::now(), 0));
        *spent += n;
        let allowed = Duration::from_secs_f64(*spent as f64 / limit as f64);
        let elapsed = start.elapsed();
        if elapsed > Duration::from_secs(1) {
            self.window = None;
        }
        allowed.saturating_sub(elapsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_asks_for_a_pause_only_past_the_limit() {
        let mut b = Budget::new(Some(1024 * 1024));
        assert!(b.spend(1024) <= Duration::from_millis(1));
        assert!(b.spend(2 * 1024 * 1024) > Duration::from_millis(500));
        assert!(Budget::new(None).spend(u64::MAX / 2).is_zero());
    }
}
