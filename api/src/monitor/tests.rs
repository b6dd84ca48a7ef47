//! The monitor core against a scripted hasher: no processes, no sockets, real time in
//! milliseconds. The whole-system tests in `tests/` keep what needs the real binaries.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use protocol::message::{
    BaselineSummary, ErrorKind, KeyStatus, PolicySummary, StoreStatus, BASELINE_PART,
};
use protocol::report::{ScanReport, SignedReport, Violation};
use protocol::standing::{FromStore, Reference};
use protocol::{Category, Request, Response, PROTOCOL_VERSION};
use tokio::sync::mpsc;

use super::{lock, Monitor};
use crate::audit::AuditLog;
use crate::link::Call;
use crate::recorder::Recorder;
use crate::state::State;
use crate::verdict::verdict;

/// A hasher reduced to what the api sees of it; tests change it between steps.
struct Script {
    store: StoreStatus,
    interval_ms: u64,
    digest: String,
    generation: u64,
    seq: u64,
    violations: Vec<Violation>,
    /// Answer scans for another baseline than the adopted one (a lying hasher).
    wrong_digest: bool,
    scans: u64,
    /// The manifest a baseline made now has (empty: a stand-in digest).
    manifest: Vec<u8>,
    /// Send this byte of the manifest changed (a lying hasher).
    lie_at: Option<usize>,
    /// What a rejected store's scans compare with.
    reference: Option<Reference>,
    /// Ignore what the api remembers (a lying hasher).
    disobey: bool,
}

fn digest(n: u64) -> String {
    format!("{n:064x}")
}

fn violation(path: &str) -> Violation {
    Violation {
        detected_at: "2026-11-25T00:00:00Z".into(),
        category: Category::ModelFile,
        path: path.into(),
        expected_hash: "none".into(),
        actual_hash: protocol::Finding::Unregistered.into(),
        action: Category::ModelFile.action(),
    }
}

impl Script {
    fn new() -> Script {
        Script {
            store: StoreStatus::Empty,
            interval_ms: 3_600_000,
            digest: digest(0),
            generation: 0,
            seq: 0,
            violations: Vec::new(),
            wrong_digest: false,
            scans: 0,
            manifest: Vec::new(),
            lie_at: None,
            reference: None,
            disobey: false,
        }
    }

    fn summary(&self) -> BaselineSummary {
        BaselineSummary {
            digest: self.digest.clone(),
            entries: 3,
            signed: true,
            created_at: "2026-11-25T00:00:00Z".into(),
            generation: self.generation,
            release: None,
            rollback: Default::default(),
        }
    }

    fn answer(&mut self, request: Request) -> Response {
        match request {
            Request::Hello { prior, .. } => {
                self.seq = 0; // a new instance counts from 1 again
                              // As the real hasher: held to what the api remembers.
                self.generation = self.generation.max(prior.generation());
                if let Some(reason) = self.store.rolls_back(&prior).filter(|_| !self.disobey) {
                    self.store = StoreStatus::Rejected {
                        reason,
                        reference: self.reference.clone(),
                    };
                }
                Response::Hello {
                    version: PROTOCOL_VERSION,
                    policy: PolicySummary {
                        scan_interval_ms: self.interval_ms,
                        degradation_threshold: 3,
                        require_token_for_reads: false,
                        watched_paths: 3,
                    },
                    key: KeyStatus::Present,
                    store: self.store.clone(),
                    token_digest: None,
                    store_event: None,
                    release: protocol::standing::ReleaseNews::default(),
                }
            }
            Request::CreateBaseline { .. } => {
                self.generation += 1;
                self.digest = if self.manifest.is_empty() {
                    digest(self.generation)
                } else {
                    protocol::sign::sha256_hex(&self.manifest)
                };
                self.store = StoreStatus::Adopted(self.summary());
                Response::BaselineCreated {
                    summary: self.summary(),
                    outcome: None,
                }
            }
            Request::Scan | Request::ScanChanged => {
                let baseline_digest = match &self.store {
                    StoreStatus::Rejected {
                        reference: None, ..
                    } => {
                        return Response::Error {
                            kind: ErrorKind::NoBaseline,
                            message: "rejected, nothing to compare with".into(),
                        }
                    }
                    StoreStatus::Rejected {
                        reference: Some(r), ..
                    } => r.digest.clone(),
                    _ if self.wrong_digest => digest(999),
                    _ => self.digest.clone(),
                };
                self.seq += 1;
                self.scans += 1;
                Response::Report(SignedReport {
                    report: ScanReport {
                        seq: self.seq,
                        completed_at: "2026-11-25T00:00:00Z".into(),
                        baseline_digest,
                        watched_files: 3,
                        bytes_hashed: 0,
                        duration_ms: 0,
                        violation_count: u32::try_from(self.violations.len()).unwrap_or(0),
                        violations: self.violations.clone(),
                        unsettled: 0,
                        sealed_files: 0,
                    },
                    hmac: "ab".repeat(32),
                    ed25519: format!("{}:{}", "0".repeat(16), "ab".repeat(64)),
                })
            }
            Request::GetBaseline { offset } => {
                let start = usize::try_from(offset)
                    .map_or(self.manifest.len(), |o| o.min(self.manifest.len()));
                let end = (start + BASELINE_PART).min(self.manifest.len());
                let mut part = self.manifest[start..end].to_vec();
                if let Some(i) = self.lie_at.filter(|i| (start..end).contains(i)) {
                    part[i - start] ^= 1;
                }
                Response::Baseline {
                    total: self.manifest.len() as u64,
                    offset: start as u64,
                    part,
                }
            }
            other => Response::Error {
                kind: ErrorKind::Protocol,
                message: format!("not scripted: {other:?}"),
            },
        }
    }
}

struct Rig {
    monitor: Arc<Monitor>,
    script: Arc<Mutex<Script>>,
    dir: tempfile::TempDir,
}

impl Rig {
    fn log(&self) -> std::path::PathBuf {
        self.dir.path().join("audit.jsonl")
    }

    async fn events(&self) -> Vec<String> {
        self.monitor.audit_flush().await;
        std::fs::read_to_string(self.log())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .map(|v| v["event"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    fn state(&self) -> State {
        self.monitor.snapshot().machine.state
    }

    fn verdict(&self) -> Result<(), String> {
        verdict(&self.monitor.snapshot())
    }
}

/// A monitor wired to a scripted hasher, after its first connection.
async fn started(script: Script) -> Rig {
    started_in(script, tempfile::tempdir().expect("dir")).await
}

/// As [`started`], with the audit log and the memory record in `dir` (recalled as at start).
async fn started_in(script: Script, dir: tempfile::TempDir) -> Rig {
    let rig = wired_in(script, dir);
    rig.monitor.connected(true).await.expect("handshake");
    rig
}

/// A monitor wired to a scripted hasher, before its first connection.
fn wired_in(script: Script, dir: tempfile::TempDir) -> Rig {
    let path = dir.path().join("audit.jsonl");
    let log = AuditLog::open(&path).expect("log");
    let memory = log.memory().clone();
    let (calls, mut rx) = mpsc::channel::<Call>(8);
    let monitor = Arc::new(
        Monitor::new(calls, Recorder::start(log).expect("writer"))
            .recalling(memory, Some(crate::adopted::record_path(&path))),
    );
    let script = Arc::new(Mutex::new(script));
    let hasher = script.clone();
    let notices = monitor.changes();
    tokio::spawn(async move {
        while let Some(call) = rx.recv().await {
            let answer = lock(&hasher).answer(call.request);
            // This hasher sends no notice while it answers: its answer covers all seen so far.
            let _ = call.reply.send(Ok((answer, notices.count())));
        }
    });
    Rig {
        monitor,
        script,
        dir,
    }
}

#[tokio::test]
async fn a_first_start_initializes_trusts_and_violations_walk_the_state_machine() {
    let rig = started(Script::new()).await;
    assert_eq!(rig.state(), State::Trusted);
    assert_eq!(rig.verdict(), Ok(()));
    lock(&rig.script).violations = vec![violation("/m/a")];
    assert_eq!(rig.monitor.scan().await.ok(), Some(State::Degraded));
    assert_eq!(rig.verdict(), Err("state is degraded".into()));
    lock(&rig.script).violations = ["/m/a", "/m/b", "/m/c"].map(violation).to_vec();
    assert_eq!(rig.monitor.scan().await.ok(), Some(State::RecoveryRequired));
    lock(&rig.script).violations.clear();
    assert_eq!(rig.monitor.scan().await.ok(), Some(State::Trusted));
    let events = rig.events().await;
    let count = |e: &str| events.iter().filter(|x| *x == e).count();
    assert_eq!(count("initialized"), 1, "{events:?}");
    assert_eq!(
        count("violation"),
        3,
        "each violation once, when first seen"
    );
    assert_eq!(count("transition"), 4, "{events:?}");
}

#[tokio::test]
async fn a_report_for_another_baseline_cuts_the_hasher_and_a_new_instance_restores() {
    let rig = started(Script::new()).await;
    lock(&rig.script).wrong_digest = true;
    assert!(rig.monitor.scan().await.is_err());
    let why = rig.verdict().expect_err("503");
    assert!(why.starts_with("hasher unavailable"), "{why}");
    assert!(rig.events().await.contains(&"hasher_lost".to_owned()));
    // The service manager starts a new instance; it holds the same store.
    lock(&rig.script).wrong_digest = false;
    rig.monitor.connected(false).await.expect("handshake");
    assert_eq!(rig.verdict(), Ok(()));
    assert!(rig
        .events()
        .await
        .contains(&"hasher_reconnected".to_owned()));
}

#[tokio::test]
async fn a_sequence_number_that_does_not_grow_is_a_replayed_report() {
    let rig = started(Script::new()).await;
    lock(&rig.script).seq = 0; // the next report says seq 1 again
    assert!(rig.monitor.scan().await.is_err());
    assert!(rig.verdict().is_err());
}

#[tokio::test]
async fn a_new_instance_with_an_empty_store_means_the_baseline_was_deleted() {
    let rig = started(Script::new()).await;
    rig.monitor.hasher_lost("killed");
    lock(&rig.script).store = StoreStatus::Empty;
    rig.monitor.connected(false).await.expect("handshake");
    assert_eq!(rig.state(), State::RecoveryRequired);
    assert!(rig.verdict().is_err());
    let why = rig.monitor.snapshot().baseline_problem.unwrap_or_default();
    assert!(why.contains("the store was emptied"), "{why}");
    assert!(rig.events().await.contains(&"baseline_rejected".to_owned()));
}

/// A store rolled back below what the api remembers: `recovery_required`, and it stays up:
/// scans go on against the hasher's reference (a clean one trusts nothing), until the
/// ceremony's new baseline, above every generation seen, clears it.
#[tokio::test]
async fn a_rolled_back_store_stays_recovery_required_scanning_the_reference_until_the_ceremony() {
    let dir = tempfile::tempdir().expect("dir");
    let record = crate::adopted::record_path(&dir.path().join("audit.jsonl"));
    crate::adopted::write_record(
        &record,
        &crate::adopted::Adopted {
            generation: 5,
            digest: digest(5),
        },
    )
    .expect("record");
    let mut script = Script::new();
    script.generation = 2;
    script.digest = digest(2);
    script.store = StoreStatus::Adopted(script.summary());
    script.reference = Some(Reference {
        digest: digest(77),
        entries: 3,
        release: Some("c0ffee".into()),
        store: FromStore::Verified,
    });
    let rig = started_in(script, dir).await;
    assert_eq!(rig.state(), State::RecoveryRequired);
    let snap = rig.monitor.snapshot();
    assert!(
        snap.baseline_problem
            .as_deref()
            .is_some_and(|w| w.contains("older than generation 5")),
        "{snap:?}"
    );
    assert_eq!(
        snap.reference.as_ref().map(|r| r.digest.clone()),
        Some(digest(77))
    );
    assert_eq!(
        snap.machine.scan_count, 1,
        "the reference was scanned at start"
    );
    // Scans go on and the monitor stays connected; a clean one trusts nothing.
    for _ in 0..3 {
        assert_eq!(rig.monitor.scan().await.ok(), Some(State::RecoveryRequired));
    }
    lock(&rig.script).violations = vec![violation("/m/a")];
    assert_eq!(rig.monitor.scan().await.ok(), Some(State::RecoveryRequired));
    let snap = rig.monitor.snapshot();
    assert!(snap.hasher_down.is_none(), "still connected");
    assert_eq!(snap.machine.violation_count, 1, "what differs is shown");
    assert!(rig.verdict().is_err());
    // The ceremony: the hasher commits above what the api remembers; the api adopts it.
    lock(&rig.script).violations.clear();
    assert_eq!(
        rig.monitor.rebaseline(None, None).await.ok().map(|r| r.0),
        Some(State::Trusted)
    );
    let snap = rig.monitor.snapshot();
    assert_eq!(snap.baseline.as_ref().map(|b| b.generation), Some(6));
    assert!(snap.reference.is_none() && snap.baseline_problem.is_none());
    assert_eq!(rig.verdict(), Ok(()));
    assert_eq!(
        crate::adopted::Memory::recall(&rig.log())
            .adopted
            .map(|a| a.generation),
        Some(6),
        "the memory record holds the new adoption"
    );
    let events = rig.events().await;
    assert!(
        events.contains(&"reference_in_use".to_owned()),
        "{events:?}"
    );
}

/// A hasher that holds a store rolling back what it was told, instead of rejecting it, is
/// not believed; nor is a new baseline at or below a generation the api has seen.
#[tokio::test]
async fn a_hasher_ignoring_the_memory_or_committing_below_it_is_not_believed() {
    let dir = tempfile::tempdir().expect("dir");
    let record = crate::adopted::record_path(&dir.path().join("audit.jsonl"));
    let five = crate::adopted::Adopted {
        generation: 5,
        digest: digest(5),
    };
    crate::adopted::write_record(&record, &five).expect("record");
    let mut script = Script::new();
    script.generation = 2;
    script.store = StoreStatus::Adopted(script.summary());
    script.disobey = true;
    let rig = wired_in(script, dir);
    assert!(rig.monitor.connected(true).await.is_err());
    let snap = rig.monitor.snapshot();
    assert!(snap.hasher_down.is_some(), "{snap:?}");
    assert!(rig.verdict().is_err());

    let rig = started(Script::new()).await;
    assert_eq!(rig.state(), State::Trusted);
    lock(&rig.script).generation = 0; // its next baseline says generation 1 again
    assert!(rig.monitor.rebaseline(None, None).await.is_err());
    assert!(rig.monitor.snapshot().hasher_down.is_some());
}

#[tokio::test]
async fn an_unwritable_audit_log_is_503_until_the_records_are_on_disk() {
    let rig = started(Script::new()).await;
    std::fs::remove_file(rig.log()).expect("rm");
    std::fs::create_dir(rig.log()).expect("a directory where the log was");
    lock(&rig.script).violations = vec![violation("/m/a")];
    let _ = rig.monitor.scan().await;
    lock(&rig.script).violations.clear();
    let _ = rig.monitor.scan().await;
    assert_eq!(rig.state(), State::Trusted, "the state itself is accurate");
    assert_eq!(rig.verdict(), Err("audit log is not writable".into()));
    std::fs::remove_dir(rig.log()).expect("rmdir");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.verdict().is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(rig.verdict(), Ok(()), "the backlog drained by itself");
    let events = rig.events().await;
    assert_eq!(
        events.first().map(String::as_str),
        Some("audit_log_replaced")
    );
    assert!(events.contains(&"violation".to_owned()), "{events:?}");
}

#[tokio::test]
async fn the_schedule_scans_every_interval_and_at_once_on_a_change_notice() {
    let mut script = Script::new();
    script.interval_ms = 3_600_000;
    let rig = started(script).await;
    tokio::spawn(rig.monitor.clone().schedule());
    let scans = || lock(&rig.script).scans;
    let before = scans();
    // A change notice: untrusted at once, whatever the file, until a scan covers it.
    rig.monitor.changes().seen();
    assert_eq!(
        rig.verdict(),
        Err("a watched path changed and is being verified".into())
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while rig.verdict().is_err() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(rig.verdict(), Ok(()));
    assert_eq!(scans(), before + 1, "one notice, one scan");
    // Nothing else is due for an hour.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(scans(), before + 1);
}

#[tokio::test]
async fn a_short_interval_scans_on_its_own() {
    let mut script = Script::new();
    script.interval_ms = 50;
    let rig = started(script).await;
    tokio::spawn(rig.monitor.clone().schedule());
    let before = lock(&rig.script).scans;
    tokio::time::sleep(Duration::from_millis(600)).await;
    let ran = lock(&rig.script).scans - before;
    assert!((3..=13).contains(&ran), "{ran} scans in 600 ms at 50 ms");
}

/// Everything a relayed manifest delivers before it ends, and how it ended.
async fn drain(mut stream: super::ManifestStream) -> (Vec<u8>, Option<std::io::Error>) {
    let mut got = Vec::new();
    while let Some(part) = stream.parts.recv().await {
        match part {
            Ok(bytes) => got.extend_from_slice(&bytes),
            Err(e) => return (got, Some(e)),
        }
    }
    (got, None)
}

#[tokio::test]
async fn the_manifest_is_relayed_in_parts_and_checked_before_its_last_part() {
    let mut script = Script::new();
    script.manifest = (0..2 * BASELINE_PART + 123)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    let manifest = script.manifest.clone();
    let rig = started(script).await;
    let stream = rig.monitor.baseline_stream().await.expect("stream");
    assert_eq!(stream.total, manifest.len() as u64);
    let (got, end) = drain(stream).await;
    assert!(end.is_none(), "{end:?}");
    assert!(got == manifest, "the manifest, byte for byte");

    // A hasher that changes one byte of the second part: the last part is never relayed, so
    // the client gets fewer bytes than announced, and the hasher is cut off.
    lock(&rig.script).lie_at = Some(BASELINE_PART + 5);
    let stream = rig
        .monitor
        .baseline_stream()
        .await
        .expect("the first part is honest");
    let (got, end) = drain(stream).await;
    assert!(end.is_some(), "the body ends in an error");
    assert_eq!(got.len(), 2 * BASELINE_PART, "the last part was held back");
    assert!(
        rig.verdict()
            .is_err_and(|why| why.starts_with("hasher unavailable")),
        "{:?}",
        rig.verdict()
    );
}

/// The audit log with each record's `time` and `prev` (which hashes the time) masked: the
/// rest of every line as written, byte for byte.
fn masked_lines(text: &str) -> Vec<String> {
    fn mask(line: &str, key: &str) -> String {
        let open = format!("\"{key}\":\"");
        let Some(start) = line.find(&open).map(|i| i + open.len()) else {
            return line.to_owned();
        };
        let end = line[start..].find('"').map_or(line.len(), |i| start + i);
        format!("{}{key}{}", &line[..start], &line[end..])
    }
    text.lines()
        .map(|l| mask(&mask(l, "time"), "prev"))
        .collect()
}

/// What the real call sites write and what `/api/v1/status` serves, through a first start,
/// a violation, a refused token, a lost hasher and a rejected baseline: pinned byte for byte
/// (the kinds no scripted flow reaches are pinned in `audit.rs`).
#[tokio::test]
async fn what_the_monitor_writes_and_serves_is_byte_for_byte_as_before() {
    let rig = started(Script::new()).await;
    lock(&rig.script).violations = vec![violation("/m/a")];
    assert_eq!(rig.monitor.scan().await.ok(), Some(State::Degraded));
    let status = serde_json::to_string(&crate::http::status_body(&rig.monitor)).unwrap_or_default();
    assert_eq!(status, GOLDEN_STATUS);
    rig.monitor
        .audit_auth_refused("POST", "/api/v1/scan", "invalid_token");
    rig.monitor
        .baseline_rejected("baseline.json: HMAC does not verify");
    rig.monitor.hasher_lost("link closed");
    rig.monitor.audit_flush().await;
    let text = std::fs::read_to_string(rig.log()).unwrap_or_default();
    assert_eq!(masked_lines(&text), GOLDEN_LOG);
}

const GOLDEN_STATUS: &str = "{\"active_violations\":[{\"action\":\"quarantine_model\",\"actual_hash\":\"unregistered\",\"category\":\"model_file\",\"detected_at\":\"2026-11-25T00:00:00Z\",\"expected_hash\":\"none\",\"path\":\"/m/a\"}],\"baseline\":{\"created_at\":\"2026-11-25T00:00:00Z\",\"digest\":\"0000000000000000000000000000000000000000000000000000000000000001\",\"entries\":3,\"generation\":1,\"release\":null,\"rollback\":{\"anchor\":\"audit-log\",\"tpm_counter\":null,\"tpm_index\":null},\"signed\":true},\"baseline_problem\":null,\"change_notices\":0,\"degradation_threshold\":3,\"degraded_count\":1,\"degraded_entries\":1,\"ed25519_key_id\":\"0000000000000000\",\"hasher\":\"up\",\"last_report\":{\"ed25519\":\"0000000000000000:abababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababababab\",\"hmac\":\"abababababababababababababababababababababababababababababababab\",\"report\":{\"baseline_digest\":\"0000000000000000000000000000000000000000000000000000000000000001\",\"bytes_hashed\":0,\"completed_at\":\"2026-11-25T00:00:00Z\",\"duration_ms\":0,\"sealed_files\":0,\"seq\":2,\"unsettled\":0,\"violation_count\":1,\"violations\":[{\"action\":\"quarantine_model\",\"actual_hash\":\"unregistered\",\"category\":\"model_file\",\"detected_at\":\"2026-11-25T00:00:00Z\",\"expected_hash\":\"none\",\"path\":\"/m/a\"}],\"watched_files\":3}},\"last_scan_at\":\"2026-11-25T00:00:00Z\",\"reason\":\"1 violation(s), threshold 3\",\"recovery_count\":0,\"recovery_entries\":0,\"reference\":null,\"release\":{\"in_force\":null,\"refused\":null,\"transition\":null},\"rollback\":{\"anchor\":\"audit-log\",\"tpm_counter\":null,\"tpm_index\":null},\"scan_count\":2,\"scan_interval_ms\":3600000,\"sealed_files\":0,\"signing\":\"hmac-sha256\",\"state\":\"degraded\",\"trusted\":false,\"untrusted_because\":\"state is degraded\",\"violation_count\":1,\"watched_files\":3}";
const GOLDEN_LOG: &[&str] = &[
    "{\"created_at\":\"2026-11-25T00:00:00Z\",\"digest\":\"0000000000000000000000000000000000000000000000000000000000000001\",\"entries\":3,\"event\":\"initialized\",\"generation\":1,\"prev\":\"prev\",\"seq\":1,\"signed\":true,\"time\":\"time\"}",
    "{\"adopted_digest\":\"0000000000000000000000000000000000000000000000000000000000000001\",\"adopted_generation\":1,\"event\":\"baseline_adopted\",\"prev\":\"prev\",\"seq\":2,\"time\":\"time\"}",
    "{\"event\":\"transition\",\"from\":\"degraded\",\"prev\":\"prev\",\"reason\":\"initialized\",\"seq\":3,\"time\":\"time\",\"to\":\"trusted\",\"violation_count\":0}",
    "{\"action\":\"quarantine_model\",\"actual_hash\":\"unregistered\",\"category\":\"model_file\",\"detected_at\":\"2026-11-25T00:00:00Z\",\"event\":\"violation\",\"expected_hash\":\"none\",\"path\":\"/m/a\",\"prev\":\"prev\",\"seq\":4,\"time\":\"time\"}",
    "{\"event\":\"transition\",\"from\":\"trusted\",\"prev\":\"prev\",\"reason\":\"1 violation(s), threshold 3\",\"seq\":5,\"time\":\"time\",\"to\":\"degraded\",\"violation_count\":1}",
    "{\"event\":\"auth_refused\",\"method\":\"POST\",\"path\":\"/api/v1/scan\",\"prev\":\"prev\",\"reason\":\"invalid_token\",\"seq\":6,\"time\":\"time\"}",
    "{\"event\":\"baseline_rejected\",\"prev\":\"prev\",\"reason\":\"baseline.json: HMAC does not verify\",\"seq\":7,\"time\":\"time\"}",
    "{\"event\":\"transition\",\"from\":\"degraded\",\"prev\":\"prev\",\"reason\":\"baseline_rejected\",\"seq\":8,\"time\":\"time\",\"to\":\"recovery_required\",\"violation_count\":1}",
    "{\"event\":\"hasher_lost\",\"prev\":\"prev\",\"reason\":\"link closed\",\"seq\":9,\"time\":\"time\"}",
];
