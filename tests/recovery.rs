//! The way back from `recovery_required` on the real binaries: a rejected store (rolled back,
//! re-keyed, emptied) keeps the pair up, scanning against a reference so the operator sees
//! what differs, until the key ceremony makes a baseline above every generation seen; and the
//! api's memory of what it adopted survives every way the audit log is rotated.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::sign::sha256_hex;

/// Copies the regular files of `from` into `to` (a store's files).
fn copy_files(from: &std::path::Path, to: &std::path::Path) {
    for f in std::fs::read_dir(from).unwrap().flatten() {
        if f.file_type().unwrap().is_file() && f.file_name() != ".lock" {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

fn empty_dir(dir: &std::path::Path) {
    for f in std::fs::read_dir(dir).unwrap().flatten() {
        if f.file_type().unwrap().is_file() {
            let _ = std::fs::remove_file(f.path());
        }
    }
}

/// The appliance at generation 2 (a rebaselined update of the first binary), with a copy of
/// its store at generation 1 in the returned dir; the monitor stopped.
fn at_generation_two(a: &Appliance) -> tempfile::TempDir {
    let mut m = Running::start(a);
    let copy = tempfile::tempdir().unwrap();
    copy_files(&a.path("state"), copy.path());
    a.write(BINARIES[0], "an update, rebaselined");
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    assert_eq!(m.status()["baseline"]["generation"], 2);
    m.stop_cleanly();
    copy
}

/// Stays up in recovery_required for some scheduled scans: the process alive, scans accepted
/// (not a lie that cuts the link), `/verify` 503 throughout.
fn stays_up_in_recovery(m: &mut Running, what: &str) -> serde_json::Value {
    let first = m.status()["scan_count"].as_u64().unwrap_or(0);
    let moved = wait_until(Duration::from_secs(15), || {
        assert!(m.child.try_wait().unwrap().is_none(), "{what}: exited");
        assert_eq!(m.verify_code(), 503, "{what}");
        m.status()["scan_count"].as_u64().unwrap_or(0) >= first + 3
    });
    assert!(moved, "{what}: scans go on: {}", m.status());
    let scanned = m.scan();
    assert_eq!(scanned["state"], "recovery_required", "{what}: {scanned}");
    let s = m.status();
    assert_eq!(s["state"], "recovery_required", "{what}: {s}");
    assert_eq!(s["hasher"], "up", "{what}: {s}");
    assert!(m.child.try_wait().unwrap().is_none(), "{what}: exited");
    s
}

/// The ceremony recovers it: trusted at a generation above `seen`.
fn ceremony_recovers(m: &Running, a: &Appliance, seen: u64, what: &str) {
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 200, "{what}: {body}");
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{what}: {s}");
    assert!(
        s["baseline"]["generation"].as_u64().unwrap_or(0) > seen,
        "{what}: a generation above every one seen: {s}"
    );
    assert!(
        s["reference"].is_null() && s["baseline_problem"].is_null(),
        "{what}: {s}"
    );
    assert_eq!(m.verify_code(), 200, "{what}");
}

/// The threat model's own case: the whole store copied at generation 1 put back after
/// generation 2, with the audit log kept. The pair stays up; the status names the rollback
/// and the reference (the rejected store, verified); the operator sees the updated binary
/// differ from it; the ceremony recovers at generation 3.
#[test]
fn a_whole_store_rolled_back_stays_up_and_the_ceremony_recovers_above_it() {
    let a = Appliance::with_options("scan_interval: 1s\n");
    let old = at_generation_two(&a);
    empty_dir(&a.path("state"));
    copy_files(old.path(), &a.path("state"));
    let mut m = Running::start(&a);
    let s = stays_up_in_recovery(&mut m, "whole store");
    assert_eq!(s["reason"], "baseline_rejected", "{s}");
    assert!(
        s["baseline_problem"]
            .as_str()
            .is_some_and(|p| p.contains("rollback") && p.contains("generation 2")),
        "{s}"
    );
    assert_eq!(s["reference"]["store"], "verified", "{s}");
    assert_eq!(
        s["violation_count"], 1,
        "what differs from the rejected store: the updated binary: {s}"
    );
    assert_eq!(
        s["active_violations"][0]["path"],
        path_str(&a.path(BINARIES[0])),
        "{s}"
    );
    // No attestation rests on a reference.
    let (code, body) = attestation(&m, &"ab".repeat(16));
    assert_ne!(code, 200, "{body}");
    ceremony_recovers(&m, &a, 2, "whole store");
    assert_eq!(m.status()["baseline"]["generation"], 3);
}

/// Where the image ships a release baseline, it is what the listed paths are compared with:
/// a rolled-back store blessing an old binary does not hide that the binary differs from
/// what the release says.
#[test]
fn a_rejected_store_is_compared_with_the_release_baseline_where_it_lists_a_path() {
    let a = Appliance::with_options("scan_interval: 1h\n");
    let old = at_generation_two(&a);
    // The release says the first binary is the update (what generation 2 blessed); the old
    // store put back, with the old binary, says otherwise.
    let release = a.path("release/release-baseline.json");
    let update = b"an update, rebaselined";
    a.write(
        "release/release-baseline.json",
        &format!(
            "{{\"version\":1,\"source_commit\":\"c0ffee\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{}\",\"size\":{}}}]}}",
            path_str(&a.path(BINARIES[0])),
            sha256_hex(update),
            update.len()
        ),
    );
    a.write_policy(&format!(
        "scan_interval: 1s\nrelease_baseline: {}\n",
        release.display()
    ));
    empty_dir(&a.path("state"));
    copy_files(old.path(), &a.path("state"));
    a.write(BINARIES[0], &format!("#!/bin/sh\necho {}\n", BINARIES[0]));
    let mut m = Running::start(&a);
    let s = stays_up_in_recovery(&mut m, "release reference");
    assert_eq!(s["reference"]["release"], "c0ffee", "{s}");
    assert_eq!(s["reference"]["store"], "verified", "{s}");
    assert_eq!(
        s["active_violations"][0]["path"],
        path_str(&a.path(BINARIES[0])),
        "the old binary differs from the release: {s}"
    );
    assert_eq!(
        s["active_violations"][0]["expected_hash"],
        sha256_hex(update)
    );
    // The ceremony still refuses to bless what the release disagrees with; put the release's
    // binary back and it recovers.
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_ne!(code, 200, "{body}");
    a.write(BINARIES[0], "an update, rebaselined");
    ceremony_recovers(&m, &a, 2, "release reference");
}

/// A new HMAC key: the stored baseline no longer verifies. The pair stays up, comparing with
/// the (unverified) store so the operator sees what differs; the ceremony with the new key
/// recovers it past the old generation.
#[test]
fn a_key_change_stays_up_and_the_ceremony_with_the_new_key_recovers() {
    let a = Appliance::with_options("scan_interval: 1s\n");
    Running::start(&a).stop_cleanly();
    std::fs::write(a.path("secret/key"), [0x17u8; 32]).unwrap();
    let mut m = Running::start(&a);
    let s = stays_up_in_recovery(&mut m, "key change");
    assert_eq!(s["reference"]["store"], "unverified", "{s}");
    assert_eq!(
        s["violation_count"], 0,
        "nothing differs but the signature: {s}"
    );
    // The old key proves nothing to the hasher now.
    let (code, _) = rebaseline(m.addr, &[0x42u8; 32]).unwrap();
    assert_ne!(code, 200);
    ceremony_recovers(&m, &a, 1, "key change");
}

/// A store forged or cut short: nothing parses, no release: no reference. The pair stays up
/// all the same and the ceremony recovers it.
#[test]
fn a_truncated_store_stays_up_without_a_reference_and_the_ceremony_recovers() {
    let a = Appliance::with_options("scan_interval: 1s\n");
    Running::start(&a).stop_cleanly();
    let stored = std::fs::read(a.path("state/baseline.json")).unwrap();
    std::fs::write(a.path("state/baseline.json"), &stored[..stored.len() / 2]).unwrap();
    let mut m = Running::start(&a);
    std::thread::sleep(Duration::from_secs(3));
    assert!(m.child.try_wait().unwrap().is_none(), "exited");
    let s = m.status();
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert!(s["reference"].is_null(), "{s}");
    assert!(s["baseline_problem"].is_string(), "{s}");
    assert_eq!(m.verify_code(), 503);
    ceremony_recovers(&m, &a, 1, "truncated store");
}

/// How logrotate (or a person) may have left the audit log while the service was stopped.
#[derive(Debug, Clone, Copy)]
enum Rotation {
    RenameNocreate,
    RenameCreate,
    Copytruncate,
    Deleted,
}

fn rotate(a: &Appliance, how: Rotation) {
    let log = a.audit_log();
    let rotated = a.path("logs/audit.jsonl.1");
    match how {
        Rotation::RenameNocreate => std::fs::rename(&log, &rotated).unwrap(),
        Rotation::RenameCreate => {
            std::fs::rename(&log, &rotated).unwrap();
            std::fs::write(&log, "").unwrap();
        }
        Rotation::Copytruncate => copytruncate(&log, &rotated),
        Rotation::Deleted => std::fs::remove_file(&log).unwrap(),
    }
}

/// After each rotation, a whole store rolled back (with the binary it blessed) and an
/// emptied store (with a binary then tampered): never trusted on the old store, never a
/// silent first initialization; the ceremony recovers each, above generation 2.
#[test]
fn after_any_rotation_a_rollback_or_an_emptied_store_is_never_trusted_nor_reinitialised() {
    for how in [
        Rotation::RenameNocreate,
        Rotation::RenameCreate,
        Rotation::Copytruncate,
        Rotation::Deleted,
    ] {
        for emptied in [false, true] {
            let what = format!(
                "{how:?}, {}",
                if emptied { "emptied" } else { "rolled back" }
            );
            let a = Appliance::new();
            let old = at_generation_two(&a);
            rotate(&a, how);
            empty_dir(&a.path("state"));
            if emptied {
                a.write(BINARIES[1], "tampered");
            } else {
                copy_files(old.path(), &a.path("state"));
                a.write(BINARIES[0], &format!("#!/bin/sh\necho {}\n", BINARIES[0]));
            }
            let m = Running::start(&a);
            let s = m.status();
            assert_eq!(s["state"], "recovery_required", "{what}: {s}");
            assert_eq!(m.verify_code(), 503, "{what}");
            assert_eq!(
                a.count_events("initialized"),
                0,
                "{what}: no silent initialization"
            );
            assert!(
                s["baseline_problem"]
                    .as_str()
                    .is_some_and(|p| p.contains("rollback")),
                "{what}: {s}"
            );
            ceremony_recovers(&m, &a, 2, &what);
        }
    }
}

/// With the memory record and the log both gone, a rotated log left beside them is still a
/// trace of an earlier life: an emptied store is not initialized on its own. Only an
/// appliance with no trace anywhere initializes by itself.
#[test]
fn a_rotated_log_alone_is_a_trace_and_only_no_trace_at_all_initializes() {
    let a = Appliance::new();
    at_generation_two(&a);
    rotate(&a, Rotation::RenameNocreate);
    std::fs::remove_file(a.path("logs/audit.adopted.json")).unwrap();
    empty_dir(&a.path("state"));
    let m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert!(
        s["baseline_problem"]
            .as_str()
            .is_some_and(|p| p.contains("audit.jsonl.1")),
        "the trace is named: {s}"
    );
    assert_eq!(a.count_events("initialized"), 0);
    ceremony_recovers(&m, &a, 0, "trace only");
    drop(m);

    let fresh = Appliance::new();
    let m = Running::start(&fresh);
    assert_eq!(m.status()["state"], "trusted");
    assert_eq!(fresh.count_events("initialized"), 1);
    // The memory record is written from inside the api's sandbox, and says generation 1.
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(fresh.path("logs/audit.adopted.json")).unwrap())
            .unwrap();
    assert_eq!(record["adopted_generation"], 1, "{record}");
    assert_eq!(fresh.count_events("memory_record_failed"), 0);
}
