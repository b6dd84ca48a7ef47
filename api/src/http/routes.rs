//! The endpoints: which paths exist, which method each takes, and what each answers.

use std::sync::Arc;

use bytes::Bytes;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use serde_json::{json, Value};

use super::reply::{error, failed, json_reply, reply, streamed, Reply};
use crate::error::MonitorError;
use crate::monitor::Monitor;
use crate::verdict::verdict;

/// One endpoint.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// `GET /health`: liveness, no token.
    Health,
    /// `GET /api/v1/status`.
    Status,
    /// `GET /api/v1/baseline`: the signed baseline as the hasher stores it.
    Baseline,
    /// `GET /api/v1/verify`: 200 only when trusted.
    Verify,
    /// `POST /api/v1/scan`.
    Scan,
    /// `POST /api/v1/rebaseline`: with a proof of the rebaseline authority (or, where the
    /// hasher's policy allows it, the bearer token).
    Rebaseline,
    /// `POST /api/v1/rebaseline/challenge`: a challenge for the key ceremony, relayed from the
    /// hasher; no token (it grants nothing by itself, and the hasher keeps no table of them).
    RebaselineChallenge,
    /// `POST /api/v1/rebaseline/plan`: the hasher's signed plan of a rebaseline (token: it
    /// reads every watched file).
    RebaselinePlan,
    /// `POST /api/v1/reload`.
    Reload,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /api/v1/attestation?nonce=…`: a signed statement for a remote verifier.
    Attestation,
}

impl Route {
    /// The endpoint at `path`, if there is one.
    pub fn find(path: &str) -> Option<Route> {
        Some(match path {
            "/health" => Route::Health,
            "/api/v1/status" => Route::Status,
            "/api/v1/baseline" => Route::Baseline,
            "/api/v1/verify" => Route::Verify,
            "/api/v1/scan" => Route::Scan,
            "/api/v1/rebaseline" => Route::Rebaseline,
            "/api/v1/rebaseline/challenge" => Route::RebaselineChallenge,
            "/api/v1/rebaseline/plan" => Route::RebaselinePlan,
            "/api/v1/reload" => Route::Reload,
            "/metrics" => Route::Metrics,
            "/api/v1/attestation" => Route::Attestation,
            _ => return None,
        })
    }

    /// Whether the endpoint changes something (POST, behind the token or, for a rebaseline,
    /// a proof).
    pub fn mutating(self) -> bool {
        matches!(
            self,
            Route::Scan | Route::Rebaseline | Route::RebaselinePlan | Route::Reload
        )
    }

    /// Whether the endpoint takes POST.
    pub fn posted(self) -> bool {
        self.mutating() || self == Route::RebaselineChallenge
    }
}

/// Answers an admitted request. `presented` is the bearer token as received: the hasher
/// checks it again before it makes a baseline.
pub async fn dispatch(
    route: Route,
    monitor: &Arc<Monitor>,
    query: &str,
    presented: Option<Vec<u8>>,
    proof: Option<protocol::message::Proof>,
) -> Reply {
    match route {
        Route::Attestation => attestation(monitor, query).await,
        Route::Health => health(monitor),
        Route::Status => json_reply(200, &status_body(monitor)),
        Route::Metrics => metrics(monitor),
        Route::Baseline => match monitor.baseline_stream().await {
            Ok(stream) => streamed(stream),
            Err(MonitorError::Refused {
                kind: protocol::message::ErrorKind::NoBaseline,
                ..
            }) => error(404, "no_baseline", "no trusted baseline is adopted"),
            Err(e) => failed(&e),
        },
        Route::Verify => verify(monitor),
        // Each POST answer says at least what the Go service's did (scan: state, violations;
        // rebaseline: status "rebaselined", entries; reload: status "reloaded"), and more.
        Route::Scan => match monitor.scan().await {
            Ok(_) => {
                let mut body = status_body(monitor);
                body["violations"] = body["active_violations"].clone();
                json_reply(200, &body)
            }
            Err(e) => failed(&e),
        },
        Route::RebaselineChallenge => match monitor.rebaseline_challenge().await {
            Ok((challenge, ttl_ms)) => json_reply(
                200,
                &json!({ "challenge": challenge, "expires_in_ms": ttl_ms }),
            ),
            Err(e) => failed(&e),
        },
        Route::RebaselinePlan => match monitor.rebaseline_plan(presented).await {
            Ok(plan) => json_reply(200, &json!({ "plan": signed(&plan) })),
            Err(e) => failed(&e),
        },
        Route::Rebaseline => match monitor.rebaseline(presented, proof).await {
            Ok((_, outcome)) => {
                let mut body = status_body(monitor);
                body["status"] = json!("rebaselined");
                body["entries"] = body["baseline"]["entries"].clone();
                if let Some(o) = outcome {
                    body["outcome"] = signed(&o);
                }
                json_reply(200, &body)
            }
            Err(e @ MonitorError::CeremonyRefused { .. }) => ceremony_refused(&e),
            Err(e) => failed(&e),
        },
        Route::Reload => match monitor.reload().await {
            Ok(policy) => json_reply(
                200,
                &json!({ "status": "reloaded", "reloaded": true, "policy": policy, "monitor": status_body(monitor) }),
            ),
            Err(e) => failed(&e),
        },
    }
}

/// A signed plan or outcome as JSON: its payload (text: the signed bytes, exactly) and HMAC.
fn signed(s: &protocol::plan::Signed) -> Value {
    json!({ "payload": String::from_utf8_lossy(&s.payload), "hmac": s.hmac })
}

/// A refused ceremony: the hasher's signed outcome and, where the files changed, its new plan.
fn ceremony_refused(e: &MonitorError) -> Reply {
    let MonitorError::CeremonyRefused { outcome, plan, .. } = e else {
        return failed(e);
    };
    let mut body =
        json!({ "error": e.code(), "message": e.to_string(), "outcome": signed(outcome) });
    if let Some(p) = plan {
        body["plan"] = signed(p);
    }
    json_reply(e.status(), &body)
}

async fn attestation(monitor: &Monitor, query: &str) -> Reply {
    let nonce = query
        .split('&')
        .find_map(|kv| kv.strip_prefix("nonce="))
        .unwrap_or_default();
    if !protocol::attest::nonce_ok(nonce) {
        return error(
            400,
            "bad_nonce",
            "nonce must be 16 to 64 bytes of hex (32 to 128 hex digits)",
        );
    }
    match monitor.attest(nonce).await {
        Ok((payload, hmac, ed25519)) => {
            let text = String::from_utf8_lossy(&payload).into_owned();
            let parsed: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
            json_reply(
                200,
                &json!({ "payload": text, "hmac": hmac, "ed25519": ed25519, "attestation": parsed }),
            )
        }
        Err(e) => failed(&e),
    }
}

fn health(monitor: &Monitor) -> Reply {
    // Public liveness: with reads closed by the policy it says nothing more than that.
    let s = monitor.snapshot();
    let detail = s.policy_known && !s.policy.require_token_for_reads;
    let mut body = match &s.hasher_down {
        None => json!({ "status": "ok" }),
        Some(why) => json!({ "status": "hasher_unavailable", "reason": why }),
    };
    if detail {
        body["state"] = json!(s.machine.state);
    }
    json_reply(if s.hasher_down.is_none() { 200 } else { 503 }, &body)
}

fn metrics(monitor: &Monitor) -> Reply {
    let mut r = reply(
        200,
        Bytes::from(crate::metrics::render(&monitor.snapshot())),
    );
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

fn verify(monitor: &Monitor) -> Reply {
    let s = monitor.snapshot();
    match verdict(&s) {
        Ok(()) => json_reply(200, &json!({ "state": s.machine.state, "trusted": true })),
        Err(why) => json_reply(
            503,
            &json!({ "state": s.machine.state, "trusted": false, "reason": why }),
        ),
    }
}

pub(crate) fn status_body(monitor: &Monitor) -> Value {
    let s = monitor.snapshot();
    let trusted = verdict(&s);
    json!({
        "state": s.machine.state,
        "trusted": trusted.is_ok(),
        "reason": s.machine.reason,
        "untrusted_because": trusted.err(),
        "watched_files": s.last_report.as_ref().map_or(0, |r| r.report.watched_files),
        "sealed_files": s.last_report.as_ref().map_or(0, |r| r.report.sealed_files),
        "violation_count": s.machine.violation_count,
        "last_scan_at": s.last_report.as_ref().map(|r| r.report.completed_at.clone()),
        "scan_count": s.machine.scan_count,
        "change_notices": s.change_notices,
        // The Go service's meanings: scans that found violations, and scans at the threshold.
        "degraded_count": s.machine.degraded_scans,
        "recovery_count": s.machine.recovery_scans,
        "degraded_entries": s.machine.degraded_entries,
        "recovery_entries": s.machine.recovery_entries,
        "active_violations": s.machine.active,
        "degradation_threshold": s.policy.degradation_threshold,
        "scan_interval_ms": s.policy.scan_interval_ms,
        "signing": if s.key == protocol::message::KeyStatus::Present { "hmac-sha256" } else { "unsigned" },
        // The id of the Ed25519 key the last report was signed with: what a fleet enrolled.
        "ed25519_key_id": s.last_report.as_ref().and_then(|r| r.ed25519.split_once(':')).map(|(id, _)| id),
        "baseline": s.baseline,
        // What guards the adopted baseline against a rollback: the TPM's counter (its value)
        // or only the audit log; null while none is adopted.
        "rollback": s.baseline.as_ref().map(|b| json!({
            "anchor": b.rollback.anchor.as_str(),
            "tpm_index": b.rollback.tpm_index.map(|i| format!("0x{i:08x}")),
            "tpm_counter": b.rollback.tpm_counter,
        })),
        "baseline_problem": s.baseline_problem,
        // While the stored baseline is rejected: what scans compare with, never trusted.
        "reference": s.reference,
        // The OS image's release in force, and what this start did with it.
        "release": {
            "in_force": s.baseline.as_ref().and_then(|b| b.release.clone()),
            "transition": s.release.transition.as_ref().map(|t| json!({ "from": t.from, "to": t.to, "downgrade": t.downgrade, "generation": t.generation, "moved_count": t.moved_count })),
            "refused": s.release.refused,
        },
        "hasher": if s.hasher_down.is_some() { "down" } else { "up" },
        "last_report": s.last_report,
    })
}
