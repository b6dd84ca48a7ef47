//! The monitor core: drives the hasher, feeds the state machine, records every decision.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use protocol::message::{
    BaselineSummary, ErrorKind, KeyStatus, PolicySummary, StoreEvent, StoreStatus,
};
use protocol::report::SignedReport;
use protocol::sign::sha256_hex;
use protocol::{Request, Response, PROTOCOL_VERSION};
use serde_json::{json, Map, Value};
use tokio::sync::{mpsc, oneshot};

use crate::audit::AuditLog;
use crate::error::MonitorError;
use crate::link::Call;
use crate::state::{Event, Input, Machine, State};
use crate::token::Token;

/// Audit records held in memory while the log cannot be written; beyond this, new ones are dropped.
const MAX_PENDING_AUDIT: usize = 1000;
/// Refused-auth records per minute; more are counted, not written, so a flood cannot fill the disk.
const AUTH_RECORDS_PER_MINUTE: u32 = 20;

/// Everything the HTTP handlers read; cloned out under a short lock.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// State and counters.
    pub machine: Machine,
    /// The hasher's policy settings.
    pub policy: PolicySummary,
    /// Whether artifacts are signed.
    pub key: KeyStatus,
    /// The baseline the hasher adopted, if any (the hasher holds the bytes).
    pub baseline: Option<BaselineSummary>,
    /// Why there is no trusted baseline, if there is none.
    pub baseline_problem: Option<String>,
    /// The last accepted report.
    pub last_report: Option<SignedReport>,
    /// When the api accepted the last report (monotonic).
    pub last_scan: Option<Instant>,
    /// Why the hasher is unavailable, if it is.
    pub hasher_down: Option<String>,
    /// True while audit records are waiting for a writable log.
    pub audit_backlog: usize,
    /// Sequence number of the last report from the current hasher connection (must grow).
    pub link_seq: u64,
    /// Bytes the hasher reported hashed, over all accepted scans.
    pub bytes_hashed_total: u64,
    /// False until the first handshake: the policy (and whether reads need the token) is unknown.
    pub policy_known: bool,
    /// Change notices the last accepted scan started after (all of them were verified by it).
    pub verified_changes: u64,
    /// True when a change notice arrived that no accepted scan has verified yet: any write to
    /// a watched path makes `/verify` 503 at once, whatever the file's size, until it is read.
    pub unverified_change: bool,
}

struct AuditSink {
    log: AuditLog,
    pending: VecDeque<(String, Map<String, Value>)>,
    dropped: u64,
    auth_window: Option<Instant>,
    auth_in_window: u32,
    auth_suppressed: u64,
}

/// The monitor, shared by the HTTP handlers and the scheduler.
pub struct Monitor {
    snap: Mutex<Snapshot>,
    op: tokio::sync::Mutex<()>,
    calls: mpsc::Sender<Call>,
    audit: Mutex<AuditSink>,
    /// The gate for token-protected endpoints, from the hasher's handshake.
    token: Mutex<Option<Token>>,
    stopping: std::sync::atomic::AtomicBool,
    cut: Mutex<Option<Arc<tokio::sync::Notify>>>,
    started: std::sync::atomic::AtomicBool,
    first_verdict: tokio::sync::watch::Sender<bool>,
    changes: Arc<crate::link::Changes>,
    incidents: Mutex<Option<crate::incident::Queue>>,
}

/// Runs disk I/O that may wait on `fsync` so that it does not hold up the runtime's one worker:
/// on a worker thread the worker hands its other tasks to a fresh one first, so `/health` and
/// `/verify` keep answering on slow appliance storage. Elsewhere (start-up, tools) it just runs.
fn blocking_io<R>(f: impl FnOnce() -> R) -> R {
    let on_multi_thread = tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread);
    if on_multi_thread {
        tokio::task::block_in_place(f)
    } else {
        f()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means a panic elsewhere; with panic=abort it cannot happen.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn fields(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

impl Monitor {
    /// A monitor talking to the link task through `calls`.
    pub fn new(calls: mpsc::Sender<Call>, audit: AuditLog) -> Monitor {
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
                last_report: None,
                last_scan: None,
                hasher_down: Some("not connected yet".into()),
                audit_backlog: 0,
                link_seq: 0,
                bytes_hashed_total: 0,
                policy_known: false,
                verified_changes: 0,
                unverified_change: false,
            }),
            op: tokio::sync::Mutex::new(()),
            calls,
            audit: Mutex::new(AuditSink {
                log: audit,
                pending: VecDeque::new(),
                dropped: 0,
                auth_window: None,
                auth_in_window: 0,
                auth_suppressed: 0,
            }),
            token: Mutex::new(None),
            stopping: std::sync::atomic::AtomicBool::new(false),
            cut: Mutex::new(None),
            started: std::sync::atomic::AtomicBool::new(false),
            first_verdict: tokio::sync::watch::Sender::new(false),
            changes: Arc::new(crate::link::Changes::default()),
            incidents: Mutex::new(None),
        }
    }

    /// Sends each transition into degraded or recovery_required to the incident reporter.
    pub fn set_incident_queue(&self, queue: crate::incident::Queue) {
        *lock(&self.incidents) = Some(queue);
    }

    fn report_incident(&self, from: State, to: State, reason: &str) {
        let Some(queue) = lock(&self.incidents).clone() else {
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
        let body = crate::incident::body(to.as_str(), from.as_str(), reason, &active, count, scans);
        if queue.try_send((to.as_str().to_owned(), body)).is_err() {
            self.audit(
                "incident_dropped",
                json!({ "state": to, "reason": "reporter queue full" }),
            );
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

    /// A copy of the current snapshot.
    pub fn snapshot(&self) -> Snapshot {
        let mut s = lock(&self.snap).clone();
        s.unverified_change = self.changes.count() > s.verified_changes;
        s
    }

    /// The gate for the bearer token, once the hasher said what it is.
    pub fn token(&self) -> Option<Token> {
        *lock(&self.token)
    }

    /// Appends an audit record; while the log is unwritable records queue (bounded) and
    /// `/verify` answers 503, since evidence that cannot be kept is not evidence.
    pub fn audit(&self, event: &str, record: Value) {
        let mut sink = lock(&self.audit);
        if sink.pending.len() >= MAX_PENDING_AUDIT {
            sink.dropped += 1;
            tracing::error!(
                event,
                dropped = sink.dropped,
                "audit backlog full; record dropped"
            );
        } else {
            sink.pending.push_back((event.to_owned(), fields(record)));
        }
        blocking_io(|| {
            while let Some((event, record)) = sink.pending.front().cloned() {
                if let Err(e) = sink.log.record(&event, record) {
                    tracing::error!(error = %e, backlog = sink.pending.len(), "audit log write failed; /verify answers 503 until it succeeds");
                    break;
                }
                sink.pending.pop_front();
            }
        });
        let backlog = sink.pending.len();
        drop(sink);
        lock(&self.snap).audit_backlog = backlog;
    }

    /// Notices, without waiting for the next record, an audit log deleted, renamed, replaced
    /// or truncated under the api: reopens the path and records `audit_log_replaced` there.
    /// If that cannot be written the record waits in the backlog and `/verify` answers 503.
    pub fn follow_audit_log(&self) {
        let mut sink = lock(&self.audit);
        if !sink.pending.is_empty() || sink.log.replaced().is_none() {
            return;
        }
        match blocking_io(|| sink.log.follow()) {
            Ok(Some(what)) => {
                tracing::warn!(
                    what,
                    "audit log was rotated or removed under the api: reopened, chain continues"
                )
            }
            Ok(None) => {}
            Err(e) => {
                tracing::error!(error = %e, "audit log replaced and cannot be reopened; /verify answers 503 until it can");
                sink.pending.push_back((
                    "audit_log_reopen_failed".to_owned(),
                    fields(json!({ "reason": e.to_string() })),
                ));
                let backlog = sink.pending.len();
                drop(sink);
                lock(&self.snap).audit_backlog = backlog;
            }
        }
    }

    /// Records a refused request, rate-limited.
    pub fn audit_auth_refused(&self, method: &str, path: &str, reason: &str) {
        let mut sink = lock(&self.audit);
        let now = Instant::now();
        let window_over = sink
            .auth_window
            .is_none_or(|w| now.duration_since(w) >= Duration::from_secs(60));
        let suppressed = if window_over {
            sink.auth_window = Some(now);
            sink.auth_in_window = 0;
            std::mem::take(&mut sink.auth_suppressed)
        } else {
            0
        };
        sink.auth_in_window += 1;
        let write = sink.auth_in_window <= AUTH_RECORDS_PER_MINUTE;
        if !write {
            sink.auth_suppressed += 1;
        }
        drop(sink);
        // stderr is rate-limited with the audit log: a flood of bad tokens fills neither.
        if write {
            tracing::warn!(
                method,
                path,
                reason,
                "request refused: bad or missing token"
            );
        }
        if suppressed > 0 {
            tracing::warn!(
                count = suppressed,
                "more requests were refused in the last minute (not logged one by one)"
            );
            self.audit("auth_refused_suppressed", json!({ "count": suppressed }));
        }
        if write {
            self.audit(
                "auth_refused",
                json!({ "method": method, "path": path, "reason": reason }),
            );
        }
    }

    /// The audit chain head (seq, hash of the last record).
    pub fn audit_head(&self) -> crate::audit::Head {
        lock(&self.audit).log.head().clone()
    }

    /// Asks the hasher to sign its latest completed scan for `nonce`; returns the signed
    /// payload and its HMAC, checked for form and for the nonce.
    pub async fn attest(&self, nonce: &str) -> Result<(Vec<u8>, String), MonitorError> {
        let head = self.audit_head();
        let request = Request::Attest {
            nonce: nonce.to_owned(),
            audit_seq: head.seq,
            audit_head: head.hash,
        };
        match self.call(request).await? {
            Response::Attestation { payload, hmac } => {
                let parsed: Result<protocol::attest::Attestation, _> =
                    serde_json::from_slice(&payload);
                let form_ok =
                    hmac == protocol::sign::UNSIGNED || protocol::hexfmt::is_sha256_hex(&hmac);
                match parsed {
                    Ok(a)
                        if a.nonce == nonce
                            && form_ok
                            && a.violations.iter().all(|v| v.validate().is_ok()) =>
                    {
                        Ok((payload, hmac))
                    }
                    _ => Err(self.misbehaved("attestation")),
                }
            }
            _ => Err(self.misbehaved("attestation answer")),
        }
    }

    /// Reopens the audit log (after rotation).
    pub fn reopen_audit(&self) {
        let result = lock(&self.audit).log.reopen();
        match result {
            Ok(()) => self.audit("audit_reopened", json!({})),
            Err(e) => {
                tracing::error!(error = %e, "audit log reopen failed; still writing to the old file")
            }
        }
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
                    self.audit("violation", serde_json::to_value(&v).unwrap_or(Value::Null));
                }
                Event::Transition {
                    from,
                    to,
                    reason,
                    violation_count,
                } => {
                    if to == State::Trusted {
                        tracing::info!(
                            from = from.as_str(),
                            to = to.as_str(),
                            reason,
                            violation_count,
                            "state transition"
                        );
                    } else {
                        tracing::warn!(
                            from = from.as_str(),
                            to = to.as_str(),
                            reason,
                            violation_count,
                            "state transition"
                        );
                    }
                    self.audit("transition", json!({ "from": from, "to": to, "reason": reason, "violation_count": violation_count }));
                    if to != State::Trusted {
                        self.report_incident(from, to, &reason);
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
            let event = if self.started.load(std::sync::atomic::Ordering::SeqCst) {
                "hasher_lost"
            } else {
                "hasher_start_failed"
            };
            self.audit(event, json!({ "reason": why }));
            self.apply(Input::Unverifiable("hasher_unavailable"));
        }
    }

    async fn call(&self, request: Request) -> Result<Response, MonitorError> {
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
            Ok(Response::Error {
                kind: ErrorKind::Protocol,
                message,
            }) => {
                self.hasher_lost(&format!("hasher refused our message: {message}"));
                Err(MonitorError::HasherDown(message))
            }
            Ok(Response::Error { kind, message }) => Err(MonitorError::Refused { kind, message }),
            Ok(response) => Ok(response),
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

    /// A (re)connected hasher: handshake, then on the first connection the start-up, on a
    /// later one the hand-over to the new hasher instance (it loaded the same store).
    pub async fn connected(&self, first: bool) -> Result<(), MonitorError> {
        // Held throughout: no scheduled scan may reach the hasher before the handshake.
        let _op = self.op.lock().await;
        let again = {
            let mut snap = lock(&self.snap);
            snap.link_seq = 0;
            snap.hasher_down.take()
        };
        let store = self.hello().await?;
        if first {
            self.start(store).await;
            self.started
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.first_verdict.send_replace(true);
        } else {
            self.audit("hasher_reconnected", json!({ "after": again }));
            self.restore(store).await;
        }
        Ok(())
    }

    async fn restore(&self, store: StoreStatus) {
        let before = lock(&self.snap).baseline.clone();
        match (store, before) {
            (StoreStatus::Adopted(now), Some(was)) if now.digest == was.digest => {}
            (StoreStatus::Adopted(now), was) => {
                tracing::warn!(digest = now.digest, "the new hasher instance holds another baseline; adopting it");
                self.audit("baseline_changed", json!({ "from": was.map(|b| b.digest), "to": now.digest, "generation": now.generation }));
                self.adopt(now);
            }
            (StoreStatus::Rejected { reason }, _) => return self.baseline_rejected(&reason),
            (StoreStatus::Empty, Some(was)) => {
                return self.baseline_rejected(&format!(
                    "the hasher's store is empty although baseline {} (generation {}) was adopted: it was deleted",
                    was.digest, was.generation
                ))
            }
            (StoreStatus::Empty, None) => {
                tracing::warn!("hasher reconnected with an empty store; awaiting an authorised rebaseline");
                return;
            }
        }
        if let Err(e) = self.scan_locked(false).await {
            tracing::error!(error = %e, "scan after reconnection failed");
        }
    }

    /// Handshake: learns the policy settings, key status, token gate and what the store holds.
    async fn hello(&self) -> Result<StoreStatus, MonitorError> {
        match self
            .call(Request::Hello {
                version: PROTOCOL_VERSION,
            })
            .await?
        {
            Response::Hello {
                version,
                policy,
                key,
                store,
                token_digest,
                store_event,
            } if version == PROTOCOL_VERSION
                && policy.degradation_threshold >= 1
                && policy.scan_interval_ms >= 1
                && store_ok(&store, key)
                && token_digest
                    .as_deref()
                    .is_none_or(|d| Token::from_digest_hex(d).is_some()) =>
            {
                tracing::info!(interval_ms = policy.scan_interval_ms, threshold = policy.degradation_threshold, key = ?key, token = token_digest.is_some(), "hasher ready");
                if key == KeyStatus::Absent {
                    tracing::warn!("no HMAC key: baselines and reports are unsigned");
                    self.audit("hmac_key_absent", json!({ "signing": "unsigned" }));
                }
                *lock(&self.token) = token_digest.as_deref().and_then(Token::from_digest_hex);
                match (store_event, &store) {
                    (Some(StoreEvent::MigratedFromGo), StoreStatus::Adopted(s)) => {
                        tracing::warn!(digest = s.digest, "stored baseline signed the Go service's way: verified and adopted; the next rebaseline re-signs it in this format");
                        self.audit(
                            "baseline_migrated",
                            json!({ "from": "go", "digest": s.digest, "entries": s.entries }),
                        );
                    }
                    (Some(StoreEvent::RolledForward { from }), StoreStatus::Adopted(s)) => {
                        self.audit(
                            "baseline_rolled_forward",
                            json!({ "from": from, "to": s.generation, "digest": s.digest }),
                        );
                    }
                    _ => {}
                }
                let mut snap = lock(&self.snap);
                snap.policy = policy;
                snap.key = key;
                snap.policy_known = true;
                Ok(store)
            }
            _ => Err(self.misbehaved("hello")),
        }
    }

    /// Records a broken audit tail that was moved aside at start.
    pub fn note_audit_recovery(&self) {
        let recovered = lock(&self.audit).log.recovered.take();
        if let Some((aside, why)) = recovered {
            tracing::warn!(snapshot = %aside.display(), why, "audit log tail was broken: kept aside, chain continues");
            self.audit(
                "audit_tail_recovered",
                json!({ "snapshot": aside, "reason": why }),
            );
        }
    }

    /// Start-up: adopt what the hasher's store holds (or have it make the first), then scan.
    async fn start(&self, store: StoreStatus) {
        match store {
            StoreStatus::Rejected { reason } => self.baseline_rejected(&reason),
            StoreStatus::Empty => {
                tracing::info!("the hasher's store is empty: first start, computing a baseline");
                if let Err(e) = self.rebaseline_locked("initialized", None).await {
                    tracing::error!(error = %e, "first baseline failed");
                    if !matches!(e, MonitorError::HasherDown(_)) {
                        lock(&self.snap).baseline_problem = Some(e.to_string());
                        self.apply(Input::Compromised("no_baseline"));
                    }
                }
            }
            StoreStatus::Adopted(summary) => {
                tracing::info!(
                    digest = summary.digest,
                    generation = summary.generation,
                    "the hasher's store already holds a baseline: adopted (nothing to initialize)"
                );
                self.audit("baseline_loaded", json!({ "digest": summary.digest, "generation": summary.generation, "entries": summary.entries, "signed": summary.signed }));
                self.adopt(summary);
                if let Err(e) = self.scan_locked(false).await {
                    tracing::error!(error = %e, "first scan failed");
                }
            }
        }
    }

    fn baseline_rejected(&self, why: &str) {
        tracing::error!(
            why,
            "stored baseline rejected: recovery_required until an authorised rebaseline"
        );
        self.audit("baseline_rejected", json!({ "reason": why }));
        lock(&self.snap).baseline_problem = Some(why.to_owned());
        self.apply(Input::Compromised("baseline_rejected"));
    }

    fn adopt(&self, summary: BaselineSummary) {
        if !summary.signed {
            self.audit("baseline_unsigned", json!({ "digest": summary.digest }));
        }
        let mut snap = lock(&self.snap);
        snap.baseline = Some(summary);
        snap.baseline_problem = None;
    }

    /// The adopted manifest, byte for byte as the hasher stored it (checked against the digest
    /// it announced).
    pub async fn baseline_bytes(&self) -> Result<Bytes, MonitorError> {
        let Some(expected) = lock(&self.snap).baseline.as_ref().map(|b| b.digest.clone()) else {
            return Err(MonitorError::Refused {
                kind: ErrorKind::NoBaseline,
                message: "no baseline is adopted".into(),
            });
        };
        match self.call(Request::GetBaseline).await? {
            Response::Baseline { manifest } if sha256_hex(&manifest) == expected => {
                Ok(Bytes::from(manifest))
            }
            _ => Err(self.misbehaved("baseline manifest")),
        }
    }

    /// One scan; a scan already running is waited for, never raced.
    pub async fn scan(&self) -> Result<State, MonitorError> {
        let _op = self.op.lock().await;
        self.scan_locked(false).await
    }

    async fn scan_locked(&self, fresh: bool) -> Result<State, MonitorError> {
        let response = match self.call(Request::Scan).await {
            Ok(r) => r,
            Err(
                e @ MonitorError::Refused {
                    kind: ErrorKind::NoBaseline,
                    ..
                },
            ) => {
                self.apply(Input::Compromised("no_baseline"));
                return Err(e);
            }
            Err(e) => {
                self.apply(Input::Unverifiable("scan_failed"));
                return Err(e);
            }
        };
        let Response::Report(signed) = response else {
            return Err(self.misbehaved("scan response"));
        };
        // The hasher announces what changed before it starts a scan, and only then scans:
        // every notice that arrived before this report is covered by it.
        let changes_covered = self.changes.count();
        let expected_digest = lock(&self.snap).baseline.as_ref().map(|b| b.digest.clone());
        let last_seq = lock(&self.snap).link_seq;
        if let Err(e) = signed.validate() {
            tracing::error!(error = %e, "scan report refused");
            return Err(self.misbehaved("scan report"));
        }
        if expected_digest.as_deref() != Some(signed.report.baseline_digest.as_str())
            || signed.report.seq <= last_seq
        {
            return Err(self.misbehaved("scan report (baseline digest or sequence)"));
        }
        self.follow_audit_log();
        let report = signed.report.clone();
        let state = self.apply(if fresh {
            Input::Rebaselined(&report)
        } else {
            Input::Scan(&report)
        });
        tracing::info!(
            seq = report.seq,
            state = state.as_str(),
            violations = report.violation_count,
            ms = report.duration_ms,
            "scan accepted"
        );
        let mut snap = lock(&self.snap);
        snap.verified_changes = snap.verified_changes.max(changes_covered);
        snap.link_seq = signed.report.seq;
        snap.bytes_hashed_total = snap
            .bytes_hashed_total
            .saturating_add(signed.report.bytes_hashed);
        snap.last_report = Some(signed);
        snap.last_scan = Some(Instant::now());
        Ok(state)
    }

    /// Has the hasher make, store and adopt a new baseline (it checks `token` itself), then
    /// scans against it.
    pub async fn rebaseline(&self, token: Vec<u8>) -> Result<State, MonitorError> {
        let _op = self.op.lock().await;
        self.rebaseline_locked("rebaseline", Some(token)).await
    }

    async fn rebaseline_locked(
        &self,
        event: &str,
        token: Option<Vec<u8>>,
    ) -> Result<State, MonitorError> {
        let response = match self.call(Request::CreateBaseline { token }).await {
            Ok(r) => r,
            Err(e) => {
                self.audit("rebaseline_refused", json!({ "reason": e.to_string() }));
                return Err(e);
            }
        };
        let Response::BaselineCreated { summary } = response else {
            return Err(self.misbehaved("baseline"));
        };
        let key = lock(&self.snap).key;
        if summary.signed != (key == KeyStatus::Present)
            || !protocol::hexfmt::is_sha256_hex(&summary.digest)
        {
            return Err(self.misbehaved("baseline summary"));
        }
        self.audit(event, json!({ "digest": summary.digest, "generation": summary.generation, "entries": summary.entries, "signed": summary.signed, "created_at": summary.created_at }));
        self.adopt(summary);
        self.scan_locked(true).await
    }

    /// Asks the hasher to re-read its policy; on refusal the old policy stays.
    pub async fn reload(&self) -> Result<PolicySummary, MonitorError> {
        let _op = self.op.lock().await;
        match self.call(Request::Reload).await {
            Ok(Response::Reloaded { policy })
                if policy.degradation_threshold >= 1 && policy.scan_interval_ms >= 1 =>
            {
                self.audit("reload", json!({ "scan_interval_ms": policy.scan_interval_ms, "degradation_threshold": policy.degradation_threshold, "watched_paths": policy.watched_paths }));
                lock(&self.snap).policy = policy.clone();
                let _ = self.scan_locked(false).await;
                Ok(policy)
            }
            Ok(_) => Err(self.misbehaved("reload answer")),
            Err(e) => {
                self.audit("reload_refused", json!({ "reason": e.to_string() }));
                Err(e)
            }
        }
    }

    /// Runs scheduled scans until the hasher is lost.
    pub async fn schedule(self: Arc<Self>) {
        loop {
            let (interval, last, down) = {
                let s = lock(&self.snap);
                (
                    Duration::from_millis(s.policy.scan_interval_ms),
                    s.last_scan,
                    s.hasher_down.is_some(),
                )
            };
            if !self.started.load(std::sync::atomic::Ordering::SeqCst) {
                // Start-up runs the first scan; the schedule begins after it.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            if down {
                // Fail closed meanwhile; the supervisor reconnects (or the process exits).
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            let due = last.map_or_else(Instant::now, |l| l + interval);
            let notified = tokio::select! {
                () = tokio::time::sleep_until(due.into()) => false,
                () = self.changes.notify.notified() => true,
            };
            if !notified && lock(&self.snap).last_scan != last {
                continue; // a forced scan ran meanwhile; the next one is due an interval after it
            }
            let op = self.op.lock().await;
            if notified && self.changes.count() <= lock(&self.snap).verified_changes {
                // The notice came with a scan already under way, which covered it (the hasher
                // announces every change before it scans): scanning again would defeat the
                // hasher's coalescing of a file written without pause.
                continue;
            }
            let scanned = self.scan_locked(false).await;
            drop(op);
            if let Err(e) = scanned {
                tracing::warn!(error = %e, "scheduled scan failed");
                tokio::time::sleep(interval).await;
            }
        }
    }
}

/// Whether `/verify` may answer 200, and if not, why.
pub fn verdict(s: &Snapshot) -> Result<(), String> {
    if let Some(why) = &s.hasher_down {
        return Err(format!("hasher unavailable: {why}"));
    }
    if s.machine.state != State::Trusted {
        return Err(format!("state is {}", s.machine.state.as_str()));
    }
    if let Some(why) = &s.baseline_problem {
        return Err(why.clone());
    }
    if s.audit_backlog > 0 {
        return Err("audit log is not writable".into());
    }
    if s.unverified_change {
        return Err("a watched path changed and is being verified".into());
    }
    let interval = Duration::from_millis(s.policy.scan_interval_ms);
    let allowance = interval * 3 + Duration::from_secs(10);
    match s.last_scan {
        Some(t) if t.elapsed() <= allowance => Ok(()),
        Some(_) => Err("last scan is stale".into()),
        None => Err("no scan yet".into()),
    }
}

/// A store status is well-formed: digests are SHA-256 hex, a signed baseline only with a key,
/// a reason bounded.
fn store_ok(store: &StoreStatus, key: KeyStatus) -> bool {
    match store {
        StoreStatus::Adopted(s) => {
            protocol::hexfmt::is_sha256_hex(&s.digest)
                && s.created_at.len() <= protocol::report::MAX_TIME_LEN
                && (!s.signed || key == KeyStatus::Present)
        }
        StoreStatus::Empty => true,
        StoreStatus::Rejected { reason } => reason.len() <= 4096,
    }
}
