//! Operator tools and appliance glue: check-config, verify-baseline, initialize-baseline,
//! /metrics, the greenboot and first-boot scripts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

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
            // Their paths are the appliance's, not this machine's: the form only.
            let out = Command::new(monitor_bin())
                .args(["check-config", "--syntax-only", "--policy"])
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
    // What can never work is named too: a listed file that is not there, a key that is not.
    let ok = Command::new(monitor_bin())
        .args(["check-config", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .output()
        .unwrap();
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(!String::from_utf8_lossy(&ok.stderr).contains("not sealed"));
    // More unsealed bytes than the boot check's 30 s can read (a sparse 6 GiB model): a
    // warning naming the remedy, not a failure.
    std::fs::File::create(a.path("models/large.gguf"))
        .unwrap()
        .set_len(6 << 30)
        .unwrap();
    let warned = Command::new(monitor_bin())
        .args(["check-config", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&warned.stderr);
    assert_eq!(warned.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("6.0 GiB of watched files are not sealed")
            && stderr.contains("integrity-monitor seal"),
        "{stderr}"
    );
    std::fs::remove_file(a.path(BINARIES[2])).unwrap();
    std::fs::remove_file(a.path("secret/key")).unwrap();
    let out = Command::new(monitor_bin())
        .args(["check-config", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "service_binaries: {}",
            a.path(BINARIES[2]).display()
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "hmac_key_path: {}",
            a.path("secret/key").display()
        )),
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
    // The service's options go after the command as well as before it.
    let mut after = vec!["initialize-baseline".to_owned()];
    after.extend(a.args(free_addr()));
    let out = Command::new(monitor_bin()).args(&after).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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

fn boot_check(
    a: &Appliance,
    m: &Running,
    script: &str,
    extra: &[(&str, &str)],
) -> std::process::Output {
    Command::new("bash")
        .arg(repo(script))
        .env("INTEGRITY_MONITOR_URL", format!("http://{}", m.addr))
        .env("INTEGRITY_MONITOR_TOKEN_FILE", a.path("secret/token"))
        .env("INTEGRITY_MONITOR_KEY_FILE", a.path("secret/key"))
        .env("INTEGRITY_MONITOR_BIN", monitor_bin())
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn boot_checks_work_with_reads_closed_and_refuse_an_unsigned_baseline() {
    let a = Appliance::with_options("scan_interval: 1h\nrequire_token_for_reads: true\n");
    let handed = Handed::new();
    let addr = handed.addr;
    let mut inner = Command::new(monitor_bin());
    inner.args(a.args(addr));
    let child = handed
        .command(&inner)
        .stdin(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let m = Running { child, addr };
    assert!(wait_until(std::time::Duration::from_secs(20), || {
        verify_ok_with_token(addr)
    }));
    for script in [
        "contrib/greenboot/01-integrity-monitor.sh",
        "contrib/first-boot/integrity-monitor.sh",
    ] {
        let out = boot_check(&a, &m, script, &[]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{script}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    drop(m);
    let unsigned = Appliance::new();
    std::fs::remove_file(unsigned.path("secret/key")).unwrap();
    let m = Running::start(&unsigned);
    let gb = "contrib/greenboot/01-integrity-monitor.sh";
    let refused = boot_check(&unsigned, &m, gb, &[]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("unsigned"));
    let opted_in = boot_check(
        &unsigned,
        &m,
        gb,
        &[("INTEGRITY_MONITOR_ALLOW_UNSIGNED", "1")],
    );
    assert_eq!(
        opted_in.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&opted_in.stderr)
    );
}

#[test]
fn greenboot_and_first_boot_scripts_pass_only_when_trusted() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let run = |script: &str| boot_check(&a, &m, script, &[]);
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

/// A monitor reporting incidents to a recorder on `port`, with a token of the recorder's own:
/// the api never holds the service token.
fn reporting_to(a: &Appliance, port: u16) -> Running {
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents/report");
    a.write("secret/recorder-token", "recorder-token-0123456789\n");
    let recorder_token = a.path("secret/recorder-token").display().to_string();
    Running::start_with(
        a,
        &[
            "--incident-url",
            &url,
            "--incident-token-file",
            &recorder_token,
        ],
    )
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
    let m = reporting_to(&a, port);
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

/// With no recorder token configured, an incident carries no `Authorization` header at all
/// (an empty `Bearer ` is refused by the appliance's recorder), and still goes out.
#[test]
fn without_a_recorder_token_an_incident_carries_no_authorization_header() {
    let (port, seen) = recorder();
    let a = Appliance::new();
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents/report");
    let m = Running::start_with(&a, &["--incident-url", &url]);
    a.write(BINARIES[0], "t1");
    m.scan();
    assert!(wait_until(std::time::Duration::from_secs(5), || !seen
        .lock()
        .unwrap()
        .is_empty()));
    let (auth, body) = seen.lock().unwrap()[0].clone();
    assert_eq!(auth, "", "no Authorization header");
    assert_eq!(body["source"], "integrity-monitor");
}

#[test]
fn an_unreachable_recorder_is_retried_then_audited_without_blocking_scans() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let a = Appliance::new();
    let m = reporting_to(&a, port);
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
        actual_hash: protocol::Finding::Unregistered.into(),
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

#[test]
fn the_demo_keeps_its_secrets_private_and_leaves_nothing_behind() {
    use std::io::BufRead;
    use std::os::unix::fs::PermissionsExt;
    // A taken port is refused before anything is printed or written.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let out = Command::new(monitor_bin())
        .args([
            "--demo",
            "--listen",
            &taken.local_addr().unwrap().to_string(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "nothing printed");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not free"));
    drop(taken);

    // free_addr() can race other tests for a port; the demo refuses a taken one: try again.
    let (addr, mut child, first) = (0..5)
        .find_map(|_| {
            let addr = free_addr();
            let mut child = Command::new(monitor_bin())
                .args(["--demo", "--listen", &addr.to_string()])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            let mut first = String::new();
            std::io::BufReader::new(child.stdout.take().unwrap())
                .read_line(&mut first)
                .unwrap();
            if first.is_empty() {
                let _ = child.wait();
                return None;
            }
            // The rest of the instructions go to a closed pipe: the demo must not mind.
            Some((addr, child, first))
        })
        .expect("a free port within five tries");
    let root = std::path::PathBuf::from(first.trim().rsplit(' ').next().unwrap());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&root), 0o700, "{}", root.display());
    for secret in [
        "run/secure-ai/integrity-hmac-key",
        "run/secure-ai/service-token",
    ] {
        assert_eq!(mode(&root.join(secret)), 0o600, "{secret}");
    }
    assert!(wait_until(std::time::Duration::from_secs(20), || get(
        addr,
        "/api/v1/verify"
    )
    .map(|r| r.0 == 200)
    .unwrap_or(false)));
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(!root.exists(), "the demo tree is removed on exit");
}

/// What the demo prints works as printed: the tamper, the scan with the token, `/verify` 503,
/// the key ceremony's command (approved), `/verify` 200 again.
#[test]
fn the_demos_instructions_work_as_printed() {
    use std::io::{BufRead, Write};
    let (addr, mut child, lines) = (0..5)
        .find_map(|_| {
            let addr = free_addr();
            let mut child = Command::new(monitor_bin())
                .args(["--demo", "--listen", &addr.to_string()])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .unwrap();
            let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
            let mut lines = Vec::new();
            loop {
                let mut line = String::new();
                if out.read_line(&mut line).unwrap() == 0 {
                    let _ = child.wait();
                    return None;
                }
                if line.starts_with("Stop with") {
                    break;
                }
                lines.push(line.trim().to_owned());
            }
            Some((addr, child, lines))
        })
        .expect("a free port within five tries");
    let step = |starts: &str| {
        lines
            .iter()
            .find(|l| l.starts_with(starts) || l.contains(starts))
            .unwrap_or_else(|| panic!("{starts}: {lines:?}"))
            .split("  #")
            .next()
            .unwrap()
            .trim()
            .to_owned()
    };
    let sh = |line: &str, input: &str| {
        let mut c = Command::new("sh")
            .args(["-c", line])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    assert!(wait_until(Duration::from_secs(20), || get(
        addr,
        "/api/v1/verify"
    )
    .is_ok_and(|r| r.0 == 200)));
    sh(&step("echo tampered"), "");
    sh(&step("Authorization: Bearer"), "");
    assert_eq!(get(addr, "/api/v1/verify").unwrap().0, 503);
    // No terminal here to answer its prompt: approved by --yes, the rest as printed.
    sh(&format!("{} --yes", step("rebaseline --key")), "");
    assert!(
        wait_until(Duration::from_secs(10), || get(addr, "/api/v1/verify")
            .is_ok_and(|r| r.0 == 200)),
        "trusted again after the ceremony, at once (no writeback window to wait out)"
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    assert!(child.wait().unwrap().success());
}

#[test]
fn a_policy_others_may_write_is_refused() {
    let a = Appliance::new();
    std::fs::set_permissions(
        a.path("etc/monitor.yaml"),
        std::os::unix::fs::PermissionsExt::from_mode(0o666),
    )
    .unwrap();
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("chmod go-w"));
}
