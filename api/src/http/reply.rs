//! Building answers: every one is JSON (bar `/metrics`) and never cached.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::Frame;
use hyper::header::{HeaderValue, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};
use tokio::sync::mpsc;

use crate::error::MonitorError;
use crate::monitor::ManifestStream;

/// An answer: small and bounded bodies whole, the baseline manifest as it streams.
pub type Reply = Response<Either<Full<Bytes>, Streamed>>;

/// A body relayed part by part; an `Err` part ends it short (the connection is closed, and
/// the client sees fewer bytes than the Content-Length promised).
pub struct Streamed(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl hyper::body::Body for Streamed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .0
            .poll_recv(cx)
            .map(|part| part.map(|r| r.map(Frame::data)))
    }
}

/// A 200 answer relaying `stream`, with its length announced.
pub fn streamed(stream: ManifestStream) -> Reply {
    let mut r = Response::new(Either::Right(Streamed(stream.parts)));
    headers(&mut r);
    r.headers_mut()
        .insert(CONTENT_LENGTH, HeaderValue::from(stream.total));
    r
}

fn headers(r: &mut Reply) {
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r.headers_mut()
        .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// An answer carrying `body` as JSON.
pub fn reply(status: u16, body: Bytes) -> Reply {
    let mut r = Response::new(Either::Left(Full::new(body)));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    headers(&mut r);
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
