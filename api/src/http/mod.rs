//! The HTTP surface: routing, token checks, bounded bodies, timeouts, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::monitor::Monitor;

mod reply;
mod request;
mod routes;

pub use request::{handle, PROOF_HEADER};
#[cfg(test)]
pub(crate) use routes::status_body;

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
    let stopping = Arc::new(std::sync::atomic::AtomicBool::new(false));
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
                TokioIo::new(
                    crate::autoreply::JsonAutoAnswers::new(stream).stopping_with(stopping.clone()),
                ),
                service_fn(move |req| handle(req, m.clone())),
            );
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            let _ = conn.await;
            drop(permit);
        });
    }
    drop(listener);
    stopping.store(true, std::sync::atomic::Ordering::Release);
    tracing::info!("no longer accepting; draining in-flight requests");
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("drain timed out; closing remaining connections");
    }
}
