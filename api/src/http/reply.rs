//! Building answers: every one is JSON (bar `/metrics`) and never cached.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use crate::error::MonitorError;

/// An answer with its whole body in memory (bodies are small and bounded).
pub type Reply = Response<Full<Bytes>>;

/// An answer carrying `body` as JSON.
pub fn reply(status: u16, body: Bytes) -> Reply {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An answer carrying `value`, newline-terminated for curl.
pub fn json_reply(status: u16, value: &Value) -> Reply {
    let mut body = serde_json::to_vec(value).unwrap_or_default();
    body.push(b'\n');
    reply(status, Bytes::from(body))
}

/// An error answer: a machine-readable `code` and a message for the operator.
pub fn error(status: u16, code: &str, message: &str) -> Reply {
    json_reply(status, &json!({ "error": code, "message": message }))
}

/// The answer for a monitor operation that failed.
pub fn failed(e: &MonitorError) -> Reply {
    error(e.status(), e.code(), &e.to_string())
}
