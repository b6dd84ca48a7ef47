//! Whole-system tests of start-up and faults: bad keys, policies, stores and baselines, lost hashers, secrets kept out of reach.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use protocol::baseline::Manifest;

#[test]
fn reload_with_a_broken_policy_keeps_the_old_one() {
    let a = Appliance::new();
    let m = Running::start(&a);
    a.write(
        "etc/monitor.yaml",
        &a.policy_text("degradation_threshold_typo: 1\n"),
    );
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("degradation_threshold_typo"), "{body}");
    assert_eq!(a.count_events("reload_refused"), 1);
    assert_eq!(m.status()["degradation_threshold"], 3);
    assert_eq!(m.scan()["state"], "trusted");

    let text = a
        .policy_text("")
        .replace("degradation_threshold: 3", "degradation_threshold: 1");
    a.write("etc/monitor.yaml", &text);
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(m.status()["degradation_threshold"], 1);
    tamper(&a, BINARIES[0]);
    assert_eq!(m.scan()["state"], "recovery_required");
}

#[test]
fn tampered_or_unsigned_stored_baseline_starts_in_recovery_required() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    let stored = a.path("state/baseline.json");
    let text = std::fs::read_to_string(&stored).unwrap();
    // Re-bless a tampered binary by editing its hash in the stored manifest.
    tamper(&a, BINARIES[0]);
    let mut manifest = Manifest::parse(text.as_bytes()).unwrap();
    let mut entries = manifest.entries.to_vec();
    entries[0].hash = protocol::hexfmt::Sha256Digest([0; 32]);
    manifest.entries = entries.into();
    std::fs::write(&stored, manifest.to_json()).unwrap();
    let m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "recovery_required", "{s}");
    assert_eq!(m.verify_code(), 503);
    assert_eq!(a.count_events("baseline_rejected"), 1);
    assert_eq!(get(m.addr, "/api/v1/baseline").unwrap().0, 404);
    // Authorised rebaseline is the way out.
    restore_binary(&a, BINARIES[0]);
    assert_eq!(rebaseline(m.addr, &a.key()).unwrap().0, 200);
    assert_eq!(m.status()["state"], "trusted");
    drop(m);

    // An unsigned manifest is never accepted while a key exists.
    let mut manifest = Manifest::parse(std::fs::read(&stored).unwrap().as_slice()).unwrap();
    manifest.hmac = "unsigned".into();
    std::fs::write(&stored, manifest.to_json()).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "recovery_required");
    assert!(m.status()["baseline_problem"]
        .as_str()
        .unwrap()
        .contains("unsigned"));
}

#[test]
fn without_a_key_everything_is_marked_unsigned_and_a_later_key_rejects_it() {
    let a = Appliance::new();
    std::fs::remove_file(a.path("secret/key")).unwrap();
    let mut m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["signing"], "unsigned");
    assert_eq!(s["baseline"]["signed"], false);
    assert_eq!(s["last_report"]["hmac"], "unsigned");
    assert_eq!(a.count_events("hmac_key_absent"), 1);
    assert_eq!(a.count_events("baseline_unsigned"), 1);
    m.stop_cleanly();
    std::fs::write(a.path("secret/key"), [7u8; 32]).unwrap();
    std::fs::set_permissions(
        a.path("secret/key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "recovery_required");
}

#[test]
fn unusable_key_or_policy_exits_78_naming_the_problem() {
    let short_key = Appliance::new();
    std::fs::write(short_key.path("secret/key"), [1u8; 8]).unwrap();
    let zero_threshold = Appliance::new();
    zero_threshold.write(
        "etc/monitor.yaml",
        &zero_threshold
            .policy_text("")
            .replace("degradation_threshold: 3", "degradation_threshold: 0"),
    );
    // A key or token that others may read is refused, as ssh refuses such a key.
    let exposed_key = Appliance::new();
    let exposed_token = Appliance::new();
    for (a, secret) in [
        (&exposed_key, "secret/key"),
        (&exposed_token, "secret/token"),
    ] {
        std::fs::set_permissions(
            a.path(secret),
            std::os::unix::fs::PermissionsExt::from_mode(0o644),
        )
        .unwrap();
    }
    for (what, a) in [
        ("key", &short_key),
        ("degradation_threshold", &zero_threshold),
        ("chmod 600", &exposed_key),
        ("service token", &exposed_token),
    ] {
        let out = std::process::Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {stderr}");
        assert!(stderr.contains(what), "{what}: {stderr}");
    }
    let a = Appliance::new();
    std::fs::remove_file(a.path("etc/monitor.yaml")).unwrap();
    let out = std::process::Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(78),
        "missing policy is an error, not defaults"
    );
}

#[test]
fn hasher_killed_means_503_within_a_second_then_exit_nonzero() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    let pid = m.hasher_pid();
    // SAFETY: kill(2) on the hasher child of our own child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let start = std::time::Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || m.verify_code() != 200),
        "/verify still 200 a second after the hasher died"
    );
    let elapsed = start.elapsed();
    let status = m
        .wait_exit(Duration::from_secs(10))
        .expect("api exits so the pair is restarted");
    assert_eq!(status.code(), Some(1), "{status} after {elapsed:?}");
    assert_eq!(a.count_events("hasher_lost"), 1);
}

#[test]
fn sigterm_stops_cleanly_and_records_it() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    m.stop_cleanly();
    let events = a.audit_events();
    assert_eq!(events.last().unwrap()["event"], "stop");
    assert_eq!(
        a.count_events("hasher_lost"),
        0,
        "an orderly stop is not a finding"
    );
    // A first start is an initialization, not a "rebaseline".
    let first = events.iter().find(|e| e["event"] == "transition").unwrap();
    assert_eq!(first["reason"], "initialized", "{first}");
}

#[test]
fn rebaseline_cannot_bless_what_the_release_baseline_disagrees_with() {
    let a = Appliance::new();
    let bin = a.path(BINARIES[0]);
    let release = |content: &[u8]| {
        let digest = protocol::sign::sha256_hex(content);
        format!(
            "{{\"version\":1,\"source_commit\":\"0123456789abcdef0123456789abcdef01234567\",\"files\":[{{\"path\":\"{}\",\"sha256\":\"{digest}\",\"size\":{}}}]}}",
            bin.display(),
            content.len()
        )
    };
    a.write(
        "release/release-baseline.json",
        &release(&std::fs::read(&bin).unwrap()),
    );
    a.write_policy(&format!(
        "scan_interval: 1h\nrelease_baseline: {}\n",
        a.path("release/release-baseline.json").display()
    ));
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "trusted");
    a.write(BINARIES[0], "implant");
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains(&path_str(&bin)) && body.contains("0123456789abcdef0123456789abcdef01234567"),
        "{body}"
    );
    assert_eq!(a.count_events("rebaseline_refused"), 1);
    assert_eq!(m.scan()["state"], "degraded", "still flagged, not blessed");
    // An OS update ships a release baseline that matches: accepted without a ceremony.
    a.write("release/release-baseline.json", &release(b"implant"));
    let (code, body) = rebaseline(m.addr, &a.key()).unwrap();
    assert_eq!(code, 200, "{body}");
    assert_eq!(m.status()["state"], "trusted");
}

#[test]
fn a_relative_policy_path_works() {
    let a = Appliance::new();
    let handed = Handed::new();
    let addr = handed.addr;
    let mut args = a.args(addr);
    let i = args.iter().position(|x| x == "--policy").unwrap();
    args[i + 1] = "etc/monitor.yaml".into();
    let mut inner = std::process::Command::new(monitor_bin());
    inner.args(&args).current_dir(a.dir.path());
    let mut child = handed.command(&inner).spawn().unwrap();
    let ok = wait_until(Duration::from_secs(10), || {
        get(addr, "/api/v1/verify")
            .map(|r| r.0 == 200)
            .unwrap_or(false)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        ok,
        "a policy given relative to the working dir still lets the hasher read its tree"
    );
}

#[test]
fn a_model_subdir_swapped_for_a_symlink_to_the_secrets_leaks_nothing() {
    let a = Appliance::new();
    let m = Running::start(&a);
    // The key is longer than 64 bytes: HMAC keys with its SHA-256, so that digest is the key.
    let long_key = [0x42u8; 65];
    let secret_digests = [
        protocol::sign::sha256_hex(&long_key),
        protocol::sign::sha256_hex(&[0x42u8; 32]),
        protocol::sign::sha256_hex(TOKEN.as_bytes()),
    ];
    std::fs::rename(a.path("models/sub"), a.path("sub.moved")).unwrap();
    std::os::unix::fs::symlink(a.path("secret"), a.path("models/sub")).unwrap();
    m.scan();
    let status = m.status();
    assert_eq!(
        violations_with(&status, "symlink"),
        vec![a.path("models/sub").display().to_string()],
        "{status}"
    );
    let text = format!(
        "{status}{}",
        std::fs::read_to_string(a.audit_log()).unwrap()
    );
    assert!(
        !text.contains("secret/key"),
        "nothing beneath the symlink was listed"
    );
    for d in &secret_digests {
        assert!(
            !text.contains(d.as_str()),
            "a secret's digest reached the api"
        );
    }
    assert_eq!(m.verify_code(), 503);
}

/// Unmounts a bind mount the test made, even when the test fails.
struct BindMount(std::path::PathBuf);
impl Drop for BindMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// The start check compares the read set with the secrets and every directory above them by
/// device and inode: every spelling of the secrets' directory is refused with exit 78 naming
/// the secret, and the same spellings in check-config. Run as root (the bind mount).
#[test]
fn a_policy_whose_read_set_would_cover_a_secret_is_refused_under_any_spelling() {
    let a = Appliance::new();
    let r = a.dir.path().display().to_string();
    std::fs::create_dir(a.path("alias")).unwrap();
    let bind = Command::new("mount")
        .args(["--bind", &format!("{r}/secret"), &format!("{r}/alias")])
        .status()
        .unwrap();
    assert!(bind.success(), "mount --bind (run as root)");
    let _bind = BindMount(a.path("alias"));
    assert!(a.path("alias/key").exists(), "the bind mount shows the key");
    std::os::unix::fs::symlink(a.path("secret"), a.path("link")).unwrap();
    let model_dir = |dir: &str| {
        a.policy_text("").replace(
            &format!("  - {r}/models\n"),
            &format!("  - {r}/models\n  - {dir}\n"),
        )
    };
    let spellings = [
        ("the secrets' directory", model_dir(&format!("{r}/secret"))),
        (
            "a /proc/self/root alias as a model dir",
            model_dir(&format!("/proc/self/root{r}/secret")),
        ),
        (
            "a /proc/self/root alias as a listed file's directory",
            a.policy_text("").replace(
                &format!("  - {r}/trust/cosign.pub\n"),
                &format!("  - {r}/trust/cosign.pub\n  - /proc/self/root{r}/secret/cosign.pub\n"),
            ),
        ),
        ("a bind mount", model_dir(&format!("{r}/alias"))),
        ("a symlink", model_dir(&format!("{r}/link"))),
        ("the root by /proc", model_dir("/proc/self/root")),
    ];
    for (what, text) in spellings {
        a.write("etc/monitor.yaml", &text);
        let out = Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        assert!(
            err.contains(&format!("{r}/secret/key")) && err.contains("read a secret"),
            "{what}: names the secret: {err}"
        );
        let out = Command::new(monitor_bin())
            .args([
                "check-config",
                "--policy",
                &path_str(&a.path("etc/monitor.yaml")),
            ])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "check-config, {what}: {err}");
        assert!(
            err.contains(&format!("{r}/secret/key")),
            "check-config, {what}: names the secret: {err}"
        );
    }
    // A /proc path that aliases no secret is refused too, naming it.
    a.write("etc/monitor.yaml", &model_dir("/proc/sys/kernel"));
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "/proc/sys/kernel: {err}");
    assert!(
        err.contains("/proc/sys/kernel") && err.contains("in /proc"),
        "{err}"
    );
    // The control: the same tree without the extra directory starts.
    a.write_policy("");
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
}

#[test]
fn a_second_monitor_on_the_same_log_is_refused_naming_the_first() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("pid {}", m.child.id())),
        "names the running one: {err}"
    );
    assert_eq!(m.verify_code(), 200, "the first one is untouched");
}

#[test]
fn an_unusable_store_or_audit_dir_is_a_configuration_error_naming_the_path() {
    // (Run as root, a permission bit cannot stop us: a file where the directory must be can.)
    for (what, blocker) in [("state dir", "state"), ("audit log", "logs")] {
        let a = Appliance::new();
        a.write(blocker, "not a directory");
        let out = Command::new(monitor_bin())
            .args(a.args(free_addr()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(78), "{what}: {err}");
        assert!(
            err.contains(&a.path(blocker).display().to_string()),
            "{what}: names the path: {err}"
        );
        assert_eq!(
            a.count_events("hasher_lost"),
            0,
            "{what}: not blamed on the hasher"
        );
    }
}
