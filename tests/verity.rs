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
    let out = Command::new("bash")
        .arg(src.join("tests/verity/boot-vm.sh"))
        .env("PAYLOAD", src.join("tests/verity/inside.sh"))
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
