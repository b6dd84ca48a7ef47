//! integrity-hasher: started by integrity-monitor (or systemd) with its channel on fd 3.

use std::path::PathBuf;

const USAGE: &str = "usage: integrity-hasher --policy PATH [--state-dir DIR] [--token-file PATH] [--insecure-no-sandbox] [--check-config]\n\
Started by integrity-monitor or systemd with a SEQPACKET channel on fd 3 (LISTEN_FDS=1); not run by hand.";

fn main() {
    hasher::init_logging();
    let mut args = std::env::args_os().skip(1);
    let mut policy = PathBuf::from(hasher::policy::DEFAULT_POLICY);
    let mut state_dir = PathBuf::from(hasher::store::DEFAULT_STATE_DIR);
    let mut token_file = None;
    let mut insecure_no_sandbox = false;
    let mut probe = None;
    let mut check_config = false;
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--policy") => match args.next() {
                Some(p) => policy = PathBuf::from(p),
                None => usage_error("--policy needs a path"),
            },
            Some("--state-dir") => match args.next() {
                Some(p) => state_dir = PathBuf::from(p),
                None => usage_error("--state-dir needs a directory"),
            },
            Some("--token-file") => match args.next() {
                Some(p) => token_file = Some(PathBuf::from(p)),
                None => usage_error("--token-file needs a path"),
            },
            Some("--insecure-no-sandbox") => insecure_no_sandbox = true,
            Some("--check-config") => check_config = true,
            // Test harness for the sandbox tests: attempt one act after sandboxing.
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
    std::process::exit(hasher::run(hasher::Options {
        policy,
        state_dir,
        token_file,
        insecure_no_sandbox,
        probe,
        check_config,
    }));
}

fn usage_error(why: &str) -> ! {
    eprintln!("integrity-hasher: {why}\n{USAGE}");
    std::process::exit(2)
}
