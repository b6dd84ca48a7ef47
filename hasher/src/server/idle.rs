//! Between requests: what the watcher and the sentinel drained goes to the verifier and, as
//! a notice (`notices`), to the api; the verifier's own work (settle reads, the spread
//! sweep's slices) runs when due, and its file memory is kept for a restart.

use super::*;

/// `wait`, or the time left until `at` when that is sooner. Rounded up: poll counts whole
/// milliseconds, and a wait cut short to 0 ms would spin until `at`.
fn sooner(wait: nix::poll::PollTimeout, at: std::time::Instant) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    let left = at.saturating_duration_since(std::time::Instant::now())
        + std::time::Duration::from_micros(999);
    let until = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
    if wait == PollTimeout::NONE {
        until
    } else {
        wait.min(until)
    }
}

impl Server {
    /// Waits for the channel or the watcher. Watched-path changes are announced to the api
    /// with an unsolicited `Notice` (id 0); returns true once a request is waiting.
    pub(super) fn wait_for_request(&mut self, channel: &Channel) -> Result<bool, ChannelError> {
        use nix::poll::{poll, PollFd, PollFlags};
        self.watch_linked();
        let wait = self.poll_timeout();
        let Some(inotify) = self.sentinel.inotify() else {
            return Ok(true);
        };
        let (chan_ready, watch_ready, clock_ready) = {
            use std::os::fd::AsFd;
            let mut fds = vec![
                PollFd::new(channel.fd(), PollFlags::POLLIN),
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            ];
            if let Some(clock) = &self.clock {
                fds.push(PollFd::new(clock.fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(false),
                Err(e) => return Err(ChannelError::Poll(e)),
            }
            let ready =
                |f: Option<&PollFd<'_>>| f.and_then(PollFd::revents).is_some_and(|r| !r.is_empty());
            (ready(fds.first()), ready(fds.get(1)), ready(fds.get(2)))
        };
        if clock_ready && self.clock.as_ref().is_some_and(|c| c.stepped()) {
            // Everything remembered may be forged by a write stamped at a remembered ctime:
            // read every file again, proving each, as after lost events.
            tracing::warn!("the wall clock was stepped: every file is read again");
            self.v.forget_everything();
            // Announced as lost events are: the api scans, and the scan sweeps everything.
            self.notices.hold(0, true);
        }
        if watch_ready {
            if let Some(changes) = self.sentinel.drain() {
                self.absorb(changes, true);
            }
        }
        self.take_announced();
        self.settle_reads();
        if self.lifeline.cut() {
            return Ok(false);
        }
        // At most one notice per NOTICE_GAP: a file written without pause makes the api scan
        // a few times a second, not back to back.
        self.notices.send_when_due(channel)?;
        // A slice may read a large file for seconds: a notice held back goes out first (the
        // poll wakes when it may), and such a read arms the sentinel (`sentinel::Arm`).
        if self.v.slice_due() && !self.notices.holding() {
            self.run_slice();
            self.sentinel.idle();
            self.take_announced();
            self.v.schedule_slice();
        }
        Ok(chan_ready)
    }

    /// Watched files the last checks found with several links are watched themselves (see
    /// `hashing::links`).
    pub(super) fn watch_linked(&mut self) {
        let wanted = self.v.take_linked();
        if !wanted.is_empty() {
            let refused = self.sentinel.watch_files(wanted);
            self.v.linked_unwatched(refused);
        }
    }

    /// Settle reads due now (`Verifier::settle`), announced so the api's next report says they
    /// are proven (or what they now hold).
    pub(super) fn settle_reads(&mut self) {
        if self.v.settle() {
            self.notices.hold(1, false);
        }
    }

    /// Takes in what the sentinel drained (its notice went out already) before any request,
    /// so the scan the notice asks for reads those paths again.
    pub(super) fn take_announced(&mut self) {
        if let Some(changes) = self.sentinel.take_drained() {
            self.absorb(changes, false);
        }
    }

    /// How long to wait for the channel or the watcher: until a notice held back (see
    /// NOTICE_GAP) may go out, or the verifier's next work of its own is due.
    pub(super) fn poll_timeout(&self) -> nix::poll::PollTimeout {
        [self.notices.due(), self.v.next_due()]
            .into_iter()
            .flatten()
            .fold(nix::poll::PollTimeout::NONE, sooner)
    }

    /// Takes in what the watcher drained: paths to read again, what the next check of the
    /// changes covers (`Verifier::absorb`), and (unless the sentinel sent it) the notice to send.
    pub(super) fn absorb(&mut self, changes: crate::live::Changes, announce: bool) {
        self.v.absorb(&changes);
        if announce && (changes.changed > 0 || changes.overflow) {
            self.notices.hold(changes.changed, changes.overflow);
        }
    }

    /// One slice of the spread sweep (`Verifier::slice`); a finding it adds or clears is
    /// announced like a change.
    pub(super) fn run_slice(&mut self) {
        if self.v.slice() {
            self.notices.hold(1, false);
        }
        if self.lifeline.cut() {
            return;
        }
        // After a completed cycle, or a slice that read much (the backstop); throttled.
        self.keep_versions();
    }

    /// Keeps what the file memory knows for a restart when it is time (`Verifier::keep`).
    pub(super) fn keep_versions(&mut self) {
        self.v.keep(
            keeping(self.ledger.store(), &self.key, &self.boot_id),
            false,
        );
    }
}
