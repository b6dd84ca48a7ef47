//! A write must reach the api (`/verify` 503) within milliseconds whatever the server is
//! doing, but a request may keep the server busy for a minute: a scan that reads a 70 GB
//! model, a rebaseline. While a request is answered, a sentinel thread keeps reading the
//! watcher: the first change that matters is announced at once (one notice per request), and
//! what it drained waits for the server, which takes it in before it answers anything else
//! (so the scan the notice asks for reads those paths again).

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use protocol::message::Response;

use crate::live::channel::Sender;
use crate::live::watch::{Changes, Watcher};

/// How long one look at the watcher lasts before the sentinel checks the request is still
/// being answered (a change wakes it at once; this only bounds how long it outlives one).
const LOOK: Duration = Duration::from_millis(50);

/// What a read long enough to matter (a large file) arms: the running sentinel, handed out by
/// [`Sentinel::start`] (the default arms nothing: no sentinel, or a unit test). If no request
/// is being answered (a slice of the spread sweep), the sentinel watches until the server is
/// idle again. Slices do not arm it themselves: most take well under a millisecond, and waking
/// a thread for each would cost more than they do.
#[derive(Clone, Default)]
pub(crate) struct Arm(Weak<Shared>);

impl Arm {
    /// A long read began.
    pub(crate) fn long_read(&self) {
        let Some(shared) = self.0.upgrade() else {
            return;
        };
        let mut state = lock(&shared.state);
        if !state.busy {
            state.busy = true;
            state.request = false;
            state.announced = false;
            shared.wake.notify_one();
        }
    }
}

/// The watcher, shared between the server and its sentinel.
pub(crate) struct Sentinel {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
    watcher: Mutex<Option<Watcher>>,
}

#[derive(Default)]
struct State {
    /// A request is being answered, or a long read outside one is under way.
    busy: bool,
    /// It is a request: its answer will not cover what the sentinel announces meanwhile.
    request: bool,
    /// This request's notice went out.
    announced: bool,
    /// What the sentinel drained, for the server to take in.
    drained: Option<Changes>,
    closed: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Sentinel {
    /// Holds `watcher` (`None`: no inotify; changes wait for the periodic scan).
    pub(crate) fn new(watcher: Option<Watcher>) -> Sentinel {
        Sentinel {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                watcher: Mutex::new(watcher),
            }),
        }
    }

    /// Starts the thread that announces changes through `sender` while a request is answered;
    /// what long reads outside a request arm it with.
    pub(crate) fn start(&self, sender: Sender) -> std::io::Result<Arm> {
        let shared = Arc::clone(&self.shared);
        // Unnamed: naming a thread is a prctl the seccomp filter does not allow.
        std::thread::Builder::new()
            .spawn(move || run(&shared, &sender))
            .map(|_| Arm(Arc::downgrade(&self.shared)))
    }

    /// Whether there is a watcher.
    pub(crate) fn watching(&self) -> bool {
        lock(&self.shared.watcher).is_some()
    }

    /// Whether every directory that should be watched is ([`Watcher::complete`]).
    pub(crate) fn complete(&self) -> bool {
        lock(&self.shared.watcher)
            .as_ref()
            .is_some_and(Watcher::complete)
    }

    /// Puts `watcher` in place of the current one (a reload).
    pub(crate) fn replace(&self, watcher: Option<Watcher>) {
        *lock(&self.shared.watcher) = watcher;
    }

    /// The inotify instance to poll, if there is a watcher.
    pub(crate) fn inotify(&self) -> Option<Arc<nix::sys::inotify::Inotify>> {
        lock(&self.shared.watcher).as_ref().map(Watcher::shared)
    }

    /// Watches `files` themselves ([`Watcher::watch_files`]); those it could not (none
    /// without a watcher: then the sweeps alone see changes).
    pub(crate) fn watch_files(&self, files: Vec<std::path::PathBuf>) -> Vec<std::path::PathBuf> {
        lock(&self.shared.watcher)
            .as_mut()
            .map(|w| w.watch_files(files))
            .unwrap_or_default()
    }

    /// What is queued on the watcher now ([`Watcher::drain`]).
    pub(crate) fn drain(&self) -> Option<Changes> {
        lock(&self.shared.watcher).as_mut().map(Watcher::drain)
    }

    /// What the sentinel drained while a request was answered (its notice already went out).
    pub(crate) fn take_drained(&self) -> Option<Changes> {
        lock(&self.shared.state).drained.take()
    }

    /// A request is being answered: the sentinel watches.
    pub(crate) fn busy(&self) {
        let mut state = lock(&self.shared.state);
        state.busy = true;
        state.request = true;
        state.announced = false;
        self.shared.wake.notify_one();
    }

    /// The request (or the slice) is done: the server watches again.
    pub(crate) fn idle(&self) {
        lock(&self.shared.state).busy = false;
    }
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        lock(&self.shared.state).closed = true;
        self.shared.wake.notify_one();
    }
}

/// Whether `inotify` has events within `LOOK`.
fn readable(inotify: &nix::sys::inotify::Inotify) -> bool {
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
    let wait = PollTimeout::try_from(LOOK).unwrap_or(PollTimeout::ZERO);
    poll(&mut fds, wait).is_ok_and(|n| n > 0)
}

fn run(shared: &Shared, sender: &Sender) {
    let mut state = lock(&shared.state);
    loop {
        if state.closed {
            return;
        }
        let inotify = lock(&shared.watcher).as_ref().map(Watcher::shared);
        let (true, false, Some(inotify)) = (state.busy, state.announced, inotify) else {
            state = shared
                .wake
                .wait(state)
                .unwrap_or_else(PoisonError::into_inner);
            continue;
        };
        drop(state);
        let ready = readable(&inotify);
        state = lock(&shared.state);
        if !ready || !state.busy || state.announced {
            continue;
        }
        // Held under the state lock: the server cannot take the drained changes in, nor end
        // the request, between the drain and the notice.
        let Some(changes) = lock(&shared.watcher).as_mut().map(Watcher::drain) else {
            continue;
        };
        let (changed, overflow) = (changes.changed, changes.overflow);
        match state.drained.as_mut() {
            Some(d) => d.merge(changes),
            None => state.drained = Some(changes),
        }
        if changed > 0 || overflow {
            state.announced = true;
            let notice = Response::Notice {
                changed,
                overflow,
                during_request: state.request,
            };
            if let Err(e) = sender.send(0, &notice) {
                // The server sees the channel fail on its next send or receive.
                tracing::warn!(error = %e, "sentinel could not announce a change");
                return;
            }
            tracing::debug!(
                changed,
                overflow,
                "a watched path changed while a request was answered: announced at once"
            );
        }
    }
}
