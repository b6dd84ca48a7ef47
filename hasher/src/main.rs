//! integrity-hasher: started by integrity-monitor (or systemd) with its channel on fd 3.

use std::path::PathBuf;

const USAGE: &str = "usage: integrity-hasher [--policy PATH] [--state-dir DIR | --baseline-path FILE] [--token-file PATH]\n\
       [--hmac-key-file PATH] [--release-baseline PATH] [--tpm-device PATH] [--insecure-no-sandbox]\n\
       [--check-config [--syntax-only]] [--tpm-enroll | --tpm-reenroll]\n\
Started by integrity-monitor or systemd with a SEQPACKET channel on fd 3 (LISTEN_FDS=1); not run by hand.\n\
Flags win over the environment (MONITOR_POLICY_PATH, BASELINE_PATH, SERVICE_TOKEN_PATH, HMAC_KEY_PATH,\n\
EXPECTED_BASELINE_PATH), which wins over the policy file and the defaults.";

/// The environment variable's value as a path, if set and not empty.
fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn main() {
    hasher::init_logging();
    let options = options(Flags::parse(std::env::args_os().skip(1)));
    std::process::exit(hasher::run(options));
}

/// What the command line said, before the environment and the defaults fill the gaps.
#[derive(Default)]
struct Flags {
    policy: Option<PathBuf>,
    state_dir: Option<PathBuf>,
    baseline_path: Option<PathBuf>,
    token_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
    release_baseline: Option<PathBuf>,
    tpm_device: Option<PathBuf>,
    tpm_enroll: Option<bool>,
    insecure_no_sandbox: bool,
    probe: Option<(String, String)>,
    check_config: bool,
    syntax_only: bool,
}

impl Flags {
    /// Parses the arguments; `--help` prints the usage and exits 0, a bad argument exits 2.
    fn parse(mut args: impl Iterator<Item = std::ffi::OsString>) -> Flags {
        let mut f = Flags::default();
        while let Some(arg) = args.next() {
            match arg.to_str() {
                Some(
                    flag @ ("--policy" | "--state-dir" | "--baseline-path" | "--token-file"
                    | "--hmac-key-file" | "--release-baseline" | "--tpm-device"),
                ) => {
                    let Some(value) = args.next().map(PathBuf::from) else {
                        usage_error(&format!("{flag} needs a path"))
                    };
                    let slot = match flag {
                        "--policy" => &mut f.policy,
                        "--state-dir" => &mut f.state_dir,
                        "--baseline-path" => &mut f.baseline_path,
                        "--token-file" => &mut f.token_file,
                        "--hmac-key-file" => &mut f.key_file,
                        "--tpm-device" => &mut f.tpm_device,
                        _ => &mut f.release_baseline,
                    };
                    *slot = Some(value);
                }
                Some("--insecure-no-sandbox") => f.insecure_no_sandbox = true,
                Some("--check-config") => f.check_config = true,
                Some("--tpm-enroll") => f.tpm_enroll = Some(false),
                Some("--tpm-reenroll") => f.tpm_enroll = Some(true),
                Some("--syntax-only") => f.syntax_only = true,
                // Test harness for the sandbox tests: attempt one act after sandboxing.
                #[cfg(feature = "probe")]
                Some("--sandbox-probe") => match (args.next(), args.next()) {
                    (Some(act), Some(arg)) => {
                        f.probe = Some((
                            act.to_string_lossy().into_owned(),
                            arg.to_string_lossy().into_owned(),
                        ))
                    }
                    _ => usage_error("--sandbox-probe needs an act and an argument"),
                },
                Some("--help") | Some("-h") => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                _ => usage_error(&format!("unknown argument {arg:?}")),
            }
        }
        f
    }
}

/// Flags win over the environment, which wins over the defaults.
fn options(f: Flags) -> hasher::Options {
    let policy = f
        .policy
        .or_else(|| env_path("MONITOR_POLICY_PATH"))
        .unwrap_or_else(|| PathBuf::from(hasher::policy::DEFAULT_POLICY));
    // BASELINE_PATH names the baseline file; its directory is the store.
    let baseline_path = f.baseline_path.or_else(|| {
        f.state_dir
            .is_none()
            .then(|| env_path("BASELINE_PATH"))
            .flatten()
    });
    let (state_dir, baseline_name) = match (f.state_dir, baseline_path) {
        (Some(dir), _) => (dir, None),
        (None, Some(file)) => match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                (dir.to_owned(), Some(name.to_string_lossy().into_owned()))
            }
            _ => usage_error(&format!("{}: not a file path", file.display())),
        },
        (None, None) => (PathBuf::from(hasher::storing::DEFAULT_STATE_DIR), None),
    };
    hasher::Options {
        policy,
        state_dir,
        baseline_name,
        token_file: f.token_file.or_else(|| env_path("SERVICE_TOKEN_PATH")),
        key_file: f.key_file.or_else(|| env_path("HMAC_KEY_PATH")),
        release_baseline: f
            .release_baseline
            .or_else(|| env_path("EXPECTED_BASELINE_PATH")),
        insecure_no_sandbox: f.insecure_no_sandbox,
        tpm_device: f.tpm_device,
        tpm_enroll: f.tpm_enroll,
        probe: f.probe,
        check_config: f.check_config,
        syntax_only: f.syntax_only,
    }
}

#[allow(
    clippy::exit,
    reason = "main's own refusal of its arguments, before anything runs"
)]
fn usage_error(why: &str) -> ! {
    eprintln!("integrity-hasher: {why}\n{USAGE}");
    std::process::exit(2)
}
