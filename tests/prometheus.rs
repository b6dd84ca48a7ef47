//! The alerting rules that ship in `contrib/prometheus/`, checked and unit-tested by Debian's
//! `promtool`; the live `/metrics` checked by `promtool check metrics`; and the real
//! `prometheus` server scraping a running monitor on loopback, whose `/api/v1/alerts` shows
//! `IntegrityNotTrusted` firing after a tamper and resolved after the restore.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../contrib/prometheus")
}

fn promtool(args: &[&str], stdin: Option<&[u8]>) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(contrib())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package; tests/run.sh installs it)");
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_shipped_rules_pass_promtool_check_and_their_unit_tests() {
    let (ok, out) = promtool(&["check", "rules", "integrity-monitor.rules.yml"], None);
    assert!(ok, "{out}");
    let (ok, out) = promtool(&["test", "rules", "integrity-monitor.rules.test.yml"], None);
    assert!(ok, "{out}");
    // The appliance-side Prometheus example (scrape, rules, remote write) is a valid config.
    let (ok, out) = promtool(&["check", "config", "prometheus.yml"], None);
    assert!(ok, "{out}");
    // The unit tests can fail: a rule that never fires does not pass them.
    let dir = tempfile::tempdir().unwrap();
    let rules = std::fs::read_to_string(contrib().join("integrity-monitor.rules.yml")).unwrap();
    let broken = rules.replace(
        "expr: integrity_monitor_trusted == 0",
        "expr: integrity_monitor_trusted == 2",
    );
    assert_ne!(broken, rules);
    std::fs::write(dir.path().join("integrity-monitor.rules.yml"), broken).unwrap();
    std::fs::copy(
        contrib().join("integrity-monitor.rules.test.yml"),
        dir.path().join("t.yml"),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["test", "rules", "t.yml"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a broken rule fails its unit test");
}

#[test]
fn live_metrics_pass_promtool_check_metrics() {
    let a = Appliance::new();
    let m = Running::start(&a);
    m.scan();
    let (code, body) = get(m.addr, "/metrics").unwrap();
    assert_eq!(code, 200);
    let (ok, out) = promtool(&["check", "metrics"], Some(body.as_bytes()));
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics: {out}\n{body}"
    );
    for family in [
        "integrity_monitor_sealed_files",
        "integrity_monitor_last_scan_timestamp_seconds",
        "integrity_monitor_audit_records_dropped_total",
    ] {
        assert!(body.contains(&format!("# HELP {family} ")), "{family}");
    }
}

/// `GET /api/v1/alerts` of the Prometheus at `port`: the states of `IntegrityNotTrusted`.
fn not_trusted_alerts(port: u16) -> Vec<String> {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok((200, body)) = get(addr, "/api/v1/alerts") else {
        return vec!["unreachable".into()];
    };
    let doc: serde_json::Value = serde_json::from_str(&body).unwrap();
    doc["data"]["alerts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["labels"]["alertname"] == "IntegrityNotTrusted")
        .map(|a| a["state"].as_str().unwrap_or_default().to_owned())
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "{what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[test]
fn prometheus_scrapes_the_monitor_and_the_not_trusted_alert_fires_and_resolves() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let dir = tempfile::tempdir().unwrap();
    // The shipped rules, with the not-trusted alert's `for:` shortened from one default scan
    // interval (30 s) to 2 s so the test does not wait half a minute twice.
    let rules = std::fs::read_to_string(contrib().join("integrity-monitor.rules.yml")).unwrap();
    let quick = rules.replacen(
        "expr: integrity_monitor_trusted == 0\n        for: 30s",
        "expr: integrity_monitor_trusted == 0\n        for: 2s",
        1,
    );
    assert_ne!(quick, rules);
    std::fs::write(dir.path().join("rules.yml"), quick).unwrap();
    let config = format!(
        "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nrule_files: [rules.yml]\n\
         scrape_configs:\n  - job_name: integrity-monitor\n    static_configs: [{{targets: ['{}']}}]\n",
        m.addr
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = free_addr().port();
    let mut prometheus = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.path().join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian's package; tests/run.sh installs it)");
    let original = std::fs::read(a.path(BINARIES[0])).unwrap();
    wait_for("prometheus up, no alert while trusted", || {
        not_trusted_alerts(port).is_empty()
    });
    a.write(BINARIES[0], "implant");
    m.scan();
    assert_eq!(m.verify_code(), 503);
    wait_for("IntegrityNotTrusted firing after the tamper", || {
        not_trusted_alerts(port) == ["firing"]
    });
    std::fs::write(a.path(BINARIES[0]), &original).unwrap();
    m.scan();
    assert_eq!(m.verify_code(), 200);
    wait_for("IntegrityNotTrusted resolved after the restore", || {
        not_trusted_alerts(port).is_empty()
    });
    let _ = prometheus.kill();
    let _ = prometheus.wait();
}
