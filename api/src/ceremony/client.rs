//! The operator tools' HTTP client: hyper over one loopback connection per request, the
//! status and body as hyper parsed them, bounded in size and time.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper::header::{AUTHORIZATION, CONNECTION, CONTENT_LENGTH, HOST};
use hyper::Request;
use hyper_util::rt::TokioIo;

/// Largest answer read.
const MAX_ANSWER: usize = 16 << 20;
/// A plan or an adoption reads every watched file: give it time.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(900);

/// The monitor at `http://HOST:PORT`.
pub struct Client {
    host: String,
    runtime: tokio::runtime::Runtime,
}

/// One answer: status and body.
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The body, parsed as JSON (`Null` when it is not).
    pub body: serde_json::Value,
}

impl Client {
    /// A client for `url` (`http://HOST:PORT`, nothing after it).
    pub fn new(url: &str) -> Result<Client, String> {
        let host = url
            .strip_prefix("http://")
            .map(|h| h.trim_end_matches('/'))
            .filter(|h| !h.is_empty() && !h.contains('/'))
            .ok_or_else(|| format!("{url}: expected http://HOST:PORT"))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("no runtime: {e}"))?;
        Ok(Client {
            host: host.to_owned(),
            runtime,
        })
    }

    /// `POST path` with an optional bearer token and extra headers; `progress` is called
    /// every second while the answer is awaited.
    pub fn post(
        &self,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        progress: &mut dyn FnMut(Duration),
    ) -> Result<Answer, String> {
        let mut req = Request::post(path)
            .header(HOST, &self.host)
            .header(CONTENT_LENGTH, "0")
            .header(CONNECTION, "close");
        if let Some(t) = token {
            req = req.header(AUTHORIZATION, format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req
            .body(Empty::<Bytes>::new())
            .map_err(|e| format!("{path}: {e}"))?;
        let host = self.host.clone();
        self.runtime.block_on(async move {
            let started = tokio::time::Instant::now();
            let exchange = exchange(&host, req);
            tokio::pin!(exchange);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.tick().await;
            loop {
                tokio::select! {
                    r = &mut exchange => return r,
                    _ = tick.tick() => {
                        let waited = started.elapsed();
                        if waited > ANSWER_TIMEOUT {
                            return Err(format!("{host}: no answer within {} s", ANSWER_TIMEOUT.as_secs()));
                        }
                        progress(waited);
                    }
                }
            }
        })
    }
}

async fn exchange(host: &str, req: Request<Empty<Bytes>>) -> Result<Answer, String> {
    let fail = |e: &dyn std::fmt::Display| format!("{host}: {e}");
    let stream = tokio::net::TcpStream::connect(host)
        .await
        .map_err(|e| fail(&e))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| fail(&e))?;
    tokio::spawn(conn);
    let res = sender.send_request(req).await.map_err(|e| fail(&e))?;
    let status = res.status().as_u16();
    let bytes = Limited::new(res.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| fail(&*e))?
        .to_bytes();
    let body = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    Ok(Answer { status, body })
}
