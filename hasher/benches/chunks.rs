//! One big file on every core: re-verification of one large file by its chunks on 2 threads
//! against a whole sequential read on 1, beside `openssl dgst -sha256` on the same file.
//!
//! `cargo bench -p integrity-hasher --bench chunks` (BENCH_GIB=8 by default, BENCH_RUNS=3;
//! BENCH_DIR for the file, default the system temp dir). Prints medians and ratios.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hasher::verifying::{FileHasher, Given, Outcome};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn reverify(h: &mut FileHasher, path: &Path) -> (Duration, Outcome) {
    h.forget(path);
    let t = Instant::now();
    let outcome = h.check(path, Given::NOTHING);
    (t.elapsed(), outcome)
}

/// Times `cmd`, if it runs and succeeds.
fn timed(cmd: &mut Command) -> Option<Duration> {
    let t = Instant::now();
    let ok = cmd
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    ok.then(|| t.elapsed())
}

fn write_file(path: &Path, gib: u64) {
    use std::io::Write;
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).expect("create"));
    let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
    for i in 0..(gib << 10) {
        let mut b = block.clone();
        b[0] = (i % 256) as u8;
        f.write_all(&b).expect("write");
    }
    f.flush().expect("flush");
}

/// A line: label, median seconds, GB/s over `size` bytes.
fn line(label: &str, times: Vec<Duration>, size: u64) {
    if times.is_empty() {
        return;
    }
    let d = median(times);
    let gbps = size as f64 / d.as_secs_f64() / 1e9;
    println!("  {label:<40} {:>8.2} s  {gbps:>5.2} GB/s", d.as_secs_f64());
}

fn main() {
    let gib = env_u64("BENCH_GIB", 8);
    let runs = env_u64("BENCH_RUNS", 3).max(1);
    let dir = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("integrity-chunks-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let path = dir.join("model.gguf");
    write_file(&path, gib);
    let size = gib << 30;
    let mut one = FileHasher::default();
    let mut two = FileHasher::default();
    two.set_threads(2);
    // First reads: whole and sequential; with 2 threads they also take the chunk digests.
    let (mut f1, mut f2) = (Vec::new(), Vec::new());
    let first = one.check(&path, Given::NOTHING);
    assert_eq!(two.check(&path, Given::NOTHING), first);
    for _ in 0..runs {
        one.forget_all();
        let t = Instant::now();
        assert_eq!(one.check(&path, Given::NOTHING), first);
        f1.push(t.elapsed());
        let mut fresh = FileHasher::default();
        fresh.set_threads(2);
        let t = Instant::now();
        assert_eq!(fresh.check(&path, Given::NOTHING), first);
        f2.push(t.elapsed());
    }
    let (mut t1, mut t2, mut tssl, mut tdd) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..runs {
        let (d, o) = reverify(&mut one, &path);
        assert_eq!(o, first);
        t1.push(d);
        let (d, o) = reverify(&mut two, &path);
        assert_eq!(o, first);
        t2.push(d);
        tssl.extend(timed(
            Command::new("openssl").args(["dgst", "-sha256"]).arg(&path),
        ));
        // The disk's own rate: what any reader of a file not in the page cache is bound by.
        tdd.extend(timed(
            Command::new("dd")
                .arg(format!("if={}", path.display()))
                .args(["of=/dev/null", "bs=4M", "iflag=direct", "status=none"]),
        ));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let ratio = median(t1.clone()).as_secs_f64() / median(t2.clone()).as_secs_f64();
    println!("first read of one {gib} GiB file, median of {runs}:");
    line("whole digest only (hash_threads: 1)", f1, size);
    line("whole + chunk digests (hash_threads: 2)", f2, size);
    println!("re-verification of one {gib} GiB file, median of {runs}:");
    line("1 thread, whole read", t1, size);
    line("2 threads, 64 MiB chunks", t2, size);
    println!("  {:<40} {ratio:>8.2}x", "speed-up 2 threads / 1");
    line("dd iflag=direct (the disk)", tdd, size);
    line("openssl dgst -sha256 (1 thread, cache kept)", tssl, size);
}
