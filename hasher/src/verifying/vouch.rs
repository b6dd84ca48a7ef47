//! Whether the appliance's own boot-chain verification vouches for the booted image: its
//! result file (secure-ai-boot-verify writes `boot-verify-last.json` at every boot) says the
//! deployment came through the signature-verified path (`checks.ostree_signature.state` is
//! `valid` or `valid_offline`), and it was written in this boot. Read once, before the sandbox:
//! a release transition is made only at start, and only on this word.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Largest result file read.
const MAX_BYTES: u64 = 1024 * 1024;
/// How far before the boot's start (by the wall clock) a result may say it was written: the
/// boot's start is computed, not recorded, and the two clocks are read a moment apart.
const SLACK: Duration = Duration::from_secs(5);

/// What the boot-chain verification says of this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Vouch {
    /// The booted image came through the signature-verified path, checked in this boot.
    Vouched,
    /// Why not.
    Not(String),
}

#[derive(Deserialize)]
struct BootVerify {
    timestamp: String,
    checks: Checks,
}

#[derive(Deserialize)]
struct Checks {
    ostree_signature: OstreeSignature,
}

#[derive(Deserialize)]
struct OstreeSignature {
    state: String,
}

/// The unit's credential holding the result, when the hasher runs under its unit.
const CREDENTIAL: &str = "boot-verify-result";

/// Reads the result: the unit's credential (systemd reads the file the appliance writes, in a
/// directory the hasher's user cannot enter), else `path` (the policy's `boot_verify_result`).
pub fn read_for(path: &Path) -> Vouch {
    let credential = std::env::var_os("CREDENTIALS_DIRECTORY")
        .map(|d| Path::new(&d).join(CREDENTIAL))
        .filter(|p| p.exists());
    match credential {
        Some(c) => read(&c),
        None => read(path),
    }
}

/// Reads the result at `path`.
pub fn read(path: &Path) -> Vouch {
    let bytes = match crate::reading::fsread::read_bounded(path, MAX_BYTES) {
        Ok(b) => b,
        Err(e) => {
            return Vouch::Not(format!(
                "the boot-chain verification result {} cannot be read: {e}",
                path.display()
            ))
        }
    };
    if crate::storing::credentials::is_unprovisioned(&bytes) {
        return Vouch::Not(format!(
            "{}: the boot-chain verification wrote no result at this boot (secure-ai-boot-verify has not run)",
            path.display()
        ));
    }
    judge(path, &bytes, boot_started())
}

/// When this boot started, by the wall clock.
fn boot_started() -> Option<SystemTime> {
    let since = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let since = Duration::new(
        u64::try_from(since.tv_sec()).ok()?,
        u32::try_from(since.tv_nsec()).ok()?,
    );
    SystemTime::now().checked_sub(since)
}

fn judge(path: &Path, bytes: &[u8], boot: Option<SystemTime>) -> Vouch {
    let shown = path.display();
    let result: BootVerify = match serde_json::from_slice(bytes) {
        Ok(r) => r,
        Err(e) => {
            return Vouch::Not(format!(
                "{shown} is not a boot-chain verification result: {e}"
            ))
        }
    };
    let state = result.checks.ostree_signature.state;
    if state != "valid" && state != "valid_offline" {
        return Vouch::Not(format!(
            "{shown}: the booted deployment's signature is {state:?}, not valid"
        ));
    }
    let Ok(at) = humantime::parse_rfc3339_weak(result.timestamp.trim_end_matches('Z')) else {
        return Vouch::Not(format!(
            "{shown}: timestamp {:?} is not RFC 3339",
            result.timestamp
        ));
    };
    match boot {
        Some(b) if at + SLACK >= b => Vouch::Vouched,
        Some(_) => Vouch::Not(format!(
            "{shown} was written at {}, before this boot: the boot chain was not verified in this boot",
            result.timestamp
        )),
        None => Vouch::Not("this boot's start cannot be told".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(state: &str, at: SystemTime) -> Vec<u8> {
        format!(
            "{{\"timestamp\":\"{}\",\"status\":\"pass\",\"warnings\":[],\"checks\":{{\"secure_boot\":\"enabled\",\"ostree_signature\":{{\"state\":\"{state}\",\"commit\":\"abc\",\"image_ref\":\"r\",\"detail\":\"\"}}}}}}",
            humantime::format_rfc3339_micros(at)
        )
        .into_bytes()
    }

    #[test]
    fn only_a_valid_signature_checked_in_this_boot_vouches() {
        let p = Path::new("/x/boot-verify-last.json");
        let boot = SystemTime::now() - Duration::from_secs(600);
        let now = SystemTime::now();
        assert_eq!(judge(p, &result("valid", now), Some(boot)), Vouch::Vouched);
        assert_eq!(
            judge(p, &result("valid_offline", now), Some(boot)),
            Vouch::Vouched
        );
        for state in ["invalid", "unchecked", ""] {
            assert!(
                matches!(judge(p, &result(state, now), Some(boot)), Vouch::Not(_)),
                "{state}"
            );
        }
        let stale = boot - Duration::from_secs(3600);
        assert!(
            matches!(judge(p, &result("valid", stale), Some(boot)), Vouch::Not(w) if w.contains("before this boot"))
        );
        assert!(matches!(judge(p, b"{}", Some(boot)), Vouch::Not(_)));
        assert!(matches!(
            read(Path::new("/nonexistent/boot-verify-last.json")),
            Vouch::Not(_)
        ));
        // The clocks of this machine: a result written now is of this boot.
        assert_eq!(
            judge(p, &result("valid", now), boot_started()),
            Vouch::Vouched
        );
    }
}
