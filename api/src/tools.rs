//! Operator tools run by hand: `check-config` and `verify-baseline`. They are not the service
//! and run without its sandbox.

use std::path::Path;

use protocol::baseline::Manifest;

use crate::{Config, EXIT_CONFIG};

/// Validates the policy with the hasher's own parser (the api has none: it never reads it).
pub fn check_config(config: &Config) -> i32 {
    let status = std::process::Command::new(&config.hasher)
        .arg("--check-config")
        .arg("--policy")
        .arg(&config.policy)
        .env("LISTEN_FDS", "0")
        .status();
    match status {
        Ok(s) => s.code().unwrap_or(1),
        Err(e) => {
            eprintln!(
                "integrity-monitor: cannot run {}: {e} (use --hasher PATH)",
                config.hasher.display()
            );
            EXIT_CONFIG
        }
    }
}

/// Checks `baseline` against the key file: exit 0 only when the form and the HMAC hold.
pub fn verify_baseline(key: &Path, baseline: &Path) -> i32 {
    let read = |p: &Path| std::fs::read(p).map_err(|e| format!("{}: {e}", p.display()));
    let result = read(key).and_then(|key| {
        if key.len() < protocol::sign::MIN_KEY_LEN {
            return Err(format!(
                "{}: {} bytes; a key is at least 32",
                "key",
                key.len()
            ));
        }
        let bytes = read(baseline)?;
        let manifest = Manifest::parse(&bytes).map_err(|e| e.to_string())?;
        manifest.verify(Some(&key)).map_err(|e| e.to_string())?;
        Ok(manifest)
    });
    match result {
        Ok(m) => {
            println!(
                "{}: OK — {} entries, created {}, HMAC verifies",
                baseline.display(),
                m.entries.len(),
                m.created_at
            );
            0
        }
        Err(e) => {
            eprintln!("{}: FAILED — {e}", baseline.display());
            1
        }
    }
}
