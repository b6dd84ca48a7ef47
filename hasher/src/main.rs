//! integrity-hasher: started by integrity-monitor (or systemd) with its channel on fd 3.

use std::path::PathBuf;

const USAGE: &str = "usage: integrity-hasher --policy PATH\n\
Started by integrity-monitor or systemd with a SEQPACKET channel on fd 3 (LISTEN_FDS=1); not run by hand.";

fn main() {
    hasher::init_logging();
    let mut args = std::env::args_os().skip(1);
    let mut policy = PathBuf::from(hasher::policy::DEFAULT_POLICY);
    while let Some(arg) = args.next() {
        match arg.to_str() {
            Some("--policy") => match args.next() {
                Some(p) => policy = PathBuf::from(p),
                None => usage_error("--policy needs a path"),
            },
            Some("--help") | Some("-h") => {
                println!("{USAGE}");
                return;
            }
            _ => usage_error(&format!("unknown argument {arg:?}")),
        }
    }
    std::process::exit(hasher::run(hasher::Options { policy }));
}

fn usage_error(why: &str) -> ! {
    eprintln!("integrity-hasher: {why}\n{USAGE}");
    std::process::exit(2)
}
