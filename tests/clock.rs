//! Clock jumps: both real processes run sandboxed under libfaketime, whose wall clock steps a
//! year back (or ten years forward) two seconds after start, as a bad NTP step or an attacker
//! with CAP_SYS_TIME would. Monotonic time is left alone, as the kernel leaves it.
//! Needs the `faketime` Debian package (.ci/run installs it).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn libfaketime() -> String {
    let found = std::fs::read_dir("/usr/lib")
        .unwrap()
        .filter_map(Result::ok)
        .map(|d| d.path().join("faketime/libfaketime.so.1"))
        .find(|p| p.exists());
    found
        .expect("libfaketime.so.1 not found: apt-get install faketime (.ci/run does)")
        .display()
        .to_string()
}

/// The environment that makes a process's wall clock jump by `offset` after two seconds.
fn faketime_env(offset: &str) -> Vec<(String, String)> {
    [
        ("LD_PRELOAD", libfaketime().as_str()),
        ("FAKETIME", offset),
        ("FAKETIME_START_AFTER_SECONDS", "2"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_DISABLE_SHM", "1"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn wait_for(what: &str, done: impl FnMut() -> bool) {
    assert!(
        wait_until(Duration::from_secs(30), done),
        "gave up waiting: {what}"
    );
}

fn jump(offset: &str, year: &str) {
    let a = Appliance::with_options("scan_interval: 1s\n");
    // The api hands the hasher a clean environment, so the jump reaches it through a wrapper.
    let env = faketime_env(offset);
    let exports: String = env.iter().map(|(k, v)| format!("{k}='{v}' ")).collect();
    a.write(
        "hasher-faketime",
        &format!(
            "#!/bin/sh\nexec env {exports}'{}' \"$@\"\n",
            hasher_bin().display()
        ),
    );
    let wrapper = a.path("hasher-faketime");
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let handed = Handed::new();
    let addr = handed.addr;
    let mut args = a.args(addr);
    let at = args.iter().position(|x| x == "--hasher").unwrap();
    args[at + 1] = wrapper.display().to_string();
    let mut inner = Command::new(monitor_bin());
    inner.args(&args).envs(env);
    let child = handed.command(&inner).stdin(Stdio::null()).spawn().unwrap();
    let mut m = Running { child, addr };
    m.wait_ready();

    // The hasher's clock jumped: its reports carry the faked year.
    wait_for("a scan stamped after the jump", || {
        m.status()["last_report"]["report"]["completed_at"]
            .as_str()
            .is_some_and(|t| t.starts_with(year))
    });
    // Scheduled scans go on at their interval (a wall-clock timer would stall for a year, or
    // fire a burst ten years' worth).
    let before = m.status()["scan_count"].as_u64().unwrap();
    wait_for("three more scheduled scans", || {
        m.status()["scan_count"].as_u64().unwrap() >= before + 3
    });
    assert_eq!(m.verify_code(), 200);

    // Tampering is still caught without being asked, and a restore still trusts.
    a.write(BINARIES[0], "implant\n");
    wait_for("503 after tampering", || m.verify_code() == 503);
    wait_for("the scan's finding", || m.status()["state"] == "degraded");
    a.write(BINARIES[0], &format!("#!/bin/sh\necho {}\n", BINARIES[0]));
    wait_for("200 after restoring", || m.verify_code() == 200);
    // The api's clock jumped too: its audit records carry the faked year.
    let events = a.audit_events();
    let last = events.last().unwrap();
    assert_eq!(last["event"], "transition", "{last}");
    assert!(last["time"].as_str().unwrap().starts_with(year), "{last}");

    // A verifier on a correct clock accepts the fresh attestation (freshness is monotonic)...
    let nonce = "a1b2c3d4e5f60718293a4b5c6d7e8f90";
    let (code, body) = attestation(&m, nonce);
    assert_eq!(code, 200, "{body}");
    let out = verify_attestation(&a, nonce, &body, &["--max-age", "30", "--require-clean"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...and the audit chain holds although its timestamps jump.
    let audit = verify_audit(&[a.audit_log()]);
    assert!(
        audit.status.success(),
        "{}",
        String::from_utf8_lossy(&audit.stderr)
    );
}

/// The year the faked clock shows shortly after the jump.
fn year_after(days: i64) -> String {
    let step = Duration::from_secs(days.unsigned_abs() * 86_400 + 60);
    let now = std::time::SystemTime::now();
    let then = if days < 0 { now - step } else { now + step };
    humantime::format_rfc3339_seconds(then).to_string()[..4].to_owned()
}

#[test]
fn wall_clock_stepped_back_a_year() {
    jump("-365d", &year_after(-365));
}

#[test]
fn wall_clock_stepped_forward_ten_years() {
    jump("+3652d", &year_after(3652));
}
