//! integrity-hasher: reads the watched files and the HMAC key, and nothing else; answers the
//! api over the channel on fd 3 with signed baselines and scan reports.

pub mod channel;
pub mod error;
pub mod fsread;
pub mod hashing;
pub mod key;
pub mod policy;
pub mod scan;
pub mod server;
pub mod sys;

use std::path::PathBuf;

/// Exit code for a configuration the operator must fix (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;

/// Command-line options.
#[derive(Debug, Clone)]
pub struct Options {
    /// The policy file.
    pub policy: PathBuf,
}

/// Sends logs to stderr, without timestamps under journald.
pub fn init_logging() {
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if journald {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
}

/// Runs the hasher; returns the process exit code.
pub fn run(options: Options) -> i32 {
    let fd = match sys::take_channel() {
        Ok(fd) => fd,
        Err(why) => {
            tracing::error!(why, "no channel");
            return EXIT_CONFIG;
        }
    };
    let policy = match policy::Policy::load(&options.policy) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "policy refused");
            return EXIT_CONFIG;
        }
    };
    let key = match key::load(&policy.hmac_key_path) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "HMAC key refused");
            return EXIT_CONFIG;
        }
    };
    if key.is_none() {
        tracing::warn!(path = %policy.hmac_key_path.display(), "no HMAC key file: baselines and reports will be \"unsigned\"");
    }
    let mut server = server::Server::new(options.policy, policy, key);
    let mut channel = channel::Channel::new(fd);
    match server.serve(&mut channel) {
        Ok(()) => {
            tracing::info!("api closed the channel; exiting");
            0
        }
        Err(why) => {
            tracing::error!(why, "stopping");
            1
        }
    }
}
