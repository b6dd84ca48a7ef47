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
    assert!(String::from_utf8_lossy(&again.stderr).contains("already stored"));

    let verify = |key: &str| {
        Command::new(monitor_bin())
            .args(["verify-baseline", "--key"])
            .arg(a.path(key))
            .arg(&stored)
            .output()
            .unwrap()
    };
    let ok = verify("key");
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
            .env("INTEGRITY_MONITOR_TOKEN_FILE", a.path("token"))
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
