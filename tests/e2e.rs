//! Whole-system tests: the real integrity-monitor and integrity-hasher on loopback — states, violations and how changes are caught.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;

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
