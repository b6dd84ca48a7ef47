//! Whole-system tests: the real integrity-monitor and integrity-hasher on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use protocol::baseline::Manifest;

fn tamper(a: &Appliance, rel: &str) {
    a.write(rel, "tampered!\n");
}

fn restore_binary(a: &Appliance, rel: &str) {
    a.write(rel, &format!("#!/bin/sh\necho {rel}\n"));
}

#[test]
fn tamper_degrades_three_escalate_restore_trusts() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(s["watched_files"], 9);
    assert_eq!(m.verify_code(), 200);

    tamper(&a, BINARIES[0]);
    let s = m.scan();
    assert_eq!(s["state"], "degraded", "{s}");
    assert_eq!(s["violation_count"], 1);
    let v = &s["active_violations"][0];
    assert_eq!(v["path"], path_str(&a.path(BINARIES[0])));
    assert_eq!(v["category"], "service_binary");
    assert_eq!(v["action"], "degrade_appliance");
    assert_ne!(v["expected_hash"], v["actual_hash"]);
    assert_eq!(m.verify_code(), 503);

    tamper(&a, BINARIES[1]);
    tamper(&a, BINARIES[2]);
    let s = m.scan();
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert_eq!(s["violation_count"], 3);

    for b in &BINARIES[..3] {
        restore_binary(&a, b);
    }
    let s = m.scan();
    assert_eq!(s["state"], "trusted", "{s}");
    // Transitions: one into degraded, one into recovery_required.
    assert_eq!(
        (
            s["degraded_entries"].as_u64(),
            s["recovery_entries"].as_u64()
        ),
        (Some(1), Some(1))
    );
    // The Go service's counters count scans: both forced scans above that found violations
    // (background checks of the changes may add more), one of them at the threshold.
    let (degraded, recovery) = (
        s["degraded_count"].as_u64().unwrap(),
        s["recovery_count"].as_u64().unwrap(),
    );
    assert!(degraded >= 2 && recovery >= 1 && recovery < degraded, "{s}");
    assert_eq!(m.verify_code(), 200);

    assert_eq!(a.count_events("violation"), 3);
    let transitions: Vec<(String, String)> = a
        .audit_events()
        .iter()
        .filter(|e| e["event"] == "transition")
        .map(|e| {
            (
                e["from"].as_str().unwrap().to_owned(),
                e["to"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let expected = [
        ("degraded", "trusted"),
        ("trusted", "degraded"),
        ("degraded", "recovery_required"),
        ("recovery_required", "trusted"),
    ];
    assert_eq!(
        transitions,
        expected.map(|(f, t)| (f.to_owned(), t.to_owned())).to_vec()
    );
}

#[test]
fn large_models_hashed_on_several_threads_inside_the_sandbox() {
    // Several files needing a full read at once: the worker threads run inside the sandbox.
    let a = Appliance::with_options("scan_interval: 1h\nhash_threads: 3\n");
    let big: Vec<u8> = (0..6u32 << 20).map(|i| (i % 253) as u8).collect();
    for i in 0..3 {
        std::fs::write(a.path(&format!("models/big{i}.gguf")), &big).unwrap();
    }
    let m = Running::start(&a);
    let hasher = m.hasher_pid();
    let s = m.status();
    assert_eq!(
        (s["state"].as_str(), s["watched_files"].as_u64()),
        (Some("trusted"), Some(12)),
        "{s}"
    );

    // Same size, one byte changed in the middle: only a full read can see it.
    let mut changed = big.clone();
    changed[3 << 20] ^= 1;
    std::fs::write(a.path("models/big1.gguf"), &changed).unwrap();
    let s = m.scan();
    assert_eq!(s["state"], "degraded", "{s}");
    assert_eq!(
        s["active_violations"][0]["path"],
        path_str(&a.path("models/big1.gguf"))
    );
    std::fs::write(a.path("models/big1.gguf"), &big).unwrap();
    assert_eq!(m.scan()["state"], "trusted");
    assert_eq!(m.verify_code(), 200);
    assert_eq!(
        m.hasher_pid(),
        hasher,
        "the same hasher, alive after its threads ran"
    );
}

#[test]
fn deleted_new_and_symlinked_model_files_are_violations() {
    let a = Appliance::new();
    let m = Running::start(&a);
    std::fs::remove_file(a.path("models/a.gguf")).unwrap();
    a.write("models/sub/new.gguf", "unvetted weights");
    std::os::unix::fs::symlink("/etc/passwd", a.path("models/link.gguf")).unwrap();
    let s = m.scan();
    assert_eq!(s["state"], "recovery_required", "{s}");
    let found: Vec<(String, String, String, String)> = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            let f = |k: &str| v[k].as_str().unwrap().to_owned();
            (
                f("path").rsplit('/').next().unwrap().to_owned(),
                f("expected_hash"),
                f("actual_hash"),
                f("action"),
            )
        })
        .collect();
    assert_eq!(found.len(), 3);
    assert_eq!(
        (
            found[0].0.as_str(),
            found[0].2.as_str(),
            found[0].3.as_str()
        ),
        ("a.gguf", "missing", "quarantine_model")
    );
    assert_eq!(
        (found[1].0.as_str(), found[1].2.as_str()),
        ("link.gguf", "symlink")
    );
    assert_eq!(
        (
            found[2].0.as_str(),
            found[2].1.as_str(),
            found[2].2.as_str()
        ),
        ("new.gguf", "none", "unregistered")
    );
}

#[test]
fn baseline_endpoint_serves_a_manifest_the_key_verifies() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let (code, body) = get(m.addr, "/api/v1/baseline").unwrap();
    assert_eq!(code, 200);
    let manifest = Manifest::parse(body.trim_end().as_bytes()).expect("manifest");
    manifest
        .verify(Some(&[0x42u8; 32]))
        .expect("HMAC verifies with the key");
    assert_eq!(manifest.entries.len(), 9);
    assert!(manifest.verify(Some(&[0x43u8; 32])).is_err());
}

#[test]
fn a_manifest_larger_than_a_part_is_relayed_whole_and_exact() {
    // About 15,000 entries: a manifest of three 1 MiB parts.
    let a = Appliance::new();
    for d in 0..15 {
        for i in 0..1000 {
            a.write(&format!("models/d{d:02}/f{i:04}.bin"), "x");
        }
    }
    let m = Running::start(&a);
    let stored = std::fs::read(a.path("state/baseline.json")).unwrap();
    assert!(
        stored.len() > 2 * protocol::message::BASELINE_PART,
        "{} bytes",
        stored.len()
    );
    let (code, body) = get(m.addr, "/api/v1/baseline").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.as_bytes() == stored.as_slice(),
        "{} bytes relayed, {} stored",
        body.len(),
        stored.len()
    );
    assert_eq!(m.verify_code(), 200, "relaying cost the hasher no trust");
}

#[test]
fn a_flood_of_bad_tokens_fills_neither_the_audit_log_nor_stderr() {
    let a = Appliance::new();
    let log = a.path("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let m = Running::start_with_stderr(&a, &[], file.into());
    for _ in 0..300 {
        let (code, _) = post(m.addr, "/api/v1/scan", Some("wrong-token-0123456789abcdef")).unwrap();
        assert_eq!(code, 403);
    }
    assert_eq!(m.verify_code(), 200, "the flood changed no verdict");
    // Written at most 20 a minute, the rest counted: in the audit log and on stderr alike.
    let deadline = Duration::from_secs(10);
    assert!(wait_until(deadline, || a.count_events("auth_refused") == 20));
    let text = std::fs::read(&log).unwrap();
    let lines = String::from_utf8_lossy(&text);
    let refused = lines
        .lines()
        .filter(|l| l.contains("request refused: bad or missing token"))
        .count();
    assert_eq!(refused, 20, "stderr is rate-limited with the audit log");
    assert!(
        text.len() < 64 * 1024,
        "stderr grew by {} bytes",
        text.len()
    );
    // stderr is a file here, not a terminal: no colour codes.
    assert!(
        !text.contains(&0x1b),
        "ANSI escapes on a stderr that is not a terminal"
    );
}

#[test]
fn mutations_need_the_token_and_routes_are_strict() {
    let a = Appliance::new();
    let m = Running::start(&a);
    tamper(&a, BINARIES[0]);
    m.scan();
    // RFC 6750: no credentials 401 (with a Bearer challenge), wrong credentials 403.
    for (token, status) in [(None, 401), (Some("wrong-token-0123456789abcdef"), 403)] {
        for path in ["/api/v1/rebaseline", "/api/v1/scan", "/api/v1/reload"] {
            let (code, body) = post(m.addr, path, token).unwrap();
            assert_eq!(code, status, "{path} {body}");
            assert!(body.contains("\"error\""), "{body}");
        }
    }
    assert_eq!(m.status()["state"], "degraded");
    assert_eq!(a.count_events("auth_refused"), 6);
    let (code, body) = request(
        m.addr,
        "POST",
        "/api/v1/rebaseline",
        &[("Authorization", "Basic abc")],
        b"",
    )
    .unwrap();
    assert_eq!(code, 401, "not a bearer token: {body}");

    let before = m.status()["baseline"]["digest"].clone();
    // The service token, right as it is, no longer makes a baseline: it crosses the api.
    let (code, body) = post(m.addr, "/api/v1/rebaseline", Some(TOKEN)).unwrap();
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("integrity-monitor rebaseline --key"),
        "{body}"
    );
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 200, "{body}");
    let s = m.status();
    assert_eq!(s["state"], "trusted");
    assert_ne!(s["baseline"]["digest"], before);
    assert_eq!(a.count_events("rebaseline"), 1);
    assert_eq!(m.verify_code(), 200);

    assert_eq!(get(m.addr, "/api/v1/rebaseline").unwrap().0, 405);
    assert_eq!(post(m.addr, "/api/v1/verify", Some(TOKEN)).unwrap().0, 405);
    assert_eq!(get(m.addr, "/api/v1/nope").unwrap().0, 404);
    let big = vec![b'x'; 5000];
    let auth = format!("Bearer {TOKEN}");
    assert_eq!(
        request(
            m.addr,
            "POST",
            "/api/v1/scan",
            &[("Authorization", &auth)],
            &big
        )
        .unwrap()
        .0,
        413
    );
    // hyper answers these itself; the answer still carries a JSON error body, and the api
    // reads what is left of the request before closing, so the client sees it (no reset).
    let huge_header = "h".repeat(64 * 1024);
    let (code, body) = request(m.addr, "GET", "/health", &[("X-Big", &huge_header)], b"").unwrap();
    assert_eq!(code, 431, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "header_too_large", "{body}");
    let (code, body) = raw_answer(m.addr, b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n");
    assert_eq!(code, 400, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "bad_request", "{body}");
    assert_eq!(
        get(m.addr, "/health").unwrap().0,
        200,
        "still serving after abuse"
    );
}

/// Sends `head` as raw bytes and returns the status code (0: none) and body of the answer.
fn raw_answer(addr: std::net::SocketAddr, head: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(head).unwrap();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    (code, body)
}

fn raw_status(addr: std::net::SocketAddr, head: &[u8]) -> u16 {
    raw_answer(addr, head).0
}

#[test]
fn invalid_utf8_in_paths_and_queries_is_refused_and_nothing_breaks() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let close = "Host: x\r\nConnection: close\r\n\r\n";
    // Raw bytes that are not UTF-8 in the path: refused by the parser (400) or not found.
    for path in [
        &b"/api/v1/\xff\xfe"[..],
        b"/\xc3\x28",
        b"/api/v1/verify\xed\xa0\x80",
    ] {
        let mut head = b"GET ".to_vec();
        head.extend_from_slice(path);
        head.extend_from_slice(format!(" HTTP/1.1\r\n{close}").as_bytes());
        let code = raw_status(m.addr, &head);
        assert!(code == 400 || code == 404, "{path:?}: {code}");
    }
    // Percent-encoded invalid UTF-8: an unknown path, a nonce that is not hex.
    let q = |target: &str| {
        raw_status(
            m.addr,
            format!("GET {target} HTTP/1.1\r\n{close}").as_bytes(),
        )
    };
    assert_eq!(q("/api/v1/%ff%fe"), 404);
    assert_eq!(
        q("/api/v1/attestation?nonce=%ff%fe%fd%fc%fb%fa%f9%f8%f7%f6%f5%f4%f3%f2%f1%f0"),
        400
    );
    // A mutation with a token header that is not UTF-8 is refused like a wrong token.
    let mut head = b"POST /api/v1/rebaseline HTTP/1.1\r\nAuthorization: Bearer \xff\xfe\r\nContent-Length: 0\r\n".to_vec();
    head.extend_from_slice(close.as_bytes());
    assert_eq!(raw_status(m.addr, &head), 403);
    assert_eq!(get(m.addr, "/health").unwrap().0, 200);
    assert_eq!(m.verify_code(), 200);
    assert_eq!(a.count_events("rebaseline"), 0);
}

#[test]
fn reload_with_a_broken_policy_keeps_the_old_one() {
    let a = Appliance::new();
    let m = Running::start(&a);
    a.write(
        "etc/monitor.yaml",
        &a.policy_text("degradation_threshold_typo: 1\n"),
    );
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("degradation_threshold_typo"), "{body}");
    assert_eq!(a.count_events("reload_refused"), 1);
    assert_eq!(m.status()["degradation_threshold"], 3);
    assert_eq!(m.scan()["state"], "trusted");

    let text = a
        .policy_text("")
        .replace("degradation_threshold: 3", "degradation_threshold: 1");
    a.write("etc/monitor.yaml", &text);
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(m.status()["degradation_threshold"], 1);
    tamper(&a, BINARIES[0]);
    assert_eq!(m.scan()["state"], "recovery_required");
}

#[test]
fn tampered_or_unsigned_stored_baseline_starts_in_recovery_required() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    let stored = a.path("state/baseline.json");
    let text = std::fs::read_to_string(&stored).unwrap();
    // Re-bless a tampered binary by editing its hash in the stored manifest.
    tamper(&a, BINARIES[0]);
    let mut manifest = Manifest::parse(text.as_bytes()).unwrap();
    let mut entries = manifest.entries.to_vec();
    entries[0].hash = protocol::hexfmt::Sha256Digest([0; 32]);
    manifest.entries = entries.into();
    std::fs::write(&stored, manifest.to_json()).unwrap();
    let m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert_eq!(m.verify_code(), 503);
    assert_eq!(a.count_events("baseline_rejected"), 1);
    assert_eq!(get(m.addr, "/api/v1/baseline").unwrap().0, 404);
    // Authorised rebaseline is the way out.
    restore_binary(&a, BINARIES[0]);
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    assert_eq!(m.status()["state"], "trusted");
    drop(m);

    // An unsigned manifest is never accepted while a key exists.
    let mut manifest = Manifest::parse(std::fs::read(&stored).unwrap().as_slice()).unwrap();
    manifest.hmac = "unsigned".into();
    std::fs::write(&stored, manifest.to_json()).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "recovery_required");
    assert!(m.status()["baseline_problem"]
        .as_str()
        .unwrap()
        .contains("unsigned"));
}

#[test]
fn without_a_key_everything_is_marked_unsigned_and_a_later_key_rejects_it() {
    let a = Appliance::new();
    std::fs::remove_file(a.path("secret/key")).unwrap();
    let mut m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["signing"], "unsigned");
    assert_eq!(s["baseline"]["signed"], false);
    assert_eq!(s["last_report"]["hmac"], "unsigned");
    assert_eq!(a.count_events("hmac_key_absent"), 1);
    assert_eq!(a.count_events("baseline_unsigned"), 1);
    m.stop_cleanly();
    std::fs::write(a.path("secret/key"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        a.path("secret/key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "recovery_required");
}

#[test]
fn unusable_key_or_policy_exits_78_naming_the_problem() {
    let short_key = Appliance::new();
    std::fs::write(short_key.path("secret/key"), [1u8; 8]).unwrap();
    let zero_threshold = Appliance::new();
    zero_threshold.write(
        "etc/monitor.yaml",
        &zero_threshold
            .policy_text("")
            .replace("degradation_threshold: 3", "degradation_threshold: 0"),
    );
    // A key or token that others may read is refused, as ssh refuses such a key.
    let exposed_key = Appliance::new();
    let exposed_token = Appliance::new();
    for (a, secret) in [
        (&exposed_key, "secret/key"),
        (&exposed_token, "secret/token"),
    ] {
        std::fs::set_permissions(
            a.path(secret),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    for (what, a) in [
        ("key", &short_key),
        ("degradation_threshold", &zero_threshold),
        ("chmod 600", &exposed_key),
        ("service token", &exposed_token),
    ] {
        let out = std::process::Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        assert!(stderr.contains(what), "{what}: {stderr}");
    }
    let a = Appliance::new();
    std::fs::remove_file(a.path("etc/monitor.yaml")).unwrap();
    let out = std::process::Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "missing policy is an error, not defaults"
    );
}

#[test]
fn hasher_killed_means_503_within_a_second_then_exit_nonzero() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    let pid = m.hasher_pid();
    // SAFETY: kill(2) on the hasher child of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || m.verify_code() != 200),
        "/verify still 200 a second after the hasher died"
    );
    let elapsed = start.elapsed();
    let status = m
        .wait_exit(Duration::from_secs(10))
        .expect("api exits so the pair is restarted");
    assert_eq!(status.code(), Some(1), "{status} after {elapsed:?}");
    assert_eq!(a.count_events("hasher_lost"), 1);
}

#[test]
fn sigterm_stops_cleanly_and_records_it() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    let events = a.audit_events();
    assert_eq!(events.last().unwrap()["event"], "stop");
    assert_eq!(
        a.count_events("hasher_lost"),
        0,
        "an orderly stop is not a finding"
    );
    // A first start is an initialization, not a "rebaseline".
    let first = events.iter().find(|e| e["event"] == "transition").unwrap();
    assert_eq!(first["reason"], "initialized", "{first}");
}

#[test]
fn missing_token_keeps_mutations_closed() {
    let a = Appliance::new();
    std::fs::remove_file(a.path("secret/token")).unwrap();
    let m = Running::start(&a);
    let (code, body) = post(m.addr, "/api/v1/scan", Some(TOKEN)).unwrap();
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("token_unavailable"));
    assert_eq!(get(m.addr, "/api/v1/verify").unwrap().0, 200);
}

#[test]
fn require_token_for_reads_closes_the_gets() {
    let a = Appliance::with_options("scan_interval: 1h\nrequire_token_for_reads: true\n");
    let handed = Handed::new();
    let addr = handed.addr;
    let mut inner = std::process::Command::new(monitor_bin());
    inner.args(a.args(addr));
    let mut child = handed.command(&inner).spawn().unwrap();
    // Liveness stays public (the boot checks probe it without a token) and tells nothing more.
    assert!(wait_until(Duration::from_secs(10), || get(addr, "/health")
        .map(|r| r.0 == 200)
        .unwrap_or(false)));
    let (_, health) = get(addr, "/health").unwrap();
    assert!(!health.contains("state"), "{health}");
    for path in [
        "/api/v1/verify",
        "/api/v1/status",
        "/api/v1/baseline",
        "/metrics",
    ] {
        assert_eq!(
            get(addr, path).unwrap().0,
            401,
            "{path} is closed without the token"
        );
    }
    let auth = format!("Bearer {TOKEN}");
    assert!(wait_until(Duration::from_secs(10), || {
        request(
            addr,
            "GET",
            "/api/v1/verify",
            &[("Authorization", &auth)],
            b"",
        )
        .map(|r| r.0 == 200)
        .unwrap_or(false)
    }));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn scheduled_scans_catch_tampering_without_being_asked() {
    let a = Appliance::with_options("scan_interval: 1s\n");
    let m = Running::start(&a);
    tamper(&a, "trust/cosign.pub");
    assert!(wait_until(Duration::from_secs(5), || m.verify_code() == 503));
    // 503 comes at once with the change notice; the finding with the scan that reads it.
    assert!(wait_until(Duration::from_secs(5), || m.status()
        ["active_violations"][0]["category"]
        == "trust_material"));
}

#[test]
fn readme_python_check_verifies_the_stored_baseline() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let block = readme
        .split("<!-- python-hmac-check -->\n```python\n")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    a.write("check.py", block);
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

#[test]
fn inotify_catches_changes_long_before_the_interval() {
    // scan_interval is 1h: only the realtime path can explain a verdict within seconds.
    let a = Appliance::new();
    let m = Running::start(&a);
    let scans = m.status()["scan_count"].as_u64().unwrap();
    // In-place one-byte write, size unchanged: the digest has to catch it.
    let model = a.path("models/sub/b.gguf");
    let mut bytes = std::fs::read(&model).unwrap();
    bytes[0] ^= 0x20;
    std::fs::write(&model, &bytes).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || m.verify_code() == 503),
        "no realtime detection"
    );
    assert!(wait_until(Duration::from_secs(5), || m.status()
        ["violation_count"]
        == 1));
    let s = m.status();
    assert!(s["scan_count"].as_u64().unwrap() > scans);
    assert_eq!(
        s["active_violations"][0]["actual_hash"]
            .as_str()
            .unwrap()
            .len(),
        64,
        "{s}"
    );
    bytes[0] ^= 0x20;
    std::fs::write(&model, &bytes).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || m.verify_code() == 200),
        "restoring is seen too"
    );
    // A file in a directory created after start is seen (new dirs get watches).
    std::fs::create_dir_all(a.path("models/new-dir")).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.write("models/new-dir/dropped.gguf", "x");
    assert!(wait_until(Duration::from_secs(5), || m.verify_code() == 503));
    assert!(wait_until(Duration::from_secs(5), || m.status()
        ["active_violations"][0]["actual_hash"]
        == "unregistered"));
}

#[test]
fn rebaseline_cannot_bless_what_the_release_baseline_disagrees_with() {
    let a = Appliance::new();
    let bin = a.path(BINARIES[0]);
    let release = |content: &[u8]| {
        let digest = protocol::sign::sha256_hex(content);
        format!(
            "{{\"version\":1,\"source_commit\":\"0123456789abcdef0123456789abcdef01234567\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{digest}\",\"size\":{}}}]}}",
            bin.display(),
            content.len()
        )
    };
    a.write(
        "release/release-baseline.json",
        &release(&std::fs::read(&bin).unwrap()),
    );
    a.write_policy(&format!(
        "scan_interval: 1h\nrelease_baseline: {}\n",
        a.path("release/release-baseline.json").display()
    ));
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "trusted");
    a.write(BINARIES[0], "implant");
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains(&path_str(&bin)) && body.contains("0123456789abcdef0123456789abcdef01234567"),
        "{body}"
    );
    assert_eq!(a.count_events("rebaseline_refused"), 1);
    assert_eq!(m.scan()["state"], "degraded", "still flagged, not blessed");
    // An OS update ships a release baseline that matches: accepted without a ceremony.
    a.write("release/release-baseline.json", &release(b"implant"));
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(m.status()["state"], "trusted");
}

#[test]
fn a_relative_policy_path_works() {
    let a = Appliance::new();
    let handed = Handed::new();
    let addr = handed.addr;
    let mut args = a.args(addr);
    let i = args.iter().position(|x| x == "--policy").unwrap();
    args[i + 1] = "etc/monitor.yaml".into();
    let mut inner = std::process::Command::new(monitor_bin());
    inner.args(&args).current_dir(a.dir.path());
    let mut child = handed.command(&inner).spawn().unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        get(addr, "/api/v1/verify")
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok,
        "a policy given relative to the working dir still lets the hasher read its tree"
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
    std::fs::copy(&log, aside("1")).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
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

fn violations_with(status: &serde_json::Value, marker: &str) -> Vec<String> {
    status["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["actual_hash"] == marker)
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn a_model_subdir_swapped_for_a_symlink_to_the_secrets_leaks_nothing() {
    let a = Appliance::new();
    let m = Running::start(&a);
    // The key is longer than 64 bytes: HMAC keys with its SHA-256, so that digest is the key.
    let long_key = [0x42u8; 65];
    let secret_digests = [
        protocol::sign::sha256_hex(&long_key),
        protocol::sign::sha256_hex(&[0x42u8; 32]),
        protocol::sign::sha256_hex(TOKEN.as_bytes()),
    ];
    std::fs::rename(a.path("models/sub"), a.path("sub.moved")).unwrap();
    std::os::unix::fs::symlink(a.path("secret"), a.path("models/sub")).unwrap();
    m.scan();
    let status = m.status();
    assert_eq!(
        violations_with(&status, "symlink"),
        vec![a.path("models/sub").display().to_string()],
        "{status}"
    );
    let text = format!(
        "{status}{}",
        std::fs::read_to_string(a.audit_log()).unwrap()
    );
    assert!(
        !text.contains("secret/key"),
        "nothing beneath the symlink was listed"
    );
    for d in &secret_digests {
        assert!(
            !text.contains(d.as_str()),
            "a secret's digest reached the api"
        );
    }
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_policy_whose_read_set_would_cover_a_secret_is_refused() {
    let a = Appliance::new();
    let r = a.dir.path().display().to_string();
    let text = a.policy_text("").replace(
        &format!("  - {r}/models\n"),
        &format!("  - {r}/models\n  - {r}/secret\n"),
    );
    a.write("etc/monitor.yaml", &text);
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{r}/secret")) && err.contains("read a secret"),
        "names the directory and the secret: {err}"
    );
}

#[test]
fn names_and_bounds_are_findings_never_a_crash_nor_a_merge() {
    use std::os::unix::ffi::OsStrExt;
    let a = Appliance::new();
    let m = Running::start(&a);
    // Two names that are not UTF-8 beside a baselined U+FFFD lookalike.
    a.write("models/ok\u{FFFD}", "x");
    m.scan();
    rebaseline(m.addr, &a.key()).unwrap();
    for b in [b"ok\xff", b"ok\xfe"] {
        std::fs::write(a.path("models").join(std::ffi::OsStr::from_bytes(b)), "y").unwrap();
    }
    // A path longer than PATH_MAX: 18 nested 250-byte names.
    // (made relative to each parent's fd: no path syscall takes more than PATH_MAX bytes)
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    std::fs::create_dir(a.path("models/long")).unwrap();
    let mut dir = open(&a.path("models/long"), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    for i in 0..18 {
        let name = format!("{i:02}{}", "n".repeat(248));
        mkdirat(&dir, name.as_str(), Mode::from_bits_truncate(0o755)).unwrap();
        dir = openat(&dir, name.as_str(), OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    }
    m.scan();
    let status = m.status();
    let invalid = violations_with(&status, "invalid_name");
    assert_eq!(invalid.len(), 2, "never merged: {invalid:?}");
    assert!(
        invalid.iter().all(|p| p.starts_with("non-utf8:")),
        "{invalid:?}"
    );
    assert!(
        !violations_with(&status, "path_too_long").is_empty(),
        "{status}"
    );
    assert_ne!(status["state"], "trusted");
    assert_eq!(m.verify_code(), 503);
    // The api took the report: still serving, no hasher loss.
    assert_eq!(a.count_events("hasher_lost"), 0);
    assert_eq!(get(m.addr, "/health").unwrap().0, 200);
}

#[test]
fn a_model_dir_larger_than_the_walk_limit_is_not_trusted() {
    // The policy's max_watched_files bounds each model dir's walk (the hasher's memory).
    let a = Appliance::with_options("scan_interval: 1h\nmax_watched_files: 2000\n");
    let m = Running::start(&a);
    let many = a.path("models/many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..2000 {
        std::fs::File::create(many.join(i.to_string())).unwrap();
    }
    m.scan();
    let status = m.status();
    assert_eq!(
        violations_with(&status, "limit_exceeded"),
        vec![a.path("models").display().to_string()],
        "{}",
        status["violation_count"]
    );
    assert_ne!(status["state"], "trusted");
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_body_that_trickles_is_answered_408_and_the_connection_closed() {
    use std::io::{Read, Write};
    let a = Appliance::new();
    let m = Running::start(&a);
    let mut s = std::net::TcpStream::connect(m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let head = format!(
        "POST /api/v1/scan HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 100\r\n\r\n0123456789"
    );
    s.write_all(head.as_bytes()).unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer); // ends when the api closes the connection
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("\"error\":\"request_timeout\""), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "closed, not held open"
    );
    assert_eq!(m.verify_code(), 200, "the api still serves");
}

#[test]
fn a_second_monitor_on_the_same_log_is_refused_naming_the_first() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", m.child.id())),
        "names the running one: {err}"
    );
    assert_eq!(m.verify_code(), 200, "the first one is untouched");
}

#[test]
fn a_file_written_without_pause_is_coalesced_and_still_caught() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let before = m.status()["scan_count"].as_u64().unwrap();
    let started = std::time::Instant::now();
    let mut i = 0u64;
    while started.elapsed() < Duration::from_secs(2) {
        a.write("models/a.gguf", &format!("being written {i}"));
        i += 1;
        std::thread::sleep(Duration::from_millis(2));
    }
    assert!(
        wait_until(Duration::from_secs(1), || m.verify_code() == 503),
        "the change is caught within a second of the last write"
    );
    let scans = m.status()["scan_count"].as_u64().unwrap() - before;
    assert!(
        scans <= 80,
        "{i} writes in 2 s made {scans} scans: notices are coalesced (at most one per 50 ms)"
    );
    assert!(
        scans >= 2,
        "and the writes were seen while they went on ({scans} scans)"
    );
}

#[test]
fn any_write_to_a_watched_file_is_503_at_once_whatever_its_size() {
    use std::os::unix::fs::FileExt;
    // A 64 MiB model under a 16 MiB/s read budget: a full read takes about 4 s.
    let a = Appliance::with_options("scan_interval: 1h\nhash_rate_limit: 16777216\n");
    std::fs::write(a.path("models/big.gguf"), vec![0x11u8; 64 << 20]).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    let poke = |byte: u8| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("models/big.gguf"))
            .unwrap()
            .write_all_at(&[byte], 32 << 20)
            .unwrap()
    };
    poke(0x22);
    let t = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || m.verify_code() == 503),
        "an in-place write is 503 long before the 4 s read ends"
    );
    let seen = t.elapsed();
    let body = get(m.addr, "/api/v1/verify").unwrap().1;
    assert!(
        body.contains("being verified") || body.contains("degraded"),
        "{body}"
    );
    // Once read, the digest decides: changed, so it stays untrusted.
    assert!(wait_until(Duration::from_secs(20), || m.status()["state"]
        == "degraded"));
    assert_eq!(m.verify_code(), 503);
    // Restored: 503 until the read settles it, then trusted again.
    poke(0x11);
    assert!(
        wait_until(Duration::from_secs(20), || m.verify_code() == 200),
        "after {seen:?}"
    );
}

#[test]
fn an_unusable_store_or_audit_dir_is_a_configuration_error_naming_the_path() {
    // (Run as root, a permission bit cannot stop us: a file where the directory must be can.)
    for (what, blocker) in [("state dir", "state"), ("audit log", "logs")] {
        let a = Appliance::new();
        a.write(blocker, "not a directory");
        let out = Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        assert!(
            err.contains(&a.path(blocker).display().to_string()),
            "{what}: names the path: {err}"
        );
        assert_eq!(
            a.count_events("hasher_lost"),
            0,
            "{what}: not blamed on the hasher"
        );
    }
}

#[test]
fn a_head_that_never_ends_gets_408_with_a_json_body() {
    use std::io::{Read, Write};
    let a = Appliance::new();
    let m = Running::start(&a);
    let mut s = std::net::TcpStream::connect(m.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Part of a head, then nothing: hyper's header timeout (10 s) ends it.
    s.write_all(b"GET /api/v1/verify HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408"), "{text:?}");
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(v["error"], "request_timeout");
    assert!(started.elapsed() < Duration::from_secs(20));
    // An idle keep-alive connection is closed without a word.
    let mut idle = std::net::TcpStream::connect(m.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut nothing = Vec::new();
    let _ = idle.read_to_end(&mut nothing);
    assert!(
        nothing.is_empty(),
        "{:?}",
        String::from_utf8_lossy(&nothing)
    );
    assert_eq!(m.verify_code(), 200);
}

#[test]
fn a_large_model_is_reverified_on_every_thread_inside_the_sandbox() {
    use std::os::unix::fs::FileExt;
    // Above the chunked size (128 MiB): its re-verification reads 64 MiB chunks on two threads,
    // with pread, under the hasher's seccomp filter.
    let a = Appliance::with_options("scan_interval: 1h\nhash_threads: 2\n");
    let size = (129u64 << 20) as usize;
    let data: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
    std::fs::write(a.path("models/huge.gguf"), &data).unwrap();
    let m = Running::start(&a);
    let hasher = m.hasher_pid();
    assert_eq!(m.verify_code(), 200);
    let poke = |at: u64, byte: u8| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("models/huge.gguf"))
            .unwrap()
            .write_all_at(&[byte], at)
            .unwrap()
    };
    // In the second chunk: the chunks find it; the report gives the new whole-file digest.
    let at = (64u64 << 20) + 99;
    poke(at, data[at as usize] ^ 1);
    let s = m.scan();
    assert_eq!(s["state"], "degraded", "{s}");
    let mut changed = data.clone();
    changed[at as usize] ^= 1;
    let digest = protocol::sign::sha256_hex(&changed);
    assert_eq!(
        s["active_violations"][0]["actual_hash"],
        digest.as_str(),
        "{s}"
    );
    // Restored: read whole (its chunks are the changed content's), back to trusted.
    poke(at, data[at as usize]);
    assert_eq!(m.scan()["state"], "trusted");
    // Written again with the same bytes: the event makes it re-verified, by its chunks.
    poke(at, data[at as usize]);
    assert_eq!(m.scan()["state"], "trusted");
    assert_eq!(m.verify_code(), 200);
    assert_eq!(
        m.hasher_pid(),
        hasher,
        "the same hasher, its threads not killed"
    );
}

#[test]
fn a_write_through_mmap_that_no_event_announces_is_found_by_the_sweep() {
    // A shared mapping written in place: same size, no inotify event; the kernel still sets
    // a new ctime, which the sweep (spread over the 2 s interval) sees and reads.
    let a = Appliance::with_options("scan_interval: 2s\n");
    let m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("models/sub/b.gguf"))
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of `len` bytes of a file this test opened read-write;
    // it is written within bounds, synced and unmapped before the file is closed.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *(p as *mut u8) ^= 0x20;
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, len), 0);
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = m.status();
            s["violation_count"] == 1
                && s["active_violations"][0]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("models/sub/b.gguf"))
        }),
        "found within a few intervals: {}",
        m.status()
    );
    assert_eq!(m.verify_code(), 503);
}

/// The hasher's metric `name` as the api serves it.
fn metric(m: &Running, name: &str) -> u64 {
    let (_, body) = get(m.addr, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("integrity_monitor_{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}")) as u64
}

#[test]
fn a_restart_within_the_boot_reads_only_what_changed_while_it_was_down() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    // Making the baseline read everything; its first sweep, nothing again.
    assert_eq!(metric(&m, "bytes_hashed_total"), 0);
    let text = std::fs::read_to_string(a.path("state/baseline.json")).unwrap();
    let manifest = Manifest::parse(text.as_bytes()).unwrap();
    let everything: u64 = manifest.entries.iter().map(|e| e.size).sum();
    m.scan(); // a full sweep keeps what it verified, signed, for a restart
    m.stop_cleanly();
    assert!(a.path("state/versions.bin").exists());
    // Changed while the monitor was down, same size: only a read can tell.
    a.write("models/a.gguf", "model b");
    let mut m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "degraded", "{s}");
    let paths: Vec<&str> = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec![a.path("models/a.gguf").display().to_string()],
        "{s}"
    );
    assert_eq!(
        metric(&m, "bytes_hashed_total"),
        "model b".len() as u64,
        "only the file whose version changed was read"
    );
    m.stop_cleanly();
    // A forged or damaged record is refused: every file is read again.
    let path = a.path("state/versions.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "degraded");
    assert_eq!(metric(&m, "bytes_hashed_total"), everything);
}

/// An appliance with `options` and a sparse `len`-byte model (no disk; a read of it costs
/// only hashing), its monitor started and trusted.
fn with_sparse_model(options: &str, len: u64) -> (Appliance, std::path::PathBuf, Running) {
    let a = Appliance::with_options(options);
    let model = a.path("models/big.gguf");
    std::fs::File::create(&model).unwrap().set_len(len).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    (a, model, m)
}

/// Bytes read by a restart after a `len`-byte (sparse) model was changed in mode, read again
/// and verified, and the monitor then stopped by `stop`: nothing changed while it was down.
fn read_on_restart_after_a_verified_change(len: u64, stop: impl FnOnce(&mut Running)) -> u64 {
    use std::os::unix::fs::PermissionsExt;
    let (a, model, mut m) = with_sparse_model("scan_interval: 1h\n", len);
    assert!(
        a.path("state/versions.bin").exists(),
        "kept at the first sweep"
    );
    // A new version (its ctime moves), read again and verified within the minutes before
    // the next periodic save.
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || metric(&m, "bytes_hashed_total")
            >= len),
        "the changed file was read again"
    );
    assert_eq!(m.verify_code(), 200);
    stop(&mut m);
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "trusted");
    metric(&m, "bytes_hashed_total")
}

#[test]
fn a_clean_stop_keeps_what_was_verified_since_the_last_save() {
    assert_eq!(
        read_on_restart_after_a_verified_change(4096, Running::stop_cleanly),
        0,
        "the version verified before the stop was kept when the api closed the channel"
    );
}

#[test]
fn a_large_read_is_kept_for_a_restart_even_if_the_hasher_is_killed() {
    // 2 GiB: reading it again on a restart would cost more than keeping the record.
    let killed = |m: &mut Running| {
        let pid = m.hasher_pid();
        // SAFETY: kill(2) on the hasher child of our own child: no clean stop, no save.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        m.wait_exit(Duration::from_secs(10))
            .expect("the api exits when its hasher dies");
    };
    assert_eq!(
        read_on_restart_after_a_verified_change(2 << 30, killed),
        0,
        "the 2 GiB verified after the last periodic save were kept once read"
    );
}

#[test]
fn a_write_while_a_large_file_is_read_is_announced_before_the_read_ends() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    use std::time::Instant;
    // 4 GiB, sparse (no disk, seconds to hash), one thread: a read of it takes seconds.
    let (_a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", 4 << 30);
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let before = m.status();
    let (scans, notices) = (
        count(&before, "scan_count"),
        count(&before, "change_notices"),
    );
    // Its mode set again: an event, the content unchanged; the hasher reads it all again.
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || count(
        &m.status(),
        "change_notices"
    ) > notices));
    std::thread::sleep(Duration::from_millis(300));
    let during = m.status();
    assert_eq!(
        count(&during, "scan_count"),
        scans,
        "the read of 4 GiB ended within 300 ms: this machine is too fast for the test to show anything"
    );
    // Behind the read (offset 0 is hashed already). The read may see at its end that the file
    // changed under it; the notice must not wait for that.
    let file = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    file.write_all_at(&[1], 0).unwrap();
    let announced = Instant::now();
    assert!(wait_until(Duration::from_secs(60), || {
        let s = m.status();
        count(&s, "change_notices") > count(&during, "change_notices")
            || count(&s, "scan_count") > scans
    }));
    let s = m.status();
    assert!(
        count(&s, "change_notices") > count(&during, "change_notices")
            && count(&s, "scan_count") == scans,
        "the write must be announced while the read runs, not after it: {s}"
    );
    assert_eq!(m.verify_code(), 503, "{s}");
    eprintln!("write announced in {:?}", announced.elapsed());
    // The read that was under way is not taken as the last word: the edit is found.
    assert!(wait_until(Duration::from_secs(60), || m.status()["state"]
        == "degraded"));
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_change_announced_while_a_scan_runs_is_not_taken_as_covered_by_it() {
    use std::os::unix::fs::PermissionsExt;
    // 4 GiB, sparse, one thread: the scan a change of its mode asks for runs for seconds.
    let (a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", 4 << 30);
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let scans = count(&m.status(), "scan_count");
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || m.verify_code() == 503));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&m.status(), "scan_count"),
        scans,
        "the read of 4 GiB ended within 300 ms: this machine is too fast for the test"
    );
    // Another file changed while that scan reads the large one: the scan does not look at it,
    // so its report must not make the appliance trusted.
    a.write("models/a.gguf", "model b");
    let mut codes = Vec::new();
    let found = wait_until(Duration::from_secs(60), || {
        codes.push(m.verify_code());
        m.status()["state"] == "degraded"
    });
    let s = m.status();
    assert!(found, "the change was never checked: {s}");
    assert!(
        count(&s, "scan_count") > scans + 1,
        "a scan after the one under way found it: {s}"
    );
    assert!(
        !codes.contains(&200),
        "/verify answered 200 with the change unchecked"
    );
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_write_during_a_large_read_ends_that_read_and_one_more_read_settles_it() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    // 4 GiB, sparse (no disk, seconds to hash), one thread: a read of it takes seconds.
    let len: u64 = 4 << 30;
    let (_a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", len);
    let hasher = m.hasher_pid();
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let scans = count(&m.status(), "scan_count");
    // Its mode set again: an event, the content unchanged; the hasher reads it all again.
    let start = bytes_read(hasher);
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || bytes_read(hasher)
            > start + (256 << 20)),
        "the hasher read the file again"
    );
    assert_eq!(
        count(&m.status(), "scan_count"),
        scans,
        "the read of 4 GiB ended before the write: this machine is too fast for the test"
    );
    // The byte at offset 0 written again, the same: the content is what was baselined, but the
    // read under way began before the write and cannot settle it.
    let from = bytes_read(hasher);
    let file = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    file.write_all_at(&[0], 0).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || m.verify_code() == 200),
        "never trusted again: {}",
        m.status()
    );
    assert_eq!(m.status()["state"], "trusted");
    // The read under way stops at the write (within a look, 200 ms); one whole read settles it.
    // Read to its end, it would have been most of 4 GiB more, then the whole file once more.
    let read_since = bytes_read(hasher) - from;
    assert!(
        read_since < len + len / 2,
        "{read_since} bytes read between the write and trusted, for a {len}-byte file"
    );
}

/// Bytes the process `pid` has read so far (`rchar` of `/proc/PID/io`).
fn bytes_read(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_write_while_the_backstop_reads_a_large_file_is_announced_at_once() {
    use std::time::Instant;
    // The backstop re-reads the 4 GiB file (sparse: no disk) every second or two, in the
    // spread sweep's slices between requests, one thread: each read takes seconds.
    let (a, _huge, m) = with_sparse_model(
        "scan_interval: 3s\nfull_rehash_interval: 2s\nhash_threads: 1\n",
        4 << 30,
    );
    let hasher = m.hasher_pid();
    // Wait until a read of it is under way.
    let start = bytes_read(hasher);
    assert!(
        wait_until(Duration::from_secs(30), || bytes_read(hasher)
            > start + (256 << 20)),
        "the backstop read the large file again"
    );
    let reading_from = bytes_read(hasher);
    // A small file changed while the hasher is busy reading the large one.
    a.write("models/a.gguf", "model b");
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || m.verify_code() == 503),
        "never 503"
    );
    let took = t.elapsed();
    let read_since = bytes_read(hasher) - reading_from;
    assert!(
        took < Duration::from_millis(500) && read_since < (3 << 30),
        "503 came {took:?} after the write, once the hasher had read {read_since} more bytes \
         (the read of the large file ended first)"
    );
}
