//! `GET /api/v1/baseline`: the adopted manifest relayed part by part as the hasher sends it,
//! so the api never holds more than a few parts of it whatever its size. Its digest is checked
//! before the last part goes out: a client that receives all `total` bytes (the body's
//! Content-Length) received the manifest whose digest the hasher announced, and a hasher that
//! sends anything else is cut off and the body ends short.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use protocol::message::{baseline_part_ok, ErrorKind};
use protocol::{Request, Response};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use super::{lock, Monitor};
use crate::error::MonitorError;

/// Parts relayed ahead of the client (the api's memory for one download: this many parts).
const AHEAD: usize = 2;
/// A client that takes no part for this long is dropped (its download holds a task).
const CLIENT_STALL: Duration = Duration::from_secs(30);

/// The manifest as it streams: its length, and its parts in order (an `Err` ends it short).
pub struct ManifestStream {
    /// The whole manifest's length.
    pub total: u64,
    /// The parts, in order.
    pub parts: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Monitor {
    /// Starts relaying the adopted manifest; the first part is asked for before this returns,
    /// so "no baseline" and a hasher that is down are answered as errors, not as a body.
    pub async fn baseline_stream(self: &Arc<Self>) -> Result<ManifestStream, MonitorError> {
        let Some(expected) = lock(&self.snap).baseline.as_ref().map(|b| b.digest.clone()) else {
            return Err(MonitorError::Refused {
                kind: ErrorKind::NoBaseline,
                message: "no baseline is adopted".into(),
            });
        };
        let (total, first) = self.baseline_part(0, None).await?;
        let (tx, parts) = mpsc::channel(AHEAD);
        tokio::spawn(self.clone().relay(expected, total, first, tx));
        Ok(ManifestStream { total, parts })
    }

    /// One part from `offset`, checked: the part asked for, of the manifest of length `total`
    /// when that is known.
    async fn baseline_part(
        &self,
        offset: u64,
        total: Option<u64>,
    ) -> Result<(u64, Vec<u8>), MonitorError> {
        match self.call(Request::GetBaseline { offset }).await? {
            Response::Baseline {
                total: t,
                offset: o,
                part,
            } if baseline_part_ok(offset, t, o, &part) && total.is_none_or(|x| x == t) => {
                Ok((t, part))
            }
            _ => Err(self.misbehaved("baseline manifest part")),
        }
    }

    async fn relay(
        self: Arc<Self>,
        expected: String,
        total: u64,
        first: Vec<u8>,
        tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    ) {
        let mut sha = Sha256::new();
        let mut offset = 0u64;
        let mut part = first;
        loop {
            sha.update(&part);
            offset += part.len() as u64;
            let last = offset == total;
            if last && protocol::hexfmt::encode(&sha.finalize_reset()) != expected {
                // The manifest changed under the download (a rebaseline), or the hasher lied:
                // the client never gets the last bytes.
                tracing::warn!(
                    "baseline manifest does not match the adopted digest; download cut short"
                );
                let still = lock(&self.snap).baseline.as_ref().map(|b| b.digest.clone());
                if still.as_deref() == Some(expected.as_str()) {
                    // No rebaseline in between: the hasher sent other bytes than it adopted.
                    let _ = self.misbehaved("baseline manifest (digest)");
                }
                let _ = tx
                    .send(Err(std::io::Error::other("manifest digest mismatch")))
                    .await;
                return;
            }
            let sent = tokio::time::timeout(CLIENT_STALL, tx.send(Ok(Bytes::from(part)))).await;
            if !matches!(sent, Ok(Ok(()))) || last {
                return; // done, or the client went away or stalled
            }
            part = match self.baseline_part(offset, Some(total)).await {
                Ok((_, p)) => p,
                Err(e) => {
                    let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
                    return;
                }
            };
        }
    }
}
