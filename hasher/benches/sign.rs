//! What signing a scan report costs beside the scan it reports: the HMAC (always there) and the
//! Ed25519 signature (#28) over the same bytes, against a steady scan of a 1,000-file tree
//! (nothing changed: what every tick does), all measured in the same run.
//!
//! `cargo bench -p integrity-hasher --bench sign` (BENCH_RUNS=2000). Prints medians and ratios.

use std::time::{Duration, Instant};

use hasher::policy::Policy;
use hasher::storing::Store;
use hasher::verifying::Verifier;
use protocol::report::{ScanReport, Violation};

/// The 25th, 50th and 75th percentiles of `runs` timings of `f`.
fn quartiles(runs: usize, mut f: impl FnMut()) -> [Duration; 3] {
    let mut v: Vec<Duration> = (0..runs.max(4))
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    [v[v.len() / 4], v[v.len() / 2], v[v.len() * 3 / 4]]
}

fn time(runs: usize, f: impl FnMut()) -> Duration {
    quartiles(runs, f)[1]
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let dir = tempfile::tempdir().expect("tempdir");
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).expect("mkdir");
    for i in 0..1000 {
        std::fs::write(models.join(format!("f{i}")), vec![i as u8; 4096]).expect("write");
    }
    let key = [7u8; 32];
    let policy = Policy::parse(&format!("model_dirs: [{}]\n", models.display())).expect("policy");
    let store = Store::open(&dir.path().join("state")).expect("store");
    let mut v = Verifier::new(policy, None, None, Default::default());
    let (m, slots) = v.make_baseline(Some(&key), 1).expect("baseline");
    let current = store.commit(m, None, Some(&key)).expect("stored");
    v.adopt(current, slots);
    let _ = v.sweep_all(false); // the slots stand in for the first read; then the fast path
    let mut report: Option<ScanReport> = None;
    let [p25, scan_t, p75] = quartiles(runs / 10, || {
        report = v.sweep_all(false);
    });
    let clean = report.expect("a report");
    let mut dirty = clean.clone();
    let v = Violation {
        detected_at: clean.completed_at.clone(),
        category: protocol::Category::ModelFile,
        path: format!("{}/{}", models.display(), "x".repeat(200)),
        expected_hash: "ab".repeat(32),
        actual_hash: protocol::Actual::Digest(protocol::hexfmt::Sha256Digest([0xcd; 32])),
        action: protocol::Category::ModelFile.action(),
    };
    dirty.violations = vec![v; 256];
    dirty.violation_count = 256;
    let signer = protocol::fleet::Signer::derive(&key);
    println!(
        "steady scan of 1,000 files (nothing changed): median {scan_t:?}, interquartile {p25:?}..{p75:?} ({} runs)",
        runs / 10
    );
    for (name, r) in [
        ("clean report", &clean),
        ("report with 256 violations", &dirty),
    ] {
        let json = r.signing_json();
        let parts = [protocol::sign::REPORT_DOMAIN, &json];
        let hmac = time(runs, || {
            std::hint::black_box(protocol::sign::hmac_hex(&key, &parts));
        });
        let ed = time(runs, || {
            std::hint::black_box(signer.sign(&parts));
        });
        println!(
            "{name} ({} bytes): HMAC {hmac:?}, Ed25519 {ed:?} = {:.1}% of the steady scan, {:.0}% of its interquartile spread",
            json.len(),
            100.0 * ed.as_secs_f64() / scan_t.as_secs_f64(),
            100.0 * ed.as_secs_f64() / (p75 - p25).as_secs_f64().max(1e-9)
        );
    }
}
