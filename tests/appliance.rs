//! Replacing the Go service on an appliance-shaped tree: its policy (`version: 1`, quoted
//! durations), its release baseline (integer version, 40-hex commit), a stored baseline the Go
//! service signed, its environment variables, its `--initialize-baseline`, a short token, and a
//! reload that narrows the policy.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;
use protocol::baseline::{Entry, Manifest};
use protocol::sign::{hmac_hex, sha256_hex};
use protocol::Category;

const KEY: [u8; 32] = [0x42; 32];
/// The Go service took tokens of any length.
const SHORT_TOKEN: &str = "go-tok";

struct Tree {
    dir: tempfile::TempDir,
}

impl Tree {
    fn p(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, content: &[u8]) {
        let p = self.p(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    fn policy(&self, with_ui: bool) {
        let r = self.dir.path().display();
        let ui = if with_ui {
            format!("  - \"{r}/usr/libexec/secure-ai/ui\"\n")
        } else {
            String::new()
        };
        let text = format!(
            "version: 1\nscan_interval: \"30s\"\nfull_rehash_interval: \"24h\"\ndegradation_threshold: 3\n\
             service_binaries:\n  - \"{r}/usr/libexec/secure-ai/registry\"\n{ui}\
             policy_files:\n  - \"{r}/etc/secure-ai/policy/agent.yaml\"\n\
             model_dirs:\n  - \"{r}/var/lib/secure-ai/registry/models\"\n\
             trust_material:\n  - \"{r}/etc/secure-ai/cosign.pub\"\n\
             hmac_key_path: \"{r}/run/secure-ai/integrity-hmac-key\"\n"
        );
        self.write(
            "etc/secure-ai/policy/integrity-monitor.yaml",
            text.as_bytes(),
        );
    }

    /// The environment the appliance's unit gives the Go binary.
    fn env(&self, cmd: &mut Command, addr: std::net::SocketAddr) {
        let d = |rel: &str| self.p(rel);
        cmd.env_clear()
            .env(
                "MONITOR_POLICY_PATH",
                d("etc/secure-ai/policy/integrity-monitor.yaml"),
            )
            .env("BIND_ADDR", addr.to_string())
            .env(
                "AUDIT_LOG_PATH",
                d("var/lib/secure-ai/logs/integrity-monitor-audit.jsonl"),
            )
            .env("SERVICE_TOKEN_PATH", d("run/secure-ai/service-token"))
            .env("HMAC_KEY_PATH", d("run/secure-ai/integrity-hmac-key"))
            .env(
                "BASELINE_PATH",
                d("var/lib/secure-ai/integrity/baseline.json"),
            )
            .env(
                "EXPECTED_BASELINE_PATH",
                d("usr/share/secure-ai/release-baseline.json"),
            )
            .stdin(Stdio::null());
    }

    fn audit(&self) -> Vec<serde_json::Value> {
        settled_audit(&self.p("var/lib/secure-ai/logs/integrity-monitor-audit.jsonl"))
    }
}

fn entry(path: &Path, category: Category) -> Entry {
    let bytes = std::fs::read(path).unwrap();
    Entry {
        path: path.display().to_string(),
        hash: protocol::hexfmt::Sha256Digest::from_hex(&sha256_hex(&bytes)).unwrap(),
        category,
        size: bytes.len() as u64,
    }
}

/// An appliance as the Go service left it: files, key, token, release baseline, and its
/// stored baseline signed its way, indented, with a trailing newline.
fn appliance() -> Tree {
    let t = Tree {
        dir: tempfile::tempdir().unwrap(),
    };
    t.write(
        "usr/libexec/secure-ai/registry",
        b"#!/bin/sh\necho registry\n",
    );
    t.write("usr/libexec/secure-ai/ui", b"#!/bin/sh\necho ui\n");
    t.write("etc/secure-ai/policy/agent.yaml", b"mode: standard\n");
    t.write("etc/secure-ai/cosign.pub", b"-----BEGIN PUBLIC KEY-----\n");
    t.write(
        "var/lib/secure-ai/registry/models/llama & co <q4>.gguf",
        b"weights",
    );
    t.write("run/secure-ai/integrity-hmac-key", &KEY);
    t.write(
        "run/secure-ai/service-token",
        format!("{SHORT_TOKEN}\n").as_bytes(),
    );
    for secret in [
        "run/secure-ai/integrity-hmac-key",
        "run/secure-ai/service-token",
    ] {
        std::fs::set_permissions(
            t.p(secret),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
    }
    t.policy(true);
    let registry = t.p("usr/libexec/secure-ai/registry");
    let release = format!(
        "{{\"version\":1,\"source_commit\":\"{}\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{}\",\"size\":{}}}]}}",
        "0123456789abcdef".repeat(3)[..40].to_owned(),
        registry.display(),
        sha256_hex(&std::fs::read(&registry).unwrap()),
        std::fs::metadata(&registry).unwrap().len()
    );
    t.write(
        "usr/share/secure-ai/release-baseline.json",
        release.as_bytes(),
    );
    let entries = vec![
        entry(&registry, Category::ServiceBinary),
        entry(&t.p("usr/libexec/secure-ai/ui"), Category::ServiceBinary),
        entry(
            &t.p("etc/secure-ai/policy/agent.yaml"),
            Category::PolicyFile,
        ),
        entry(&t.p("etc/secure-ai/cosign.pub"), Category::TrustMaterial),
        entry(
            &t.p("var/lib/secure-ai/registry/models/llama & co <q4>.gguf"),
            Category::ModelFile,
        ),
    ];
    let mut go = Manifest::new("2026-10-01T08:00:00.123456789Z".into(), entries, None);
    go.hmac = hmac_hex(&KEY, &[&go.go_signing_bytes()[0]]);
    let mut stored = serde_json::to_string_pretty(&go).unwrap();
    stored.push('\n');
    t.write(
        "var/lib/secure-ai/integrity/baseline.json",
        stored.as_bytes(),
    );
    t
}

/// `integrity-monitor rebaseline --key FILE --url URL --yes --json`, as root runs it from a
/// script, the token found where the service finds it: its JSON, after checking it succeeded.
/// Without `--yes` and with no terminal to ask on, it approves nothing (exit 2).
fn key_ceremony(t: &Tree, addr: std::net::SocketAddr) -> String {
    let ceremony = |extra: &[&str]| {
        Command::new(monitor_bin())
            .arg("rebaseline")
            .arg("--key")
            .arg(t.p("run/secure-ai/integrity-hmac-key"))
            .args(["--url", &format!("http://{addr}")])
            .args(extra)
            .env("SERVICE_TOKEN_PATH", t.p("run/secure-ai/service-token"))
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let unapproved = ceremony(&[]);
    assert_eq!(unapproved.status.code(), Some(2), "no terminal, no --yes");
    assert!(String::from_utf8_lossy(&unapproved.stderr).contains("--yes"));
    let out = ceremony(&["--yes", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

struct Service(Child, std::net::SocketAddr);

impl Drop for Service {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start(t: &Tree) -> Service {
    let addr = free_addr();
    let mut cmd = Command::new(monitor_bin());
    t.env(&mut cmd, addr);
    let s = Service(cmd.spawn().unwrap(), addr);
    assert!(
        wait_until(Duration::from_secs(20), || get(addr, "/api/v1/verify")
            .map(|r| r.0 == 200)
            .unwrap_or(false)),
        "the upgraded appliance is trusted: {:?}",
        get(addr, "/api/v1/status")
    );
    s
}

#[test]
fn the_go_service_is_replaced_on_an_appliance_shaped_tree() {
    let t = appliance();
    // The appliance's own config passes check-config.
    let mut check = Command::new(monitor_bin());
    t.env(&mut check, free_addr());
    let out = check.arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Firstboot runs the Go flag with the environment alone: the Go-signed baseline verifies
    // and is adopted, not replaced.
    let mut init = Command::new(monitor_bin());
    t.env(&mut init, free_addr());
    let out = init.arg("--initialize-baseline").output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let migrated: Vec<_> = t
        .audit()
        .into_iter()
        .filter(|e| e["event"] == "baseline_migrated")
        .collect();
    assert_eq!(migrated.len(), 1, "{:?}", t.audit());
    assert_eq!(
        t.audit()
            .iter()
            .filter(|e| e["event"] == "initialized")
            .count(),
        0
    );

    // The service, configured by the environment, is trusted on the Go baseline.
    let s = start(&t);
    let status: serde_json::Value =
        serde_json::from_str(&get(s.1, "/api/v1/status").unwrap().1).unwrap();
    assert_eq!(
        status["baseline"]["generation"], 0,
        "the Go baseline, as stored"
    );

    // A short token (the Go service took any length) authorises; the answers say what Go's did.
    let (code, body) = post(s.1, "/api/v1/scan", Some(SHORT_TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    let scan: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            scan["state"].as_str(),
            scan["violations"].as_array().map(Vec::len)
        ),
        (Some("trusted"), Some(0))
    );
    // The Go service took the token for a rebaseline; here the token no longer does it (it
    // crosses the api with every scan), the key ceremony does, as easily as curl.
    assert_eq!(
        post(s.1, "/api/v1/rebaseline", Some(SHORT_TOKEN))
            .unwrap()
            .0,
        403
    );
    let body = key_ceremony(&t, s.1);
    let rb: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (
            rb["result"].as_str(),
            rb["outcome"]["adopted"]["entries"].as_u64()
        ),
        (Some("adopted"), Some(5)),
        "{body}"
    );

    // Re-signed in this format: generation 1, a generation record, our HMAC.
    let stored = std::fs::read(t.p("var/lib/secure-ai/integrity/baseline.json")).unwrap();
    let m = Manifest::parse(&stored).unwrap();
    assert_eq!(m.generation, Some(1));
    m.verify(Some(&KEY)).expect("our format now");
    assert!(t.p("var/lib/secure-ai/integrity/generation.json").exists());

    // A reload that drops a baselined binary: reported removed until a rebaseline.
    t.policy(false);
    let (code, body) = post(s.1, "/api/v1/reload", Some(SHORT_TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"status\":\"reloaded\""), "{body}");
    let scan: serde_json::Value =
        serde_json::from_str(&post(s.1, "/api/v1/scan", Some(SHORT_TOKEN)).unwrap().1).unwrap();
    let removed: Vec<_> = scan["violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["actual_hash"] == "removed")
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        removed,
        vec![t.p("usr/libexec/secure-ai/ui").display().to_string()]
    );
    assert_eq!(get(s.1, "/api/v1/verify").unwrap().0, 503);
    key_ceremony(&t, s.1);
    assert_eq!(get(s.1, "/api/v1/verify").unwrap().0, 200);
}

#[test]
fn a_go_baseline_that_does_not_verify_is_not_adopted() {
    let t = appliance();
    let path = t.p("var/lib/secure-ai/integrity/baseline.json");
    let text = std::fs::read_to_string(&path).unwrap();
    // One entry's size changed: the Go HMAC check is as strict as ours.
    let mut m = Manifest::parse(text.as_bytes()).unwrap();
    let mut entries = m.entries.to_vec();
    entries[0].size += 1;
    m.entries = entries.into();
    std::fs::write(&path, serde_json::to_string_pretty(&m).unwrap()).unwrap();
    let addr = free_addr();
    let mut cmd = Command::new(monitor_bin());
    t.env(&mut cmd, addr);
    let _s = Service(cmd.spawn().unwrap(), addr);
    assert!(wait_until(Duration::from_secs(20), || get(
        addr,
        "/api/v1/status"
    )
    .map(|r| r.1.contains("recovery_required"))
    .unwrap_or(false)));
    assert_eq!(get(addr, "/api/v1/verify").unwrap().0, 503);
    // The audit writer may still be syncing what start-up recorded: wait for it, bounded.
    assert!(
        wait_until(Duration::from_secs(10), || t
            .audit()
            .iter()
            .any(|e| e["event"] == "baseline_rejected")),
        "{:?}",
        t.audit()
    );
    assert!(!t.audit().iter().any(|e| e["event"] == "baseline_migrated"));
}

/// 64 lower-case hex digits and a newline: how the appliance provisions every secret.
fn hex_secret(byte: u8) -> String {
    format!("{}\n", format!("{byte:02x}").repeat(32))
}

/// Today's image: the secrets reach the service as `LoadCredential=` copies
/// (`$CREDENTIALS_DIRECTORY`), the policy still names the old `/run/secure-ai` key path (absent
/// here), and the registry manifest lives outside the model dir. Run as the one-command mode
/// (the api spawns the hasher), which must hand the credentials directory on.
#[test]
fn todays_image_layout_credentials_directory_and_a_manifest_outside_the_model_dir() {
    let t = Tree {
        dir: tempfile::tempdir().unwrap(),
    };
    let r = t.dir.path().display().to_string();
    t.write("usr/libexec/secure-ai/registry", b"#!/bin/sh\n");
    t.write(
        "usr/libexec/secure-ai/secure-tpm-attestation.py",
        b"print()\n",
    );
    t.write("etc/pki/containers/secai-cosign.pub", b"pub\n");
    t.write("var/lib/secure-ai/vault/models/m.gguf", b"weights");
    t.write("var/lib/secure-ai/vault/models/sd/unet/w.bin", b"unet");
    let dir_digest = dir_digest(&[("unet/w.bin", b"unet")]);
    t.write(
        "var/lib/secure-ai/registry/manifest.json",
        format!(
            "{{\"version\":1,\"models\":[{{\"name\":\"m\",\"filename\":\"m.gguf\",\"sha256\":\"{}\",\"size_bytes\":7}},{{\"name\":\"sd\",\"filename\":\"sd\",\"sha256\":\"{dir_digest}\",\"size_bytes\":4}}]}}",
            sha256_hex(b"weights")
        )
        .as_bytes(),
    );
    let policy = format!(
        "version: 1\nscan_interval: \"30s\"\n\
         service_binaries:\n  - {r}/usr/libexec/secure-ai/registry\n  - {r}/usr/libexec/secure-ai/secure-tpm-attestation.py\n\
         policy_files:\n  - {r}/etc/secure-ai/policy/integrity-monitor.yaml\n\
         model_dirs:\n  - {r}/var/lib/secure-ai/vault/models\n\
         registry_manifest: {r}/var/lib/secure-ai/registry/manifest.json\n\
         trust_material:\n  - {r}/etc/pki/containers/secai-cosign.pub\n\
         hmac_key_path: {r}/run/secure-ai/integrity-hmac-key\n\
         degradation_threshold: 3\n"
    );
    t.write(
        "etc/secure-ai/policy/integrity-monitor.yaml",
        policy.as_bytes(),
    );
    let token = hex_secret(0xab);
    t.write("credentials/service-token", token.as_bytes());
    t.write(
        "credentials/integrity-hmac-key",
        hex_secret(0xcd).as_bytes(),
    );
    for s in [
        "credentials/service-token",
        "credentials/integrity-hmac-key",
    ] {
        std::fs::set_permissions(t.p(s), std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
    }
    let run = |cmd: &mut Command, addr: std::net::SocketAddr| {
        cmd.env_clear()
            .env("CREDENTIALS_DIRECTORY", t.p("credentials"))
            .env(
                "MONITOR_POLICY_PATH",
                t.p("etc/secure-ai/policy/integrity-monitor.yaml"),
            )
            .env("BIND_ADDR", addr.to_string())
            .env("AUDIT_LOG_PATH", t.p("logs/audit.jsonl"))
            .env("BASELINE_PATH", t.p("integrity/baseline.json"))
            .stdin(Stdio::null());
    };
    let mut check = Command::new(monitor_bin());
    run(&mut check, free_addr());
    let out = check.arg("check-config").output().unwrap();
    assert!(
        out.status.success(),
        "check-config passes the image's policy shape: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let addr = free_addr();
    let mut cmd = Command::new(monitor_bin());
    run(&mut cmd, addr);
    let _s = Service(cmd.spawn().unwrap(), addr);
    assert!(wait_until(Duration::from_secs(20), || get(addr, "/health")
        .map(|r| r.0 == 200)
        .unwrap_or(false)));
    let bearer = token.trim();
    let (code, body) = post(addr, "/api/v1/scan", Some(bearer)).unwrap();
    assert_eq!(code, 200, "the credential token authorises: {body}");
    let status: serde_json::Value =
        serde_json::from_str(&get(addr, "/api/v1/status").unwrap().1).unwrap();
    assert_eq!(status["state"], "trusted", "{status}");
    assert_eq!(status["signing"], "hmac-sha256", "the credential key signs");
    assert_eq!(get(addr, "/api/v1/verify").unwrap().0, 200);
    // A model tampered in the dir the manifest does not sit in: not trusted.
    t.write("var/lib/secure-ai/vault/models/sd/unet/w.bin", b"UNET");
    let (_, body) = post(addr, "/api/v1/scan", Some(bearer)).unwrap();
    assert!(body.contains("\"state\":\"degraded\""), "{body}");
    assert!(body.contains("/vault/models/sd"), "{body}");
    assert_eq!(get(addr, "/api/v1/verify").unwrap().0, 503);
}

/// The operations guide's rotation leaves the token `chmod 0640` at `/run/secure-ai/`: group
/// read is accepted, world read is not.
#[test]
fn a_legacy_token_with_group_read_is_accepted_and_one_with_world_read_is_refused() {
    for (mode, works) in [(0o640, true), (0o644, false)] {
        let t = appliance();
        std::fs::set_permissions(
            t.p("run/secure-ai/service-token"),
            std::os::unix::fs::PermissionsExt::from_mode(mode),
        )
        .unwrap();
        let addr = free_addr();
        let mut cmd = Command::new(monitor_bin());
        t.env(&mut cmd, addr);
        if works {
            let s = start(&t);
            assert_eq!(post(s.1, "/api/v1/scan", Some(SHORT_TOKEN)).unwrap().0, 200);
        } else {
            let out = cmd.stderr(Stdio::piped()).output().unwrap();
            assert_eq!(out.status.code(), Some(78), "{mode:o}");
            assert!(String::from_utf8_lossy(&out.stderr).contains("0644"));
        }
    }
}
