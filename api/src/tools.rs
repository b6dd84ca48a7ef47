//! Operator tools run by hand: `check-config`, `tpm-enroll` and `verify-baseline`. They are not the service
//! and run without its sandbox.

use std::path::Path;

use protocol::baseline::Manifest;

use crate::{Config, EXIT_CONFIG};

/// Enrols the store with the TPM's counter through the hasher binary (the store's one
/// writer): `integrity-hasher --tpm-enroll`, with what the service would pass it.
pub fn tpm_enroll(config: &Config, reenroll: bool) -> i32 {
    let mut cmd = std::process::Command::new(&config.hasher);
    cmd.arg(if reenroll {
        "--tpm-reenroll"
    } else {
        "--tpm-enroll"
    })
    .arg("--policy")
    .arg(&config.policy)
    .env("LISTEN_FDS", "0");
    match &config.baseline_path {
        Some(file) => cmd.arg("--baseline-path").arg(file),
        None => cmd.arg("--state-dir").arg(&config.state_dir),
    };
    for (flag, value) in [
        ("--hmac-key-file", &config.hmac_key_file),
        ("--tpm-device", &config.tpm_device),
    ] {
        if let Some(v) = value {
            cmd.arg(flag).arg(v);
        }
    }
    run_hasher(cmd, config)
}

/// Runs the hasher binary as `cmd` says: its exit code, or [`EXIT_CONFIG`] naming the binary
/// when it cannot be run.
fn run_hasher(mut cmd: std::process::Command, config: &Config) -> i32 {
    match cmd.status() {
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

/// Validates the policy with the hasher's own parser (the api has none: it never reads it),
/// and, unless `syntax_only`, that the files and the key it names are there.
pub fn check_config(config: &Config, syntax_only: bool) -> i32 {
    let mut cmd = std::process::Command::new(&config.hasher);
    cmd.arg("--check-config")
        .arg("--policy")
        .arg(&config.policy)
        .env("LISTEN_FDS", "0");
    if syntax_only {
        cmd.arg("--syntax-only");
    }
    if let Some(key) = &config.hmac_key_file {
        cmd.arg("--hmac-key-file").arg(key);
    }
    if let Some(token) = &config.token_file {
        cmd.arg("--token-file").arg(token);
    }
    run_hasher(cmd, config)
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

/// Walks rotated audit logs oldest first; exit 0 only if every chain link holds, the first
/// record is the genesis record (or the one after `from`), and `upto`, if given, is reached.
pub fn verify_audit(
    files: &[std::path::PathBuf],
    from: Option<crate::audit::Head>,
    upto: Option<crate::audit::Head>,
) -> i32 {
    match crate::audit::verify_with(files, from, upto) {
        Ok(n) => {
            println!("audit chain OK: {n} records in {} file(s)", files.len());
            0
        }
        Err(b) => {
            eprintln!(
                "audit chain BROKEN at {} line {}: expected {}, found {}",
                b.file.display(),
                b.line,
                b.expected,
                b.found
            );
            1
        }
    }
}

/// Parses `SEQ:HASH` (a chain position) for `verify-audit --from/--head`.
pub fn parse_position(text: &str) -> Result<crate::audit::Head, String> {
    let (seq, hash) = text
        .split_once(':')
        .ok_or_else(|| format!("{text}: expected SEQ:HASH"))?;
    let seq = seq
        .parse()
        .map_err(|_| format!("{seq}: not a sequence number"))?;
    if !protocol::hexfmt::is_sha256_hex(hash) {
        return Err(format!("{hash}: not a SHA-256 hex digest"));
    }
    Ok(crate::audit::Head {
        seq,
        hash: hash.to_owned(),
    })
}

/// What a remote verifier requires of an attestation beyond its HMAC and nonce.
#[derive(Debug, Clone, Default)]
pub struct Pins {
    /// Oldest acceptable latest scan.
    pub max_age: std::time::Duration,
    /// Fail when the attested scan found any violation.
    pub require_clean: bool,
    /// The baseline digest the verifier approved.
    pub baseline: Option<String>,
    /// The oldest store generation the verifier accepts (a reset or rolled-back store is older).
    pub min_generation: Option<u64>,
    /// The OS release commits the verifier allows (empty: any); commits have no order.
    pub releases: Vec<String>,
    /// Fail unless the attested baseline's generation is anchored in the TPM's counter.
    pub require_tpm: bool,
}

/// What an attestation is checked against.
pub enum Trust {
    /// The appliance's public key file: its Ed25519 signature (a fleet verifier's way).
    Public(std::path::PathBuf),
    /// The HMAC key file: its HMAC (whoever holds it can also forge one).
    Secret(std::path::PathBuf),
}

impl Trust {
    /// The public key when given, else the HMAC key (clap requires one).
    pub fn of(key: Option<std::path::PathBuf>, public_key: Option<std::path::PathBuf>) -> Trust {
        match (public_key, key) {
            (Some(p), _) => Trust::Public(p),
            (None, k) => Trust::Secret(k.unwrap_or_default()),
        }
    }

    /// Whether the signature in `doc` over `parts` is this trust's.
    fn check(&self, doc: &serde_json::Value, parts: &[&[u8]]) -> Result<(), String> {
        match self {
            Trust::Secret(key) => {
                let key = std::fs::read(key).map_err(|e| format!("{}: {e}", key.display()))?;
                let hmac = doc["hmac"].as_str().ok_or("no `hmac` string")?;
                if !protocol::sign::verify_hex(&key, parts, hmac) {
                    return Err(
                        "HMAC does not verify: forged, altered, unsigned or another key".into(),
                    );
                }
                Ok(())
            }
            Trust::Public(file) => {
                let text = small_text(file)?;
                let public = protocol::fleet::PublicKey::parse(&text)
                    .map_err(|e| format!("{}: {e}", file.display()))?;
                let sig = doc["ed25519"]
                    .as_str()
                    .filter(|s| !s.is_empty())
                    .ok_or("no `ed25519` signature (unsigned, or from a monitor before Ed25519)")?;
                public.verify(parts, sig).map_err(|e| e.to_string())
            }
        }
    }
}

/// The first 4 KiB of a small text file (a public key is one line).
fn small_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(4096).read_to_string(&mut text))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(text)
}

/// `public-key --key FILE`: the appliance's Ed25519 public key, derived from the HMAC key.
pub fn public_key(key: &Path) -> i32 {
    use std::io::Read;
    let mut bytes = Vec::new();
    let limit = protocol::sign::MAX_KEY_LEN as u64 + 1;
    let read = std::fs::File::open(key).and_then(|f| f.take(limit).read_to_end(&mut bytes));
    match read.map(|_| bytes) {
        Ok(bytes) if bytes.len() > protocol::sign::MAX_KEY_LEN => {
            eprintln!(
                "{}: longer than a key file ({} bytes at most)",
                key.display(),
                protocol::sign::MAX_KEY_LEN
            );
            1
        }
        Ok(bytes) if bytes.len() >= protocol::sign::MIN_KEY_LEN => {
            let public = protocol::fleet::Signer::derive(&bytes).public();
            println!("{public}");
            eprintln!("key id {}", public.id());
            0
        }
        Ok(bytes) => {
            eprintln!(
                "{}: {} bytes, shorter than a key ({} at least)",
                key.display(),
                bytes.len(),
                protocol::sign::MIN_KEY_LEN
            );
            1
        }
        Err(e) => {
            eprintln!("{}: {e}", key.display());
            1
        }
    }
}

/// Checks an attestation read from stdin: its signature (Ed25519 under the public key, or the
/// HMAC under the key), the nonce, and the pins.
pub fn verify_attestation(trust: &Trust, nonce: &str, pins: &Pins) -> i32 {
    use std::io::Read;
    let mut input = Vec::new();
    let result = std::io::stdin()
        .take(4 * 1024 * 1024)
        .read_to_end(&mut input)
        .map_err(|e| format!("stdin: {e}"))
        .and_then(|_| check_attestation(trust, nonce, pins.max_age, &input));
    match result {
        Ok(a) => match refusal(pins, &a) {
            Some(why) => {
                eprintln!("attestation valid but {why}");
                1
            }
            None => {
                println!(
                    "attestation OK: scan {} at {}, {} violation(s), baseline {} generation {}, rollback anchor {}{}",
                    a.scan_seq,
                    a.scan_completed_at,
                    a.violation_count,
                    a.baseline_digest,
                    a.baseline_generation,
                    a.rollback_anchor,
                    a.tpm_counter.map(|c| format!(" (counter {c})")).unwrap_or_default()
                );
                0
            }
        },
        Err(e) => {
            eprintln!("attestation FAILED: {e}");
            1
        }
    }
}

/// The pin a valid attestation fails, in words.
fn refusal(pins: &Pins, a: &protocol::attest::Attestation) -> Option<String> {
    if pins.require_clean && a.violation_count > 0 {
        return Some(format!(
            "the hasher found {} violation(s)",
            a.violation_count
        ));
    }
    if let Some(b) = pins.baseline.as_deref() {
        if !b.eq_ignore_ascii_case(&a.baseline_digest) {
            return Some(format!(
                "its baseline {} is not the approved one",
                a.baseline_digest
            ));
        }
    }
    if let Some(g) = pins.min_generation.filter(|g| a.baseline_generation < *g) {
        return Some(format!("its baseline is generation {}, older than --min-generation {g}: the store was reset or rolled back", a.baseline_generation));
    }
    if !pins.releases.is_empty()
        && !a
            .release
            .as_ref()
            .is_some_and(|r| pins.releases.contains(r))
    {
        return Some(format!(
            "its release {} is not one of the allowed ({})",
            a.release.as_deref().unwrap_or("(none recorded)"),
            pins.releases.join(", ")
        ));
    }
    if pins.require_tpm && (a.rollback_anchor != "tpm" || a.tpm_counter.is_none()) {
        return Some(format!("its rollback anchor is {}, not the TPM's counter (--require-tpm): run integrity-monitor tpm-enroll on the appliance", a.rollback_anchor));
    }
    None
}

fn check_attestation(
    trust: &Trust,
    nonce: &str,
    max_age: std::time::Duration,
    input: &[u8],
) -> Result<protocol::attest::Attestation, String> {
    use protocol::attest::{Attestation, DOMAIN};
    let doc: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| format!("not JSON: {e}"))?;
    let payload = doc["payload"].as_str().ok_or("no `payload` string")?;
    trust.check(&doc, &[DOMAIN, payload.as_bytes()])?;
    let a: Attestation = serde_json::from_str(payload).map_err(|e| format!("payload: {e}"))?;
    // The copy served beside the signed bytes is for people; one that says anything else was
    // altered on the way, and whoever reads it would be misled.
    if let Some(copy) = doc.get("attestation") {
        let signed: serde_json::Value =
            serde_json::from_str(payload).map_err(|e| format!("payload: {e}"))?;
        if *copy != signed {
            return Err(
                "the `attestation` copy beside the signed payload disagrees with it: altered on the way (the payload is what was signed)"
                    .into(),
            );
        }
    }
    if !a.nonce.eq_ignore_ascii_case(nonce) {
        return Err(format!(
            "nonce {} is not the one asked for ({nonce}): a replay",
            a.nonce
        ));
    }
    // Freshness is the nonce (signed after it was made) plus the scan's age on the hasher's
    // monotonic clock: neither the appliance's nor this verifier's wall clock takes part, so
    // a clock set forward or back can neither pass a stale scan nor fail a fresh one.
    let age = std::time::Duration::from_millis(a.scan_age_ms);
    if age > max_age {
        return Err(format!(
            "latest scan completed {}s before this attestation was signed, more than --max-age {}s",
            age.as_secs(),
            max_age.as_secs()
        ));
    }
    Ok(a)
}

/// `systemctl reload`: asks the running monitor `pid` to reopen its audit log (SIGHUP). Kept in
/// the binary so that `ExecReload=` needs no kill(1), which a minimal image does not have.
pub fn signal_reload(pid: i32) -> i32 {
    use nix::sys::signal::{kill, Signal};
    // A non-dumpable process's /proc entries are root's and hidden under ProtectProc=: the name
    // is checked when it can be read; kill(2) itself checks the permission.
    if let Ok(comm) = std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        // The kernel keeps 15 bytes of the name: "integrity-monit".
        let comm = comm.trim_end();
        if comm.is_empty() || !"integrity-monitor".starts_with(comm) {
            eprintln!("integrity-monitor: pid {pid} is {comm:?}, not an integrity-monitor");
            return 1;
        }
    }
    if pid <= 1 {
        eprintln!("integrity-monitor: refusing to signal pid {pid}");
        return 1;
    }
    match kill(nix::unistd::Pid::from_raw(pid), Signal::SIGHUP) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("integrity-monitor: cannot signal pid {pid}: {e}");
            1
        }
    }
}
