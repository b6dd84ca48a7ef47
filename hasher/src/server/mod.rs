//! The request loop: one request at a time, answered from the hasher's own policy and key.

mod ceremony;
mod idle;
mod notices;
mod release;
mod requests;

use std::path::PathBuf;

use protocol::frame;
use protocol::message::{
    BaselineSummary, ErrorKind, KeyStatus, Proof, Request, Response, StoreStatus, BASELINE_PART,
};
use protocol::standing::{FromStore, Prior};
use protocol::PROTOCOL_VERSION;

use crate::error::ChannelError;
use crate::live::{Channel, RecvError};
use crate::policy::{Policy, RebaselineAuth};
use crate::storing::Key;
use crate::storing::Ledger;
use crate::storing::Token;
use crate::storing::{Loaded, Store};
use crate::verifying::{build_reference, Keeping, Release, Verifier};

/// Everything the hasher holds between requests.
pub(crate) struct Server {
    /// The policy, the baseline, the file memory and the sweeps: what decides.
    v: Verifier,
    policy_path: PathBuf,
    key: Option<Key>,
    token: Option<Token>,
    /// The store, what it held at start and the next commit's generation.
    ledger: Ledger,
    greeted: bool,
    read_set: Vec<PathBuf>,
    release_override: Option<PathBuf>,
    /// The watcher, shared with the thread that announces changes while a request runs.
    sentinel: crate::live::Sentinel,
    /// Changes not announced yet, throttled.
    notices: notices::Notices,
    /// The latest completed scan, and when it completed on the monotonic clock.
    last_report: Option<(protocol::report::ScanReport, std::time::Instant)>,
    /// The boot this runs in (what the slots remember is kept for a restart within it).
    boot_id: Option<String>,
    /// Issues and recognises rebaseline challenges (no table of them).
    challenges: crate::storing::Challenges,
    /// The rebaseline plan held for a proof (its digests only), if any.
    pending: Option<crate::storing::Pending>,
    /// What the boot-chain verification said of this boot (read before the sandbox).
    vouch: crate::verifying::Vouch,
    /// The OS image's release: in force, a transition made or refused at start.
    release: protocol::standing::ReleaseNews,
    /// The release file, while a transition it called for is refused.
    release_file: Option<PathBuf>,
    /// A step of the wall clock, watched (`None`: no timer could be made).
    clock: Option<crate::live::ClockWatch>,
    /// The api's hang-up as the reads see it: once one found it, the loop ends.
    lifeline: crate::reading::Lifeline,
}

/// Why the loop ended without a fault: the api is gone either way, and nothing is left to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// The api closed the channel between requests: what was verified is kept.
    Closed,
    /// A read found the channel closed: the request or slice it served was abandoned.
    DuringRead,
}

pub(super) fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

/// Where the file memory is kept: only with a key (the side files are signed with it).
pub(super) fn keeping<'a>(
    store: &'a Store,
    key: &'a Option<Key>,
    boot: &'a Option<String>,
) -> Option<Keeping<'a>> {
    key.as_ref().map(|k| Keeping {
        store,
        key: k.bytes(),
        boot: boot.as_deref(),
    })
}

/// The parts the hasher starts with, loaded before its sandbox.
pub(crate) struct Parts {
    /// The policy file's path (re-read on reload).
    pub(crate) policy_path: PathBuf,
    /// The validated policy.
    pub(crate) policy: Policy,
    /// The HMAC key, if any.
    pub(crate) key: Option<Key>,
    /// The service token, if any.
    pub(crate) token: Option<Token>,
    /// The locked store.
    pub(crate) store: Store,
    /// What the store held.
    pub(crate) loaded: Loaded,
    /// What the sandbox lets it read.
    pub(crate) read_set: Vec<PathBuf>,
    /// A release baseline given outside the policy; it survives reloads.
    pub(crate) release_override: Option<PathBuf>,
    /// The boot this runs in ([`crate::verifying::boot_id`]).
    pub(crate) boot_id: Option<String>,
    /// What the boot-chain verification says of this boot.
    pub(crate) vouch: crate::verifying::Vouch,
    /// The kernel's writeback window (read before the sandbox).
    pub(crate) kernel_window: std::time::Duration,
    /// The TPM's counter, as start-up found it.
    pub(crate) tpm: crate::storing::Tpm,
    /// A step of the wall clock, watched (made before the sandbox).
    pub(crate) clock: Option<crate::live::ClockWatch>,
    /// What every read is handed: the budget, the api's lifeline, the secrets.
    pub(crate) reads: crate::reading::ReadContext,
}

impl Server {
    /// A server for what was loaded before the sandbox.
    pub(crate) fn new(parts: Parts) -> Server {
        let Parts {
            policy_path,
            policy,
            key,
            token,
            store,
            loaded,
            read_set,
            release_override,
            boot_id,
            vouch,
            kernel_window,
            tpm,
            clock,
            reads,
        } = parts;
        let lifeline = reads.lifeline.clone();
        let (ledger, baseline) = Ledger::anchored(store, loaded, tpm);
        let keeps = keeping(ledger.store(), &key, &boot_id);
        let mut v = Verifier::new(policy, baseline, keeps, reads);
        v.set_kernel_window(kernel_window);
        let watcher = crate::live::Watcher::new(v.policy())
            .map_err(
                |e| tracing::warn!(error = %e, "no inotify: changes wait for the periodic scan"),
            )
            .ok();
        Server {
            v,
            policy_path,
            key,
            token,
            ledger,
            greeted: false,
            read_set,
            release_override,
            last_report: None,
            sentinel: crate::live::Sentinel::new(watcher),
            notices: notices::Notices::default(),
            boot_id,
            challenges: crate::storing::Challenges::default(),
            pending: None,
            vouch,
            release: protocol::standing::ReleaseNews::default(),
            release_file: None,
            clock,
            lifeline,
        }
    }

    /// Serves until the api closes the channel (Ok) or the socket fails (Err).
    pub(crate) fn serve(&mut self, channel: &mut Channel) -> Result<Ended, ChannelError> {
        match self.sentinel.start(channel.sender()) {
            Ok(arm) => self.v.arm_with(arm),
            Err(e) => {
                tracing::warn!(error = %e, "no sentinel thread: a change made during a long scan is announced when it ends")
            }
        }
        loop {
            let waiting = self.wait_for_request(channel)?;
            if self.lifeline.cut() {
                // A slice's or a settle read's: nothing it found is kept or sent.
                return Ok(Ended::DuringRead);
            }
            if !waiting {
                continue;
            }
            let message = match channel.recv_message() {
                Ok(m) => m,
                Err(RecvError::Closed) => {
                    // The api stopped (a restart, an update): what was verified since the
                    // last save is kept, so the next start in this boot need not read it.
                    self.v
                        .keep(keeping(self.ledger.store(), &self.key, &self.boot_id), true);
                    return Ok(Ended::Closed);
                }
                Err(RecvError::Io(e)) => return Err(ChannelError::Io(e)),
                Err(RecvError::Frame(e)) => {
                    tracing::warn!(error = %e, "refused a frame from the api");
                    channel
                        .send(0, &error(ErrorKind::Protocol, e.to_string()))
                        .map_err(ChannelError::Io)?;
                    continue;
                }
            };
            self.sentinel.busy();
            let (id, response) = match frame::decode::<Request>(&message) {
                Ok(envelope) => {
                    if matches!(envelope.body, Request::Scan | Request::ScanChanged) {
                        // The scan covers every change seen so far: say so first, whatever
                        // the notice gap, so the api knows which changes this report settles.
                        self.notices.send(channel)?;
                    }
                    (envelope.id, self.handle(envelope.body))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused a message from the api");
                    (0, error(ErrorKind::Protocol, e.to_string()))
                }
            };
            if self.lifeline.cut() {
                // Its reads stopped short: the answer would be wrong, and nobody takes it.
                return Ok(Ended::DuringRead);
            }
            channel.send(id, &response).map_err(ChannelError::Io)?;
            self.sentinel.idle();
        }
    }

    /// Answers one request.
    pub(crate) fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Hello { version, prior } => self.hello(version, &prior),
            _ if !self.greeted => error(ErrorKind::Protocol, "hello must come first"),
            Request::CreateBaseline { token, proof } => {
                self.create_baseline(token.as_deref(), proof.as_ref())
            }
            Request::RebaselineChallenge => match self.challenges.issue() {
                Ok(challenge) => Response::Challenge {
                    challenge,
                    // A constant of minutes: it fits; were it not to, the longest said.
                    ttl_ms: u64::try_from(crate::storing::CHALLENGE_TTL.as_millis())
                        .unwrap_or(u64::MAX),
                },
                Err(e) => error(
                    ErrorKind::BaselineFailed,
                    format!("no challenge: no randomness: {e}"),
                ),
            },
            Request::RebaselinePlan { token } => self.plan(token.as_deref()),
            Request::GetBaseline { offset } => self.baseline_part(offset),
            Request::Scan => self.scan(),
            Request::ScanChanged => self.scan_changed(),
            Request::Attest {
                nonce,
                audit_seq,
                audit_head,
            } => self.attest(nonce, audit_seq, audit_head),
            Request::Reload => self.reload(),
        }
    }

    fn hello(&mut self, version: u16, prior: &Prior) -> Response {
        if version != PROTOCOL_VERSION {
            return error(
                ErrorKind::Protocol,
                format!("api speaks version {version}, hasher {PROTOCOL_VERSION}"),
            );
        }
        if !prior.well_formed() {
            return error(ErrorKind::Protocol, "the api's memory is out of bounds");
        }
        if !self.greeted {
            self.ledger.hold_to(prior);
            if self.ledger.rejected() {
                self.refer();
            } else {
                self.follow_release();
            }
        }
        self.greeted = true;
        let key = if self.key.is_some() {
            KeyStatus::Present
        } else {
            KeyStatus::Absent
        };
        Response::Hello {
            version: PROTOCOL_VERSION,
            policy: self.v.policy().summary(),
            key,
            store: match self.ledger.status().clone() {
                StoreStatus::Adopted(mut s) => {
                    s.release = self.release.in_force.clone();
                    StoreStatus::Adopted(s)
                }
                other => other,
            },
            token_digest: self.token.as_ref().map(Token::digest_hex),
            store_event: self.ledger.event(),
            release: self.release.clone(),
        }
    }

    /// The store is rejected: sweeps go on against a reference (the release baseline where
    /// it lists a path, else what the rejected store says), so the operator sees what
    /// differs; or against nothing when neither is there.
    fn refer(&mut self) {
        let key = self.key.as_ref().map(Key::bytes);
        let stored = self
            .ledger
            .store()
            .load_unverified(key)
            .map(|(m, verifies)| {
                let from = if verifies {
                    FromStore::Verified
                } else {
                    FromStore::Unverified
                };
                (m, from)
            });
        let release = self.v.policy().release_baseline.as_deref().and_then(|p| {
            Release::load(p)
                .map_err(|e| tracing::warn!(error = %e, "no release baseline to compare with"))
                .ok()
        });
        match build_reference(
            self.v.policy(),
            release.as_ref(),
            stored.as_ref().map(|(m, from)| (m, *from)),
            crate::verifying::now_rfc3339(),
        ) {
            Some((current, reference)) => {
                tracing::warn!(digest = reference.digest, entries = reference.entries, release = ?reference.release, store = ?reference.store, "stored baseline rejected: scans compare with a reference meanwhile; never trusted");
                self.ledger.refer(reference);
                self.v.refer(Some(current));
            }
            None => {
                tracing::warn!("stored baseline rejected and nothing to compare with: no scans until an authorised rebaseline");
                self.v.refer(None);
            }
        }
    }
}
