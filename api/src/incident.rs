//! Incident reporting: each transition into `degraded` or `recovery_required` is posted to the
//! appliance's incident recorder (loopback only), bounded to 64 KiB, retried with backoff, and
//! its outcome audited. Reporting runs in its own task and never holds up a scan.

use crate::error::{PostError, RecorderUrlError};
use crate::events::AuditRecord;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// Largest report body.
pub const MAX_BODY: usize = 64 * 1024;
/// Attempts per incident; waits double from one second between them.
const ATTEMPTS: u32 = 4;
/// Incidents queued while the recorder is slow; more are dropped (and audited).
pub const QUEUE: usize = 32;

/// The reporter's queue: (state entered, JSON body).
pub type Queue = mpsc::Sender<(String, Vec<u8>)>;

/// The credential id under which our unit loads the recorder's token.
pub const TOKEN_CREDENTIAL: &str = "incident-reporter-token";
/// Where the appliance provisions it (our unit's `LoadCredential=` source).
pub const TOKEN_SOURCE: &str =
    "/var/lib/secure-ai/credentials/incident-reporter-integrity-monitor.token";

/// Reads the recorder's token: at most 4 KiB, surrounding whitespace dropped, one line of
/// visible ASCII (it goes into a header); `None` when empty.
pub fn read_token(path: &std::path::Path) -> Result<Option<String>, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4097).read_to_string(&mut text))
        .map_err(|e| e.to_string())?;
    if text.len() > 4096 {
        return Err("longer than 4096 bytes".into());
    }
    let token = text.trim();
    if token == protocol::token::UNPROVISIONED {
        return Ok(None);
    }
    if !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("not one line of visible ASCII".into());
    }
    Ok((!token.is_empty()).then(|| token.to_owned()))
}

/// Where incidents go.
#[derive(Debug, Clone)]
pub struct Recorder {
    /// Loopback address of the recorder.
    pub addr: SocketAddr,
    /// Request path, e.g. `/api/v1/incidents/report`.
    pub path: String,
    /// Bearer token for the recorder; with none, requests carry no `Authorization` header.
    pub token: Option<String>,
}

impl Recorder {
    /// Parses `http://127.0.0.1:8515/api/v1/incidents/report`; only loopback is accepted.
    pub fn parse(url: &str, token: Option<String>) -> Result<Recorder, RecorderUrlError> {
        let rest = url
            .strip_prefix("http://")
            .ok_or(RecorderUrlError::Scheme)?;
        let (host, path) = rest
            .split_once('/')
            .map_or((rest, "/".to_owned()), |(h, p)| (h, format!("/{p}")));
        let addr: SocketAddr = host
            .replace("localhost", "127.0.0.1")
            .parse()
            .map_err(|why| RecorderUrlError::Host {
                host: host.to_owned(),
                why,
            })?;
        if !addr.ip().is_loopback() {
            return Err(RecorderUrlError::NotLoopback(url.to_owned()));
        }
        Ok(Recorder { addr, path, token })
    }
}

/// The JSON body for one transition, bounded to [`MAX_BODY`] by listing fewer violations.
pub fn body(
    to: &str,
    from: &str,
    reason: &str,
    violations: &[protocol::report::Violation],
    count: u32,
    scans: u64,
) -> Vec<u8> {
    let severity = if to == "recovery_required" {
        "critical"
    } else {
        "high"
    };
    // The recorder's own classes: a model that does not match its manifest, or anything else.
    let class = if violations
        .iter()
        .any(|v| v.category == protocol::Category::ModelFile)
    {
        "manifest_mismatch"
    } else {
        "integrity_violation"
    };
    let mut listed = violations.len();
    loop {
        // The recorder decodes `evidence` as a map of strings: every value is one.
        let mut evidence = serde_json::Map::new();
        let mut put = |k: String, v: String| {
            evidence.insert(k, Value::String(v));
        };
        put("state".into(), to.into());
        put("previous_state".into(), from.into());
        put("reason".into(), reason.into());
        put("violation_count".into(), count.to_string());
        put("scan_count".into(), scans.to_string());
        put("violations_listed".into(), listed.to_string());
        for (i, v) in violations[..listed].iter().enumerate() {
            put(format!("violation_{i}_path"), v.path.clone());
            put(
                format!("violation_{i}_category"),
                v.category.as_str().into(),
            );
            put(format!("violation_{i}_action"), action_str(v.action).into());
            put(
                format!("violation_{i}_expected_hash"),
                v.expected_hash.clone(),
            );
            put(
                format!("violation_{i}_actual_hash"),
                v.actual_hash.to_string(),
            );
        }
        let v = json!({
            "class": class,
            "source": "integrity-monitor",
            "severity": severity,
            "description": format!("integrity state {from} -> {to}: {reason}"),
            "evidence": evidence,
        });
        let bytes = serde_json::to_vec(&v).unwrap_or_default();
        if bytes.len() <= MAX_BODY || listed == 0 {
            return bytes;
        }
        listed /= 2;
    }
}

fn action_str(a: protocol::Action) -> &'static str {
    match a {
        protocol::Action::DegradeAppliance => "degrade_appliance",
        protocol::Action::ReloadPolicy => "reload_policy",
        protocol::Action::QuarantineModel => "quarantine_model",
    }
}

async fn post_once(rec: &Recorder, body: &Bytes) -> Result<u16, PostError> {
    let stream = tokio::time::timeout(
        Duration::from_secs(5),
        tokio::net::TcpStream::connect(rec.addr),
    )
    .await
    .map_err(|_| PostError::Timeout("connect"))?
    .map_err(PostError::Connect)?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    let mut req = hyper::Request::post(rec.path.as_str())
        .header("host", rec.addr.to_string())
        .header("content-type", "application/json");
    if let Some(token) = &rec.token {
        req = req.header("authorization", format!("Bearer {token}"));
    }
    let req = req.body(Full::new(body.clone()))?;
    let resp = tokio::time::timeout(Duration::from_secs(10), sender.send_request(req))
        .await
        .map_err(|_| PostError::Timeout("response"))??;
    let status = resp.status().as_u16();
    let _ = http_body_util::Limited::new(resp.into_body(), 64 * 1024)
        .collect()
        .await;
    if (200..300).contains(&status) {
        Ok(status)
    } else {
        Err(PostError::Status(status))
    }
}

/// Posts queued incidents one at a time with retry and backoff, auditing each outcome.
pub async fn run(
    rec: Recorder,
    mut queue: mpsc::Receiver<(String, Vec<u8>)>,
    audit: crate::recorder::Recorder,
) {
    let record = |r: AuditRecord| audit.record(r);
    while let Some((to, body)) = queue.recv().await {
        let body = Bytes::from(body);
        let mut wait = Duration::from_secs(1);
        let mut last = String::new();
        let mut sent = false;
        for attempt in 1..=ATTEMPTS {
            match post_once(&rec, &body).await {
                Ok(status) => {
                    record(AuditRecord::IncidentReported {
                        state: to.clone(),
                        status,
                        attempt,
                    });
                    sent = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(attempt, error = %e, "incident report failed");
                    last = e.to_string();
                    if attempt < ATTEMPTS {
                        tokio::time::sleep(wait).await;
                        wait *= 2;
                    }
                }
            }
        }
        if !sent {
            record(AuditRecord::IncidentReportFailed {
                state: to.clone(),
                attempts: ATTEMPTS,
                error: last.clone(),
            });
        }
    }
}
