//! integrity-hasher: started by integrity-monitor (or systemd) with its channel on fd 3.

use std::path::PathBuf;

const USAGE: &str = "usage: integrity-hasher [--policy PATH] [--state-dir DIR | --baseline-path FILE] [--token-file PATH]\n\
       [--hmac-key-file PATH] [--release-baseline PATH] [--insecure-no-sandbox] [--check-config [--syntax-only]]\n\
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
    let mut args = std::env::args_os().skip(1);
    let mut policy = None;
    let mut state_dir = None;
    let mut baseline_path = None;
    let mut token_file = None;
    let mut key_file = None;
    let mut release_baseline = None;
    let mut insecure_no_sandbox = false;
    #[cfg_attr(not(feature = "probe"), allow(unused_mut))]
    let mut probe = None;
    let mut check_config = false;
    let mut syntax_only = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some(
                flag @ ("--policy" | "--state-dir" | "--baseline-path" | "--token-file"
                | "--hmac-key-file" | "--release-baseline"),
            ) => {
                let Some(value) = args.next().map(PathBuf::from) else {
                    usage_error(&format!("{flag} needs a path"))
                };
                let slot = match flag {
                    "--policy" => &mut policy,
                    "--state-dir" => &mut state_dir,
                    "--baseline-path" => &mut baseline_path,
                    "--token-file" => &mut token_file,
                    "--hmac-key-file" => &mut key_file,
                    _ => &mut release_baseline,
                };
                *slot = Some(value);
            }
            Some("--insecure-no-sandbox") => insecure_no_sandbox = true,
            Some("--check-config") => check_config = true,
            Some("--syntax-only") => syntax_only = true,
            // Test harness for the sandbox tests: attempt one act after sandboxing.
            #[cfg(feature = "probe")]
            Some("--sandbox-probe") => match (args.next(), args.next()) {
                (Some(act), Some(arg)) => {
                    probe = Some((
                        act.to_string_lossy().into_owned(),
                        arg.to_string_lossy().into_owned(),
                    ))
                }
                _ => usage_error("--sandbox-probe needs an act and an argument"),
            },
            Some("--help") | Some("-h") => {
                println!("{USAGE}");
                return;
            }
            _ => usage_error(&format!("unknown argument {arg:?}")),
        }
    }
    let policy = policy
        .or_else(|| env_path("MONITOR_POLICY_PATH"))
        .unwrap_or_else(|| PathBuf::from(hasher::policy::DEFAULT_POLICY));
    // BASELINE_PATH names the baseline file; its directory is the store.
    let baseline_path = baseline_path.or_else(|| {
        state_dir
            .is_none()
            .then(|| env_path("BASELINE_PATH"))
            .flatten()
    });
    let (state_dir, baseline_name) = match (state_dir, baseline_path) {
        (Some(dir), _) => (dir, None),
        (None, Some(file)) => match (file.parent(), file.file_name()) {
            (Some(dir), Some(name)) if !dir.as_os_str().is_empty() => {
                (dir.to_owned(), Some(name.to_string_lossy().into_owned()))
            }
            _ => usage_error(&format!("{}: not a file path", file.display())),
        },
        (None, None) => (PathBuf::from(hasher::store::DEFAULT_STATE_DIR), None),
    };
    std::process::exit(hasher::run(hasher::Options {
        policy,
        state_dir,
        baseline_name,
        token_file: token_file.or_else(|| env_path("SERVICE_TOKEN_PATH")),
        key_file: key_file.or_else(|| env_path("HMAC_KEY_PATH")),
        release_baseline: release_baseline.or_else(|| env_path("EXPECTED_BASELINE_PATH")),
        insecure_no_sandbox,
        probe,
        check_config,
        syntax_only,
    }));
}

fn usage_error(why: &str) -> ! {
    eprintln!("integrity-hasher: {why}\n{USAGE}");
    std::process::exit(2)
}
