//! The shipped systemd units pass `systemd-analyze verify` and rate at most 2.0 in
//! `systemd-analyze security --offline=true`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;

const UNITS: [&str; 4] = [
    "secure-ai-integrity-monitor.socket",
    "secure-ai-integrity-monitor.service",
    "secure-ai-integrity-hasher.socket",
    "secure-ai-integrity-hasher@.service",
];

/// Copies the units into a temp dir with ExecStart pointing at the binaries just built
/// (`verify` insists the binary exists).
fn staged() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = common::monitor_bin()
        .parent()
        .unwrap()
        .display()
        .to_string();
    for u in UNITS {
        let text = std::fs::read_to_string(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../systemd/").to_owned() + u,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(u),
            text.replace("/usr/libexec/secure-ai", &bin_dir),
        )
        .unwrap();
    }
    dir
}

#[test]
fn units_verify_cleanly() {
    let dir = staged();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg("--man=no")
        .args(UNITS.iter().map(|u| dir.path().join(u)))
        .output()
        .expect("systemd-analyze is installed by .ci/run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "verify: {stderr}"
    );
}

#[test]
fn services_rate_at_most_2_0() {
    let dir = staged();
    for u in [
        "secure-ai-integrity-monitor.service",
        "secure-ai-integrity-hasher@.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=true", "--no-pager"])
            .arg(dir.path().join(u))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| l.split("Overall exposure level for ").nth(1))
            .and_then(|l| l.split(": ").nth(1))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no score for {u}: {text}"));
        assert!(score <= 2.0, "{u} rates {score}");
    }
}

/// Every credential the units load has a stand-in for a missing source, and it is the one
/// marker both binaries recognise (`protocol::token::UNPROVISIONED`), spelt once in code.
#[test]
fn every_loaded_credential_falls_back_to_the_one_marker() {
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../systemd");
    for unit in [
        "secure-ai-integrity-monitor.service",
        "secure-ai-integrity-hasher@.service",
    ] {
        let text = std::fs::read_to_string(src.join(unit)).unwrap();
        let loaded: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("LoadCredential="))
            .filter_map(|v| v.split(':').next())
            .collect();
        assert!(!loaded.is_empty(), "{unit}");
        for id in loaded {
            let set = format!("SetCredential={id}:{}", protocol::token::UNPROVISIONED);
            assert!(text.lines().any(|l| l == set), "{unit}: no `{set}`");
        }
    }
}
