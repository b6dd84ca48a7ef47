//! Whole-system tests of the evidence: attestations, the hash-chained audit log across restarts, rotations, full disks and kills.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn readme_python_check_verifies_the_stored_baseline() {
    let block = doc_block("formats.md", "python-hmac-check");
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    a.write("check.py", &block);
    let run = |key: &str| {
        std::process::Command::new("python3")
            .args([
                a.path("check.py"),
                a.path("state/baseline.json"),
                a.path(key),
            ])
            .status()
            .expect("python3 is installed by .ci/run")
            .code()
    };
    assert_eq!(
        run("secret/key"),
        Some(0),
        "the README's check accepts a genuine baseline"
    );
    std::fs::write(a.path("other-key"), [0x41u8; 32]).unwrap();
    assert_eq!(
        run("other-key"),
        Some(1),
        "and refuses it under another key"
    );
}

/// The scan report's recipe in docs/formats.md, run as written on a live `/status` with a
/// violation in it: it verifies, and fails once a field is altered.
#[test]
fn the_docs_python_check_verifies_a_served_scan_report() {
    let block = doc_block("formats.md", "python-report-check");
    let a = Appliance::new();
    let m = Running::start(&a);
    tamper(&a, BINARIES[0]);
    let status = m.scan();
    assert_eq!(status["violation_count"], 1, "{status}");
    a.write("check-report.py", &block);
    let run = |status: &serde_json::Value| {
        std::fs::write(a.path("status.json"), status.to_string()).unwrap();
        Command::new("python3")
            .args([
                a.path("check-report.py"),
                a.path("status.json"),
                a.path("secret/key"),
            ])
            .status()
            .expect("python3 is installed by tests/run.sh")
            .code()
    };
    assert_eq!(
        run(&status),
        Some(0),
        "the served report verifies: {status}"
    );
    let mut altered = status.clone();
    altered["last_report"]["report"]["violation_count"] = 0.into();
    assert_eq!(run(&altered), Some(1), "an altered report does not");
}

/// The copy of the attestation served beside its signed payload, altered by a relay: refused
/// loudly, though the signature over the payload holds.
#[test]
fn an_altered_convenience_copy_beside_the_signed_payload_is_refused() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let nonce = "00112233445566778899aabbccddeeff";
    let (code, body) = attestation(&m, nonce);
    assert_eq!(code, 200, "{body}");
    assert_eq!(
        verify_attestation(&a, nonce, &body, &[]).status.code(),
        Some(0)
    );
    let mut doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["attestation"]["violation_count"] = 7.into();
    let out = verify_attestation(&a, nonce, &doc.to_string(), &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("disagrees"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn attestation_is_nonce_fresh_and_unforgeable_by_the_api() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let nonce = "00112233445566778899aabbccddeeff";
    let (code, body) = attestation(&m, nonce);
    assert_eq!(code, 200, "{body}");
    let ok = verify_attestation(&a, nonce, &body, &["--require-clean"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    // A remote verifier pins the baseline it approved and the oldest generation it accepts.
    let digest = m.status()["baseline"]["digest"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(doc["attestation"]["baseline_generation"], 1);
    let pinned = |extra: &[&str]| verify_attestation(&a, nonce, &body, extra).status.code();
    assert_eq!(
        pinned(&["--baseline", &digest, "--min-generation", "1"]),
        Some(0)
    );
    assert_eq!(
        pinned(&["--baseline", &"0".repeat(64)]),
        Some(1),
        "another baseline"
    );
    assert_eq!(
        pinned(&["--min-generation", "2"]),
        Some(1),
        "a reset or rolled-back store"
    );
    assert_eq!(
        doc["attestation"]["audit_seq"].as_u64().unwrap() as usize,
        a.audit_events().len()
    );

    // A replay under another nonce, an edited payload, and a stale scan are all refused.
    let other = "ffeeddccbbaa99887766554433221100";
    assert_eq!(
        verify_attestation(&a, other, &body, &[]).status.code(),
        Some(1)
    );
    let forged = body.replace("\\\"violation_count\\\":0", "\\\"violation_count\\\":0 ");
    assert_ne!(forged, body);
    assert_eq!(
        verify_attestation(&a, nonce, &forged, &[]).status.code(),
        Some(1)
    );
    // Stale: signed now, but the latest scan completed over 1 s before (hasher's monotonic
    // clock). The same request passes a looser bound.
    std::thread::sleep(Duration::from_millis(2100));
    let later = "0123456789abcdef0123456789abcdef";
    let (_, stale) = attestation(&m, later);
    let doc: serde_json::Value = serde_json::from_str(&stale).unwrap();
    assert!(
        doc["attestation"]["scan_age_ms"].as_u64().unwrap() >= 2000,
        "{doc}"
    );
    let verdict = |max: &str| {
        verify_attestation(&a, later, &stale, &["--max-age", max])
            .status
            .code()
    };
    assert_eq!((verdict("1"), verdict("60")), (Some(1), Some(0)));

    // Violations are attested, so --require-clean fails on a tampered appliance.
    a.write(BINARIES[0], "implant");
    m.scan();
    let (_, body) = attestation(&m, nonce);
    assert_eq!(
        verify_attestation(&a, nonce, &body, &[]).status.code(),
        Some(0)
    );
    assert_eq!(
        verify_attestation(&a, nonce, &body, &["--require-clean"])
            .status
            .code(),
        Some(1)
    );

    for bad in [
        "",
        "abc",
        "zz112233445566778899aabbccddeeff",
        &"ab".repeat(65),
    ] {
        assert_eq!(attestation(&m, bad).0, 400, "nonce {bad:?}");
    }
}

/// A fleet verifier holds the appliance's Ed25519 public key, never its HMAC key: with it an
/// attestation and a scan report verify, and nothing else does — an edited payload, a
/// signature made up by someone who has only the public key, another appliance's key, a
/// replayed nonce.
#[test]
fn a_fleet_verifier_needs_only_the_public_key_and_cannot_forge() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let public = |key: &std::path::Path| {
        let out = Command::new(monitor_bin())
            .args(["public-key", "--key", &path_str(key)])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0));
        assert!(String::from_utf8_lossy(&out.stderr).starts_with("key id "));
        String::from_utf8(out.stdout).unwrap()
    };
    let line = public(&a.path("secret/key"));
    // The status names the key id the appliance signs with, as `public-key` printed it.
    let id = protocol::fleet::PublicKey::parse(&line).unwrap().id();
    assert_eq!(m.status()["ed25519_key_id"], id.as_str());
    assert!(
        line.starts_with("ed25519:") && line.trim().len() == 8 + 64,
        "{line}"
    );
    a.write("fleet/appliance.pub", &line);
    std::fs::write(a.path("other-key"), [0x41u8; 32]).unwrap();
    let other = public(&a.path("other-key"));
    a.write("fleet/other.pub", &other);
    let by = |file: &str| vec!["--public-key".to_owned(), path_str(&a.path(file))];
    let check = |file: &str, nonce: &str, body: &str| {
        let args = by(file);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = verify_attestation_by(&args, nonce, body, &["--require-clean"]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let nonce = "00112233445566778899aabbccddeeff";
    let (code, body) = attestation(&m, nonce);
    assert_eq!(code, 200, "{body}");
    assert_eq!(check("fleet/appliance.pub", nonce, &body).0, Some(0));

    let refused = |body: &str, file: &str, nonce: &str, why: &str| {
        let (code, stderr) = check(file, nonce, body);
        assert_eq!(code, Some(1), "{why}: {stderr}");
        stderr
    };
    let edited = body.replace("\\\"violation_count\\\":0", "\\\"violation_count\\\":0 ");
    assert_ne!(edited, body);
    assert!(refused(&edited, "fleet/appliance.pub", nonce, "edited").contains("does not verify"));
    let mut doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let sig = doc["ed25519"].as_str().unwrap().to_owned();
    let (id, hex) = sig.split_once(':').unwrap();
    // What a holder of the public key could make up: the right key id, any 64 bytes.
    doc["ed25519"] = format!("{id}:{}", "5a".repeat(64)).into();
    assert!(
        refused(&doc.to_string(), "fleet/appliance.pub", nonce, "made up")
            .contains("does not verify")
    );
    doc["ed25519"] = "".into();
    assert!(
        refused(&doc.to_string(), "fleet/appliance.pub", nonce, "stripped")
            .contains("no `ed25519`")
    );
    assert_eq!(hex.len(), 128);
    assert!(
        refused(&body, "fleet/other.pub", nonce, "another appliance").contains("signed by key")
    );
    let replay = "ffeeddccbbaa99887766554433221100";
    assert!(refused(&body, "fleet/appliance.pub", replay, "replayed").contains("replay"));

    // A scan report's Ed25519 signature covers exactly the bytes its HMAC covers.
    let last = &m.status()["last_report"];
    let report: protocol::report::ScanReport =
        serde_json::from_value(last["report"].clone()).unwrap();
    let key = protocol::fleet::PublicKey::parse(&line).unwrap();
    let signed = [protocol::sign::REPORT_DOMAIN, &report.signing_json()];
    assert_eq!(
        key.verify(&signed, last["ed25519"].as_str().unwrap()),
        Ok(())
    );
    let hmac_key = std::fs::read(a.path("secret/key")).unwrap();
    assert!(protocol::sign::verify_hex(
        &hmac_key,
        &signed,
        last["hmac"].as_str().unwrap()
    ));
    let mut forged = report.clone();
    forged.violation_count += 1;
    let forged_bytes = [protocol::sign::REPORT_DOMAIN, &forged.signing_json()];
    assert!(key
        .verify(&forged_bytes, last["ed25519"].as_str().unwrap())
        .is_err());

    // The fleet's example check (contrib/fleet/check-appliance.sh), with a shell standing in
    // for ssh: trusted and clean passes; after a tamper, --require-clean fails.
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib/fleet/check-appliance.sh");
    let fleet_check = || {
        let out = Command::new("sh")
            .arg(&script)
            .args(["appliance", &path_str(&a.path("fleet")), "--require-clean"])
            .env("FETCH", "sh -c")
            .env("VERIFY", monitor_bin())
            .env("MONITOR_URL", format!("http://{}", m.addr))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = fleet_check();
    assert_eq!(code, Some(0), "{stderr}");
    a.write(BINARIES[0], "implant");
    m.scan();
    let (code, stderr) = fleet_check();
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("violation"), "{stderr}");
}

#[test]
fn audit_log_is_a_verifiable_hash_chain_across_restarts() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    a.write(BINARIES[0], "x");
    m.scan();
    m.stop_cleanly();
    let m = Running::start(&a);
    m.scan();
    drop(m);
    let ok = verify_audit(&[a.audit_log()]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    // Deleting one record in the middle breaks the chain at that point.
    let text = std::fs::read_to_string(a.audit_log()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let cut: String = lines
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3)
        .map(|(_, l)| format!("{l}\n"))
        .collect();
    std::fs::write(a.audit_log(), cut).unwrap();
    let bad = verify_audit(&[a.audit_log()]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("line 4"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

#[test]
fn full_disk_keeps_evidence_in_order_and_verify_closed_until_it_is_written() {
    // A file size limit on the api stands in for a full disk: writes past it fail (EFBIG).
    let a = Appliance::new();
    let handed = Handed::new();
    let addr = handed.addr;
    let mut inner = std::process::Command::new(monitor_bin());
    inner.args(a.args(addr));
    // The limit is set in the shell that execs the monitor, which keeps it.
    let mut cmd = handed.command(&inner);
    // SAFETY: only async-signal-safe calls (signal, setrlimit) between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 2000,
                rlim_max: libc::RLIM_INFINITY,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            Ok(())
        });
    }
    let child = cmd.spawn().unwrap();
    drop(cmd); // the listener now lives in the monitor only
    let mut m = Running { child, addr };
    m.wait_ready();
    // Fill the log to its limit with violations and transitions.
    for b in BINARIES {
        a.write(b, "tampered and tampered again");
        let _ = post(m.addr, "/api/v1/scan", Some(TOKEN));
    }
    let s = m.status();
    assert_eq!(
        s["state"], "recovery_required",
        "the state machine does not depend on the disk"
    );
    assert!(wait_until(Duration::from_secs(2), || m.verify_code() == 503));
    let (_, body) = get(m.addr, "/metrics").unwrap();
    assert!(
        !body.contains("integrity_monitor_audit_backlog 0"),
        "records are waiting: {body}"
    );
    // Space comes back: lift the limit; the next record flushes the backlog in order.
    let lim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    assert_eq!(
        // SAFETY: prlimit on our own child with a valid rlimit struct.
        unsafe {
            libc::prlimit(
                m.child.id() as i32,
                libc::RLIMIT_FSIZE,
                &lim,
                std::ptr::null_mut(),
            )
        },
        0
    );
    for b in BINARIES {
        a.write(b, &format!("#!/bin/sh\necho {b}\n"));
    }
    assert_eq!(m.scan()["state"], "trusted");
    let (_, body) = get(m.addr, "/metrics").unwrap();
    assert!(body.contains("integrity_monitor_audit_backlog 0"), "{body}");
    assert_eq!(m.verify_code(), 200);
    let events = a.audit_events();
    assert_eq!(
        events.iter().filter(|e| e["event"] == "violation").count(),
        BINARIES.len(),
        "no violation record lost"
    );
    m.stop_cleanly();
    let out = verify_audit(&[a.audit_log()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "the chain holds: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn api_killed_mid_record_leaves_a_chain_that_verifies_to_the_last_whole_record() {
    let a = Appliance::new();
    let m = Running::start(&a);
    m.scan();
    drop(m); // SIGKILL
             // What a crash in the middle of a write leaves behind.
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(a.audit_log())
        .unwrap()
        .write_all(b"{\"seq\":99,\"prev\":\"0f")
        .unwrap();
    let mut m = Running::start(&a);
    let events = a.audit_events();
    let recovered = events
        .iter()
        .find(|e| e["event"] == "audit_tail_recovered")
        .unwrap_or_else(|| panic!("not recorded: {events:?}"))
        .clone();
    let snapshot = std::path::PathBuf::from(recovered["snapshot"].as_str().unwrap());
    assert!(
        snapshot.exists(),
        "the broken file is kept aside, not deleted"
    );
    m.stop_cleanly();
    let broken = verify_audit(std::slice::from_ref(&snapshot));
    assert_eq!(broken.status.code(), Some(1), "the torn record is reported");
    let whole: String = std::fs::read_to_string(&snapshot)
        .unwrap()
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(a.path("logs/whole.jsonl"), whole).unwrap();
    let ok = verify_audit(&[a.path("logs/whole.jsonl"), a.audit_log()]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
}

fn first_event(path: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    serde_json::from_str(text.lines().next().unwrap_or("null")).unwrap()
}

#[test]
fn an_audit_log_rotated_or_removed_under_the_api_is_followed_and_the_chain_holds() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let log = a.audit_log();
    let aside = |n: &str| a.path(&format!("logs/audit.jsonl.{n}"));

    // logrotate's copytruncate: a copy, then the original cut to nothing; no signal.
    copytruncate(&log, &aside("1"));
    m.scan();
    let first = first_event(&log);
    assert_eq!(
        (first["event"].as_str(), first["reason"].as_str()),
        (Some("audit_log_replaced"), Some("truncated")),
        "{first}"
    );
    let ok = verify_audit(&[aside("1"), log.clone()]);
    assert!(
        ok.status.success(),
        "chain over (copy, current): {}",
        String::from_utf8_lossy(&ok.stderr)
    );

    // A rename with no signal: the next record goes to a new file at the path.
    std::fs::rename(&log, aside("2")).unwrap();
    m.scan();
    assert_eq!(first_event(&log)["event"], "audit_log_replaced");
    assert!(verify_audit(&[aside("1"), aside("2"), log.clone()])
        .status
        .success());

    // Deleted while running: noticed, a new file, and /verify is 200 again only once written.
    std::fs::remove_file(&log).unwrap();
    m.scan();
    assert_eq!(first_event(&log)["reason"], "deleted or renamed");
    assert_eq!(m.verify_code(), 200);
    // The new file alone does not start at the genesis record: verify-audit says so by
    // default, and checks it on purpose with --from.
    let alone = verify_audit(std::slice::from_ref(&log));
    assert_eq!(
        alone.status.code(),
        Some(1),
        "a log whose first records are gone is not OK"
    );
    let first = first_event(&log);
    let from = format!(
        "{}:{}",
        first["last_seq"].as_u64().unwrap(),
        first["last_hash"].as_str().unwrap()
    );
    let tail = Command::new(monitor_bin())
        .args(["verify-audit", "--from", &from])
        .arg(&log)
        .output()
        .unwrap();
    assert!(
        tail.status.success(),
        "{}",
        String::from_utf8_lossy(&tail.stderr)
    );
}

#[test]
fn verify_audit_head_proves_the_log_complete_up_to_an_attested_record() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.scan();
    m.stop_cleanly();
    let lines: Vec<String> = std::fs::read_to_string(a.audit_log())
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let last: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    let hash = protocol::sign::sha256_hex(lines.last().unwrap().as_bytes());
    let head = format!("{}:{hash}", last["seq"].as_u64().unwrap());
    let run = |file: &std::path::Path| {
        Command::new(monitor_bin())
            .args(["verify-audit", "--head", &head])
            .arg(file)
            .status()
            .unwrap()
            .code()
    };
    assert_eq!(run(&a.audit_log()), Some(0));
    // The same log with its last record cut off does not reach the attested head.
    a.write(
        "cut.jsonl",
        &format!("{}\n", lines[..lines.len() - 1].join("\n")),
    );
    assert_eq!(run(&a.path("cut.jsonl")), Some(1));
    // And a log whose first record is gone fails even without --head.
    a.write("headless.jsonl", &format!("{}\n", lines[1..].join("\n")));
    assert_eq!(
        verify_audit(&[a.path("headless.jsonl")]).status.code(),
        Some(1)
    );
}
