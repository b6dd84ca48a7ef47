//! Sealed models under a kernel with fs-verity (this machine's has none): Debian's cloud
//! kernel boots under qemu (`tests/verity/boot-vm.sh`) twice on one disk, and
//! `tests/verity/inside.sh` checks, as the appliance would meet them, sealing, the baseline,
//! the forced scan after a real reboot reading 0 bytes of sealed models, a sealed replacement,
//! an unsealed copy, `fsverity: require`, a block edited offline, and the hasher's ioctl filter.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

/// Boots the VM once with `phase` as its argument; the console.
fn boot(src: &Path, disk: &Path, phase: &str) -> String {
    boot_with(src, disk, phase, "inside.sh", None)
}

/// As [`boot`], running `payload`, with a vTPM whose state is kept in `tpm` when given.
fn boot_with(src: &Path, disk: &Path, phase: &str, payload: &str, tpm: Option<&Path>) -> String {
    let which = |tool: &str| {
        let out = Command::new("sh")
            .args(["-c", &format!("command -v {tool} || echo /sbin/{tool}")])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let bins = [
        common::monitor_bin().display().to_string(),
        common::hasher_bin().display().to_string(),
        which("curl"),
        which("debugfs"),
    ]
    .join(" ");
    let mut cmd = Command::new("bash");
    if let Some(state) = tpm {
        cmd.env("TPM", "1").env("TPM_STATE", state);
    }
    let out = cmd
        .arg(src.join("tests/verity/boot-vm.sh"))
        .env("PAYLOAD", src.join("tests/verity").join(payload))
        .env("BINS", bins)
        .env("DISK", disk)
        .env("ARGS", phase)
        .env("TIMEOUT", "240")
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("{}", String::from_utf8_lossy(&out.stderr));
    println!("--- {phase} ---\n{stdout}");
    assert!(
        out.status.success(),
        "boot-vm.sh ({phase}) exited {:?}",
        out.status
    );
    stdout
}

#[test]
fn sealed_models_are_trusted_after_a_reboot_without_a_read() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(600 << 20)
        .unwrap();
    let mut console = boot(&src, &disk, "prepare");
    console.push_str(&boot(&src, &disk, "reboot"));
    let passed = console.lines().filter(|l| l.starts_with("PASS ")).count();
    let failed: Vec<&str> = console.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(failed.is_empty(), "under a verity kernel: {failed:#?}");
    // Every check ran: one that silently did not is a failure too.
    let expected = std::fs::read_to_string(src.join("tests/verity/inside.sh"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("check "))
        .count();
    assert_eq!(passed, expected, "every check of inside.sh passed");
}

/// The TPM counter on a real kernel TPM device (a vTPM, /dev/tpmrm0 in the guest): store, audit
/// log and memory rolled back together after two rebaselines are caught, and still after a
/// reboot with the same TPM state; `tpm: require` without a TPM exits 78
/// (`tests/verity/tpm.sh`).
#[test]
fn a_rollback_is_caught_by_the_vtpm_across_a_reboot() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let state = dir.path().join("tpm");
    let mut console = boot_with(&src, &disk, "tpm-prepare", "tpm.sh", Some(&state));
    console.push_str(&boot_with(
        &src,
        &disk,
        "tpm-reboot",
        "tpm.sh",
        Some(&state),
    ));
    let passed = console.lines().filter(|l| l.starts_with("PASS ")).count();
    let failed: Vec<&str> = console.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(failed.is_empty(), "with a vTPM: {failed:#?}");
    let expected = std::fs::read_to_string(src.join("tests/verity/tpm.sh"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("check "))
        .count();
    assert_eq!(passed, expected, "every check of tpm.sh passed");
}
