//! What the api asks of the hasher once it runs: scans, rebaselines, reloads, the stored
//! manifest and attestations; every answer checked before it counts.

use crate::events::{AuditRecord, Made, Refused};
use std::time::Instant;

use protocol::message::{ErrorKind, PolicySummary, Proof};
use protocol::plan::Signed;
use protocol::{Request, Response};

use super::{lock, Monitor};
use crate::error::MonitorError;
use crate::state::{Input, Reason, State};

/// Which scan to ask the hasher for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Scan {
    /// Every watched path (the schedule, an operator, start-up).
    Full,
    /// Every watched path, against a baseline just made.
    Rebaselined,
    /// What changed since the last scan, as the hasher's notices announced (it sweeps
    /// everything when it cannot be sure the named paths are all).
    Changes,
}

impl Monitor {
    /// The audit chain head (seq, hash of the last record) once every record queued so far
    /// is written.
    pub async fn audit_head(&self) -> crate::audit::Head {
        self.recorder.head().await.unwrap_or(crate::audit::Head {
            seq: 0,
            hash: crate::audit::GENESIS.to_owned(),
        })
    }

    /// Asks the hasher to sign its latest completed scan for `nonce`; returns the signed
    /// payload, its HMAC and its Ed25519 signature, checked for form and for the nonce.
    pub async fn attest(&self, nonce: &str) -> Result<(Vec<u8>, String, String), MonitorError> {
        let head = self.audit_head().await;
        let request = Request::Attest {
            nonce: nonce.to_owned(),
            audit_seq: head.seq,
            audit_head: head.hash,
        };
        match self.call(request).await? {
            Response::Attestation {
                payload,
                hmac,
                ed25519,
            } => {
                let parsed: Result<protocol::attest::Attestation, _> =
                    serde_json::from_slice(&payload);
                let form_ok = if hmac == protocol::sign::UNSIGNED {
                    ed25519.is_empty()
                } else {
                    protocol::hexfmt::is_sha256_hex(&hmac)
                        && protocol::fleet::PublicKey::signature_form_ok(&ed25519)
                };
                match parsed {
                    Ok(a)
                        if a.nonce == nonce
                            && form_ok
                            && a.violations.iter().all(|v| v.validate().is_ok()) =>
                    {
                        Ok((payload, hmac, ed25519))
                    }
                    _ => Err(self.misbehaved("attestation")),
                }
            }
            _ => Err(self.misbehaved("attestation answer")),
        }
    }

    /// One scan; a scan already running is waited for, never raced.
    pub async fn scan(&self) -> Result<State, MonitorError> {
        let result = {
            let _op = self.op.lock().await;
            self.scan_locked(Scan::Full).await
        };
        self.audit_flush().await;
        result
    }

    pub(super) async fn scan_locked(&self, kind: Scan) -> Result<State, MonitorError> {
        let request = match kind {
            Scan::Changes => Request::ScanChanged,
            Scan::Full | Scan::Rebaselined => Request::Scan,
        };
        let (response, changes_covered) = match self.call_counted(request).await {
            Ok(r) => r,
            Err(
                e @ MonitorError::Refused {
                    kind: ErrorKind::NoBaseline,
                    ..
                },
            ) => {
                self.apply(Input::Compromised(Reason::NoBaseline));
                return Err(e);
            }
            Err(e) => {
                self.apply(Input::Unverifiable(Reason::ScanFailed));
                return Err(e);
            }
        };
        let Response::Report(signed) = response else {
            return Err(self.misbehaved("scan response"));
        };
        // The hasher announces what changed before it starts a scan, and only then scans:
        // every notice that arrived before this report is covered by it, but those its
        // sentinel sent while the scan ran (counted by the link, in order).
        // While the stored baseline is rejected, scans compare with the hasher's reference.
        let (expected_digest, against_reference) = {
            let snap = lock(&self.snap);
            match (&snap.baseline, &snap.reference) {
                (Some(b), _) => (Some(b.digest.clone()), false),
                (None, Some(r)) => (Some(r.digest.clone()), true),
                (None, None) => (None, false),
            }
        };
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
        self.recorder.follow();
        let report = signed.report.clone();
        let state = self.apply(if against_reference {
            Input::Reference(&report)
        } else if kind == Scan::Rebaselined {
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

    /// Has the hasher make, store and adopt a new baseline (it checks the proof or the token
    /// itself), then scans against it; with the hasher's signed outcome for a ceremony.
    pub async fn rebaseline(
        &self,
        token: Option<Vec<u8>>,
        proof: Option<Proof>,
    ) -> Result<(State, Option<Signed>), MonitorError> {
        let result = {
            let _op = self.op.lock().await;
            self.rebaseline_locked(AuditRecord::Rebaseline, token, proof)
                .await
        };
        self.audit_flush().await;
        result
    }

    /// A challenge for the key ceremony, from the hasher: (challenge, ttl in ms).
    pub async fn rebaseline_challenge(&self) -> Result<(String, u64), MonitorError> {
        match self.call(Request::RebaselineChallenge).await? {
            Response::Challenge { challenge, ttl_ms }
                if protocol::authority::challenge_ok(&challenge) && ttl_ms <= 3_600_000 =>
            {
                Ok((challenge, ttl_ms))
            }
            _ => Err(self.misbehaved("rebaseline challenge")),
        }
    }

    /// The hasher's signed plan of a rebaseline of the current files (it reads them all, and
    /// checks the token again), audited by its digest.
    pub async fn rebaseline_plan(&self, token: Option<Vec<u8>>) -> Result<Signed, MonitorError> {
        let result = {
            let _op = self.op.lock().await;
            match self.call(Request::RebaselinePlan { token }).await {
                Ok(Response::Plan(signed)) if signed.well_formed() => {
                    let counts: serde_json::Value =
                        serde_json::from_slice(&signed.payload).unwrap_or_default();
                    let count = |name: &str| counts.get(name).cloned().unwrap_or_default();
                    self.audit(AuditRecord::RebaselinePlanned {
                        plan: signed.digest(),
                        generation: count("generation"),
                        added: count("added"),
                        removed: count("removed"),
                        changed: count("changed"),
                    });
                    Ok(signed)
                }
                Ok(_) => Err(self.misbehaved("rebaseline plan")),
                Err(e) => {
                    // A plan the files cannot make (a release disagreeing, a file missing).
                    if !matches!(e, MonitorError::HasherDown(_)) {
                        self.audit(AuditRecord::RebaselineRefused(Refused::Plan {
                            reason: e.to_string(),
                            at: "plan",
                        }));
                    }
                    Err(e)
                }
            }
        };
        self.audit_flush().await;
        result
    }

    pub(super) async fn rebaseline_locked(
        &self,
        made: fn(Made) -> AuditRecord,
        token: Option<Vec<u8>>,
        proof: Option<Proof>,
    ) -> Result<(State, Option<Signed>), MonitorError> {
        let response = match self.call(Request::CreateBaseline { token, proof }).await {
            Ok(Response::CeremonyRefused { outcome, plan })
                if outcome.well_formed() && plan.as_ref().is_none_or(Signed::well_formed) =>
            {
                return Err(self.ceremony_refused(outcome, plan));
            }
            Ok(r) => r,
            Err(e) => {
                self.audit(AuditRecord::RebaselineRefused(Refused::Baseline {
                    reason: e.to_string(),
                }));
                return Err(e);
            }
        };
        let Response::BaselineCreated { summary, outcome } = response else {
            return Err(self.misbehaved("baseline"));
        };
        let key = lock(&self.snap).key;
        // A new baseline goes past every generation the api has seen (the hasher was told).
        let seen = lock(&self.memory).prior().generation();
        if !summary.well_formed(key)
            || (seen > 0 && summary.generation <= seen)
            || !outcome.as_ref().is_none_or(Signed::well_formed)
        {
            return Err(self.misbehaved("baseline summary"));
        }
        self.audit(made(Made::of(&summary)));
        self.adopt(summary);
        let state = self.scan_locked(Scan::Rebaselined).await?;
        Ok((state, outcome))
    }

    /// A refused ceremony, audited: always where the files changed since the plan (only a
    /// right proof gets that far), coalesced like refused tokens otherwise (anyone can send a
    /// made-up proof).
    fn ceremony_refused(&self, outcome: Signed, plan: Option<Signed>) -> MonitorError {
        let said: serde_json::Value = serde_json::from_slice(&outcome.payload).unwrap_or_default();
        let reason = said["refused"]
            .as_str()
            .unwrap_or("refused")
            .chars()
            .take(protocol::message::MAX_REASON_LEN)
            .collect::<String>();
        let said_of = |name: &str| said.get(name).cloned().unwrap_or_default();
        let details = AuditRecord::RebaselineRefused(Refused::Ceremony {
            reason: reason.clone(),
            plan: said_of("plan"),
            new_plan: said_of("new_plan"),
        });
        if plan.is_some() {
            self.audit(details);
        } else {
            self.audit_limited(details);
        }
        MonitorError::CeremonyRefused {
            reason,
            outcome,
            plan,
        }
    }

    /// Asks the hasher to re-read its policy; on refusal the old policy stays.
    pub async fn reload(&self) -> Result<PolicySummary, MonitorError> {
        let result = self.reload_locked().await;
        self.audit_flush().await;
        result
    }

    async fn reload_locked(&self) -> Result<PolicySummary, MonitorError> {
        let _op = self.op.lock().await;
        match self.call(Request::Reload).await {
            Ok(Response::Reloaded { policy }) if policy.well_formed() => {
                self.audit(AuditRecord::Reload {
                    scan_interval_ms: policy.scan_interval_ms,
                    degradation_threshold: policy.degradation_threshold,
                    watched_paths: policy.watched_paths,
                });
                lock(&self.snap).policy = policy.clone();
                let _ = self.scan_locked(Scan::Full).await;
                Ok(policy)
            }
            Ok(_) => Err(self.misbehaved("reload answer")),
            Err(e) => {
                self.audit(AuditRecord::ReloadRefused {
                    reason: e.to_string(),
                });
                Err(e)
            }
        }
    }
}
