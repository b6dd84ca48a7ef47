//! Change notices to the api, throttled: changes are held and go out at most one notice per
//! [`NOTICE_GAP`], each saying how many changes it covers and whether events were lost.

use std::time::{Duration, Instant};

use protocol::message::Response;

use crate::error::ChannelError;
use crate::live::Channel;

/// Shortest time between two change notices to the api. Each notice makes the api 503 at once
/// and ask for a check of the named paths, which costs what the change costs (a small file:
/// about a millisecond), so the gap only bounds a file written without pause to 20 checks a
/// second; it also bounds how long a second write waits to be announced.
pub(super) const NOTICE_GAP: Duration = Duration::from_millis(50);

/// Changes not announced yet, and when the last notice went out.
#[derive(Debug, Default)]
pub(super) struct Notices {
    /// Changes held (count, events lost).
    held: Option<(u32, bool)>,
    last: Option<Instant>,
}

impl Notices {
    /// Adds `changed` (and whether events were lost) to the notice not sent yet.
    pub(crate) fn hold(&mut self, changed: u32, overflow: bool) {
        let (n, o) = self.held.unwrap_or((0, false));
        self.held = Some((n.saturating_add(changed), o || overflow));
    }

    /// Whether changes are held, not yet announced.
    pub(crate) fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// When the held notice may go out: `None` when nothing is held.
    pub(crate) fn due(&self) -> Option<Instant> {
        self.held?;
        Some(
            self.last
                .map_or_else(Instant::now, |last| last + NOTICE_GAP),
        )
    }

    /// Sends the held notice when the gap since the last one has passed.
    pub(super) fn send_when_due(&mut self, channel: &Channel) -> Result<(), ChannelError> {
        if self.last.is_none_or(|t| t.elapsed() >= NOTICE_GAP) {
            self.send(channel)?;
        }
        Ok(())
    }

    /// Sends the held notice now, if there is one (a scan is about to cover those changes).
    pub(crate) fn send(&mut self, channel: &Channel) -> Result<(), ChannelError> {
        if let Some((changed, overflow)) = self.held.take() {
            tracing::debug!(changed, overflow, "watched paths changed");
            let notice = Response::Notice {
                changed,
                overflow,
                during_request: false,
            };
            channel.send(0, &notice).map_err(ChannelError::Io)?;
            self.last = Some(Instant::now());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_changes_add_up_and_are_due_a_gap_after_the_last_notice() {
        let mut n = Notices::default();
        assert_eq!(n.due(), None, "nothing held: nothing due");
        n.hold(2, false);
        n.hold(3, true);
        assert_eq!(n.held, Some((5, true)));
        assert!(
            n.due().is_some_and(|d| d <= Instant::now()),
            "first: at once"
        );
        let sent = Instant::now();
        n.last = Some(sent);
        assert_eq!(n.due(), Some(sent + NOTICE_GAP));
    }
}
