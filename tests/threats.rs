//! The README's threat model, attacked on the real binaries: each test performs one attack a
//! compromised api, a writer of model files or a writer of the hasher's store could try, and
//! sees it fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use protocol::sign::sha256_hex;

/// The appliance's key form: 64 hex digits and a newline, 65 bytes. As an HMAC key it is
/// longer than a SHA-256 block, so HMAC uses SHA-256(key) in its place: that digest is the key.
fn appliance_key(a: &Appliance) -> Vec<u8> {
    let key = format!("{}\n", "5a".repeat(32)).into_bytes();
    std::fs::write(a.path("secret/key"), &key).unwrap();
    key
}

/// A hard link of the key (or a copy of it) inside a model dir: the file is a finding of its
/// own, and its digest — an equivalent HMAC key — reaches neither the baseline, the reports,
/// nor the audit log.
#[test]
fn the_key_put_into_a_model_dir_by_hard_link_or_copy_is_never_digested() {
    let a = Appliance::new();
    let key = appliance_key(&a);
    let forged_key = sha256_hex(&key);
    std::fs::hard_link(a.path("secret/key"), a.path("models/linked-key.gguf")).unwrap();
    std::fs::copy(a.path("secret/key"), a.path("models/sub/copied-key.gguf")).unwrap();
    std::fs::hard_link(a.path("secret/token"), a.path("models/linked-token.gguf")).unwrap();
    let m = Running::start(&a);
    let s = m.scan();
    let secret_files: Vec<&str> = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["actual_hash"] == "secret_file")
        .map(|v| v["path"].as_str().unwrap())
        .collect();
    let shown = |rel: &str| path_str(&a.path(rel));
    for rel in ["models/linked-key.gguf", "models/linked-token.gguf"] {
        assert!(secret_files.contains(&shown(rel).as_str()), "{rel}: {s}");
    }
    // The copy was read when the baseline was made, recognised by its digest, left out: now
    // it is a file nobody baselined.
    let flagged = |rel: &str| {
        s["active_violations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|v| v["path"] == shown(rel).as_str())
    };
    assert!(flagged("models/sub/copied-key.gguf"), "{s}");
    assert_ne!(
        m.verify_code(),
        200,
        "not trusted while a secret sits in a model dir"
    );
    let (_, baseline) = get(m.addr, "/api/v1/baseline").unwrap();
    for (what, text) in [
        ("baseline", baseline),
        ("status", m.status().to_string()),
        ("audit log", std::fs::read_to_string(a.audit_log()).unwrap()),
    ] {
        assert!(
            !text.contains(&forged_key),
            "the key's digest is in the {what}"
        );
        assert!(
            !text.contains(&sha256_hex(TOKEN.as_bytes())),
            "the token's digest is in the {what}"
        );
    }
    // Nor does an authorised rebaseline take them in.
    let (code, body) = post(m.addr, "/api/v1/rebaseline", Some(TOKEN)).unwrap();
    let (_, baseline) = get(m.addr, "/api/v1/baseline").unwrap();
    assert!(!baseline.contains(&forged_key), "{code} {body}");
    assert!(!baseline.contains("linked-key.gguf"), "{baseline}");
}

/// `verify-audit` on an emptied log is no proof of anything: it fails, even without `--head`.
#[test]
fn verify_audit_refuses_an_empty_log() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("audit.jsonl");
    std::fs::write(&empty, "").unwrap();
    let out = verify_audit(&[empty]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty log"));
}

/// `--insecure-no-sandbox` is refused with the production policy however its path is spelt.
#[test]
fn no_sandbox_is_refused_with_the_production_policy_spelt_another_way() {
    for policy in [
        "/etc/secure-ai/policy/../policy/integrity-monitor.yaml",
        "/etc/secure-ai/./policy//integrity-monitor.yaml",
    ] {
        let out = std::process::Command::new(monitor_bin())
            .args(["--insecure-no-sandbox", "--policy", policy, "--listen"])
            .arg(free_addr().to_string())
            .args(["--state-dir", "/nonexistent-im-state", "--audit-log"])
            .arg(tempfile::tempdir().unwrap().path().join("a.jsonl"))
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{policy}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("refused with the production policy"),
            "{policy}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A world-writable directory above the policy, the key or the token lets anyone swap the file
/// by rename: refused, naming that directory (as sshd's StrictModes).
#[test]
fn a_world_writable_directory_above_policy_key_or_token_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    for (dir, what) in [("secret", "HMAC key"), ("etc", "policy")] {
        let a = Appliance::new();
        std::fs::set_permissions(a.path(dir), std::fs::Permissions::from_mode(0o777)).unwrap();
        let out = std::process::Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{dir}: {err}");
        assert!(
            err.contains("world-writable") && err.contains(what),
            "{dir}: {err}"
        );
        // Sticky, as /tmp is: only an entry's owner may rename it. Accepted.
        std::fs::set_permissions(a.path(dir), std::fs::Permissions::from_mode(0o1777)).unwrap();
        let _m = Running::start(&a);
    }
}
