//! The request loop: one request at a time, answered from the hasher's own policy and key.

use std::path::PathBuf;

use protocol::frame;
use protocol::message::{
    BaselineSummary, ErrorKind, KeyStatus, Proof, Request, Response, StoreStatus, BASELINE_PART,
};
use protocol::PROTOCOL_VERSION;

use crate::channel::{Channel, RecvError};
use crate::error::ChannelError;
use crate::hashing::FileHasher;
use crate::key::Key;
use crate::policy::{Policy, RebaselineAuth};
use crate::scan;
use crate::store::{Current, Loaded, Store};
use crate::token::Token;

/// Most named paths a scan of the changes checks one by one; past it, it sweeps everything.
const MAX_NAMED: usize = 4096;

/// Shortest time between two change notices to the api. Each notice makes the api 503 at once
/// and ask for a check of the named paths, which costs what the change costs (a small file:
/// about a millisecond), so the gap only bounds a file written without pause to 20 checks a
/// second; it also bounds how long a second write waits to be announced.
const NOTICE_GAP: std::time::Duration = std::time::Duration::from_millis(50);

/// Everything the hasher holds between requests.
pub struct Server {
    policy_path: PathBuf,
    policy: Policy,
    key: Option<Key>,
    token: Option<Token>,
    store: Store,
    /// What the store held at start, until a new baseline is committed.
    store_status: StoreStatus,
    /// What loading the store repaired or converted.
    store_event: Option<protocol::message::StoreEvent>,
    /// The next commit's generation: past everything either store file ever claimed.
    next_generation: u64,
    baseline: Option<Current>,
    hasher: FileHasher,
    seq: u64,
    greeted: bool,
    read_set: Vec<PathBuf>,
    release_override: Option<PathBuf>,
    /// The watcher, shared with the thread that announces changes while a request runs.
    sentinel: crate::sentinel::Sentinel,
    /// Changes not announced yet (count, overflow), and when the last notice went out.
    held_notice: Option<(u32, bool)>,
    last_notice: Option<std::time::Instant>,
    /// The latest completed scan, and when it completed on the monotonic clock.
    last_report: Option<(protocol::report::ScanReport, std::time::Instant)>,
    /// The last full sweep's findings, brought up to date by each scan of the changes.
    sweep: Option<scan::Sweep>,
    /// Paths the kernel named since the last scan, and whether they are all that changed.
    named: std::collections::HashSet<PathBuf>,
    named_complete: bool,
    /// The sweep spread over the interval, and when its next slice is due.
    cycle: Option<crate::spread::Cycle>,
    next_slice: std::time::Instant,
    /// The boot this runs in (what the slots remember is kept for a restart within it).
    boot_id: Option<String>,
    /// When what the slots remember was last kept, and the bytes hashed by then.
    kept_at: Option<(std::time::Instant, u64)>,
    /// Rebaseline challenges issued and not yet spent.
    challenges: crate::authority::Challenges,
}

/// `wait`, or the time left until `at` when that is sooner. Rounded up: poll counts whole
/// milliseconds, and a wait cut short to 0 ms would spin until `at`.
fn sooner(wait: nix::poll::PollTimeout, at: std::time::Instant) -> nix::poll::PollTimeout {
    use nix::poll::PollTimeout;
    let left = at.saturating_duration_since(std::time::Instant::now())
        + std::time::Duration::from_micros(999);
    let until = PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO);
    if wait == PollTimeout::NONE {
        until
    } else {
        wait.min(until)
    }
}

fn error(kind: ErrorKind, message: impl Into<String>) -> Response {
    Response::Error {
        kind,
        message: message.into(),
    }
}

fn summary(c: &Current) -> BaselineSummary {
    BaselineSummary {
        digest: c.digest.clone(),
        entries: u32::try_from(c.manifest.entries.len()).unwrap_or(u32::MAX),
        signed: c.manifest.is_signed(),
        created_at: c.manifest.created_at.clone(),
        generation: c.generation,
    }
}

/// The parts the hasher starts with, loaded before its sandbox.
pub struct Parts {
    /// The policy file's path (re-read on reload).
    pub policy_path: PathBuf,
    /// The validated policy.
    pub policy: Policy,
    /// The HMAC key, if any.
    pub key: Option<Key>,
    /// The service token, if any.
    pub token: Option<Token>,
    /// The locked store.
    pub store: Store,
    /// What the store held.
    pub loaded: Loaded,
    /// What the sandbox lets it read.
    pub read_set: Vec<PathBuf>,
    /// A release baseline given outside the policy; it survives reloads.
    pub release_override: Option<PathBuf>,
    /// The boot this runs in ([`crate::remember::boot_id`]).
    pub boot_id: Option<String>,
}

impl Server {
    /// A server for what was loaded before the sandbox.
    pub fn new(parts: Parts) -> Server {
        let Parts {
            policy_path,
            policy,
            key,
            token,
            store,
            loaded,
            read_set,
            release_override,
            boot_id,
        } = parts;
        let mut hasher = FileHasher::for_policy(&policy);
        if let Some(k) = &key {
            hasher.key_versions(k.bytes());
        }
        let mut store_event = None;
        let (baseline, store_status, highest) = match loaded {
            Loaded::Empty => (None, StoreStatus::Empty, 0),
            Loaded::Adopted(current, event) => {
                if let Some(event) = event {
                    tracing::warn!(?event, "baseline store converted or repaired");
                }
                store_event = event;
                let status = StoreStatus::Adopted(summary(&current));
                let generation = current.generation;
                (Some(*current), status, generation)
            }
            Loaded::Rejected { reason, highest } => {
                tracing::error!(reason, "stored baseline rejected");
                (None, StoreStatus::Rejected { reason }, highest)
            }
        };
        if let (Some(k), Some(boot), Some(current)) = (&key, &boot_id, &baseline) {
            crate::remember::recall(&store, k.bytes(), boot, current, &mut hasher);
        }
        if let (Some(k), Some(current)) = (&key, &baseline) {
            crate::chunkstore::recall(&store, k.bytes(), current, &mut hasher);
            hasher.take_chunks_learned();
        }
        let watcher = crate::watch::Watcher::new(&policy)
            .map_err(
                |e| tracing::warn!(error = %e, "no inotify: changes wait for the periodic scan"),
            )
            .ok();
        Server {
            policy_path,
            policy,
            key,
            token,
            store,
            store_status,
            store_event,
            next_generation: highest.saturating_add(1),
            baseline,
            hasher,
            seq: 0,
            greeted: false,
            read_set,
            release_override,
            last_report: None,
            sentinel: crate::sentinel::Sentinel::new(watcher),
            held_notice: None,
            last_notice: None,
            sweep: None,
            named: std::collections::HashSet::new(),
            named_complete: false,
            cycle: None,
            next_slice: std::time::Instant::now(),
            boot_id,
            kept_at: None,
            challenges: crate::authority::Challenges::default(),
        }
    }

    /// Serves until the api closes the channel (Ok) or the socket fails (Err).
    pub fn serve(&mut self, channel: &mut Channel) -> Result<(), ChannelError> {
        if let Err(e) = self.sentinel.start(channel.sender()) {
            tracing::warn!(error = %e, "no sentinel thread: a change made during a long scan is announced when it ends");
        }
        loop {
            if !self.wait_for_request(channel)? {
                continue;
            }
            let message = match channel.recv_message() {
                Ok(m) => m,
                Err(RecvError::Closed) => {
                    // The api stopped (a restart, an update): what was verified since the
                    // last save is kept, so the next start in this boot need not read it.
                    self.kept_at = None;
                    self.keep_versions();
                    return Ok(());
                }
                Err(RecvError::Io(e)) => return Err(ChannelError::Io(e)),
                Err(RecvError::Frame(e)) => {
                    tracing::warn!(error = %e, "refused a frame from the api");
                    channel
                        .send(0, &error(ErrorKind::Protocol, e.to_string()))
                        .map_err(ChannelError::Io)?;
                    continue;
                }
            };
            self.sentinel.busy();
            let (id, response) = match frame::decode::<Request>(&message) {
                Ok(envelope) => {
                    if matches!(envelope.body, Request::Scan | Request::ScanChanged) {
                        // The scan covers every change seen so far: say so first, whatever
                        // the notice gap, so the api knows which changes this report settles.
                        self.send_held_notice(channel)?;
                    }
                    (envelope.id, self.handle(envelope.body))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "refused a message from the api");
                    (0, error(ErrorKind::Protocol, e.to_string()))
                }
            };
            channel.send(id, &response).map_err(ChannelError::Io)?;
            self.sentinel.idle();
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
            baseline_generation: self.baseline.as_ref().map_or(0, |b| b.generation),
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
    fn wait_for_request(&mut self, channel: &Channel) -> Result<bool, ChannelError> {
        use nix::poll::{poll, PollFd, PollFlags};
        let wait = self.poll_timeout();
        let Some(inotify) = self.sentinel.inotify() else {
            return Ok(true);
        };
        let (chan_ready, watch_ready) = {
            use std::os::fd::AsFd;
            let mut fds = [
                PollFd::new(channel.fd(), PollFlags::POLLIN),
                PollFd::new(inotify.as_fd(), PollFlags::POLLIN),
            ];
            match poll(&mut fds, wait) {
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => return Ok(false),
                Err(e) => return Err(ChannelError::Poll(e)),
            }
            let ready = |f: &PollFd<'_>| f.revents().is_some_and(|r| !r.is_empty());
            (ready(&fds[0]), ready(&fds[1]))
        };
        if watch_ready {
            if let Some(changes) = self.sentinel.drain() {
                self.absorb(changes, true);
            }
        }
        self.take_announced();
        self.settle_reads();
        // At most one notice per NOTICE_GAP: a file written without pause makes the api scan
        // a few times a second, not back to back.
        if self.last_notice.is_none_or(|t| t.elapsed() >= NOTICE_GAP) {
            self.send_held_notice(channel)?;
        }
        // A slice may read a large file for seconds: a notice held back goes out first (the
        // poll wakes when it may), and such a read arms the sentinel (`sentinel::long_read`).
        let slice_due = self.sweep.is_some() && std::time::Instant::now() >= self.next_slice;
        if slice_due && self.held_notice.is_none() {
            self.run_slice();
            self.sentinel.idle();
            self.take_announced();
            let soonest = std::time::Instant::now() + crate::spread::SLICE_PERIOD;
            // No cycle: nothing is spread (a registry's dir); look again an interval later.
            self.next_slice = self
                .cycle
                .as_ref()
                .map_or(std::time::Instant::now() + self.policy.scan_interval, |c| {
                    c.next_due().max(soonest)
                });
        }
        Ok(chan_ready)
    }

    /// Reads again the changed files whose writeback window has passed (`settle`), bringing
    /// the last sweep up to date, and announces it so the api's next report says they are
    /// proven (or what they now hold).
    fn settle_reads(&mut self) {
        let due = self.hasher.settling.take_due(std::time::Instant::now());
        if due.is_empty() {
            return;
        }
        for path in &due {
            self.hasher.forget(path);
        }
        tracing::info!(
            files = due.len(),
            "settle read: changed files read again after the writeback window"
        );
        if let (Some(sweep), Some(b)) = (self.sweep.as_mut(), self.baseline.as_ref()) {
            let updated =
                crate::rescan::update(&self.policy, &b.manifest, &mut self.hasher, sweep, &due);
            if updated.is_none() {
                // Only a full sweep can say (a registry's dir): the next request makes one,
                // reading them (their digests are forgotten).
                self.sweep = None;
                self.cycle = None;
            }
        }
        let (n, o) = self.held_notice.unwrap_or((0, false));
        self.held_notice = Some((n.saturating_add(1), o));
    }

    /// Takes in what the sentinel drained (its notice went out already) before any request,
    /// so the scan the notice asks for reads those paths again.
    fn take_announced(&mut self) {
        if let Some(changes) = self.sentinel.take_drained() {
            self.absorb(changes, false);
        }
    }

    /// How long to wait for the channel or the watcher: until a notice held back (see
    /// NOTICE_GAP) may go out, or the next slice of the spread sweep is due.
    fn poll_timeout(&self) -> nix::poll::PollTimeout {
        use nix::poll::PollTimeout;
        let wait = match (&self.held_notice, self.last_notice) {
            (Some(_), Some(last)) => {
                let left = NOTICE_GAP.saturating_sub(last.elapsed())
                    + std::time::Duration::from_micros(999);
                PollTimeout::try_from(left).unwrap_or(PollTimeout::ZERO)
            }
            (Some(_), None) => PollTimeout::ZERO,
            (None, _) => PollTimeout::NONE,
        };
        // A settle read falls due then; the next slice of the spread sweep, while there is a
        // sweep to keep.
        let slice = self.sweep.as_ref().map(|_| self.next_slice);
        [self.hasher.settling.next_due(), slice]
            .into_iter()
            .flatten()
            .fold(wait, sooner)
    }

    /// Takes in what the watcher drained: paths to read again, what the next check of the
    /// changes covers, and (unless the sentinel sent it) the notice to send.
    fn absorb(&mut self, changes: crate::watch::Changes, announce: bool) {
        if changes.overflow {
            // Events were lost: nothing remembered can be trusted; the next scan reads all.
            tracing::warn!("inotify queue overflowed: next scan re-reads every file");
            self.hasher.forget_all();
        }
        // A path the kernel says changed is read again even if its metadata looks the
        // same (a clock stepped back, a filesystem with coarse timestamps).
        for path in &changes.paths {
            self.hasher.forget(path);
            self.hasher.settling.note(path);
        }
        // What the next scan of the changes checks; lost or unnamed events, or too many
        // names, leave only a full sweep sure.
        if changes.overflow || changes.unnamed || self.named.len() + changes.paths.len() > MAX_NAMED
        {
            self.named_complete = false;
            self.named.clear();
        } else if self.named_complete {
            self.named.extend(changes.paths);
        }
        if announce && (changes.changed > 0 || changes.overflow) {
            let (n, o) = self.held_notice.unwrap_or((0, false));
            self.held_notice = Some((n.saturating_add(changes.changed), o || changes.overflow));
        }
    }

    /// One slice of the spread sweep; a finding it adds or clears is announced like a change.
    fn run_slice(&mut self) {
        let (Some(sweep), Some(b)) = (self.sweep.as_mut(), self.baseline.as_ref()) else {
            return;
        };
        // A cycle done early (fewer units than slices) rests until its interval is over.
        if self
            .cycle
            .as_ref()
            .is_some_and(|c| c.complete() && c.started.elapsed() >= c.interval())
        {
            self.cycle = None;
        }
        if self.cycle.is_none() {
            self.cycle = crate::spread::Cycle::new(&self.policy, &b.manifest);
        }
        let Some(cycle) = self.cycle.as_mut() else {
            return; // not spread (a registry's dir): the api's ticks sweep everything
        };
        if cycle.complete() {
            return;
        }
        let units = cycle.slice_at(std::time::Instant::now(), &b.manifest);
        let before = fingerprint(&sweep.findings);
        let (wall, cpu) = (std::time::Instant::now(), crate::spread::thread_cpu());
        let updated =
            crate::rescan::update(&self.policy, &b.manifest, &mut self.hasher, sweep, &units);
        let took = crate::spread::thread_cpu().saturating_sub(cpu);
        if took > cycle.slowest {
            // Rare (a new maximum): a cycle over a large tree may take many minutes.
            tracing::debug!(
                slowest_cpu_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
                wall_us = u64::try_from(wall.elapsed().as_micros()).unwrap_or(u64::MAX),
                units = units.len(),
                "spread sweep: slowest slice so far"
            );
            cycle.slowest = took;
        }
        let changed = match updated {
            Some(()) => fingerprint(&sweep.findings) != before,
            None => {
                // Only a full sweep can say: the next request makes one.
                self.sweep = None;
                self.cycle = None;
                true
            }
        };
        if changed {
            tracing::info!(
                units = units.len(),
                "the spread sweep found a change no event announced"
            );
            let (n, o) = self.held_notice.unwrap_or((0, false));
            self.held_notice = Some((n.saturating_add(1), o));
        }
        if let (Some(cycle), Some(sweep)) = (&self.cycle, self.sweep.as_mut()) {
            if cycle.complete() {
                tracing::debug!(
                    units = cycle.units(),
                    ms = u64::try_from(cycle.started.elapsed().as_millis()).unwrap_or(u64::MAX),
                    slowest_cpu_us = u64::try_from(cycle.slowest.as_micros()).unwrap_or(u64::MAX),
                    "spread sweep cycle complete"
                );
                sweep.at = cycle.started;
            }
        }
        // After a completed cycle, or a slice that read much (the backstop); throttled.
        self.keep_versions();
    }

    /// Keeps what the slots remember for a restart: at once the first time after a start or a
    /// new baseline, when the api closes the channel, and after any check once
    /// [`crate::remember::SAVE_AFTER_BYTES`] were read since the last save; else at most every
    /// [`crate::remember::SAVE_EVERY`].
    fn keep_versions(&mut self) {
        // Chunk digests describe the baseline's content, not a boot: kept whenever new ones
        // were learned (a few large files: small and rare writes).
        if let (Some(k), Some(current)) = (&self.key, &self.baseline) {
            if self.hasher.take_chunks_learned() {
                crate::chunkstore::keep(&self.store, k.bytes(), current, &self.hasher);
            }
        }
        let (Some(k), Some(boot), Some(current)) = (&self.key, &self.boot_id, &self.baseline)
        else {
            return;
        };
        let read = self.hasher.bytes_hashed;
        if self.kept_at.is_some_and(|(t, bytes)| {
            t.elapsed() < crate::remember::SAVE_EVERY
                && read.saturating_sub(bytes) < crate::remember::SAVE_AFTER_BYTES
        }) {
            return;
        }
        crate::remember::keep(&self.store, k.bytes(), boot, current, &self.hasher);
        self.kept_at = Some((std::time::Instant::now(), read));
    }

    /// Sends the changes not announced yet, if any.
    fn send_held_notice(&mut self, channel: &Channel) -> Result<(), ChannelError> {
        if let Some((changed, overflow)) = self.held_notice.take() {
            tracing::debug!(changed, overflow, "watched paths changed");
            channel
                .send(
                    0,
                    &Response::Notice {
                        changed,
                        overflow,
                        during_request: false,
                    },
                )
                .map_err(ChannelError::Io)?;
            self.last_notice = Some(std::time::Instant::now());
        }
        Ok(())
    }

    /// Answers one request.
    pub fn handle(&mut self, request: Request) -> Response {
        match request {
            Request::Hello { version } => self.hello(version),
            _ if !self.greeted => error(ErrorKind::Protocol, "hello must come first"),
            Request::CreateBaseline { token, proof } => {
                self.create_baseline(token.as_deref(), proof.as_ref())
            }
            Request::RebaselineChallenge => match self.challenges.issue() {
                Ok(challenge) => Response::Challenge {
                    challenge,
                    ttl_ms: crate::authority::TTL.as_millis() as u64,
                },
                Err(e) => error(
                    ErrorKind::BaselineFailed,
                    format!("no challenge: no randomness: {e}"),
                ),
            },
            Request::GetBaseline { offset } => self.baseline_part(offset),
            Request::Scan => self.scan(),
            Request::ScanChanged => self.scan_changed(),
            Request::Attest {
                nonce,
                audit_seq,
                audit_head,
            } => self.attest(nonce, audit_seq, audit_head),
            Request::Reload => self.reload(),
        }
    }

    fn hello(&mut self, version: u16) -> Response {
        if version != PROTOCOL_VERSION {
            return error(
                ErrorKind::Protocol,
                format!("api speaks version {version}, hasher {PROTOCOL_VERSION}"),
            );
        }
        self.greeted = true;
        let key = if self.key.is_some() {
            KeyStatus::Present
        } else {
            KeyStatus::Absent
        };
        Response::Hello {
            version: PROTOCOL_VERSION,
            policy: self.policy.summary(),
            key,
            store: self.store_status.clone(),
            token_digest: self.token.as_ref().map(Token::digest_hex),
            store_event: self.store_event,
        }
    }

    /// Who may make a baseline, decided here: a proof of the rebaseline authority over a
    /// challenge this hasher issued; the operator's token only where the policy says
    /// `rebaseline_auth: bearer`; nobody else but the first initialization of a store that
    /// has never held a baseline.
    fn authorised(
        &mut self,
        presented: Option<&[u8]>,
        proof: Option<&Proof>,
    ) -> Result<&'static str, &'static str> {
        if let Some(proof) = proof {
            return self
                .challenges
                .redeem(self.key.as_ref(), proof)
                .map(|()| "rebaseline authority (key ceremony)");
        }
        let bearer = self.policy.rebaseline_auth == RebaselineAuth::Bearer;
        match (presented, &self.token) {
            (Some(p), Some(t)) if t.matches(p) && bearer => Ok("service token (rebaseline_auth: bearer)"),
            (Some(p), Some(t)) if t.matches(p) => Err("the service token does not authorise a rebaseline (it crosses the api with every scan); prove the rebaseline authority: `integrity-monitor rebaseline --key FILE`"),
            (Some(_), _) => Err("the token presented is not the service token"),
            (None, _) if self.store_status == StoreStatus::Empty && self.baseline.is_none() => {
                Ok("first initialization of an empty store")
            }
            (None, _) => Err("a new baseline needs the rebaseline authority: `integrity-monitor rebaseline --key FILE`"),
        }
    }

    fn create_baseline(&mut self, presented: Option<&[u8]>, proof: Option<&Proof>) -> Response {
        let by = match self.authorised(presented, proof) {
            Ok(by) => by,
            Err(why) => {
                tracing::warn!(why, "baseline refused: not authorised");
                return error(ErrorKind::Unauthorized, why);
            }
        };
        let key = self.key.as_ref().map(Key::bytes);
        let generation = self.next_generation;
        let (manifest, slots) =
            match scan::make_baseline(&self.policy, &mut self.hasher, key, generation) {
                Ok(made) => made,
                Err(e) => {
                    tracing::error!(error = %e, "baseline refused");
                    return error(ErrorKind::BaselineFailed, e.to_string());
                }
            };
        let current = match self.store.commit(manifest, key) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "new baseline could not be stored; the old one stays");
                return error(
                    ErrorKind::BaselineFailed,
                    format!("new baseline not stored: {e}"),
                );
            }
        };
        tracing::info!(
            digest = current.digest,
            generation,
            entries = current.manifest.entries.len(),
            signing = if current.manifest.is_signed() {
                "hmac-sha256"
            } else {
                "unsigned"
            },
            by,
            "new baseline signed, stored and adopted"
        );
        // What was read to make it stands for the first sweep against it.
        self.hasher.adopt(&current.digest, slots);
        let s = summary(&current);
        self.next_generation = generation.saturating_add(1);
        self.store_status = StoreStatus::Adopted(s.clone());
        self.store_event = None;
        self.baseline = Some(current);
        self.sweep = None;
        self.cycle = None;
        self.kept_at = None;
        Response::BaselineCreated { summary: s }
    }

    /// A part of the adopted manifest, read from the store file.
    fn baseline_part(&self, offset: u64) -> Response {
        let Some(b) = &self.baseline else {
            return error(ErrorKind::NoBaseline, "no baseline is adopted");
        };
        let start = offset.min(b.len);
        let want = usize::try_from(b.len - start).map_or(BASELINE_PART, |l| l.min(BASELINE_PART));
        match self.store.read_part(start, want) {
            Ok(part) => Response::Baseline {
                total: b.len,
                offset: start,
                part,
            },
            Err(e) => error(ErrorKind::BaselineRejected, e.to_string()),
        }
    }

    fn scan(&mut self) -> Response {
        let Some(b) = &self.baseline else {
            return error(
                ErrorKind::NoBaseline,
                "no baseline is adopted; rebaseline first",
            );
        };
        self.seq += 1;
        // Everything named so far is covered: events drained later name later changes.
        self.named.clear();
        self.named_complete = self.sentinel.complete();
        self.cycle = None;
        let (report, sweep) = scan::sweep(
            &self.policy,
            &b.manifest,
            &b.digest,
            &mut self.hasher,
            self.seq,
        );
        self.sweep = Some(sweep);
        self.keep_versions();
        tracing::info!(
            seq = report.seq,
            violations = report.violation_count,
            bytes = report.bytes_hashed,
            ms = report.duration_ms,
            "scan complete"
        );
        self.finish(report)
    }

    /// A report as sent: saying how many changed files await their settle read, kept as the
    /// latest, signed.
    fn finish(&mut self, mut report: protocol::report::ScanReport) -> Response {
        report.unsettled = u32::try_from(self.hasher.settling.pending()).unwrap_or(u32::MAX);
        self.last_report = Some((report.clone(), std::time::Instant::now()));
        Response::Report(report.sign(self.key.as_ref().map(Key::bytes)))
    }

    /// How long a sweep's findings stand in for a new sweep. Spread, a cycle examines every
    /// unit once per cycle interval and `at` is when the last complete one began: at most two
    /// cycles old while cycles keep up. Not spread (no inotify, or a registry's dir), the
    /// api's tick, a scan interval after the last report, must find it stale and sweep: 0.9
    /// of it.
    fn sweep_lifetime(&self) -> std::time::Duration {
        if self.sentinel.watching() && scan::governed(&self.policy).is_none() {
            let files = self
                .baseline
                .as_ref()
                .map_or(0, |b| b.manifest.entries.len());
            crate::spread::cycle_interval(&self.policy, files).saturating_mul(2)
        } else {
            self.policy.scan_interval.mul_f64(0.9)
        }
    }

    /// Checks only the paths the kernel named since the last scan, when they are all that
    /// changed and the sweep (full, or spread over the interval) is current; sweeps otherwise.
    /// The hasher decides: an api that only ever asks for this still gets a full sweep every
    /// interval.
    fn scan_changed(&mut self) -> Response {
        let fresh = match (&self.sweep, &self.baseline) {
            (Some(s), Some(b)) => s.digest == b.digest && s.at.elapsed() < self.sweep_lifetime(),
            _ => false,
        };
        if !(fresh && self.named_complete) {
            return self.scan();
        }
        let (Some(mut sweep), Some(b)) = (self.sweep.take(), self.baseline.as_ref()) else {
            return self.scan();
        };
        let paths: Vec<PathBuf> = self.named.drain().collect();
        let report = crate::rescan::rescan(
            &self.policy,
            &b.manifest,
            &mut self.hasher,
            &mut sweep,
            &paths,
            self.seq + 1,
        );
        let Some(report) = report else {
            tracing::debug!(paths = paths.len(), "named changes need a full sweep");
            return self.scan();
        };
        self.seq += 1;
        self.sweep = Some(sweep);
        self.keep_versions();
        tracing::info!(
            seq = report.seq,
            paths = paths.len(),
            violations = report.violation_count,
            bytes = report.bytes_hashed,
            ms = report.duration_ms,
            "changes checked"
        );
        self.finish(report)
    }

    fn reload(&mut self) -> Response {
        let policy = match Policy::load(&self.policy_path) {
            Ok(p) => p.with_release_baseline(self.release_override.clone()),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the old policy stays in force");
                return error(ErrorKind::PolicyInvalid, e.to_string());
            }
        };
        if policy.hmac_key_path != self.policy.hmac_key_path {
            return error(
                ErrorKind::RestartRequired,
                "hmac_key_path changed: the key is loaded at start; restart the service to use the new one",
            );
        }
        let wanted = crate::sandbox::read_set(&policy, &self.policy_path);
        if let Some(outside) = crate::sandbox::covers(&self.read_set, &wanted) {
            tracing::warn!(path = %outside.display(), "reloaded policy reaches outside the sandbox; old policy stays until a restart");
            return error(
                ErrorKind::RestartRequired,
                format!("{} is outside what the running sandbox may read; restart the service to watch it (the old policy stays in force)", outside.display()),
            );
        }
        tracing::info!(path = %self.policy_path.display(), "policy reloaded");
        self.sentinel
            .replace(crate::watch::Watcher::new(&policy).ok());
        self.hasher.apply(&policy);
        self.policy = policy;
        // Findings against the old policy's watch set say nothing about the new one's.
        self.sweep = None;
        self.cycle = None;
        Response::Reloaded {
            policy: self.policy.summary(),
        }
    }
}

/// A digest of the findings that changes when any is added, cleared or changed.
fn fingerprint(findings: &[protocol::report::Violation]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for v in findings {
        (&v.path, &v.expected_hash, &v.actual_hash).hash(&mut h);
    }
    h.finish()
}
