//! The request loop: one request at a time, answered from the hasher's own policy and key.

use std::path::PathBuf;

use protocol::baseline::Manifest;
use protocol::frame;
use protocol::message::{BaselineSummary, ErrorKind, KeyStatus, Request, Response};
use protocol::sign::sha256_hex;
use protocol::PROTOCOL_VERSION;

use crate::channel::{Channel, RecvError};
use crate::hashing::FileHasher;
use crate::key::Key;
use crate::policy::Policy;
use crate::scan;

/// Everything the hasher holds between requests.
pub struct Server {
    policy_path: PathBuf,
    policy: Policy,
    key: Option<Key>,
    baseline: Option<(Manifest, String)>,
    hasher: FileHasher,
    seq: u64,
    greeted: bool,
    read_set: Vec<PathBuf>,
    watcher: Option<crate::watch::Watcher>,
    /// The latest completed scan, and when it completed on the monotonic clock.
    last_report: Option<(protocol::report::ScanReport, std::time::Instant)>,
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

fn summary(m: &Manifest, digest: &str) -> BaselineSummary {
    BaselineSummary {
        digest: digest.to_owned(),
        entries: u32::try_from(m.entries.len()).unwrap_or(u32::MAX),
        signed: m.is_signed(),
        created_at: m.created_at.clone(),
    }
}

impl Server {
    /// A server for a loaded policy and key, sandboxed to `read_set`.
    pub fn new(
        policy_path: PathBuf,
        policy: Policy,
        key: Option<Key>,
        read_set: Vec<PathBuf>,
    ) -> Server {
        let hasher = FileHasher::for_policy(&policy);
        let policy_for_watch = policy.clone();
        Server {
            policy_path,
            policy,
            key,
            baseline: None,
            hasher,
            seq: 0,
            greeted: false,
            read_set,
            last_report: None,
            watcher: crate::watch::Watcher::new(&policy_for_watch)
                .map_err(|e| tracing::warn!(error = %e, "no inotify: changes wait for the periodic scan"))
                .ok(),
        }
    }

    /// Serves until the api closes the channel (Ok) or the socket fails (Err).
    pub fn serve(&mut self, channel: &mut Channel) -> Result<(), String> {
        loop {
            if !self.wait_for_request(channel)? {
                continue;
            }
            let message = match channel.recv_message() {
                Ok(m) => m,
                Err(RecvError::Closed) => return Ok(()),
                Err(RecvError::Io(e)) => return Err(format!("channel failed: {e}")),
                Err(RecvError::Frame(e)) => {
                    tracing::warn!(error = %e, "refused a frame from the api");
                    channel
                        .send(0, &error(ErrorKind::Protocol, e.to_string()))
                        .map_err(|e| e.to_string())?;
                    continue;
                }
            };
            let (id, response) = match frame::decode::<Request>(&message) {
                Ok(envelope) => (envelope.id, self.handle(envelope.body)),
                Err(e) => {
                    tracing::warn!(error = %e, "refused a message from the api");
                    (0, error(ErrorKind::Protocol, e.to_string()))
                }
            };
            channel
                .send(id, &response)
                .map_err(|e| format!("channel failed: {e}"))?;
        }
    }

    /// Signs the latest completed scan for a verifier's nonce.
    fn attest(&self, nonce: String, audit_seq: u64, audit_head: String) -> Response {
        use protocol::attest::{nonce_ok, Attestation, DOMAIN};
        if !nonce_ok(&nonce) || !(protocol::hexfmt::is_sha256_hex(&audit_head)) {
            return error(
                ErrorKind::Protocol,
                "nonce must be 16-64 bytes of hex and the audit head a SHA-256",
            );
        }
        let Some((report, completed)) = &self.last_report else {
            return error(ErrorKind::NoBaseline, "no scan has completed yet");
        };
        let attestation = Attestation {
            nonce,
            scan_seq: report.seq,
            scan_completed_at: report.completed_at.clone(),
            scan_age_ms: u64::try_from(completed.elapsed().as_millis()).unwrap_or(u64::MAX),
            baseline_digest: report.baseline_digest.clone(),
            violation_count: report.violation_count,
            violations: report.violations.clone(),
            degradation_threshold: self.policy.degradation_threshold,
            audit_seq,
            audit_head,
            issued_at: scan::now_rfc3339(),
        };
        let payload = serde_json::to_vec(&attestation).unwrap_or_default();
        let hmac = match &self.key {
            Some(k) => protocol::sign::hmac_hex(k.bytes(), &[DOMAIN, &payload]),
            None => protocol::sign::UNSIGNED.to_owned(),
        };
        Response::Attestation { payload, hmac }
    }

    /// Waits for the channel or the watcher. Watched-path changes are announced to the api
    /// with an unsolicited `Notice` (id 0); returns true once a request is waiting.
    fn wait_for_request(&mut self, channel: &Channel) -> Result<bool, String> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        let Some(watcher) = self.watcher.as_mut() else {
            return Ok(true);
        };
        let (chan_ready, watch_ready) = {
            let mut fds = [
                PollFd::new(channel.fd(), PollFlags::POLLIN),
                PollFd::new(watcher.fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(false),
                Err(e) => return Err(format!("poll failed: {e}")),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if watch_ready {
            let changes = watcher.drain();
            if changes.overflow {
                // Events were lost: nothing remembered can be trusted; the next scan reads all.
                tracing::warn!("inotify queue overflowed: next scan re-reads every file");
                self.hasher.forget_all();
            }
            // A path the kernel says changed is read again even if its metadata looks the
            // same (a clock stepped back, a filesystem with coarse timestamps).
            for path in &changes.paths {
                self.hasher.forget(path);
            }
            if changes.changed > 0 || changes.overflow {
                tracing::debug!(
                    changed = changes.changed,
                    overflow = changes.overflow,
                    "watched paths changed"
                );
                let notice = Response::Notice {
                    changed: changes.changed,
                    overflow: changes.overflow,
                };
                channel
                    .send(0, &notice)
                    .map_err(|e| format!("channel failed: {e}"))?;
            }
        }
        Ok(chan_ready)
    }

    /// Answers one request.
    pub fn handle(&mut self, request: Request) -> Response {
        let key = self.key.as_ref().map(Key::bytes);
        match request {
            Request::Hello { version } => {
                if version != PROTOCOL_VERSION {
                    return error(
                        ErrorKind::Protocol,
                        format!("api speaks version {version}, hasher {PROTOCOL_VERSION}"),
                    );
                }
                self.greeted = true;
                let key = if key.is_some() {
                    KeyStatus::Present
                } else {
                    KeyStatus::Absent
                };
                Response::Hello {
                    version: PROTOCOL_VERSION,
                    policy: self.policy.summary(),
                    key,
                }
            }
            _ if !self.greeted => error(ErrorKind::Protocol, "hello must come first"),
            Request::LoadBaseline { manifest } => {
                let digest = sha256_hex(&manifest);
                let parsed = Manifest::parse(&manifest).and_then(|m| m.verify(key).map(|()| m));
                match parsed {
                    Ok(m) => {
                        tracing::info!(
                            digest,
                            entries = m.entries.len(),
                            signed = m.is_signed(),
                            "stored baseline verified and adopted"
                        );
                        let s = summary(&m, &digest);
                        self.baseline = Some((m, digest));
                        Response::BaselineLoaded { summary: s }
                    }
                    Err(e) => {
                        tracing::error!(digest, error = %e, "stored baseline rejected");
                        error(ErrorKind::BaselineRejected, e.to_string())
                    }
                }
            }
            Request::CreateBaseline => {
                match scan::create_baseline(&self.policy, &mut self.hasher, key) {
                    Ok(m) => {
                        let bytes = m.to_json();
                        let digest = sha256_hex(&bytes);
                        tracing::info!(
                            digest,
                            entries = m.entries.len(),
                            signed = m.is_signed(),
                            "new baseline signed and adopted"
                        );
                        let s = summary(&m, &digest);
                        self.baseline = Some((m, digest));
                        Response::BaselineCreated {
                            manifest: bytes,
                            summary: s,
                        }
                    }
                    Err(why) => {
                        tracing::error!(why, "baseline refused");
                        error(ErrorKind::BaselineFailed, why)
                    }
                }
            }
            Request::Scan => match &self.baseline {
                None => error(
                    ErrorKind::NoBaseline,
                    "no baseline is adopted; rebaseline first",
                ),
                Some((m, digest)) => {
                    self.seq += 1;
                    let report = scan::scan(&self.policy, m, digest, &mut self.hasher, self.seq);
                    tracing::info!(
                        seq = report.seq,
                        violations = report.violation_count,
                        bytes = report.bytes_hashed,
                        ms = report.duration_ms,
                        "scan complete"
                    );
                    self.last_report = Some((report.clone(), std::time::Instant::now()));
                    Response::Report(report.sign(key))
                }
            },
            Request::Attest { nonce, audit_seq, audit_head } => self.attest(nonce, audit_seq, audit_head),
            Request::Reload => match Policy::load(&self.policy_path) {
                Ok(policy) if policy.hmac_key_path != self.policy.hmac_key_path => error(
                    ErrorKind::RestartRequired,
                    "hmac_key_path changed: the key is loaded at start; restart the service to use the new one",
                ),
                Ok(policy) if crate::sandbox::covers(&self.read_set, &crate::sandbox::read_set(&policy, &self.policy_path)).is_some() => {
                    let outside = crate::sandbox::covers(&self.read_set, &crate::sandbox::read_set(&policy, &self.policy_path)).unwrap_or_default();
                    tracing::warn!(path = %outside.display(), "reloaded policy reaches outside the sandbox; old policy stays until a restart");
                    error(
                        ErrorKind::RestartRequired,
                        format!("{} is outside what the running sandbox may read; restart the service to watch it (the old policy stays in force)", outside.display()),
                    )
                }
                Ok(policy) => {
                    tracing::info!(path = %self.policy_path.display(), "policy reloaded");
                    self.watcher = crate::watch::Watcher::new(&policy).ok();
                    self.hasher.apply(&policy);
                    self.policy = policy;
                    Response::Reloaded {
                        policy: self.policy.summary(),
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "reload refused; the old policy stays in force");
                    error(ErrorKind::PolicyInvalid, e.to_string())
                }
            },
        }
    }
}
