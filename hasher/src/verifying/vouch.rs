//! Whether the appliance's own boot-chain verification vouches for the booted image: its
//! result file (secure-ai-boot-verify, running as root, writes `boot-verify-last.json` at every
//! boot) is root's and writable by root alone, says the deployment came through the
//! signature-verified path (`checks.ostree_signature.state` is `valid` or `valid_offline`), and
//! was written in this boot, not after now. Read once, before the sandbox: a release
//! transition is made only at start, and only on this word. The file lies in the appliance's
//! log directory, which the api may write: a result it wrote is its own, not root's, and is
//! refused; an old one of root's it put back is of another boot.

use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Deserialize;

/// Largest result file read.
const MAX_BYTES: u64 = 1024 * 1024;
/// How far before the boot's start (by the wall clock) a result may say it was written: the
/// boot's start is computed, not recorded, and the two clocks are read a moment apart.
const SLACK: Duration = Duration::from_secs(5);
/// How far after now a result may say it was written (clock adjustments early in a boot); a
/// result dated later would vouch for boots to come.
const AHEAD: Duration = Duration::from_secs(300);
/// Where the hasher's unit binds the result (its directory is not the hasher's to enter).
const ENV: &str = "BOOT_VERIFY_RESULT";

/// What the boot-chain verification says of this boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vouch {
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

/// Reads the result: where `$BOOT_VERIFY_RESULT` says (the hasher unit binds the appliance's
/// file there, read-only), else `path` (the policy's `boot_verify_result`).
pub(crate) fn read_for(path: &Path) -> Vouch {
    match std::env::var_os(ENV) {
        Some(p) => read(Path::new(&p)),
        None => read(path),
    }
}

/// Reads the result at `path`: a regular file reached with no symlink, root's, writable by
/// root alone.
pub(crate) fn read(path: &Path) -> Vouch {
    use std::os::unix::fs::MetadataExt;
    let shown = path.display();
    let file = match crate::reading::open_no_symlinks(path) {
        Ok(f) => f,
        Err(e) => {
            return Vouch::Not(format!(
                "the boot-chain verification result {shown} cannot be opened (a symlink is refused): {e}"
            ))
        }
    };
    match file.metadata() {
        Ok(m) if !m.is_file() => return Vouch::Not(format!("{shown} is not a regular file")),
        Ok(m) if m.uid() != 0 || m.mode() & 0o022 != 0 => {
            return Vouch::Not(format!(
                "{shown} is owned by uid {} with mode {:o}: only a result root wrote and root alone may change vouches",
                m.uid(),
                m.mode() & 0o7777
            ))
        }
        Ok(_) => {}
        Err(e) => return Vouch::Not(format!("{shown}: {e}")),
    }
    let bytes = match crate::reading::read_bounded_file(file, MAX_BYTES) {
        Ok(b) => b,
        Err(e) => return Vouch::Not(format!("{shown} cannot be read: {e}")),
    };
    judge(path, &bytes, boot_started(), SystemTime::now())
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

fn judge(path: &Path, bytes: &[u8], boot: Option<SystemTime>, now: SystemTime) -> Vouch {
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
    if at > now + AHEAD {
        return Vouch::Not(format!(
            "{shown} says it was written at {}, after now: it cannot vouch for this boot",
            result.timestamp
        ));
    }
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
        let judged = |state: &str, at: SystemTime| judge(p, &result(state, at), Some(boot), now);
        assert_eq!(judged("valid", now), Vouch::Vouched);
        assert_eq!(judged("valid_offline", now), Vouch::Vouched);
        for state in ["invalid", "unchecked", ""] {
            assert!(matches!(judged(state, now), Vouch::Not(_)), "{state}");
        }
        let stale = boot - Duration::from_secs(3600);
        assert!(matches!(judged("valid", stale), Vouch::Not(w) if w.contains("before this boot")));
        let ahead = now + Duration::from_secs(86_400);
        assert!(matches!(judged("valid", ahead), Vouch::Not(w) if w.contains("after now")));
        assert!(matches!(judge(p, b"{}", Some(boot), now), Vouch::Not(_)));
        assert!(matches!(
            read(Path::new("/nonexistent/boot-verify-last.json")),
            Vouch::Not(_)
        ));
        // The clocks of this machine: a result written now is of this boot.
        assert_eq!(
            judge(p, &result("valid", now), boot_started(), now),
            Vouch::Vouched
        );
    }

    #[test]
    fn only_roots_result_writable_by_root_alone_and_not_a_symlink_is_read() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("dir");
        let f = dir.path().join("boot-verify-last.json");
        std::fs::write(&f, result("valid", SystemTime::now())).expect("write");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
        assert_eq!(read(&f) == Vouch::Vouched, root, "root's own file, 0644");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        assert!(matches!(read(&f), Vouch::Not(w) if w.contains("mode")));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&f, &link).expect("symlink");
        assert!(matches!(read(&link), Vouch::Not(w) if w.contains("symlink")));
        if root {
            // Written by another user (the api's, say): refused.
            std::os::unix::fs::chown(&f, Some(65534), None).expect("chown");
            assert!(matches!(read(&f), Vouch::Not(w) if w.contains("uid 65534")));
        }
    }
}
