//! The appliance's update path on the real binaries: the image ships its release baseline on a
//! read-only mount and the boot chain vouches for it; the hasher follows a new release at the
//! next start with a generation of its own (no person, no key ceremony), while tampering that
//! rides along, a model changed meanwhile, a release that cannot be believed and a return past
//! the previous release are still not trusted.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use protocol::sign::sha256_hex;

/// A directory beneath `/usr` (a transition believes only a release file in the image's tree)
/// bind-mounted read-only onto itself, as `/usr` is on the image-based appliance; `write` opens
/// it for the moment of an "update". Unmounted and removed when dropped.
struct ReadOnly {
    dir: PathBuf,
    _made: tempfile::TempDir,
}

fn mount(args: &[&str]) {
    let out = Command::new("mount").args(args).output().unwrap();
    assert!(out.status.success(), "mount {args:?}: {out:?}");
}

impl ReadOnly {
    fn new() -> ReadOnly {
        std::fs::create_dir_all("/usr/local/share").unwrap();
        let made = tempfile::Builder::new()
            .prefix("integrity-monitor-test.")
            .tempdir_in("/usr/local/share")
            .unwrap();
        let dir = made.path().to_owned();
        let d = dir.to_str().unwrap();
        mount(&["--bind", d, d]);
        mount(&["-o", "remount,bind,ro", d]);
        ReadOnly { dir, _made: made }
    }

    fn write(&self, name: &str, content: &str) {
        let d = self.dir.to_str().unwrap();
        mount(&["-o", "remount,bind,rw", d]);
        std::fs::write(self.dir.join(name), content).unwrap();
        mount(&["-o", "remount,bind,ro", d]);
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

const POLICY: &str = "scan_interval: 1h\n";

/// The appliance with its release baseline on a read-only mount and a boot-chain result.
struct Updating {
    a: Appliance,
    usr: ReadOnly,
}

impl Updating {
    fn new() -> Updating {
        let a = Appliance::with_options(POLICY);
        let usr = ReadOnly::new();
        let u = Updating { a, usr };
        u.a.write_policy(&format!(
            "{POLICY}release_baseline: {}\nboot_verify_result: {}\n",
            u.release_path().display(),
            u.a.path("logs/boot-verify-last.json").display()
        ));
        u.boot_verified("valid", std::time::SystemTime::now());
        u
    }

    fn release_path(&self) -> PathBuf {
        self.usr.dir.join("release-baseline.json")
    }

    /// What secure-ai-boot-verify writes at boot.
    fn boot_verified(&self, state: &str, at: std::time::SystemTime) {
        self.a.write(
            "logs/boot-verify-last.json",
            &format!(
                "{{\"timestamp\":\"{}\",\"status\":\"pass\",\"warnings\":[],\"checks\":{{\"secure_boot\":\"enabled\",\"tpm2\":\"present\",\"ostree_signature\":{{\"state\":\"{state}\",\"commit\":\"0123\",\"image_ref\":\"ostree-image-signed:docker://example/secai\",\"detail\":\"\"}}}}}}",
                humantime::format_rfc3339_micros(at)
            ),
        );
    }

    /// Installs release `commit` whose binaries say `contents` (in BINARIES' order): the
    /// binaries written, the release file on the read-only mount.
    fn install(&self, commit: &str, contents: [&str; 4]) {
        let files: Vec<String> = BINARIES
            .iter()
            .zip(contents)
            .map(|(b, c)| {
                self.a.write(b, c);
                format!(
                    "{{\"path\":\"{}\",\"sha256\":\"{}\",\"size\":{}}}",
                    path_str(&self.a.path(b)),
                    sha256_hex(c.as_bytes()),
                    c.len()
                )
            })
            .collect();
        self.usr.write(
            "release-baseline.json",
            &format!(
                "{{\"version\":1,\"source_commit\":\"{commit}\",\"files\":[{}]}}",
                files.join(",")
            ),
        );
    }

    /// A start as at boot (the greenboot check's forced scan): the status after it.
    fn boot(&self) -> (serde_json::Value, u16) {
        let mut m = Running::start(&self.a);
        let s = m.scan();
        let code = m.verify_code();
        m.stop_cleanly();
        (s, code)
    }

    fn last(&self, event: &str) -> serde_json::Value {
        self.a
            .audit_events()
            .into_iter()
            .rev()
            .find(|e| e["event"] == event)
            .unwrap_or(serde_json::Value::Null)
    }
}

const A: [&str; 4] = ["registry A", "firewall A", "agent A", "ui A"];
const B: [&str; 4] = ["registry B", "firewall A", "agent A", "ui A"];
const C: [&str; 4] = ["registry A", "firewall C", "agent A", "ui A"];

fn violated(s: &serde_json::Value) -> Vec<String> {
    s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn an_update_is_trusted_at_its_first_boot_and_what_rides_along_is_not() {
    let u = Updating::new();
    let bin = |i: usize| path_str(&u.a.path(BINARIES[i]));
    u.install("A", A);
    let (s, code) = u.boot();
    assert_eq!((s["state"].as_str(), code), (Some("trusted"), 200), "{s}");
    assert_eq!(
        s["release"]["in_force"], "A",
        "recorded at the first baseline: {s}"
    );
    assert_eq!(s["baseline"]["generation"], 1);

    // The update to B: new binaries, B's release file; the next boot is trusted on its own.
    u.install("B", B);
    let (s, code) = u.boot();
    assert_eq!((s["state"].as_str(), code), (Some("trusted"), 200), "{s}");
    assert_eq!(s["baseline"]["generation"], 2, "a new generation: {s}");
    assert_eq!(s["release"]["in_force"], "B");
    let t = u.last("release_transition");
    assert_eq!(
        (t["from"].as_str(), t["to"].as_str()),
        (Some("A"), Some("B")),
        "{t}"
    );
    assert_eq!(t["downgrade"], false);
    assert_eq!(t["moved"][0]["path"], bin(0), "{t}");
    assert_eq!(t["moved"][0]["old"], sha256_hex(A[0].as_bytes()));
    assert_eq!(t["moved"][0]["new"], sha256_hex(B[0].as_bytes()));
    assert_eq!(t["moved_count"], 1);

    // greenboot rolls the deployment back: A again, a downgrade to the previous release.
    u.install("A", A);
    let (s, code) = u.boot();
    assert_eq!((s["state"].as_str(), code), (Some("trusted"), 200), "{s}");
    assert_eq!(s["baseline"]["generation"], 3);
    assert_eq!(u.last("release_transition")["downgrade"], true);

    // C, with a binary tampered beyond it and a model changed meanwhile: the transition is
    // made, and both are still violations, named.
    u.install("C", C);
    u.a.write(BINARIES[3], "ui tampered");
    u.a.write("models/a.gguf", "model a, changed");
    let (s, code) = u.boot();
    assert_eq!(code, 503, "{s}");
    assert_eq!(s["release"]["in_force"], "C", "{s}");
    assert_eq!(s["baseline"]["generation"], 4);
    let v = violated(&s);
    assert!(v.contains(&bin(3)), "the tampered binary: {v:?}");
    assert!(
        v.contains(&path_str(&u.a.path("models/a.gguf"))),
        "the model: {v:?}"
    );
    assert!(!v.contains(&bin(1)), "C's own binary is trusted: {v:?}");
    let tampered = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == bin(3))
        .unwrap()
        .clone();
    assert_eq!(
        tampered["expected_hash"],
        sha256_hex(A[3].as_bytes()),
        "{tampered}"
    );
    u.a.write(BINARIES[3], A[3]);
    u.a.write("models/a.gguf", "model a");
    let (s, code) = u.boot();
    assert_eq!(
        (s["state"].as_str(), code),
        (Some("trusted"), 200),
        "restored: {s}"
    );

    // Back to B: in force before the previous release (A): refused, not trusted.
    u.install("B", B);
    let (s, code) = u.boot();
    assert_eq!(code, 503, "{s}");
    assert_eq!(s["baseline"]["generation"], 4, "no new generation: {s}");
    let v = violated(&s);
    assert!(v.contains(&path_str(&u.release_path())), "{v:?}");
    assert!(v.contains(&bin(0)), "B's binary is not C's: {v:?}");
    assert!(
        u.last("release_refused")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("before the previous one")),
        "{}",
        u.last("release_refused")
    );
    let finding = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["path"] == path_str(&u.release_path()))
        .unwrap()
        .clone();
    assert_eq!(finding["actual_hash"], "release_unverified", "{finding}");
}

/// A release file that did not come with a vouched-for image drives nothing: on a writable
/// mount, with the boot chain's signature not valid, or its result from an earlier boot.
#[test]
fn a_release_that_cannot_be_believed_makes_no_transition() {
    for case in [
        "outside /usr",
        "writable",
        "signature invalid",
        "earlier boot",
        "result not root's",
    ] {
        let u = Updating::new();
        u.install("A", A);
        assert_eq!(u.boot().1, 200, "{case}");
        let path: &Path = &u.release_path();
        let moved_to = |moved: &Path| {
            std::fs::copy(path, moved).unwrap();
            u.a.write_policy(&format!(
                "{POLICY}release_baseline: {}\nboot_verify_result: {}\n",
                moved.display(),
                u.a.path("logs/boot-verify-last.json").display()
            ));
        };
        let writable = tempfile::Builder::new()
            .prefix("integrity-monitor-test.")
            .tempdir_in("/usr/local/share")
            .unwrap();
        match case {
            "outside /usr" => {
                // The same release written where anyone with write access could have.
                u.install("B", B);
                std::fs::create_dir_all(u.a.path("rw")).unwrap();
                moved_to(&u.a.path("rw/release.json"));
            }
            "writable" => {
                u.install("B", B);
                moved_to(&writable.path().join("release.json"));
            }
            "result not root's" => {
                // What a compromised api could write into the log directory it may write.
                u.install("B", B);
                let result = u.a.path("logs/boot-verify-last.json");
                std::os::unix::fs::chown(&result, Some(65534), None).unwrap();
            }
            "signature invalid" => {
                u.install("B", B);
                u.boot_verified("invalid", std::time::SystemTime::now());
            }
            _ => {
                u.install("B", B);
                u.boot_verified(
                    "valid",
                    std::time::SystemTime::now() - std::time::Duration::from_secs(30 * 86_400),
                );
            }
        }
        let (s, code) = u.boot();
        assert_eq!(code, 503, "{case}: {s}");
        assert_eq!(s["baseline"]["generation"], 1, "{case}: {s}");
        assert_eq!(s["release"]["in_force"], "A", "{case}: {s}");
        let v = violated(&s);
        assert!(
            v.contains(&path_str(&u.a.path(BINARIES[0]))),
            "{case}: B's binary is a violation: {v:?}"
        );
        let why = u.last("release_refused");
        let expect = match case {
            "outside /usr" => "not beneath /usr",
            "writable" => "read-only mount",
            "signature invalid" => "not valid",
            "result not root's" => "uid 65534",
            _ => "before this boot",
        };
        assert!(
            why["reason"].as_str().is_some_and(|r| r.contains(expect)),
            "{case}: {why}"
        );
        assert!(
            s["active_violations"]
                .as_array()
                .unwrap()
                .iter()
                .any(|x| x["actual_hash"] == "release_unverified"),
            "{case}: {s}"
        );
    }
}

/// Anti-rollback still holds: a store put back from before the transition is refused.
#[test]
fn a_store_rolled_back_across_a_transition_is_refused() {
    let u = Updating::new();
    u.install("A", A);
    assert_eq!(u.boot().1, 200);
    let copy = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(u.a.path("state")).unwrap().flatten() {
        if f.file_type().unwrap().is_file() && f.file_name() != ".lock" {
            std::fs::copy(f.path(), copy.path().join(f.file_name())).unwrap();
        }
    }
    u.install("B", B);
    assert_eq!(u.boot().1, 200);
    for f in std::fs::read_dir(copy.path()).unwrap().flatten() {
        std::fs::copy(f.path(), u.a.path("state").join(f.file_name())).unwrap();
    }
    let (s, code) = u.boot();
    assert_eq!(code, 503, "{s}");
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert!(
        s["baseline_problem"]
            .as_str()
            .is_some_and(|p| p.contains("rollback")),
        "{s}"
    );
}

/// Attestations carry the release; a fleet pins the commits it allows.
#[test]
fn an_attestation_names_the_release_and_a_verifier_pins_it() {
    let u = Updating::new();
    u.install("A", A);
    let m = Running::start(&u.a);
    let nonce = "cd".repeat(16);
    let (code, body) = attestation(&m, &nonce);
    assert_eq!(code, 200, "{body}");
    let verify = |release: &str| verify_attestation(&u.a, &nonce, &body, &["--release", release]);
    let ok = verify("A");
    assert!(ok.status.success(), "{ok:?}");
    let other = verify("B");
    assert_eq!(other.status.code(), Some(1), "{other:?}");
    assert!(String::from_utf8_lossy(&other.stderr).contains("not one of the allowed"));
}

/// A store from before releases were recorded (its generation record names none, no
/// releases.bin) meets its first update: every path the believed release lists takes its
/// digest; it does not fail the boot. Then the history, once recorded, cannot be deleted to
/// forget that a release was in force before the previous one.
#[test]
fn a_store_from_before_meets_its_first_update_and_its_history_cannot_be_deleted() {
    let u = Updating::new();
    u.install("A", A);
    assert_eq!(u.boot().1, 200);
    // As a store written before releases were recorded: no history, a record naming none.
    std::fs::remove_file(u.a.path("state/releases.bin")).unwrap();
    let record = std::fs::read(u.a.path("state/generation.json")).unwrap();
    let r: serde_json::Value = serde_json::from_slice(&record).unwrap();
    let old = protocol::generation::GenerationRecord::new(
        r["generation"].as_u64().unwrap(),
        r["baseline_digest"].as_str().unwrap().to_owned(),
        Some(&u.a.key()),
    );
    std::fs::write(u.a.path("state/generation.json"), old.to_json()).unwrap();
    u.install("B", B);
    let (s, code) = u.boot();
    assert_eq!((s["state"].as_str(), code), (Some("trusted"), 200), "{s}");
    assert_eq!(s["release"]["in_force"], "B");
    assert_eq!(u.last("release_transition")["from"], "(none recorded)");
    // A to C, then the history deleted and A installed again: refused, not a fresh start.
    u.install("A", A);
    assert_eq!(u.boot().1, 200, "back to the previous");
    u.install("C", C);
    assert_eq!(u.boot().1, 200);
    std::fs::remove_file(u.a.path("state/releases.bin")).unwrap();
    u.install("B", B);
    let (s, code) = u.boot();
    assert_eq!(code, 503, "{s}");
    assert!(
        u.last("release_refused")["reason"]
            .as_str()
            .is_some_and(|r| r.contains("history cannot be believed")),
        "{}",
        u.last("release_refused")
    );
}
