//! integrity-hasher: reads the watched files and the HMAC key, and nothing else; answers the
//! api over the channel on fd 3 with signed baselines and scan reports.

#![deny(unsafe_code)]
// The cast lints: why, beside `[workspace.lints]` (Cargo.toml).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

// The hasher by job; calls flow one way: server → verifying → reading, storing, live → reading
// (tests/layout.rs checks it).
mod live;
mod reading;
pub mod storing;
mod tpm;
pub mod verifying;

pub mod checkconfig;
pub mod enroll;
pub mod error;
pub mod policy;
#[cfg(feature = "probe")]
pub mod probe;
pub mod sandbox;
mod server;
mod start;
#[allow(unsafe_code)]
mod sys;

use std::path::PathBuf;

/// Exit code for a configuration the operator must fix (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The policy file.
    pub policy: PathBuf,
    /// The baseline store, the one directory the hasher writes.
    pub state_dir: PathBuf,
    /// The baseline's file name in the store [default: baseline.json].
    pub baseline_name: Option<String>,
    /// The service token file [default: the unit's credential, else the appliance path].
    pub token_file: Option<PathBuf>,
    /// The HMAC key file, over the policy's `hmac_key_path` [default: the unit's credential,
    /// else the policy's].
    pub key_file: Option<PathBuf>,
    /// The release baseline, over the policy's `release_baseline`.
    pub release_baseline: Option<PathBuf>,
    /// Run without Landlock and seccomp (refused with the production policy path).
    pub insecure_no_sandbox: bool,
    /// Validate the policy, print the verdict and exit (0, or 78 with the key and line).
    pub check_config: bool,
    /// With `check_config`: the policy's form only, not the files it names.
    pub syntax_only: bool,
    /// The TPM [default: /dev/tpmrm0]; tests give a swtpm unix socket.
    pub tpm_device: Option<PathBuf>,
    /// `Some`: enrol the store with the TPM's counter and exit (`true`: define it anew, after
    /// a key rotation, a cleared TPM or a replaced board).
    pub tpm_enroll: Option<bool>,
    /// Test harness: after sandboxing, attempt this act on this argument instead of serving.
    pub probe: Option<(String, String)>,
}

/// Sends logs to stderr; under journald each line carries its priority.
pub fn init_logging() {
    imsys::logging::init();
}

/// Runs the hasher; returns the process exit code.
pub fn run(mut options: Options) -> i32 {
    // The policy's directory joins the sandbox's read set (for reloads): it must be absolute.
    if let Ok(abs) = std::path::absolute(&options.policy) {
        options.policy = abs;
    }
    match start::run(options) {
        Ok(code) | Err(code) => code,
    }
}
