//! The baseline's generation anchored in a TPM's NV counter, on the real binaries against
//! swtpm (Debian: swtpm, swtpm-tools; tpm2-tools for the checks from outside): enrolment and
//! its idempotence; store, audit log and the api's memory rolled back together after two
//! rebaselines caught by the counter, and still after a restart; a commit whose increment a
//! crash cut off finished at the next start; `tpm: require` without a TPM refusing to start;
//! the counter readable by anyone and counted by no one without the key; enrolment's errors
//! (no TPM, the handle taken, the owner's auth set) naming what to fix.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// A swtpm on a unix socket (its control socket beside it, where tpm2-tools' swtpm TCTI
/// looks), killed on drop; its state kept in `state` across restarts of the same TPM.
struct Swtpm {
    child: Child,
    socket: PathBuf,
}

impl Swtpm {
    fn start(dir: &Path) -> Swtpm {
        let socket = dir.join("tpm.sock");
        let state = dir.join("tpm-state");
        std::fs::create_dir_all(&state).unwrap();
        let _ = std::fs::remove_file(&socket);
        let child = Command::new("swtpm")
            .args(["socket", "--tpm2", "--tpmstate"])
            .arg(format!("dir={}", state.display()))
            .arg("--server")
            .arg(format!("type=unixio,path={}", socket.display()))
            .arg("--ctrl")
            .arg(format!("type=unixio,path={}.ctrl", socket.display()))
            .args(["--flags", "not-need-init,startup-clear"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("swtpm (tests/run.sh installs Debian's swtpm)");
        // The socket file appears at bind(), before swtpm listens: wait until it accepts.
        assert!(wait_until(Duration::from_secs(5), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        }));
        Swtpm { child, socket }
    }

    fn arg(&self) -> String {
        self.socket.display().to_string()
    }

    /// tpm2-tools against it (one client at a time: the monitor must be stopped).
    fn tool(&self, args: &[&str]) -> std::process::Output {
        Command::new(args[0])
            .args(&args[1..])
            .env(
                "TPM2TOOLS_TCTI",
                format!("swtpm:path={}", self.socket.display()),
            )
            .output()
            .expect("tpm2-tools (tests/run.sh installs them)")
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(a: &Appliance, tpm: &Swtpm) -> Running {
    Running::start_with(a, &["--tpm-device", &tpm.arg()])
}

fn enrol(a: &Appliance, tpm: &Swtpm, extra: &[&str]) -> (i32, String) {
    let out = Command::new(monitor_bin())
        .args(["tpm-enroll", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .arg("--state-dir")
        .arg(a.path("state"))
        .arg("--hasher")
        .arg(hasher_bin())
        .args(["--tpm-device", &tpm.arg()])
        .args(extra)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Copies the regular files of `from` into `to`, replacing what `to` held.
fn put_back(from: &Path, to: &Path) {
    for f in std::fs::read_dir(to).unwrap().flatten() {
        if f.file_type().unwrap().is_file() && f.file_name() != ".lock" {
            std::fs::remove_file(f.path()).unwrap();
        }
    }
    copy(from, to);
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for f in std::fs::read_dir(from).unwrap().flatten() {
        if f.file_type().unwrap().is_file() && f.file_name() != ".lock" {
            std::fs::copy(f.path(), to.join(f.file_name())).unwrap();
        }
    }
}

fn counter(s: &serde_json::Value) -> u64 {
    assert_eq!(s["rollback"]["anchor"], "tpm", "{s}");
    assert_eq!(s["rollback"]["tpm_index"], "0x013f4d49", "{s}");
    s["rollback"]["tpm_counter"].as_u64().unwrap()
}

/// Enrolled at generation 1: the status says the TPM guards it.
fn enrolled(a: &Appliance, tpm: &Swtpm) -> u64 {
    let mut m = start(a, tpm);
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(
        s["rollback"]["anchor"], "audit-log",
        "not enrolled yet: {s}"
    );
    m.stop_cleanly();
    // The store belongs to the hasher's (dynamic) user; tpm-enroll runs as root.
    std::os::unix::fs::chown(a.path("state"), Some(65534), Some(65534)).unwrap();
    let (code, out) = enrol(a, tpm, &[]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("generation 1 pinned"), "{out}");
    let owner = std::fs::metadata(a.path("state/generation.json")).unwrap();
    assert_eq!(
        std::os::unix::fs::MetadataExt::uid(&owner),
        65534,
        "the record root wrote goes to the store's owner"
    );
    // Back to root's, as this test's hasher runs as root (without capabilities).
    for f in ["state", "state/generation.json", "state/.lock"] {
        std::os::unix::fs::chown(a.path(f), Some(0), Some(0)).unwrap();
    }
    let (code, again) = enrol(a, tpm, &[]);
    assert_eq!(code, 0, "idempotent: {again}");
    assert!(again.contains("already enrolled"), "{again}");
    let mut m = start(a, tpm);
    let c = counter(&m.status());
    m.stop_cleanly();
    c
}

#[test]
fn store_audit_log_and_memory_rolled_back_together_are_caught_by_the_counter() {
    let a = Appliance::with_options("scan_interval: 1s\n");
    let tpm = Swtpm::start(a.dir.path());
    let at_one = enrolled(&a, &tpm);
    let old = tempfile::tempdir().unwrap();
    copy(&a.path("state"), &old.path().join("state"));
    copy(&a.path("logs"), &old.path().join("logs"));
    let mut m = start(&a, &tpm);
    for n in 0..2 {
        a.write(BINARIES[0], &format!("update {n}, rebaselined"));
        assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    }
    let s = m.status();
    assert_eq!(s["baseline"]["generation"], 3, "{s}");
    assert_eq!(
        counter(&s),
        at_one + 2,
        "one increment per adopted baseline"
    );
    m.stop_cleanly();
    // The attack: everything root can write put back as it was at generation 1 (the store,
    // the audit log, the api's memory), and the binary blessed then restored.
    put_back(&old.path().join("state"), &a.path("state"));
    put_back(&old.path().join("logs"), &a.path("logs"));
    a.write(BINARIES[0], &format!("#!/bin/sh\necho {}\n", BINARIES[0]));
    for life in [
        "after the rollback",
        "after a restart with the same TPM state",
    ] {
        let mut m = start(&a, &tpm);
        let s = m.status();
        assert_eq!(s["state"], "recovery_required", "{life}: {s}");
        let problem = s["baseline_problem"].as_str().unwrap_or_default();
        assert!(
            problem.contains("NV counter 0x013f4d49")
                && problem.contains(&format!("reads {}", at_one + 2))
                && problem.contains("generation 1 needs"),
            "{life}: {s}"
        );
        assert_eq!(m.verify_code(), 503, "{life}");
        m.stop_cleanly();
    }
    // The key's holder recovers by the ceremony, pinned anew above everything.
    let m = start(&a, &tpm);
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(counter(&s), at_one + 3, "{s}");
}

#[test]
fn a_crash_between_commit_and_increment_recovers_by_itself() {
    let a = Appliance::new();
    let tpm = Swtpm::start(a.dir.path());
    let count = enrolled(&a, &tpm);
    // What a hasher killed between its commit's fsync and the increment leaves: the store's
    // record one generation's count ahead of the counter. Made here with the key (a commit's
    // own bytes), since a kill cannot be aimed between two calls.
    let path = a.path("state/generation.json");
    let record = protocol::generation::GenerationRecord::parse_verified(
        &std::fs::read(&path).unwrap(),
        Some(&a.key()),
    )
    .unwrap();
    let mut pin = record.tpm.clone().unwrap();
    pin.base += 1;
    let ahead = protocol::generation::GenerationRecord::pinned(
        record.generation,
        record.baseline_digest.clone(),
        record.release.clone(),
        Some(pin),
        Some(&a.key()),
    );
    std::fs::write(&path, ahead.to_json()).unwrap();
    let mut m = start(&a, &tpm);
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(counter(&s), count + 1, "the increment was finished: {s}");
    m.stop_cleanly();
    let m = start(&a, &tpm);
    assert_eq!(counter(&m.status()), count + 1, "and not twice");
    // The attestation says so too, signed: a fleet can require the TPM's anchor.
    let nonce = "cd".repeat(16);
    let (code, body) = attestation(&m, &nonce);
    assert_eq!(code, 200, "{body}");
    let out = verify_attestation(&a, &nonce, &body, &["--require-tpm"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        said.contains(&format!("rollback anchor tpm (counter {})", count + 1)),
        "{said}"
    );
}

#[test]
fn an_appliance_not_enrolled_fails_require_tpm() {
    let a = Appliance::new();
    let tpm = Swtpm::start(a.dir.path());
    let m = start(&a, &tpm);
    let nonce = "ef".repeat(16);
    let (code, body) = attestation(&m, &nonce);
    assert_eq!(code, 200, "{body}");
    assert!(verify_attestation(&a, &nonce, &body, &[]).status.success());
    let out = verify_attestation(&a, &nonce, &body, &["--require-tpm"]);
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("audit-log"),
        "{out:?}"
    );
}

#[test]
fn require_without_a_tpm_refuses_to_start_and_auto_without_one_says_audit_log() {
    let a = Appliance::with_options("tpm: require\n");
    let mut args = a.args(free_addr());
    args.extend([
        "--tpm-device".into(),
        a.path("no-tpm").display().to_string(),
    ]);
    let out = Command::new(monitor_bin()).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("tpm: require") && stderr.contains("no-tpm"),
        "{stderr}"
    );
    let status = Command::new(hasher_bin())
        .args([
            "--policy",
            &a.path("etc/monitor.yaml").display().to_string(),
        ])
        .args(["--state-dir", &a.path("state").display().to_string()])
        .args(["--tpm-device", &a.path("no-tpm").display().to_string()])
        .env("LISTEN_FDS", "0")
        .output()
        .unwrap();
    assert_eq!(
        status.status.code(),
        Some(78),
        "exit 78 for the hasher itself"
    );
    let a = Appliance::new();
    let tpm = Swtpm::start(a.dir.path());
    let (code, out) = enrol(&a, &tpm, &[]);
    assert_eq!(code, 0, "an empty store enrols: {out}");
    assert!(out.contains("first baseline is pinned"), "{out}");
    let m = start(&a, &tpm);
    assert!(counter(&m.status()) > 0);
}

#[test]
fn the_counter_is_read_by_anyone_and_counted_by_no_one_without_the_key() {
    let a = Appliance::new();
    let tpm = Swtpm::start(a.dir.path());
    let before = enrolled(&a, &tpm);
    // Owner read, no secret (tpm2-tools from outside, as an auditor would).
    let read = tpm.tool(&["tpm2_nvread", "0x013f4d49", "-C", "o"]);
    assert!(read.status.success(), "{read:?}");
    assert_eq!(read.stdout, before.to_be_bytes(), "{read:?}");
    let public = tpm.tool(&["tpm2_nvreadpublic", "0x013f4d49"]);
    let public = String::from_utf8_lossy(&public.stdout);
    assert!(
        public.contains("nt=0x1") && public.contains("no_da") && !public.contains("orderly"),
        "{public}"
    );
    // The attack: bump it without the key, by its auth (guessed) or the owner's (empty).
    for how in [
        vec!["tpm2_nvincrement", "0x013f4d49", "-P", "guess"],
        vec!["tpm2_nvincrement", "0x013f4d49"],
        vec!["tpm2_nvincrement", "0x013f4d49", "-C", "o"],
    ] {
        let out = tpm.tool(&how);
        assert!(!out.status.success(), "{how:?} counted: {out:?}");
    }
    let read = tpm.tool(&["tpm2_nvread", "0x013f4d49", "-C", "o"]);
    assert_eq!(read.stdout, before.to_be_bytes(), "unchanged");
    // A rotated key (docs/operations.md): enrolment names --reenroll, which makes the
    // counter the new key's; the store (signed with the old key) is rejected until the key
    // ceremony, whose baseline is pinned to the new counter.
    std::fs::write(a.path("secret/key"), [0x43u8; 32]).unwrap();
    let (code, out) = enrol(&a, &tpm, &[]);
    assert_eq!(code, 78, "{out}");
    assert!(out.contains("--tpm-reenroll"), "{out}");
    let (code, out) = enrol(&a, &tpm, &["--reenroll"]);
    assert_eq!(code, 0, "{out}");
    let m = start(&a, &tpm);
    assert_eq!(m.status()["state"], "recovery_required");
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    let s = m.status();
    assert_eq!(s["state"], "trusted", "{s}");
    assert!(counter(&s) > before, "{s}");
}

#[test]
fn enrolment_errors_name_what_to_fix() {
    let a = Appliance::new();
    let out = Command::new(monitor_bin())
        .args(["tpm-enroll", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .arg("--state-dir")
        .arg(a.path("state"))
        .arg("--hasher")
        .arg(hasher_bin())
        .arg("--tpm-device")
        .arg(a.path("no-tpm"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{text}");
    assert!(text.contains("no TPM") && text.contains("no-tpm"), "{text}");
    // The handle taken by another index (an ordinary one): never removed, named.
    let tpm = Swtpm::start(a.dir.path());
    let def = tpm.tool(&[
        "tpm2_nvdefine",
        "0x013f4d49",
        "-C",
        "o",
        "-s",
        "8",
        "-a",
        "ownerread|ownerwrite",
    ]);
    assert!(def.status.success(), "{def:?}");
    let (code, text) = enrol(&a, &tpm, &[]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("taken by another index"), "{text}");
    let (code, text) = enrol(&a, &tpm, &["--reenroll"]);
    assert_eq!(
        code, 78,
        "--reenroll removes only the monitor's counter: {text}"
    );
    assert!(tpm
        .tool(&["tpm2_nvreadpublic", "0x013f4d49"])
        .status
        .success());
    // The owner hierarchy with an auth value set.
    let b = Appliance::new();
    let tpm = Swtpm::start(b.dir.path());
    let set = tpm.tool(&["tpm2_changeauth", "-c", "owner", "ownerpass"]);
    assert!(set.status.success(), "{set:?}");
    let (code, text) = enrol(&b, &tpm, &[]);
    assert_eq!(code, 78, "{text}");
    assert!(text.contains("ownerAuthSet"), "{text}");
}
