//! Whole-system tests of large files: threads, chunks, restarts that read only what changed, writes during long reads.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use protocol::baseline::Manifest;

#[test]
fn large_models_hashed_on_several_threads_inside_the_sandbox() {
    // Several files needing a full read at once: the worker threads run inside the sandbox.
    let a = Appliance::with_options("scan_interval: 1h\nhash_threads: 3\n");
    let big: Vec<u8> = (0..6u32 << 20).map(|i| (i % 253) as u8).collect();
    for i in 0..3 {
        std::fs::write(a.path(&format!("models/big{i}.gguf")), &big).unwrap();
    }
    let m = Running::start(&a);
    let hasher = m.hasher_pid();
    let s = m.status();
    assert_eq!(
        (s["state"].as_str(), s["watched_files"].as_u64()),
        (Some("trusted"), Some(12)),
        "{s}"
    );

    // Same size, one byte changed in the middle: only a full read can see it.
    let mut changed = big.clone();
    changed[3 << 20] ^= 1;
    std::fs::write(a.path("models/big1.gguf"), &changed).unwrap();
    let s = m.scan();
    assert_eq!(s["state"], "degraded", "{s}");
    assert_eq!(
        s["active_violations"][0]["path"],
        path_str(&a.path("models/big1.gguf"))
    );
    std::fs::write(a.path("models/big1.gguf"), &big).unwrap();
    assert_eq!(m.scan()["state"], "trusted");
    // The restore's last inotify events may arrive after that scan: /verify is 503 until the
    // api has had the announced change checked (at once), then 200.
    assert!(
        wait_until(Duration::from_secs(10), || m.verify_code() == 200),
        "trusted after the restore"
    );
    assert_eq!(
        m.hasher_pid(),
        hasher,
        "the same hasher, alive after its threads ran"
    );
}

#[test]
fn a_large_model_is_reverified_on_every_thread_inside_the_sandbox() {
    use std::os::unix::fs::FileExt;
    // Above the chunked size (128 MiB): its re-verification reads 64 MiB chunks on two threads,
    // with pread, under the hasher's seccomp filter.
    let a = Appliance::with_options("scan_interval: 1h\nhash_threads: 2\n");
    let size = (129u64 << 20) as usize;
    let data: Vec<u8> = (0..size).map(|i| (i % 241) as u8).collect();
    std::fs::write(a.path("models/huge.gguf"), &data).unwrap();
    let m = Running::start(&a);
    let hasher = m.hasher_pid();
    assert_eq!(m.verify_code(), 200);
    let poke = |at: u64, byte: u8| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(a.path("models/huge.gguf"))
            .unwrap()
            .write_all_at(&[byte], at)
            .unwrap()
    };
    // In the second chunk: the chunks find it; the report gives the new whole-file digest.
    let at = (64u64 << 20) + 99;
    poke(at, data[at as usize] ^ 1);
    let s = m.scan();
    assert_eq!(s["state"], "degraded", "{s}");
    let mut changed = data.clone();
    changed[at as usize] ^= 1;
    let digest = protocol::sign::sha256_hex(&changed);
    assert_eq!(
        s["active_violations"][0]["actual_hash"],
        digest.as_str(),
        "{s}"
    );
    // Restored: read whole (its chunks are the changed content's), back to trusted.
    poke(at, data[at as usize]);
    assert_eq!(m.scan()["state"], "trusted");
    // Written again with the same bytes: the event makes it re-verified, by its chunks.
    poke(at, data[at as usize]);
    assert_eq!(m.scan()["state"], "trusted");
    // The write's notice may arrive while that scan reads the file (on a loaded machine): it
    // is not taken as covered by it, and the next check of the change settles it.
    assert!(
        wait_until(Duration::from_secs(10), || m.verify_code() == 200),
        "{}",
        m.status()
    );
    assert_eq!(
        m.hasher_pid(),
        hasher,
        "the same hasher, its threads not killed"
    );
}

#[test]
fn a_write_through_mmap_that_no_event_announces_is_found_by_the_sweep() {
    // A shared mapping written in place: same size, no inotify event; the kernel still sets
    // a new ctime, which the sweep (spread over the 2 s interval) sees and reads.
    let a = Appliance::with_options("scan_interval: 2s\n");
    let m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(a.path("models/sub/b.gguf"))
        .unwrap();
    let len = file.metadata().unwrap().len() as usize;
    // SAFETY: a fresh shared mapping of `len` bytes of a file this test opened read-write;
    // it is written within bounds, synced and unmapped before the file is closed.
    unsafe {
        use std::os::fd::AsRawFd;
        let p = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(p, libc::MAP_FAILED);
        *(p as *mut u8) ^= 0x20;
        assert_eq!(libc::msync(p, len, libc::MS_SYNC), 0);
        assert_eq!(libc::munmap(p, len), 0);
    }
    assert!(
        wait_until(Duration::from_secs(10), || {
            let s = m.status();
            s["violation_count"] == 1
                && s["active_violations"][0]["path"]
                    .as_str()
                    .is_some_and(|p| p.ends_with("models/sub/b.gguf"))
        }),
        "found within a few intervals: {}",
        m.status()
    );
    assert_eq!(m.verify_code(), 503);
}

/// The hasher's metric `name` as the api serves it.
fn metric(m: &Running, name: &str) -> u64 {
    let (_, body) = get(m.addr, "/metrics").unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix(&format!("integrity_monitor_{name} ")))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no {name} in {body}")) as u64
}

#[test]
fn a_restart_within_the_boot_reads_only_what_changed_while_it_was_down() {
    let a = Appliance::new();
    let mut m = Running::start(&a);
    // Making the baseline read everything; its first sweep, nothing again.
    assert_eq!(metric(&m, "bytes_hashed_total"), 0);
    let text = std::fs::read_to_string(a.path("state/baseline.json")).unwrap();
    let manifest = Manifest::parse(text.as_bytes()).unwrap();
    let everything: u64 = manifest.entries.iter().map(|e| e.size).sum();
    m.scan(); // a full sweep keeps what it verified, signed, for a restart
    m.stop_cleanly();
    assert!(a.path("state/versions.bin").exists());
    // Changed while the monitor was down, same size: only a read can tell.
    a.write("models/a.gguf", "model b");
    let mut m = Running::start(&a);
    let s = m.status();
    assert_eq!(s["state"], "degraded", "{s}");
    let paths: Vec<&str> = s["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v["path"].as_str())
        .collect();
    assert_eq!(
        paths,
        vec![a.path("models/a.gguf").display().to_string()],
        "{s}"
    );
    assert_eq!(
        metric(&m, "bytes_hashed_total"),
        "model b".len() as u64,
        "only the file whose version changed was read"
    );
    m.stop_cleanly();
    // A forged or damaged record is refused: every file is read again.
    let path = a.path("state/versions.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] = if bytes[last] == b'0' { b'1' } else { b'0' };
    std::fs::write(&path, &bytes).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "degraded");
    assert_eq!(metric(&m, "bytes_hashed_total"), everything);
}

/// An appliance with `options` and a sparse `len`-byte model (no disk; a read of it costs
/// only hashing), its monitor started and trusted.
fn with_sparse_model(options: &str, len: u64) -> (Appliance, std::path::PathBuf, Running) {
    let a = Appliance::with_options(options);
    let model = a.path("models/big.gguf");
    std::fs::File::create(&model).unwrap().set_len(len).unwrap();
    let m = Running::start(&a);
    assert_eq!(m.verify_code(), 200);
    (a, model, m)
}

/// Bytes read by a restart after a `len`-byte (sparse) model was changed in mode, read again
/// and verified, and the monitor then stopped by `stop`: nothing changed while it was down.
fn read_on_restart_after_a_verified_change(len: u64, stop: impl FnOnce(&mut Running)) -> u64 {
    use std::os::unix::fs::PermissionsExt;
    let (a, model, mut m) = with_sparse_model("scan_interval: 1h\n", len);
    assert!(
        a.path("state/versions.bin").exists(),
        "kept at the first sweep"
    );
    // A new version (its ctime moves), read again and verified within the minutes before
    // the next periodic save.
    std::fs::set_permissions(&model, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || metric(&m, "bytes_hashed_total")
            >= len),
        "the changed file was read again"
    );
    assert_eq!(m.verify_code(), 200);
    stop(&mut m);
    let m = Running::start(&a);
    assert_eq!(m.status()["state"], "trusted");
    metric(&m, "bytes_hashed_total")
}

#[test]
fn a_clean_stop_keeps_what_was_verified_since_the_last_save() {
    assert_eq!(
        read_on_restart_after_a_verified_change(4096, Running::stop_cleanly),
        0,
        "the version verified before the stop was kept when the api closed the channel"
    );
}

#[test]
fn a_large_read_is_kept_for_a_restart_even_if_the_hasher_is_killed() {
    // 2 GiB: reading it again on a restart would cost more than keeping the record.
    let killed = |m: &mut Running| {
        let pid = m.hasher_pid();
        // SAFETY: kill(2) on the hasher child of our own child: no clean stop, no save.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        m.wait_exit(Duration::from_secs(10))
            .expect("the api exits when its hasher dies");
    };
    assert_eq!(
        read_on_restart_after_a_verified_change(2 << 30, killed),
        0,
        "the 2 GiB verified after the last periodic save were kept once read"
    );
}

#[test]
fn a_write_while_a_large_file_is_read_is_announced_before_the_read_ends() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    use std::time::Instant;
    // 4 GiB, sparse (no disk, seconds to hash), one thread: a read of it takes seconds.
    let (_a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", 4 << 30);
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let before = m.status();
    let (scans, notices) = (
        count(&before, "scan_count"),
        count(&before, "change_notices"),
    );
    // Its mode set again: an event, the content unchanged; the hasher reads it all again.
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || count(
        &m.status(),
        "change_notices"
    ) > notices));
    std::thread::sleep(Duration::from_millis(300));
    let during = m.status();
    assert_eq!(
        count(&during, "scan_count"),
        scans,
        "the read of 4 GiB ended within 300 ms: this machine is too fast for the test to show anything"
    );
    // Behind the read (offset 0 is hashed already). The read may see at its end that the file
    // changed under it; the notice must not wait for that.
    let file = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    file.write_all_at(&[1], 0).unwrap();
    let announced = Instant::now();
    assert!(wait_until(Duration::from_secs(60), || {
        let s = m.status();
        count(&s, "change_notices") > count(&during, "change_notices")
            || count(&s, "scan_count") > scans
    }));
    let s = m.status();
    assert!(
        count(&s, "change_notices") > count(&during, "change_notices")
            && count(&s, "scan_count") == scans,
        "the write must be announced while the read runs, not after it: {s}"
    );
    assert_eq!(m.verify_code(), 503, "{s}");
    eprintln!("write announced in {:?}", announced.elapsed());
    // The read that was under way is not taken as the last word: the edit is found.
    assert!(wait_until(Duration::from_secs(60), || m.status()["state"]
        == "degraded"));
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_change_announced_while_a_scan_runs_is_not_taken_as_covered_by_it() {
    use std::os::unix::fs::PermissionsExt;
    // 4 GiB, sparse, one thread: the scan a change of its mode asks for runs for seconds.
    let (a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", 4 << 30);
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let scans = count(&m.status(), "scan_count");
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(wait_until(Duration::from_secs(10), || m.verify_code() == 503));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        count(&m.status(), "scan_count"),
        scans,
        "the read of 4 GiB ended within 300 ms: this machine is too fast for the test"
    );
    // Another file changed while that scan reads the large one: the scan does not look at it,
    // so its report must not make the appliance trusted.
    a.write("models/a.gguf", "model b");
    let mut codes = Vec::new();
    let found = wait_until(Duration::from_secs(60), || {
        codes.push(m.verify_code());
        m.status()["state"] == "degraded"
    });
    let s = m.status();
    assert!(found, "the change was never checked: {s}");
    assert!(
        count(&s, "scan_count") > scans + 1,
        "a scan after the one under way found it: {s}"
    );
    assert!(
        !codes.contains(&200),
        "/verify answered 200 with the change unchecked"
    );
    assert_eq!(m.verify_code(), 503);
}

#[test]
fn a_write_during_a_large_read_ends_that_read_and_one_more_read_settles_it() {
    use std::os::unix::fs::{FileExt, PermissionsExt};
    // 4 GiB, sparse (no disk, seconds to hash), one thread: a read of it takes seconds.
    let len: u64 = 4 << 30;
    let (_a, huge, m) = with_sparse_model("scan_interval: 1h\nhash_threads: 1\n", len);
    let hasher = m.hasher_pid();
    let count = |s: &serde_json::Value, k: &str| s[k].as_u64().unwrap();
    let scans = count(&m.status(), "scan_count");
    // Its mode set again: an event, the content unchanged; the hasher reads it all again.
    let start = bytes_read(hasher);
    std::fs::set_permissions(&huge, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(
        wait_until(Duration::from_secs(30), || bytes_read(hasher)
            > start + (256 << 20)),
        "the hasher read the file again"
    );
    assert_eq!(
        count(&m.status(), "scan_count"),
        scans,
        "the read of 4 GiB ended before the write: this machine is too fast for the test"
    );
    // The byte at offset 0 written again, the same: the content is what was baselined, but the
    // read under way began before the write and cannot settle it.
    let from = bytes_read(hasher);
    let file = std::fs::OpenOptions::new().write(true).open(&huge).unwrap();
    file.write_all_at(&[0], 0).unwrap();
    assert!(
        wait_until(Duration::from_secs(120), || m.verify_code() == 200),
        "never trusted again: {}",
        m.status()
    );
    assert_eq!(m.status()["state"], "trusted");
    // The read under way stops at the write (within a look, 200 ms); one whole read settles it.
    // Read to its end, it would have been most of 4 GiB more, then the whole file once more.
    let read_since = bytes_read(hasher) - from;
    assert!(
        read_since < len + len / 2,
        "{read_since} bytes read between the write and trusted, for a {len}-byte file"
    );
}

/// Bytes the process `pid` has read so far (`rchar` of `/proc/PID/io`).
fn bytes_read(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[test]
fn a_write_while_the_backstop_reads_a_large_file_is_announced_at_once() {
    use std::time::Instant;
    // The backstop re-reads the 4 GiB file (sparse: no disk) every second or two, in the
    // spread sweep's slices between requests, one thread: each read takes seconds.
    let (a, _huge, m) = with_sparse_model(
        "scan_interval: 3s\nfull_rehash_interval: 2s\nhash_threads: 1\n",
        4 << 30,
    );
    let hasher = m.hasher_pid();
    // Wait until a read of it is under way.
    let start = bytes_read(hasher);
    assert!(
        wait_until(Duration::from_secs(30), || bytes_read(hasher)
            > start + (256 << 20)),
        "the backstop read the large file again"
    );
    let reading_from = bytes_read(hasher);
    // A small file changed while the hasher is busy reading the large one.
    a.write("models/a.gguf", "model b");
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(30), || m.verify_code() == 503),
        "never 503"
    );
    let took = t.elapsed();
    let read_since = bytes_read(hasher) - reading_from;
    assert!(
        took < Duration::from_millis(500) && read_since < (3 << 30),
        "503 came {took:?} after the write, once the hasher had read {read_since} more bytes \
         (the read of the large file ended first)"
    );
}
