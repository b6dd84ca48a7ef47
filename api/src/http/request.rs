//! Admitting one request, in order: a known path, the right method, a declared length within
//! bounds, start-up's first verdict (bounded wait), the token where one is needed, the whole
//! body within its time; then the endpoint, within its time.

// A refusal is the answer itself, built once on the path that ends the request: returning it
// by value costs a 144-byte move, boxing it an allocation.
#![allow(clippy::result_large_err)]

use std::convert::Infallible;
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_LENGTH, WWW_AUTHENTICATE,
};
use hyper::{Method, Request};

use super::reply::{error, Reply};
use super::routes::{dispatch, Route};
use super::{BODY_TIMEOUT, FIRST_VERDICT_WAIT, MAX_BODY, READ_TIMEOUT, WRITE_TIMEOUT};
use crate::monitor::Monitor;

/// Answers one request; never fails at the hyper level.
pub async fn handle(req: Request<Incoming>, monitor: Arc<Monitor>) -> Result<Reply, Infallible> {
    Ok(admit_and_answer(req, &monitor)
        .await
        .unwrap_or_else(|refused| refused))
}

/// The endpoint's answer, or (`Err`) the answer refusing the request.
async fn admit_and_answer(req: Request<Incoming>, monitor: &Arc<Monitor>) -> Result<Reply, Reply> {
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let route = Route::find(&path).ok_or_else(|| error(404, "not_found", "no such endpoint"))?;
    check_method(route, req.method(), &path)?;
    check_declared_length(&req)?;
    // Liveness answers at once and needs no token (as the Go service's did); everything else is
    // held (bounded) until start-up has a verdict, so the request that socket-activated the
    // service is not told "starting".
    if route == Route::Health {
        return Ok(dispatch(route, monitor, "", None, None).await);
    }
    let wait = if route.mutating() {
        WRITE_TIMEOUT
    } else {
        FIRST_VERDICT_WAIT
    };
    monitor.first_verdict(wait).await;
    let proof = (route == Route::Rebaseline)
        .then(|| rebaseline_proof(&req))
        .transpose()?
        .flatten();
    let presented = if proof.is_some() {
        // The proof is the authority, checked by the hasher; no bearer token is involved.
        None
    } else {
        authorize(&req, route, monitor)?
    };
    drain_body(req).await?;
    let limit = if route.mutating() || route == Route::Attestation {
        WRITE_TIMEOUT
    } else {
        READ_TIMEOUT
    };
    Ok(
        tokio::time::timeout(limit, dispatch(route, monitor, &query, presented, proof))
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

fn check_method(route: Route, method: &Method, path: &str) -> Result<(), Reply> {
    let allowed = if route.posted() {
        Method::POST
    } else {
        Method::GET
    };
    if *method == allowed {
        return Ok(());
    }
    let mut r = error(
        405,
        "method_not_allowed",
        &format!("{path} takes {allowed}"),
    );
    r.headers_mut().insert(
        ALLOW,
        HeaderValue::from_static(if route.posted() { "POST" } else { "GET" }),
    );
    Err(r)
}

fn check_declared_length(req: &Request<Incoming>) -> Result<(), Reply> {
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    Ok(())
}

fn too_large() -> Reply {
    error(
        413,
        "body_too_large",
        "request bodies are limited to 4096 bytes",
    )
}

/// The bearer token presented (passed on: the hasher checks it again before it makes a
/// baseline), once it matched where the route or the policy needs one.
fn authorize(
    req: &Request<Incoming>,
    route: Route,
    monitor: &Monitor,
) -> Result<Option<Vec<u8>>, Reply> {
    let snap = monitor.snapshot();
    if !snap.policy_known {
        // Whether reads need the token is the policy's to say, and it is not known yet.
        return Err(error(
            503,
            "starting",
            "waiting for the hasher's first handshake",
        ));
    }
    let presented = bearer(req).map(<[u8]>::to_vec);
    if !(route.mutating() || snap.policy.require_token_for_reads) {
        return Ok(presented);
    }
    let Some(token) = monitor.token() else {
        return Err(error(
            503,
            "token_unavailable",
            "no service token is configured; this endpoint stays closed",
        ));
    };
    if presented.as_deref().is_some_and(|p| token.matches(p)) {
        return Ok(presented);
    }
    // RFC 6750: no credentials is 401 with a challenge; wrong credentials is 403.
    let (status, reason) = if presented.is_some() {
        (403, "invalid_token")
    } else {
        (401, "missing_token")
    };
    monitor.audit_auth_refused(req.method().as_str(), req.uri().path(), reason);
    let mut r = error(
        status,
        reason,
        "a valid `Authorization: Bearer <token>` header is required",
    );
    if status == 401 {
        r.headers_mut()
            .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    Err(r)
}

/// The header carrying the key ceremony's proof: `CHALLENGE:PLAN:GENERATION:PROOF` (the
/// challenge, the approved plan's digest and the proof 64 hex digits each, the generation
/// decimal).
pub const PROOF_HEADER: &str = "x-rebaseline-proof";

/// The rebaseline proof presented, if any; a malformed one is refused (400).
fn rebaseline_proof(req: &Request<Incoming>) -> Result<Option<protocol::message::Proof>, Reply> {
    let Some(value) = req.headers().get(PROOF_HEADER) else {
        return Ok(None);
    };
    let proof = value.to_str().ok().and_then(|v| {
        let mut parts = v.trim().split(':');
        let p = protocol::message::Proof {
            challenge: parts.next()?.to_owned(),
            plan: parts.next()?.to_owned(),
            generation: parts.next()?.parse().ok()?,
            proof: parts.next()?.to_owned(),
        };
        (parts.next().is_none() && p.well_formed()).then_some(p)
    });
    match proof {
        Some(p) => Ok(Some(p)),
        None => Err(error(
            400,
            "bad_proof",
            "X-Rebaseline-Proof must be CHALLENGE:PLAN:GENERATION:PROOF (64 lower-case hex digits each, the generation decimal): made by `integrity-monitor rebaseline --key FILE`",
        )),
    }
}

fn bearer(req: &Request<Incoming>) -> Option<&[u8]> {
    let value = req.headers().get(AUTHORIZATION)?.as_bytes();
    let (scheme, rest) = value.split_at(value.iter().position(|b| *b == b' ')?);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
}

/// Reads (and discards) the whole body: like the head, it must arrive in bounded time, or a
/// client that trickles it would hold a connection slot for ever.
async fn drain_body(req: Request<Incoming>) -> Result<(), Reply> {
    match tokio::time::timeout(
        BODY_TIMEOUT,
        Limited::new(req.into_body(), MAX_BODY).collect(),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(_)) => Err(too_large()),
        Err(_) => {
            let mut r = error(
                408,
                "request_timeout",
                "the request body did not arrive within 10 s",
            );
            r.headers_mut()
                .insert(CONNECTION, HeaderValue::from_static("close"));
            Err(r)
        }
    }
}
