//! The threat model (docs/threat-model.md), attacked on the real binaries: each test performs one attack a
//! compromised api, a writer of model files or a writer of the hasher's store could try, and
//! sees it fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]
// Items 1-6 of the threat model's review (#29); docs/threat-model.md names each test.

mod common;

use common::*;
use protocol::sign::sha256_hex;

/// The appliance's key form: 64 hex digits and a newline, 65 bytes. As an HMAC key it is
/// longer than a SHA-256 block, so HMAC uses SHA-256(key) in its place: that digest is the key.
fn appliance_key(a: &Appliance) -> Vec<u8> {
    let key = format!("{}\n", "5a".repeat(32)).into_bytes();
    std::fs::write(a.path("secret/key"), &key).unwrap();
    key
}

/// A hard link of the key (or a copy of it) inside a model dir: the file is a finding of its
/// own, and its digest — an equivalent HMAC key — reaches neither the baseline, the reports,
/// nor the audit log.
#[test]
fn the_key_put_into_a_model_dir_by_hard_link_or_copy_is_never_digested() {
    let a = Appliance::new();
    let key = appliance_key(&a);
    let forged_key = sha256_hex(&key);
    std::fs::hard_link(a.path("secret/key"), a.path("models/linked-key.gguf")).unwrap();
    std::fs::copy(a.path("secret/key"), a.path("models/sub/copied-key.gguf")).unwrap();
    std::fs::hard_link(a.path("secret/token"), a.path("models/linked-token.gguf")).unwrap();
    let m = Running::start(&a);
    let s = m.scan();
    let secret_files: Vec<&str> = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["actual_hash"] == "secret_file")
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    let shown = |rel: &str| path_str(&a.path(rel));
    for rel in ["models/linked-key.gguf", "models/linked-token.gguf"] {
        assert!(secret_files.contains(&shown(rel).as_str()), "{rel}: {s}");
    }
    // The copy was read when the baseline was made, recognised by its digest, left out: now
    // it is a file nobody baselined.
    let flagged = |rel: &str| {
        s["active_violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["path"] == shown(rel).as_str())
    };
    assert!(flagged("models/sub/copied-key.gguf"), "{s}");
    assert_ne!(
        m.verify_code(),
        200,
        "not trusted while a secret sits in a model dir"
    );
    let (_, baseline) = get(m.addr, "/api/v1/baseline").unwrap();
    for (what, text) in [
        ("baseline", baseline),
        ("status", m.status().to_string()),
        ("audit log", std::fs::read_to_string(a.audit_log()).unwrap()),
    ] {
        assert!(
            !text.contains(&forged_key),
            "the key's digest is in the {what}"
        );
        assert!(
            !text.contains(&sha256_hex(TOKEN.as_bytes())),
            "the token's digest is in the {what}"
        );
    }
    // Nor does an authorised rebaseline take them in.
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    let (_, baseline) = get(m.addr, "/api/v1/baseline").unwrap();
    assert!(!baseline.contains(&forged_key), "{code} {body}");
    assert!(!baseline.contains("linked-key.gguf"), "{baseline}");
}

/// The key bind-mounted over a file in a model dir (in a mount namespace of the monitor's own,
/// so the host's mounts are untouched): the same inode, a `secret_file` finding, never read.
#[test]
fn the_key_bind_mounted_into_a_model_dir_is_never_read() {
    let a = Appliance::new();
    let key = appliance_key(&a);
    a.write("models/mounted.gguf", "");
    let handed = Handed::new();
    let addr = handed.addr;
    let mut inner = std::process::Command::new("unshare");
    inner
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg("mount --bind \"$1\" \"$2\" && shift 2 && exec \"$@\"")
        .arg("sh")
        .arg(a.path("secret/key"))
        .arg(a.path("models/mounted.gguf"))
        .arg(monitor_bin())
        .args(a.args(addr));
    let child = handed
        .command(&inner)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut m = Running { child, addr };
    m.wait_ready();
    let s = m.scan();
    let finding = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["path"] == path_str(&a.path("models/mounted.gguf")))
        .cloned();
    assert_eq!(
        finding.map(|v| v["actual_hash"].clone()),
        Some("secret_file".into()),
        "{s}"
    );
    let (_, baseline) = get(m.addr, "/api/v1/baseline").unwrap();
    assert!(!baseline.contains(&sha256_hex(&key)));
    assert!(!std::fs::read_to_string(a.audit_log())
        .unwrap()
        .contains(&sha256_hex(&key)));
}

/// `verify-audit` on an emptied log is no proof of anything: it fails, even without `--head`.
#[test]
fn verify_audit_refuses_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("audit.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = verify_audit(&[empty]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty log"));
}

/// `--insecure-no-sandbox` is refused with the production policy however its path is spelt.
#[test]
fn no_sandbox_is_refused_with_the_production_policy_spelt_another_way() {
    for policy in [
        "/etc/secure-ai/policy/../policy/integrity-monitor.yaml",
        "/etc/secure-ai/./policy//integrity-monitor.yaml",
    ] {
        let out = std::process::Command::new(monitor_bin())
            .args(["--insecure-no-sandbox", "--policy", policy, "--listen"])
            .arg(free_addr().to_string())
            .args(["--state-dir", "/nonexistent-im-state", "--audit-log"])
            .arg(tempfile::tempdir().unwrap().path().join("a.jsonl"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{policy}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused with the production policy"),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A world-writable directory above the policy, the key or the token lets anyone swap the file
/// by rename: refused, naming that directory (as sshd's StrictModes).
#[test]
fn a_world_writable_directory_above_policy_key_or_token_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    for (dir, what) in [("secret", "HMAC key"), ("etc", "policy")] {
        let a = Appliance::new();
        std::fs::set_permissions(a.path(dir), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = std::process::Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{dir}: {err}");
        assert!(
            err.contains("world-writable") && err.contains(what),
            "{dir}: {err}"
        );
        // Sticky, as /tmp is: only an entry's owner may rename it. Accepted.
        std::fs::set_permissions(a.path(dir), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _m = Running::start(&a);
    }
}

/// The store as the first start left it (generation 1), with one binary then tampered and an
/// old-format baseline that blesses the tampering signed with the real key: what someone who
/// can write the hasher's store (and holds, or once saw, a signed baseline) could put back.
fn tampered_entries(a: &Appliance) -> Vec<protocol::baseline::Entry> {
    let stored = std::fs::read(a.path("state/baseline.json")).unwrap();
    let m = protocol::baseline::Manifest::parse(&stored).unwrap();
    assert_eq!(m.generation, Some(1));
    a.write(BINARIES[0], "tampered");
    let tampered = path_str(&a.path(BINARIES[0]));
    m.entries
        .to_vec()
        .into_iter()
        .map(|mut e| {
            if e.path == tampered {
                e.hash =
                    protocol::hexfmt::Sha256Digest::from_hex(&sha256_hex(b"tampered")).unwrap();
                e.size = 8;
            }
            e
        })
        .collect()
}

/// Starts the monitor on `a`, waits for its first verdict, and says what it was.
fn verdict_after_restart(a: &Appliance) -> (String, u16, Running) {
    let m = Running::start(a);
    let s = m.status();
    (
        s["state"].as_str().unwrap_or("").to_owned(),
        m.verify_code(),
        m,
    )
}

fn assert_rollback_refused(a: &Appliance, what: &str) {
    let (state, code, _m) = verdict_after_restart(a);
    assert_eq!((state.as_str(), code), ("recovery_required", 503), "{what}");
    let rejected = a
        .audit_events()
        .into_iter()
        .filter(|e| e["event"] == "baseline_rejected")
        .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
        .collect::<Vec<_>>();
    assert!(
        rejected.iter().any(|r| r.contains("rollback")),
        "{what}: {rejected:?}"
    );
}

/// Delete `generation.json` and put back a Go-format baseline signed with the same key: the
/// hasher alone would take it as a first migration; the api's log says generation 1 was
/// adopted, so generation 0 is a rollback.
#[test]
fn a_go_baseline_put_back_with_the_generation_record_deleted_is_refused() {
    let a = Appliance::new();
    Running::start(&a).stop_cleanly();
    let mut go = protocol::baseline::Manifest::new(
        "2026-10-01T08:00:00Z".into(),
        tampered_entries(&a),
        None,
    );
    go.hmac = protocol::sign::hmac_hex(&[0x42u8; 32], &[&go.go_signing_bytes()[0]]);
    std::fs::write(
        a.path("state/baseline.json"),
        serde_json::to_vec_pretty(&go).unwrap(),
    )
    .unwrap();
    std::fs::remove_file(a.path("state/generation.json")).unwrap();
    assert_rollback_refused(&a, "Go format");
}

/// The same with one of our own baselines from before generations existed.
#[test]
fn a_pre_generation_baseline_of_ours_put_back_is_refused() {
    let a = Appliance::new();
    Running::start(&a).stop_cleanly();
    let old = protocol::baseline::Manifest::new(
        "2026-10-01T08:00:00Z".into(),
        tampered_entries(&a),
        Some(&[0x42u8; 32]),
    );
    std::fs::write(a.path("state/baseline.json"), old.to_json()).unwrap();
    std::fs::remove_file(a.path("state/generation.json")).unwrap();
    assert_rollback_refused(&a, "pre-generation format");
}

/// The whole store copied at generation 1 and put back after generation 2 (the audit log
/// kept): the hasher's store is consistent, the api's log is not fooled.
#[test]
fn a_whole_store_rolled_back_with_the_audit_log_kept_is_refused() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(a.path("state")).unwrap().flatten() {
        if f.file_type().unwrap().is_file() {
            std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
        }
    }
    a.write(BINARIES[0], "an update, rebaselined");
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    // logrotate's copytruncate: the generation-2 record goes with the copy; the records that
    // open the truncated file carry it forward.
    std::fs::copy(a.audit_log(), a.path("logs/audit.jsonl.1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(a.audit_log())
        .unwrap()
        .set_len(0)
        .unwrap();
    let mut m = m;
    m.stop_cleanly();
    for f in std::fs::read_dir(a.path("state")).unwrap().flatten() {
        if f.file_type().unwrap().is_file() {
            let _ = std::fs::remove_file(f.path());
        }
    }
    for f in std::fs::read_dir(copy.path()).unwrap().flatten() {
        std::fs::copy(f.path(), a.path("state").join(f.file_name())).unwrap();
    }
    assert_rollback_refused(&a, "whole store at generation 1");
}

/// An emptied store is no first boot once the log has recorded a baseline: it is not
/// re-initialised over whatever the files now hold.
#[test]
fn an_emptied_store_is_not_reinitialised_over_the_current_files() {
    let a = Appliance::new();
    Running::start(&a).stop_cleanly();
    a.write(BINARIES[0], "tampered");
    for f in std::fs::read_dir(a.path("state")).unwrap().flatten() {
        if f.file_type().unwrap().is_file() {
            let _ = std::fs::remove_file(f.path());
        }
    }
    assert_rollback_refused(&a, "emptied store");
    assert_eq!(
        a.count_events("initialized"),
        1,
        "only the first start initialised"
    );
}

/// The Go-style bearer rebaseline remains, only by an explicit policy choice: the token then
/// authorises it again (and a compromised api that saw it could too: the README says so).
#[test]
fn the_bearer_rebaseline_is_an_explicit_policy_choice() {
    let a = Appliance::with_options("scan_interval: 1h\nrebaseline_auth: bearer\n");
    let m = Running::start(&a);
    a.write(BINARIES[0], "an update");
    let (code, body) = post(m.addr, "/api/v1/rebaseline", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    // The key ceremony works under either choice.
    a.write(BINARIES[1], "another update");
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    let other = Appliance::with_options("scan_interval: 1h\nrebaseline_auth: anyone\n");
    let out = std::process::Command::new(monitor_bin())
        .args(other.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("rebaseline_auth"));
}

/// A write into a page a shared mapping already dirtied: no fault, no timestamp, no event. The
/// model is mapped `MAP_SHARED` and its fd closed; one byte is written back unchanged (the
/// first write faults: the times move). The next check sees the new ctime and reads the file
/// once, after writing its pages back on the hasher's own read-only descriptor: writeback
/// leaves the page clean and write-protected, so the tampering that follows faults and moves
/// the ctime, and the next check finds it. Each change costs one read of the file, and
/// `/verify` is 200 as soon as the proving read is in (no settle window to wait out), never
/// with the tampering in the page cache.
#[test]
fn a_write_through_a_shared_mapping_into_a_once_dirtied_page_is_seen_after_one_read() {
    use std::os::unix::fs::MetadataExt;
    let a = Appliance::with_options("scan_interval: 1h\n");
    let m = Running::start(&a);
    let model = a.path("models/a.gguf");
    let len = std::fs::metadata(&model).unwrap().len();
    let map = Mapping::of(&model);
    map.poke(map.peek());
    let first = m.scan();
    assert_eq!(first["state"], "trusted", "the same bytes: {first}");
    let report = &first["last_report"]["report"];
    assert_eq!(report["unsettled"], 0, "proven by its one read: {first}");
    assert_eq!(
        report["bytes_hashed"], len,
        "read once, the changed file alone"
    );
    assert_eq!(m.verify_code(), 200, "no window to wait out");
    let times = |p: &std::path::Path| {
        let md = std::fs::metadata(p).unwrap();
        (md.ctime(), md.ctime_nsec())
    };
    let before = times(&model);
    map.poke(b'X');
    assert_ne!(
        times(&model),
        before,
        "the hasher's writeback left the page write-protected: the tampering faulted and moved ctime"
    );
    let scanned = m.scan();
    assert_ne!(scanned["state"], "trusted", "{scanned}");
    assert_eq!(
        scanned["last_report"]["report"]["bytes_hashed"], len,
        "{scanned}"
    );
    assert_eq!(m.verify_code(), 503);
    let s = m.status();
    assert_eq!(s["active_violations"][0]["path"], path_str(&model), "{s}");
}
