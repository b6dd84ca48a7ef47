//! Keeping a hasher connected: each new link handed to the monitor, each loss recorded; a
//! socket-activated hasher is reconnected with backoff, a spawned one is not (the service
//! manager restarts the pair).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch, Notify};

use crate::error::ConnectError;
use crate::{link, monitor, notify, sys, verdict};

/// Where the hasher comes from.
pub(crate) enum Source {
    /// Spawned by this process: one channel, no second chance.
    Spawned(Option<std::os::fd::OwnedFd>),
    /// A socket-activated hasher unit: reconnect with backoff whenever it goes away.
    Socket {
        path: PathBuf,
        peer_uid: Option<u32>,
    },
}

/// How the monitor ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `initialize-baseline` done; whether the first verdict was trusted.
    Initialized(bool),
    /// Stopped by a signal.
    Stopped,
    /// The hasher went away (spawned mode) or misbehaved.
    HasherLost,
    /// The hasher never completed the start-up.
    StartFailed,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Doubling pause between reconnection attempts, reset by a completed handshake.
struct Backoff(Duration);

impl Backoff {
    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(BACKOFF_MAX);
    }
}

/// Keeps a hasher connected until the end is decided; the outcome goes to `end`.
pub(crate) async fn supervise(
    mut source: Source,
    mut calls: mpsc::Receiver<link::Call>,
    monitor: Arc<monitor::Monitor>,
    end: watch::Sender<Option<Outcome>>,
    once: bool,
) {
    let mut backoff = Backoff(BACKOFF_MIN);
    let mut first = true;
    loop {
        let Some(fd) = next_channel(&mut source, &mut backoff).await else {
            let _ = end.send(Some(Outcome::HasherLost));
            return;
        };
        let link = match link::Link::new(fd, monitor.changes()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "hasher channel unusable");
                let _ = end.send(Some(Outcome::StartFailed));
                return;
            }
        };
        let cut = Arc::new(Notify::new());
        monitor.set_link_cutter(cut.clone());
        let mut task = tokio::spawn(link::run(link, calls, cut));
        // The handshake races the link: a hasher that dies before answering must not leave
        // the handshake waiting on a queue nobody reads.
        let handshake = monitor.connected(first);
        tokio::pin!(handshake);
        let (handshake, joined) = tokio::select! {
            r = &mut handshake => (Some(r), None),
            j = &mut task => (None, Some(j)),
        };
        let spawned = matches!(source, Source::Spawned(_));
        let first_failed = first && !matches!(handshake, Some(Ok(())));
        match handshake {
            Some(Ok(())) => {
                backoff = Backoff(BACKOFF_MIN);
                tracing::info!("hasher connected");
                if first && once {
                    let trusted = verdict::verdict(&monitor.snapshot()).is_ok();
                    let _ = end.send(Some(Outcome::Initialized(trusted)));
                    return;
                }
                if first {
                    notify::ready(&monitor);
                }
            }
            _ if first && spawned => {
                monitor.hasher_lost("hasher did not complete the start-up");
                let _ = end.send(Some(Outcome::StartFailed));
                return;
            }
            Some(Err(e)) => tracing::error!(error = %e, "hasher handshake failed"),
            None => tracing::error!("hasher went away during the handshake"),
        }
        first = false;
        let joined = match joined {
            Some(j) => j,
            None => task.await,
        };
        let Ok((mut rx, failure)) = joined else {
            return;
        };
        link::refuse_pending(&mut rx);
        calls = rx;
        let why = failure.map_or_else(|| "call queue closed".to_owned(), |e| e.to_string());
        monitor.hasher_lost(&why);
        if first_failed {
            // The first hasher refused to start (its key, say): requests held for the first
            // verdict get this one (503, hasher unavailable) instead of waiting out their hold.
            monitor.release_held();
        }
        if !spawned {
            backoff.wait().await;
        }
    }
}

/// The next channel to a hasher: the spawned one's (once), or a connection to the hasher
/// socket, retried with backoff until it succeeds.
async fn next_channel(source: &mut Source, backoff: &mut Backoff) -> Option<std::os::fd::OwnedFd> {
    match source {
        Source::Spawned(fd) => fd.take(),
        Source::Socket { path, peer_uid } => loop {
            match connect(path, *peer_uid) {
                Ok(fd) => return Some(fd),
                Err(e) => {
                    tracing::warn!(
                        error = %e,
                        retry_ms = u64::try_from(backoff.0.as_millis()).unwrap_or(u64::MAX),
                        "hasher not reachable"
                    );
                    backoff.wait().await;
                }
            }
        },
    }
}

fn connect(path: &Path, peer_uid: Option<u32>) -> Result<std::os::fd::OwnedFd, ConnectError> {
    let (fd, uid) = sys::connect_hasher(path).map_err(|why| ConnectError::Connect {
        path: path.to_owned(),
        why,
    })?;
    if uid != 0 && Some(uid) != peer_uid {
        return Err(ConnectError::Peer {
            path: path.to_owned(),
            uid,
        });
    }
    Ok(fd)
}
