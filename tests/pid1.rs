//! The units exactly as shipped, under a real systemd 252 running as PID 1 of a
//! `systemd-nspawn` container (`tests/pid1/boot.sh`; the checks are `tests/pid1/inside.sh`).
//! The Debian 12 rootfs is made once and cached (`tests/pid1/rootfs.sh`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::Command;

#[test]
fn units_as_shipped_run_under_systemd_as_pid1() {
    let bin = common::monitor_bin();
    // Proves the hasher was built beside it.
    let _ = common::hasher_bin();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let out = Command::new("bash")
        .arg(src.join("tests/pid1/boot.sh"))
        .env("BIN", bin.parent().unwrap())
        .env("SRC", &src)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    let passed = stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    let failed: Vec<&str> = stdout.lines().filter(|l| l.starts_with("FAIL ")).collect();
    assert!(failed.is_empty(), "under systemd as PID 1: {failed:#?}");
    assert!(out.status.success(), "boot.sh exited {:?}", out.status);
    // Every check in inside.sh ran: a check that silently did not run is a failure too.
    let expected = std::fs::read_to_string(src.join("tests/pid1/inside.sh"))
        .unwrap()
        .lines()
        .filter(|l| l.trim_start().starts_with("check "))
        .count();
    assert_eq!(passed, expected, "every check of inside.sh passed");
}
