//! One big file on every core: re-verification of one large file by its chunks on 2 threads
//! against a whole sequential read on 1, beside `openssl dgst -sha256` on the same file.
//!
//! `cargo bench -p integrity-hasher --bench chunks` (BENCH_GIB=8 by default, BENCH_RUNS=3;
//! BENCH_DIR for the file, default the system temp dir). Prints medians and ratios.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hasher::hashing::{FileHasher, Outcome};

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
    let outcome = h.check(path);
    (t.elapsed(), outcome)
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
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("create"));
        let block: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 251) as u8).collect();
        for i in 0..(gib << 10) {
            let mut b = block.clone();
            b[0] = (i % 256) as u8;
            f.write_all(&b).expect("write");
        }
        f.flush().expect("flush");
    }
    let size = gib << 30;
    let mut one = FileHasher::default();
    let mut two = FileHasher::default();
    two.set_threads(2);
    // First reads: whole and sequential; with 2 threads they also take the chunk digests.
    let (mut f1, mut f2) = (Vec::new(), Vec::new());
    let first = one.check(&path);
    assert_eq!(two.check(&path), first);
    for _ in 0..runs {
        one.forget_all();
        let t = Instant::now();
        assert_eq!(one.check(&path), first);
        f1.push(t.elapsed());
        let mut fresh = FileHasher::default();
        fresh.set_threads(2);
        let t = Instant::now();
        assert_eq!(fresh.check(&path), first);
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
        let t = Instant::now();
        let ok = Command::new("openssl")
            .args(["dgst", "-sha256"])
            .arg(&path)
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            tssl.push(t.elapsed());
        }
        // The disk's own rate: what any reader of a file not in the page cache is bound by.
        let t = Instant::now();
        let ok = Command::new("dd")
            .arg(format!("if={}", path.display()))
            .args(["of=/dev/null", "bs=4M", "iflag=direct", "status=none"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            tdd.push(t.elapsed());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let (m1, m2) = (median(t1), median(t2));
    let gbps = |d: Duration| size as f64 / d.as_secs_f64() / 1e9;
    let (g1, g2) = (median(f1), median(f2));
    println!("first read of one {gib} GiB file, median of {runs}:");
    println!(
        "  whole digest only (hash_threads: 1)   {:>8.2} s  {:>5.2} GB/s",
        g1.as_secs_f64(),
        gbps(g1)
    );
    println!(
        "  whole + chunk digests (hash_threads 2) {:>7.2} s  {:>5.2} GB/s",
        g2.as_secs_f64(),
        gbps(g2)
    );
    println!("re-verification of one {gib} GiB file, median of {runs}:");
    println!(
        "  1 thread, whole read      {:>8.2} s  {:>5.2} GB/s",
        m1.as_secs_f64(),
        gbps(m1)
    );
    println!(
        "  2 threads, 64 MiB chunks  {:>8.2} s  {:>5.2} GB/s",
        m2.as_secs_f64(),
        gbps(m2)
    );
    println!(
        "  speed-up 2 threads / 1    {:>8.2}x",
        m1.as_secs_f64() / m2.as_secs_f64()
    );
    if !tdd.is_empty() {
        let md = median(tdd);
        println!(
            "  dd iflag=direct (the disk) {:>7.2} s  {:>5.2} GB/s",
            md.as_secs_f64(),
            gbps(md)
        );
    }
    if !tssl.is_empty() {
        let ms = median(tssl);
        println!(
            "  openssl dgst -sha256      {:>8.2} s  {:>5.2} GB/s  (1 thread, page cache kept)",
            ms.as_secs_f64(),
            gbps(ms)
        );
    }
}
