//! The HTTP surface: routing, token checks, bounded bodies, timeouts, graceful shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CACHE_CONTROL, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE,
    WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::error::MonitorError;
use crate::monitor::Monitor;
use crate::verdict::verdict;

/// Largest request body accepted (the API takes none; this only bounds what is drained).
const MAX_BODY: usize = 4096;
/// Largest request head (request line plus headers).
const MAX_HEAD: usize = 16 * 1024;
/// Most concurrent connections served (fewer when the fd limit is lower); more wait in the
/// kernel's backlog. Idle ones are closed by the head timeout.
const MAX_CONNECTIONS: usize = 16_384;
/// Time a client has to send its request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a client has to send its request body once the head is in.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a read-only request may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Time a scan, rebaseline or reload may take before the client is told 504 (it still completes).
const WRITE_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a read waits for start-up's first verdict before answering 503 "starting".
const FIRST_VERDICT_WAIT: Duration = Duration::from_secs(60);
/// In-flight requests get this long to finish at shutdown.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Health,
    Status,
    Baseline,
    Verify,
    Scan,
    Rebaseline,
    Reload,
    Metrics,
    Attestation,
}

impl Route {
    fn find(path: &str) -> Option<Route> {
        Some(match path {
            "/health" => Route::Health,
            "/api/v1/status" => Route::Status,
            "/api/v1/baseline" => Route::Baseline,
            "/api/v1/verify" => Route::Verify,
            "/api/v1/scan" => Route::Scan,
            "/api/v1/rebaseline" => Route::Rebaseline,
            "/api/v1/reload" => Route::Reload,
            "/metrics" => Route::Metrics,
            "/api/v1/attestation" => Route::Attestation,
            _ => return None,
        })
    }

    fn mutating(self) -> bool {
        matches!(self, Route::Scan | Route::Rebaseline | Route::Reload)
    }
}

type Reply = Response<Full<Bytes>>;

fn reply(status: u16, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

fn json_reply(status: u16, value: &Value) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, Bytes::from(body))
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    json_reply(status, &json!({ "error": code, "message": message }))
}

fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Answers one request; never fails at the hyper level.
pub async fn handle(req: Request<Incoming>, monitor: Arc<Monitor>) -> Result<Reply, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let req_query = req.uri().query().unwrap_or_default().to_owned();
    let Some(route) = Route::find(&path) else {
        return Ok(error(404, "not_found", "no such endpoint"));
    };
    let allowed = if route.mutating() {
        Method::POST
    } else {
        Method::GET
    };
    if method != allowed {
        let mut r = error(
            405,
            "method_not_allowed",
            &format!("{path} takes {allowed}"),
        );
        r.headers_mut().insert(
            ALLOW,
            HeaderValue::from_static(if route.mutating() { "POST" } else { "GET" }),
        );
        return Ok(r);
    }
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Ok(error(
            413,
            "body_too_large",
            "request bodies are limited to 4096 bytes",
        ));
    }
    // Liveness answers at once and needs no token (as the Go service's did); everything else is
    // held (bounded) until start-up has a verdict, so the request that socket-activated the
    // service is not told "starting".
    if route == Route::Health {
        return Ok(dispatch(route, &monitor, "", None).await);
    }
    {
        let wait = if route.mutating() {
            WRITE_TIMEOUT
        } else {
            FIRST_VERDICT_WAIT
        };
        monitor.first_verdict(wait).await;
    }
    let snap = monitor.snapshot();
    if !snap.policy_known {
        // Whether reads need the token is the policy's to say, and it is not known yet.
        return Ok(error(
            503,
            "starting",
            "waiting for the hasher's first handshake",
        ));
    }
    let needs_token = route.mutating() || snap.policy.require_token_for_reads;
    let presented = bearer(&req).map(<[u8]>::to_vec);
    if needs_token {
        let Some(token) = monitor.token() else {
            return Ok(error(
                503,
                "token_unavailable",
                "no service token is configured; this endpoint stays closed",
            ));
        };
        if !presented.as_deref().is_some_and(|p| token.matches(p)) {
            // RFC 6750: no credentials is 401 with a challenge; wrong credentials is 403.
            let (status, reason) = if presented.is_some() {
                (403, "invalid_token")
            } else {
                (401, "missing_token")
            };
            monitor.audit_auth_refused(method.as_str(), &path, reason);
            let mut r = error(
                status,
                reason,
                "a valid `Authorization: Bearer <token>` header is required",
            );
            if status == 401 {
                r.headers_mut()
                    .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            return Ok(r);
        }
    }
    // The whole body, like the head, must arrive in bounded time: a client that trickles it
    // would otherwise hold a connection slot for ever.
    match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => {
            return Ok(error(
                413,
                "body_too_large",
                "request bodies are limited to 4096 bytes",
            ))
        }
        Err(_) => {
            let mut r = error(
                408,
                "request_timeout",
                "the request body did not arrive within 10 s",
            );
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            return Ok(r);
        }
    }
    let query = req_query;
    let limit = if route.mutating() || route == Route::Attestation {
        WRITE_TIMEOUT
    } else {
        READ_TIMEOUT
    };
    Ok(
        tokio::time::timeout(limit, dispatch(route, &monitor, &query, presented))
            .await
            .unwrap_or_else(|_| {
                error(
                    504,
                    "timeout",
                    "the operation is still running; check /api/v1/status",
                )
            }),
    )
}

fn status_body(monitor: &Monitor) -> Value {
    let s = monitor.snapshot();
    let trusted = verdict(&s);
    json!({
        "state": s.machine.state,
        "trusted": trusted.is_ok(),
        "reason": s.machine.reason,
        "untrusted_because": trusted.err(),
        "watched_files": s.last_report.as_ref().map_or(0, |r| r.report.watched_files),
        "violation_count": s.machine.violation_count,
        "last_scan_at": s.last_report.as_ref().map(|r| r.report.completed_at.clone()),
        "scan_count": s.machine.scan_count,
        "degraded_count": s.machine.degraded_count,
        "degraded_scans": s.machine.degraded_scans,
        "recovery_count": s.machine.recovery_count,
        "active_violations": s.machine.active,
        "degradation_threshold": s.policy.degradation_threshold,
        "scan_interval_ms": s.policy.scan_interval_ms,
        "signing": if s.key == protocol::message::KeyStatus::Present { "hmac-sha256" } else { "unsigned" },
        "baseline": s.baseline,
        "baseline_problem": s.baseline_problem,
        "hasher": if s.hasher_down.is_some() { "down" } else { "up" },
        "last_report": s.last_report,
    })
}

/// `presented` is the bearer token as received: the hasher checks it again before it makes a
/// baseline.
async fn dispatch(
    route: Route,
    monitor: &Monitor,
    query: &str,
    presented: Option<Vec<u8>>,
) -> Reply {
    match route {
        Route::Attestation => {
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
                Ok((payload, hmac)) => {
                    let text = String::from_utf8_lossy(&payload).into_owned();
                    let parsed: Value = serde_json::from_slice(&payload).unwrap_or(Value::Null);
                    json_reply(
                        200,
                        &json!({ "payload": text, "hmac": hmac, "attestation": parsed }),
                    )
                }
                Err(e) => error(e.status(), e.code(), &e.to_string()),
            }
        }
        Route::Health => {
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
        Route::Status => json_reply(200, &status_body(monitor)),
        Route::Metrics => {
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
        Route::Baseline => match monitor.baseline_bytes().await {
            Ok(bytes) => reply(200, bytes),
            Err(MonitorError::Refused {
                kind: protocol::message::ErrorKind::NoBaseline,
                ..
            }) => error(404, "no_baseline", "no trusted baseline is adopted"),
            Err(e) => error(e.status(), e.code(), &e.to_string()),
        },
        Route::Verify => {
            let s = monitor.snapshot();
            match verdict(&s) {
                Ok(()) => json_reply(200, &json!({ "state": s.machine.state, "trusted": true })),
                Err(why) => json_reply(
                    503,
                    &json!({ "state": s.machine.state, "trusted": false, "reason": why }),
                ),
            }
        }
        // Each POST answer says at least what the Go service's did (scan: state, violations;
        // rebaseline: status "rebaselined", entries; reload: status "reloaded"), and more.
        Route::Scan => match monitor.scan().await {
            Ok(_) => {
                let mut body = status_body(monitor);
                body["violations"] = body["active_violations"].clone();
                json_reply(200, &body)
            }
            Err(e) => error(e.status(), e.code(), &e.to_string()),
        },
        Route::Rebaseline => match monitor.rebaseline(presented.unwrap_or_default()).await {
            Ok(_) => {
                let mut body = status_body(monitor);
                body["status"] = json!("rebaselined");
                body["entries"] = body["baseline"]["entries"].clone();
                json_reply(200, &body)
            }
            Err(e) => error(e.status(), e.code(), &e.to_string()),
        },
        Route::Reload => match monitor.reload().await {
            Ok(policy) => json_reply(
                200,
                &json!({ "status": "reloaded", "reloaded": true, "policy": policy, "monitor": status_body(monitor) }),
            ),
            Err(e) => error(e.status(), e.code(), &e.to_string()),
        },
    }
}

/// Serves until `shutdown` resolves, then drains in-flight requests for up to [`DRAIN_TIMEOUT`].
pub async fn serve(
    listener: TcpListener,
    monitor: Arc<Monitor>,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let limit = crate::sys::fd_limit()
        .saturating_sub(64)
        .clamp(64, MAX_CONNECTIONS);
    let slots = Arc::new(Semaphore::new(limit));
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            () = &mut shutdown => break,
        };
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let m = monitor.clone();
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEAD_TIMEOUT)
            .max_buf_size(MAX_HEAD)
            .serve_connection(
                TokioIo::new(crate::autoreply::JsonAutoAnswers::new(stream)),
                service_fn(move |req| handle(req, m.clone())),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    tracing::info!("no longer accepting; draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}
