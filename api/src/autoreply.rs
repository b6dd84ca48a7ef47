//! hyper answers a request it cannot parse (400, 414, 431) itself, with an empty body, before
//! any handler runs and with no hook to change it. This wrapper around a connection's socket
//! recognises such an answer as it is written and gives it the JSON body every other error of
//! the api has. It then closes the way careful servers do: after its answer it stops writing
//! and reads, bounded in bytes and time, what the client is still sending, so that the client
//! reads the answer instead of a reset for the bytes nobody read.
//!
//! hyper also drops, without a word, a connection whose request head does not arrive within
//! its header timeout. A client that sent part of a request then gets a 408 with a JSON body,
//! written as the connection is dropped; an idle keep-alive connection is closed silently.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// At most this much of a refused request is read and thrown away before closing.
const LINGER_BYTES: usize = 256 * 1024;
/// For at most this long.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// The answer to a request whose head or body did not arrive in time.
pub const REQUEST_TIMEOUT: &[u8] = b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 86\r\n\r\n{\"error\":\"request_timeout\",\"message\":\"the request did not arrive in time; try again\"}\n";

/// The answer to a request that arrived as the api stopped accepting: unavailable, not late.
pub const STOPPING: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 76\r\n\r\n{\"error\":\"stopping\",\"message\":\"the monitor is stopping; try again shortly\"}\n";

/// A socket that can be written without waiting, for the last word as a connection is dropped.
pub trait TryWrite {
    /// Writes what fits now, without waiting.
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize>;
}

impl TryWrite for tokio::net::TcpStream {
    fn try_write_now(&self, buf: &[u8]) -> io::Result<usize> {
        self.try_write(buf)
    }
}

/// A socket whose automatic hyper error answers carry a JSON body.
pub struct JsonAutoAnswers<S: TryWrite> {
    inner: S,
    /// Request bytes read since the last answer began: an unanswered request in progress.
    unanswered: usize,
    /// The answer written in place of hyper's, how much of it is out, and the length of
    /// hyper's buffer to report once all of it is.
    replacing: Option<(Vec<u8>, usize, usize)>,
    /// Set once an automatic answer went out: the connection then lingers on shutdown.
    answered: bool,
    linger: Option<(Pin<Box<Sleep>>, usize)>,
    /// Set by the server once it stops accepting: a request dropped after that was cut off by
    /// the shutdown, not by its own slowness.
    stopping: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl<S: TryWrite> JsonAutoAnswers<S> {
    /// Wraps a connection's socket.
    pub fn new(inner: S) -> Self {
        JsonAutoAnswers {
            inner,
            unanswered: 0,
            replacing: None,
            answered: false,
            linger: None,
            stopping: None,
        }
    }

    /// Answers a request dropped once `flag` is set with 503 "stopping" instead of 408.
    pub fn stopping_with(mut self, flag: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Self {
        self.stopping = Some(flag);
        self
    }
}

/// The JSON answer for hyper's automatic error head `buf`, or None if `buf` is anything else.
/// Every answer of the api's own has a JSON body, so an error head with `content-length: 0`
/// that is the whole buffer can only be hyper's.
pub fn rewrite(buf: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(buf).ok()?;
    let status_line = text.strip_prefix("HTTP/1.1 ")?.split("\r\n").next()?;
    let (code, reason) = status_line.split_once(' ')?;
    if !(code.len() == 3 && (code.starts_with('4') || code.starts_with('5'))) {
        return None;
    }
    if text.find("\r\n\r\n")? + 4 != text.len() {
        return None;
    }
    let headers: Vec<&str> = text[..text.len() - 4].split("\r\n").skip(1).collect();
    if !headers
        .iter()
        .any(|h| h.eq_ignore_ascii_case("content-length: 0"))
    {
        return None;
    }
    let error = match code {
        "400" => "bad_request",
        "414" => "uri_too_long",
        "431" => "header_too_large",
        _ => "http_error",
    };
    let message = match code {
        "414" => "the request target is too long",
        "431" => "the request head is larger than the api accepts (16 KiB)",
        _ => "the request could not be parsed as HTTP/1.1",
    };
    let mut body = serde_json::to_vec(&json!({ "error": error, "message": message })).ok()?;
    body.push(b'\n');
    let mut out = format!("HTTP/1.1 {code} {reason}\r\n");
    for h in headers {
        let name = h.split(':').next().unwrap_or_default();
        if !["content-length", "content-type", "connection"]
            .iter()
            .any(|n| name.eq_ignore_ascii_case(n))
        {
            out.push_str(h);
            out.push_str("\r\n");
        }
    }
    out.push_str("content-type: application/json\r\nconnection: close\r\n");
    out.push_str(&format!("content-length: {}\r\n\r\n", body.len()));
    let mut out = out.into_bytes();
    out.extend_from_slice(&body);
    Some(out)
}

impl<S: TryWrite> Drop for JsonAutoAnswers<S> {
    fn drop(&mut self) {
        // Dropped with part of a request read and nothing answered: hyper's header timeout,
        // or the shutdown closing a connection whose request it had not yet taken up.
        if self.unanswered > 0 && !self.answered {
            let stopping = self
                .stopping
                .as_ref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire));
            let answer = if stopping { STOPPING } else { REQUEST_TIMEOUT };
            let _ = self.inner.try_write_now(answer);
        }
    }
}

impl<S: AsyncRead + TryWrite + Unpin> AsyncRead for JsonAutoAnswers<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let read = buf.filled().len().saturating_sub(before);
        self.unanswered = self.unanswered.saturating_add(read);
        polled
    }
}

impl<S: AsyncRead + AsyncWrite + TryWrite + Unpin> AsyncWrite for JsonAutoAnswers<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.unanswered = 0;
        if self.replacing.is_none() {
            match rewrite(buf) {
                Some(answer) => {
                    self.replacing = Some((answer, 0, buf.len()));
                    self.answered = true;
                }
                None => return Pin::new(&mut self.inner).poll_write(cx, buf),
            }
        }
        let this = &mut *self;
        if let Some((answer, written, reported)) = this.replacing.as_mut() {
            while *written < answer.len() {
                let n = ready!(Pin::new(&mut this.inner).poll_write(cx, &answer[*written..]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                *written += n;
            }
            let reported = *reported;
            this.replacing = None;
            return Poll::Ready(Ok(reported));
        }
        Poll::Ready(Ok(0))
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.answered {
            return Pin::new(&mut this.inner).poll_shutdown(cx);
        }
        if this.linger.is_none() {
            ready!(Pin::new(&mut this.inner).poll_shutdown(cx))?;
            this.linger = Some((Box::pin(tokio::time::sleep(LINGER_TIME)), 0));
        }
        let Some((deadline, drained)) = this.linger.as_mut() else {
            return Poll::Ready(Ok(()));
        };
        let mut scratch = [0u8; 4096];
        loop {
            if deadline.as_mut().poll(cx).is_ready() || *drained >= LINGER_BYTES {
                return Poll::Ready(Ok(()));
            }
            let mut rb = ReadBuf::new(&mut scratch);
            match ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb)) {
                Ok(()) if rb.filled().is_empty() => return Poll::Ready(Ok(())),
                Ok(()) => *drained += rb.filled().len(),
                Err(_) => return Poll::Ready(Ok(())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{rewrite, REQUEST_TIMEOUT, STOPPING};

    #[test]
    fn the_timeout_and_stopping_answers_are_well_formed() {
        for (answer, error) in [(REQUEST_TIMEOUT, "request_timeout"), (STOPPING, "stopping")] {
            let text = std::str::from_utf8(answer).expect("utf8");
            let (head, body) = text.split_once("\r\n\r\n").expect("head");
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{text}"
            );
            let v: serde_json::Value = serde_json::from_str(body).expect("json");
            assert_eq!(v["error"], error);
        }
        assert!(STOPPING.starts_with(b"HTTP/1.1 503 "));
    }

    #[test]
    fn hypers_empty_error_heads_get_a_json_body_and_nothing_else_is_touched() {
        let auto = b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\ndate: Wed, 25 Nov 2026 08:00:00 GMT\r\n\r\n";
        let out = String::from_utf8(rewrite(auto).expect("rewritten")).expect("utf8");
        let (head, body) = out.split_once("\r\n\r\n").expect("head");
        assert!(head.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"));
        assert!(head.contains("\r\ndate: Wed, 25 Nov 2026 08:00:00 GMT"));
        assert!(head.contains("\r\ncontent-type: application/json"));
        assert!(head.contains(&format!("\r\ncontent-length: {}", body.len())));
        assert!(!head.contains("content-length: 0"));
        let v: serde_json::Value = serde_json::from_str(body).expect("json");
        assert_eq!(v["error"], "header_too_large");

        for untouched in [
            &b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"[..],
            b"HTTP/1.1 404 Not Found\r\ncontent-length: 20\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n{}",
            b"{\"error\":\"x\"}",
        ] {
            assert_eq!(rewrite(untouched), None, "{untouched:?}");
        }
    }
}
