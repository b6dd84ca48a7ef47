//! The monitor core: drives the hasher, feeds the state machine, records every decision.

use crate::events::AuditRecord;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use protocol::message::{ErrorKind, KeyStatus, PolicySummary};

use protocol::{Request, Response};
use tokio::sync::{mpsc, oneshot};

use crate::error::MonitorError;
use crate::link::Call;
pub use crate::snapshot::Snapshot;
use crate::state::{Event, Input, Machine, Reason, State, Transition};
use crate::token::Token;
pub use manifest::ManifestStream;

/// How long a mutation waits for its audit records to reach the disk before it answers anyway
/// (the backlog then makes `/verify` 503).
const AUDIT_FLUSH_LIMIT: Duration = Duration::from_secs(5);
/// Refused-auth records per minute; more are counted, not written, so a flood cannot fill the disk.
const AUTH_RECORDS_PER_MINUTE: u32 = 20;

/// The rate limit on refused-request records.
#[derive(Default)]
struct AuthLimit {
    window: Option<Instant>,
    in_window: u32,
    suppressed: u64,
}

mod manifest;
mod ops;
mod schedule;
mod startup;
#[cfg(test)]
mod tests;

/// The monitor, shared by the HTTP handlers and the scheduler.
pub struct Monitor {
    snap: Mutex<Snapshot>,
    op: tokio::sync::Mutex<()>,
    calls: mpsc::Sender<Call>,
    recorder: crate::recorder::Recorder,
    auth_limit: Mutex<AuthLimit>,
    /// The gate for token-protected endpoints, from the hasher's handshake.
    token: Mutex<Option<Token>>,
    stopping: std::sync::atomic::AtomicBool,
    cut: Mutex<Option<Arc<tokio::sync::Notify>>>,
    started: std::sync::atomic::AtomicBool,
    first_verdict: tokio::sync::watch::Sender<bool>,
    changes: Arc<crate::link::Changes>,
    /// Where transitions are reported, when an incident recorder is configured.
    incidents: Option<crate::incident::Queue>,
    /// What the api remembers of earlier lives: the last baseline adopted, or a trace.
    memory: Mutex<crate::adopted::Memory>,
    /// The memory record beside the audit log, and what this process last wrote to it.
    record: Option<std::path::PathBuf>,
    recorded: Mutex<Option<crate::adopted::Adopted>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; with panic=abort it cannot happen.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Monitor {
    /// A monitor talking to the link task through `calls`.
    pub fn new(calls: mpsc::Sender<Call>, recorder: crate::recorder::Recorder) -> Monitor {
        Monitor {
            snap: Mutex::new(Snapshot {
                machine: Machine::new(),
                policy: PolicySummary {
                    scan_interval_ms: 30_000,
                    degradation_threshold: 3,
                    require_token_for_reads: true,
                    watched_paths: 0,
                },
                key: KeyStatus::Absent,
                baseline: None,
                baseline_problem: Some("not loaded yet".into()),
                reference: None,
                release: protocol::standing::ReleaseNews::default(),
                last_report: None,
                last_scan: None,
                hasher_down: Some("not connected yet".into()),
                audit_backlog: 0,
                audit_dropped_total: 0,
                link_seq: 0,
                bytes_hashed_total: 0,
                policy_known: false,
                verified_changes: 0,
                unverified_change: false,
                change_notices: 0,
            }),
            op: tokio::sync::Mutex::new(()),
            calls,
            recorder,
            auth_limit: Mutex::new(AuthLimit::default()),
            token: Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            cut: Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
            first_verdict: tokio::sync::watch::Sender::new(false),
            changes: Arc::new(crate::link::Changes::default()),
            incidents: None,
            memory: Mutex::new(crate::adopted::Memory::default()),
            record: None,
            recorded: Mutex::new(None),
        }
    }

    /// The monitor, remembering what the memory record and the audit log recalled (a store
    /// holding an older baseline, or emptied, is refused as a rollback), and replacing the
    /// memory record at `record` with each adoption.
    pub fn recalling(
        mut self,
        memory: crate::adopted::Memory,
        record: Option<std::path::PathBuf>,
    ) -> Monitor {
        *lock(&self.memory) = memory;
        self.record = record;
        self
    }

    /// The monitor, sending each transition into degraded or recovery_required to the
    /// incident reporter's queue.
    pub fn reporting_to(mut self, queue: Option<crate::incident::Queue>) -> Monitor {
        self.incidents = queue;
        self
    }

    fn report_incident(&self, from: State, to: State, reason: Reason) {
        let Some(queue) = self.incidents.clone() else {
            return;
        };
        let (active, count, scans) = {
            let s = lock(&self.snap);
            (
                s.machine.active.clone(),
                s.machine.violation_count,
                s.machine.scan_count,
            )
        };
        let body = crate::incident::body(
            to.as_str(),
            from.as_str(),
            &reason.to_string(),
            &active,
            count,
            scans,
        );
        if queue.try_send((to.as_str().to_owned(), body)).is_err() {
            self.audit(AuditRecord::IncidentDropped {
                state: to,
                reason: "reporter queue full",
            });
        }
    }

    /// Woken by the hasher's change notices: the scheduler scans at once.
    pub fn changes(&self) -> Arc<crate::link::Changes> {
        self.changes.clone()
    }

    /// Registers the way to cut the current link when the hasher misbehaves.
    pub fn set_link_cutter(&self, cut: Arc<tokio::sync::Notify>) {
        *lock(&self.cut) = Some(cut);
    }

    /// Marks an orderly stop: the hasher going away now is expected, not a finding.
    pub fn begin_stop(&self) {
        self.stopping
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits, at most `limit`, until start-up has reached its first verdict (baseline adopted or
    /// rejected, first scan in); true if it has. A request that itself socket-activated the
    /// service (a boot check) then gets the verdict rather than "starting".
    pub async fn first_verdict(&self, limit: Duration) -> bool {
        let mut seen = self.first_verdict.subscribe();
        tokio::time::timeout(limit, seen.wait_for(|done| *done))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Ends the hold on requests waiting for start-up's first verdict without one: the first
    /// hasher went away, and the snapshot (not trusted, hasher down) is the answer.
    pub fn release_held(&self) {
        self.first_verdict.send_replace(true);
    }

    /// A copy of the current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = lock(&self.snap).clone();
        s.change_notices = self.changes.count();
        s.unverified_change = s.change_notices > s.verified_changes;
        s.audit_backlog = self.recorder.backlog();
        s.audit_dropped_total = self.recorder.dropped_total();
        s
    }

    /// The gate for the bearer token, once the hasher said what it is.
    pub fn token(&self) -> Option<Token> {
        lock(&self.token).clone()
    }

    /// Queues an audit record for the writer; never waits for the disk. While records cannot
    /// be written `/verify` answers 503, since evidence that cannot be kept is not evidence.
    pub fn audit(&self, record: AuditRecord) {
        self.recorder.record(record);
    }

    /// Waits (bounded) until every record queued so far is on disk: mutations answer after it.
    pub async fn audit_flush(&self) -> bool {
        self.recorder.flush(AUDIT_FLUSH_LIMIT).await
    }

    /// Records a refused request, rate-limited.
    pub fn audit_auth_refused(&self, method: &str, path: &str, reason: &'static str) {
        // stderr is rate-limited with the audit log: a flood of bad tokens fills neither.
        if self.audit_limited(AuditRecord::AuthRefused {
            method: method.to_owned(),
            path: path.to_owned(),
            reason,
        }) {
            tracing::warn!(
                method,
                path,
                reason,
                "request refused: bad or missing token"
            );
        }
    }

    /// Records a refusal anyone can provoke (a wrong token, a made-up rebaseline proof):
    /// at most [`AUTH_RECORDS_PER_MINUTE`] a minute between them, the rest counted in one
    /// `auth_refused_suppressed` record when the next minute's first comes. True if written.
    pub fn audit_limited(&self, record: AuditRecord) -> bool {
        let mut limit = lock(&self.auth_limit);
        let now = Instant::now();
        let window_over = limit
            .window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60));
        let suppressed = if window_over {
            limit.window = Some(now);
            limit.in_window = 0;
            std::mem::take(&mut limit.suppressed)
        } else {
            0
        };
        limit.in_window += 1;
        let write = limit.in_window <= AUTH_RECORDS_PER_MINUTE;
        if !write {
            limit.suppressed += 1;
        }
        drop(limit);
        if suppressed > 0 {
            tracing::warn!(
                count = suppressed,
                "more requests were refused in the last minute (not logged one by one)"
            );
            self.audit(AuditRecord::AuthRefusedSuppressed { count: suppressed });
        }
        if write {
            self.audit(record);
        }
        write
    }

    /// Reopens the audit log (after rotation).
    pub fn reopen_audit(&self) {
        self.recorder.reopen();
    }

    fn apply(&self, input: Input<'_>) -> State {
        let mut snap = lock(&self.snap);
        let (next, events) = snap.machine.step(input, snap.policy.degradation_threshold);
        snap.machine = next;
        let state = snap.machine.state;
        drop(snap);
        for event in events {
            match event {
                Event::Violation(v) => {
                    tracing::warn!(path = %v.path, category = v.category.as_str(), expected = %v.expected_hash, actual = %v.actual_hash, "integrity violation");
                    self.audit(AuditRecord::Violation(v));
                }
                Event::Transition(t) => {
                    let Transition {
                        from,
                        to,
                        reason,
                        violation_count,
                    } = t;
                    if to == State::Trusted {
                        tracing::info!(
                            from = from.as_str(),
                            to = to.as_str(),
                            %reason,
                            violation_count,
                            "state transition"
                        );
                    } else {
                        tracing::warn!(
                            from = from.as_str(),
                            to = to.as_str(),
                            %reason,
                            violation_count,
                            "state transition"
                        );
                    }
                    self.audit(AuditRecord::Transition(t));
                    if to != State::Trusted {
                        self.report_incident(from, to, reason);
                    }
                }
            }
        }
        state
    }

    /// Marks the hasher unusable: evidence stops here until it is back.
    pub fn hasher_lost(&self, why: &str) {
        if let Some(cut) = lock(&self.cut).take() {
            cut.notify_one();
        }
        if self.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            tracing::info!(why, "hasher gone during shutdown");
            lock(&self.snap).hasher_down = Some(why.to_owned());
            return;
        }
        let first = {
            let mut snap = lock(&self.snap);
            let first = snap.hasher_down.is_none();
            snap.hasher_down = Some(why.to_owned());
            first
        };
        if first {
            // Before start-up completed the hasher did not start (its own error says why, e.g.
            // a store it cannot use): not a loss of a running hasher.
            let reason = why.to_owned();
            self.audit(if self.started.load(std::sync::atomic::Ordering::SeqCst) {
                AuditRecord::HasherLost { reason }
            } else {
                AuditRecord::HasherStartFailed { reason }
            });
            self.apply(Input::Unverifiable(Reason::HasherUnavailable));
        }
    }

    async fn call(&self, request: Request) -> Result<Response, MonitorError> {
        self.call_counted(request).await.map(|(r, _)| r)
    }

    /// As [`Monitor::call`], with how many change notices the response covers.
    async fn call_counted(&self, request: Request) -> Result<(Response, u64), MonitorError> {
        if let Some(why) = lock(&self.snap).hasher_down.clone() {
            return Err(MonitorError::HasherDown(why));
        }
        let (reply, answer) = oneshot::channel();
        let sent = self.calls.send(Call { request, reply }).await;
        let result = match sent {
            Ok(()) => answer.await.unwrap_or(Err(crate::link::LinkError::Down)),
            Err(_) => Err(crate::link::LinkError::Down),
        };
        match result {
            Ok((
                Response::Error {
                    kind: ErrorKind::Protocol,
                    message,
                },
                _,
            )) => {
                self.hasher_lost(&format!("hasher refused our message: {message}"));
                Err(MonitorError::HasherDown(message))
            }
            Ok((Response::Error { kind, message }, _)) => {
                Err(MonitorError::Refused { kind, message })
            }
            Ok(answer) => Ok(answer),
            Err(e) => {
                self.hasher_lost(&e.to_string());
                Err(MonitorError::HasherDown(e.to_string()))
            }
        }
    }

    fn misbehaved(&self, what: &str) -> MonitorError {
        let why = format!("hasher sent an invalid {what}");
        self.hasher_lost(&why);
        MonitorError::HasherDown(why)
    }
}
