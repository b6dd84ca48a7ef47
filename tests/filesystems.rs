//! Filesystems and links inotify cannot see through (#37), on the real binaries: a model dir
//! on tmpfs (mounted by the test) is read at every sweep, so a write through a shared mapping
//! that moves no timestamp is still found; a write through a hard link outside the model dir
//! (on ext4, loop-mounted by the test) is seen at once by the file's own watch; FUSE is refused
//! at start and reported inside a model dir; a settle window shorter than the kernel's
//! writeback window is refused, naming the key and the window.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

fn run(cmd: &mut Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Mounts, undone in reverse order when dropped (a failed assertion leaves no mount behind).
#[derive(Default)]
struct Mounts(Vec<PathBuf>);

impl Mounts {
    fn mount(&mut self, args: &[&str], at: &Path) {
        run(Command::new("mount").args(args).arg(at));
        self.0.push(at.to_owned());
    }

    /// `bindfs` (FUSE) of `from` at `at`, over what `at` holds.
    fn bindfs(&mut self, from: &Path, at: &Path) {
        run(Command::new("bindfs")
            .args(["-o", "nonempty"])
            .arg(from)
            .arg(at));
        self.0.push(at.to_owned());
    }
}

impl Drop for Mounts {
    fn drop(&mut self) {
        for at in self.0.iter().rev() {
            let _ = Command::new("umount").arg("-l").arg(at).status();
        }
    }
}

/// The appliance with its model dir moved onto a volume of `fs` (a tmpfs, or a loop-mounted
/// ext4): `vol/models` bound at `models`, and `vol/outside` beside it on the same volume, where
/// a hard link to a model is outside every watched directory. The models are written anew.
fn on_volume(a: &Appliance, fs: &str, mounts: &mut Mounts) -> PathBuf {
    let vol = a.path("vol");
    std::fs::create_dir_all(&vol).unwrap();
    match fs {
        "tmpfs" => mounts.mount(&["-t", "tmpfs", "-o", "size=64m", "tmpfs"], &vol),
        "ext4" => {
            let image = a.path("ext4.img");
            std::fs::File::create(&image)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
            mounts.mount(&["-o", "loop", image.to_str().unwrap()], &vol);
        }
        other => panic!("{other}"),
    }
    for d in ["models/sub", "outside"] {
        std::fs::create_dir_all(vol.join(d)).unwrap();
    }
    mounts.mount(
        &["--bind", vol.join("models").to_str().unwrap()],
        &a.path("models"),
    );
    a.write("models/a.gguf", "model a");
    a.write("models/sub/b.gguf", "model b");
    vol
}

/// [`on_volume`], and `models/a.gguf` linked from `vol/outside/a-link.gguf`: the volume and the
/// link.
fn linked_volume(a: &Appliance, fs: &str, mounts: &mut Mounts) -> (PathBuf, PathBuf) {
    let vol = on_volume(a, fs, mounts);
    let link = vol.join("outside/a-link.gguf");
    // Linked on the volume: link(2) refuses to cross mounts, even of one filesystem.
    std::fs::hard_link(vol.join("models/a.gguf"), &link).unwrap();
    (vol, link)
}

fn ctime(p: &Path) -> (i64, i64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(p).unwrap();
    (m.ctime(), m.ctime_nsec())
}

/// tmpfs has no writeback, so nothing ever write-protects a shared mapping of its files: after
/// the first write fault (which moves the times, and which the hasher reads), every later
/// write through the mapping is silent — no timestamp, no event, no fault. Files there are
/// read in full at every sweep, so the tampering, made through a hard link outside the model
/// dir, is found by the next scan.
#[test]
fn a_model_on_tmpfs_is_read_at_every_sweep_and_a_silent_mapped_write_is_found() {
    let a = Appliance::new();
    let mut mounts = Mounts::default();
    let (_, link) = linked_volume(&a, "tmpfs", &mut mounts);
    let m = Running::start(&a);
    let tmpfs_bytes = ("model a".len() + "model b".len()) as u64;
    let map = Mapping::of(&link);
    map.poke(b'm'); // the same byte: the fault moves the times, the content stays
    for _ in 0..2 {
        let s = m.scan();
        assert_eq!(s["state"], "trusted", "{s}");
        assert_eq!(
            s["last_report"]["report"]["bytes_hashed"], tmpfs_bytes,
            "every sweep reads the tmpfs files in full, and nothing else: {s}"
        );
    }
    let before = ctime(&a.path("models/a.gguf"));
    map.poke(b'X');
    drop(map);
    assert_eq!(
        ctime(&a.path("models/a.gguf")),
        before,
        "on tmpfs the tampering moved no timestamp: no stat can see it"
    );
    let s = m.scan();
    assert_ne!(s["state"], "trusted", "{s}");
    assert_eq!(m.verify_code(), 503);
    let v = &m.status()["active_violations"][0];
    assert_eq!(v["path"], path_str(&a.path("models/a.gguf")), "{v}");
}

/// A directory's watch sees writes made through a name in it only. A model with a second link
/// outside the model dir (on ext4) gets a watch of its own: a write through that link makes
/// `/verify` 503 and names the model within seconds, though no sweep runs for an hour. A link
/// made after the start is seen by the next check (its ctime moved) and watched from then on.
#[test]
fn a_write_through_a_hard_link_outside_the_model_dir_is_seen_at_once() {
    let a = Appliance::new();
    let mut mounts = Mounts::default();
    let (vol, link) = linked_volume(&a, "ext4", &mut mounts);
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
    // The watch is added as the scan's checks asked (between requests).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(m.verify_code(), 200);
    let tamper = |p: &Path| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(p).unwrap();
        f.write_all_at(b"M", 0).unwrap();
    };
    tamper(&link);
    let named = |rel: &str| {
        wait_until(Duration::from_secs(5), || {
            m.status()["active_violations"]
                .as_array()
                .is_some_and(|v| v.iter().any(|v| v["path"] == path_str(&a.path(rel))))
        })
    };
    assert!(named("models/a.gguf"), "{}", m.status());
    assert_eq!(m.verify_code(), 503);
    // A link made now: the next check sees the model's ctime move, reads it, watches it.
    let late = vol.join("outside/b-link.gguf");
    std::fs::hard_link(vol.join("models/sub/b.gguf"), &late).unwrap();
    m.scan();
    std::thread::sleep(Duration::from_millis(300));
    tamper(&late);
    assert!(named("models/sub/b.gguf"), "{}", m.status());
}

/// FUSE: a server, not this kernel, decides what a read returns. A model dir on it stops the
/// start (78, naming the key, the path and the filesystem); a baselined model that a FUSE
/// mount now serves is an `untrusted_filesystem` finding, never read.
#[test]
fn fuse_is_refused_at_start_and_reported_inside_a_model_dir() {
    let a = Appliance::new();
    let mut mounts = Mounts::default();
    let real = a.path("real-models");
    std::fs::create_dir_all(&real).unwrap();
    std::fs::write(real.join("a.gguf"), "model a").unwrap();
    mounts.bindfs(&real, &a.path("models"));
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("model_dirs")
            && err.contains("fuse")
            && err.contains(&path_str(&a.path("models"))),
        "{err}"
    );
    drop(mounts);

    // A baselined model, then a FUSE mount put over its directory: the same bytes served by
    // a server are not the model's; never read.
    let a = Appliance::new();
    a.write("models/remote/a.gguf", "model a");
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
    let mut mounts = Mounts::default();
    let remote = a.path("models/remote");
    mounts.bindfs(&real, &remote);
    let s = m.scan();
    let violations = s["last_report"]["report"]["violations"].as_array().unwrap();
    let v = violations
        .iter()
        .find(|v| v["path"] == path_str(&remote.join("a.gguf")))
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(v["actual_hash"], "untrusted_filesystem", "{v}");
    assert_eq!(
        s["last_report"]["report"]["bytes_hashed"], 0,
        "never read: {s}"
    );
    // A reload to a policy whose model dir is that mount is refused; the old one stays.
    let models = format!("model_dirs:\n  - {}\n", path_str(&a.path("models")));
    let text = a.policy_text("scan_interval: 1h\n").replace(
        &models,
        &format!("model_dirs:\n  - {}\n", path_str(&remote)),
    );
    assert_ne!(text, a.policy_text("scan_interval: 1h\n"));
    a.write("etc/monitor.yaml", &text);
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_ne!(code, 200, "{body}");
    assert!(
        body.contains("fuse") && body.contains(&path_str(&remote)),
        "{body}"
    );
    drop(m);
}

/// The kernel's writeback window as the hasher reads it: the two sysctls plus 2 s.
fn kernel_window_secs() -> u64 {
    let centisecs = |name: &str| -> u64 {
        std::fs::read_to_string(format!("/proc/sys/vm/{name}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    (centisecs("dirty_expire_centisecs") + centisecs("dirty_writeback_centisecs")) / 100 + 2
}

/// A 3 s settle window while pages stay dirty for the kernel's window would be a read that
/// proves nothing: refused at start and by check-config (78, the key, its line and the
/// kernel's window named), and by a reload (the old policy stays).
#[test]
fn a_settle_window_shorter_than_the_kernels_writeback_window_is_refused() {
    let window = format!("kernel's writeback window, {}s", kernel_window_secs());
    let a = Appliance::with_options("scan_interval: 1h\nsettle_window: 3s\n");
    let out = Command::new(monitor_bin())
        .args(a.args(free_addr()))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("settle_window") && err.contains("line"),
        "{err}"
    );
    assert!(err.contains(&window), "{window}: {err}");
    let out = Command::new(monitor_bin())
        .args(["check-config", "--policy"])
        .arg(a.path("etc/monitor.yaml"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(
        err.contains("settle_window") && err.contains(&window),
        "{err}"
    );

    let a = Appliance::new();
    let m = Running::start(&a);
    a.write_policy("scan_interval: 1h\nsettle_window: 3s\n");
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_ne!(code, 200, "{body}");
    assert!(body.contains("settle_window"), "{body}");
    a.write_policy(&format!(
        "scan_interval: 1h\nsettle_window: {}s\n",
        kernel_window_secs()
    ));
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 200, "as long as the window: accepted: {body}");
}

// The attacks a review of #37 made (each failed before its mending): the clock set back to a
// remembered ctime, a read-only overlay, a pending path nothing reads, FUSE under a registry
// directory artifact.

fn stamps(p: &Path) -> (u64, i64, i64, i64, i64, u64) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap();
    (
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
        m.ino(),
    )
}

fn write_back(fd: i32) {
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: integers only.
    assert_eq!(unsafe { libc::sync_file_range(fd, 0, 0, flags) }, 0);
}

fn clock(id: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out pointer.
    assert_eq!(unsafe { libc::clock_gettime(id, &mut ts) }, 0);
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn set_realtime(ns: i128) {
    let ts = libc::timespec {
        tv_sec: (ns / 1_000_000_000) as libc::time_t,
        tv_nsec: (ns % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: a valid pointer to a timespec that outlives the call.
    let r = unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) };
    assert_eq!(r, 0, "CAP_SYS_TIME");
}

/// The clock set back (root): after the hasher's proving read the page is clean and
/// write-protected, so a mapped write faults and stamps the ctime from the wall clock. Root
/// sets the clock to the file's ctime (for ~50 µs) and faults: the stamp equals the old one,
/// so size, mtime, ctime and inode are all as the hasher remembers, and a fault raises no
/// inotify event. The hasher's timer on the clock sees the step: it forgets everything and
/// reads every file again, proving each, and finds the tampering. (On 6.13+ multigrain kernels a ctime the hasher
/// has stat'ed is re-stamped fine-grained when the coarse clock equals it; one earlier fault
/// at the real time clears that "queried" flag, so the second fault takes the coarse clock.)
/// The fd is opened through a hard link outside the model dir and that link removed at once,
/// so even the final close (IN_CLOSE_WRITE) reaches no watch: the attacker need not stay.
#[test]
fn attack_a_mapped_write_with_the_clock_set_to_the_files_ctime_is_found() {
    use std::os::fd::AsRawFd;
    let a = Appliance::new();
    let model = a.path("models/a.gguf");
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
    assert_eq!(m.verify_code(), 200);
    let remembered = stamps(&model);
    assert_eq!(
        (remembered.1, remembered.2),
        (remembered.3, remembered.4),
        "written once: mtime == ctime"
    );
    std::fs::create_dir_all(a.path("outside")).unwrap();
    let link = a.path("outside/l");
    std::fs::hard_link(&model, &link).unwrap();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&link)
        .unwrap();
    std::fs::remove_file(&link).unwrap();
    let map = Mapping::of_file(&file);
    // Step 1: the same byte, at the real time (clears the inode's "ctime queried" flag).
    map.poke(map.peek());
    write_back(file.as_raw_fd());
    // Step 2: the clock at the remembered ctime for the one fault.
    let target = i128::from(remembered.3) * 1_000_000_000 + i128::from(remembered.4);
    let (mono0, real0) = (clock(libc::CLOCK_MONOTONIC), clock(libc::CLOCK_REALTIME));
    set_realtime(target);
    map.poke(b'X');
    let mono1 = clock(libc::CLOCK_MONOTONIC);
    set_realtime(real0 + (mono1 - mono0));
    // Gone: unmapped and closed (the close's event goes to `outside`, unwatched).
    drop(map);
    drop(file);
    assert_eq!(stamps(&model), remembered, "no stat can tell");
    assert_eq!(
        std::fs::read(&model).unwrap()[0],
        b'X',
        "the model is tampered"
    );
    std::thread::sleep(Duration::from_secs(2));
    let s = m.scan();
    assert_ne!(s["state"], "trusted", "tampered model, yet trusted: {s}");
    assert_eq!(m.verify_code(), 503);
}

/// A read-only overlay (root or the lower file's owner): its lower files are ordinary ext4
/// files elsewhere, and a writeback on the hasher's overlay descriptor does not reach their
/// pages. A mapped write into the lower file (a fault: the ctime moves, seen), the hasher's
/// read of those bytes, then one more write into the still-dirty page: no fault, no ctime,
/// no event. An overlay is therefore read in full at every sweep, which finds it.
#[test]
fn attack_a_read_only_overlays_lower_file_written_after_the_proving_read_is_found() {
    let a = Appliance::new();
    let mut mounts = Mounts::default();
    let lower = a.path("lower");
    let lower2 = a.path("lower2");
    std::fs::create_dir_all(lower.join("sub")).unwrap();
    std::fs::create_dir_all(&lower2).unwrap();
    std::fs::write(lower.join("a.gguf"), "model a").unwrap();
    std::fs::write(lower.join("sub/b.gguf"), "model b").unwrap();
    let opts = format!("ro,lowerdir={}:{}", lower.display(), lower2.display());
    mounts.mount(
        &["-t", "overlay", "overlay", "-o", &opts],
        &a.path("models"),
    );
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
    let map = Mapping::of(&lower.join("a.gguf"));
    map.poke(b'm'); // same byte: fault, ctime moves (seen through the overlay)
    let s = m.scan();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(
        s["last_report"]["report"]["unsettled"], 0,
        "\"proven\" by its read: {s}"
    );
    let before = ctime(&a.path("models/a.gguf"));
    map.poke(b'X');
    let moved = ctime(&a.path("models/a.gguf")) != before;
    eprintln!("ctime moved by the write after the proving read: {moved}");
    assert_eq!(std::fs::read(a.path("models/a.gguf")).unwrap()[0], b'X');
    let s = m.scan();
    eprintln!("after the attack: {s}");
    assert_ne!(s["state"], "trusted", "tampered model, yet trusted: {s}");
    assert_eq!(m.verify_code(), 503);
}

/// A registry-governed model dir: a file artifact, one dir artifact `sd/unet/w.bin`.
fn registry_appliance() -> Appliance {
    let a = Appliance::new();
    std::fs::remove_dir_all(a.path("models/sub")).unwrap();
    a.write("models/sd/unet/w.bin", "unet");
    let dir_digest = dir_digest(&[("unet/w.bin", b"unet")]);
    a.write(
        "registry/manifest.json",
        &format!(
            "{{\"version\":1,\"models\":[{{\"name\":\"a\",\"filename\":\"a.gguf\",\"sha256\":\"{}\",\"size_bytes\":7}},{{\"name\":\"sd\",\"filename\":\"sd\",\"sha256\":\"{dir_digest}\",\"size_bytes\":4}}]}}",
            protocol::sign::sha256_hex(b"model a")
        ),
    );
    a.write_policy(&format!(
        "scan_interval: 1h\nregistry_manifest: {}\n",
        a.path("registry/manifest.json").display()
    ));
    a
}

/// In a registry-governed model dir, a file named by inotify is pending until a check reads
/// it. A file in a top-level dir nobody enrolled (a model staged in place before the manifest
/// names it) is never checked by the registry's sweep; when the staging is abandoned
/// (`rm -rf`), nothing reads the path. A full sweep drops what it did not check, so `/verify`
/// is 200 again (it stayed 503 for ever before). A `.part` renamed over a shard is read while
/// there.
#[test]
fn liveness_a_pending_file_gone_from_a_registry_dir_does_not_hold_verify_at_503() {
    let a = registry_appliance();
    let m = Running::start(&a);
    let s = m.scan();
    assert_eq!(s["state"], "trusted", "{s}");
    assert_eq!(m.verify_code(), 200);
    // The registry downloads an update of the dir artifact's shard beside it, then renames
    // it over the shard: same bytes (a re-download), so nothing changes in the end.
    // Variant 2: a new model staged in place (not enrolled yet), then the download aborted.
    std::fs::create_dir(a.path("models/new")).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    m.scan(); // the new dir is watched from here
    a.write("models/new/w.bin", "partial");
    std::thread::sleep(Duration::from_millis(300));
    let mid = m.scan();
    eprintln!(
        "staging: unsettled {} violations {}",
        mid["last_report"]["report"]["unsettled"], mid["last_report"]["report"]["violation_count"]
    );
    std::fs::remove_dir_all(a.path("models/new")).unwrap();
    let part = a.path("models/sd/unet/w.bin.part");
    std::fs::write(&part, "unet").unwrap();
    std::thread::sleep(Duration::from_millis(500)); // the hasher drains the events
    let mid = m.scan(); // a scan while the download is under way (absorbs the names)
    eprintln!(
        "during: unsettled {}",
        mid["last_report"]["report"]["unsettled"]
    );
    std::fs::rename(&part, a.path("models/sd/unet/w.bin")).unwrap();
    let ok = wait_until(Duration::from_secs(20), || {
        let _ = post(m.addr, "/api/v1/scan", Some(TOKEN));
        m.verify_code() == 200
    });
    let s = m.scan();
    eprintln!("20 s later: {s}");
    assert!(ok, "stuck at 503: {s}");
}

/// A FUSE mount put over a registry directory artifact: the artifact is `artifact_invalid`,
/// naming the filesystem, never read.
#[test]
fn fuse_over_a_registry_directory_artifact_is_untrusted_never_read() {
    let a = registry_appliance();
    let real = a.path("real-sd");
    std::fs::create_dir_all(real.join("unet")).unwrap();
    std::fs::write(real.join("unet/w.bin"), "unet").unwrap();
    let m = Running::start(&a);
    assert_eq!(m.scan()["state"], "trusted");
    let mut mounts = Mounts::default();
    let sd = a.path("models/sd");
    mounts.bindfs(&real, &sd);
    let fs = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(sd.join("unet/w.bin"))
        .output()
        .unwrap();
    eprintln!(
        "artifact file's filesystem: {}",
        String::from_utf8_lossy(&fs.stdout)
    );
    let s = m.scan();
    assert_ne!(
        s["state"], "trusted",
        "served by a FUSE server, yet trusted: {s}"
    );
    let report = &s["last_report"]["report"];
    assert_eq!(report["bytes_hashed"], 0, "never read: {s}");
    let v = report["violations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["path"] == path_str(&sd))
        .unwrap_or_else(|| panic!("{s}"));
    assert_eq!(v["actual_hash"], "artifact_invalid", "{v}");
    drop(m);
}
