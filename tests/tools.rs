//! Operator tools and appliance glue: check-config, verify-baseline, initialize-baseline,
//! /metrics, the greenboot and first-boot scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

use common::*;

fn repo(rel: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel)
}

#[test]
fn check_config_accepts_every_shipped_policy_and_names_the_fault() {
    let mut checked = 0;
    for entry in std::fs::read_dir(repo("contrib")).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "yaml") {
            let out = Command::new(monitor_bin())
                .args(["check-config", "--policy"])
                .arg(&p)
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(0),
                "{}: {}",
                p.display(),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert!(checked >= 1);
    let a = Appliance::new();
    a.write(
        "bad.yaml",
        "service_binaries: [/a]\n\ndegradation_threshold: -2\n",
    );
    let out = Command::new(monitor_bin())
        .args(["check-config", "--policy"])
        .arg(a.path("bad.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78));
    assert!(
        stderr.contains("degradation_threshold") && stderr.contains("line 3"),
        "{stderr}"
    );
}

#[test]
fn initialize_then_verify_baseline_offline() {
    let a = Appliance::new();
    let mut args = a.args(free_addr());
    args.push("initialize-baseline".into());
    let out = Command::new(monitor_bin()).args(&args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stored = a.path("state/baseline.json");
    assert!(stored.exists());
    assert!(a.audit_events().iter().any(|e| e["event"] == "initialized"));
    let again = Command::new(monitor_bin()).args(&args).output().unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("already holds a baseline"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        a.count_events("initialized"),
        1,
        "a second initialization makes no new baseline"
    );

    let verify = |key: &str| {
        Command::new(monitor_bin())
            .args(["verify-baseline", "--key"])
            .arg(a.path(key))
            .arg(&stored)
            .output()
            .unwrap()
    };
    let ok = verify("secret/key");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("OK"));
    std::fs::write(a.path("other"), [9u8; 32]).unwrap();
    let bad = verify("other");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("HMAC"));
}

#[test]
fn metrics_are_prometheus_text() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let (code, body) = get(m.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        body.contains("# TYPE integrity_monitor_state gauge"),
        "{body}"
    );
    assert!(
        body.contains("integrity_monitor_state{state=\"trusted\"} 1"),
        "{body}"
    );
    assert!(body.contains("integrity_monitor_hasher_up 1"));
    assert!(body.contains("integrity_monitor_scans_total 1"));
    a.write(BINARIES[0], "x");
    m.scan();
    let (_, body) = get(m.addr, "/metrics").unwrap();
    assert!(
        body.contains("integrity_monitor_state{state=\"degraded\"} 1"),
        "{body}"
    );
    assert!(body.contains("integrity_monitor_violations 1"));
    assert!(body.contains("integrity_monitor_trusted 0"));
}

#[test]
fn greenboot_and_first_boot_scripts_pass_only_when_trusted() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let run = |script: &str| {
        Command::new("bash")
            .arg(repo(script))
            .env("INTEGRITY_MONITOR_URL", format!("http://{}", m.addr))
            .env("INTEGRITY_MONITOR_TOKEN_FILE", a.path("secret/token"))
            .env("INTEGRITY_MONITOR_KEY_FILE", a.path("secret/key"))
            .env("INTEGRITY_MONITOR_BIN", monitor_bin())
            .output()
            .unwrap()
    };
    let ok = run("contrib/greenboot/01-integrity-monitor.sh");
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let fb = run("contrib/first-boot/integrity-monitor.sh");
    assert_eq!(
        fb.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&fb.stdout)
    );
    assert!(String::from_utf8_lossy(&fb.stdout).contains("PASS"));
    // The script's own forced scan finds the tampering: no earlier scan needed.
    a.write(BINARIES[1], "tampered");
    let bad = run("contrib/greenboot/01-integrity-monitor.sh");
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("not trusted"));
    assert_eq!(
        run("contrib/first-boot/integrity-monitor.sh").status.code(),
        Some(1)
    );
}

/// A stand-in incident recorder on loopback: records each request, answers 200.
type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, serde_json::Value)>>>;

fn recorder() -> (u16, Seen) {
    use std::io::{BufRead, BufReader, Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming().flatten() {
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let (mut auth, mut len) = (String::new(), 0usize);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if lower.starts_with("authorization:") {
                    auth = line.trim_end().to_owned();
                }
            }
            let mut body = vec![0u8; len];
            let _ = r.read_exact(&mut body);
            s.lock()
                .unwrap()
                .push((auth, serde_json::from_slice(&body).unwrap_or_default()));
            let _ = (&conn)
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        }
    });
    (port, seen)
}

#[test]
fn incidents_are_posted_once_per_transition() {
    let (port, seen) = recorder();
    let a = Appliance::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents/report");
    // The recorder's token is its own: the api never holds the service token.
    a.write("secret/recorder-token", "recorder-token-0123456789\n");
    let recorder_token = a.path("secret/recorder-token").display().to_string();
    let m = Running::start_with(
        &a,
        &[
            "--incident-url",
            &url,
            "--incident-token-file",
            &recorder_token,
        ],
    );
    a.write(BINARIES[0], "t1");
    m.scan();
    assert!(wait_until(std::time::Duration::from_secs(5), || seen
        .lock()
        .unwrap()
        .len()
        == 1));
    m.scan(); // still degraded: no new incident
    a.write(BINARIES[1], "t2");
    a.write(BINARIES[2], "t3");
    assert_eq!(m.scan()["state"], "recovery_required");
    assert!(wait_until(std::time::Duration::from_secs(5), || seen
        .lock()
        .unwrap()
        .len()
        == 2));
    std::thread::sleep(std::time::Duration::from_millis(500));
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "one report per transition, not per scan");
    let (auth, first) = &seen[0];
    assert!(
        auth.eq_ignore_ascii_case("Authorization: Bearer recorder-token-0123456789"),
        "{auth}"
    );
    assert_eq!(first["source"], "integrity-monitor");
    assert_eq!(first["class"], "integrity_violation");
    assert_eq!(first["severity"], "high");
    // The recorder decodes evidence as a map of strings.
    let evidence = first["evidence"].as_object().unwrap();
    assert!(evidence.values().all(|v| v.is_string()), "{evidence:?}");
    assert_eq!(first["evidence"]["violation_count"], "1");
    assert!(first["evidence"]["scan_count"].as_str().is_some());
    assert_eq!(first["evidence"]["violation_0_category"], "service_binary");
    assert_eq!(first["evidence"]["violation_0_action"], "degrade_appliance");
    assert_eq!(seen[1].1["severity"], "critical");
    assert_eq!(seen[1].1["evidence"]["state"], "recovery_required");
    assert!(wait_until(std::time::Duration::from_secs(2), || a
        .count_events("incident_reported")
        == 2));
}

#[test]
fn an_unreachable_recorder_is_retried_then_audited_without_blocking_scans() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let a = Appliance::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents/report");
    // The recorder's token is its own: the api never holds the service token.
    a.write("secret/recorder-token", "recorder-token-0123456789\n");
    let recorder_token = a.path("secret/recorder-token").display().to_string();
    let m = Running::start_with(
        &a,
        &[
            "--incident-url",
            &url,
            "--incident-token-file",
            &recorder_token,
        ],
    );
    a.write(BINARIES[0], "t1");
    let t = std::time::Instant::now();
    assert_eq!(m.scan()["state"], "degraded");
    assert!(
        t.elapsed() < std::time::Duration::from_secs(1),
        "the scan did not wait for the recorder"
    );
    assert!(wait_until(std::time::Duration::from_secs(15), || a
        .count_events("incident_report_failed")
        == 1));
    let failed = a
        .audit_events()
        .into_iter()
        .find(|e| e["event"] == "incident_report_failed")
        .unwrap();
    assert_eq!(failed["attempts"], 4);
}

#[test]
fn incident_bodies_stay_under_64_kib() {
    let v = protocol::report::Violation {
        detected_at: "2026-01-01T00:00:00Z".into(),
        category: protocol::Category::ModelFile,
        path: format!("/{}", "m".repeat(4000)),
        expected_hash: "none".into(),
        actual_hash: "unregistered".into(),
        action: protocol::Action::QuarantineModel,
    };
    let many = vec![v; 256];
    let body = api::incident::body("degraded", "trusted", "256 violation(s)", &many, 5000, 7);
    assert!(body.len() <= api::incident::MAX_BODY, "{}", body.len());
    let parsed: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        parsed["evidence"]["violation_count"], "5000",
        "the count survives the cap"
    );
    assert_eq!(
        parsed["class"], "manifest_mismatch",
        "a model violation is the recorder's manifest_mismatch"
    );
}
