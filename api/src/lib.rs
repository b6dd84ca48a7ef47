//! integrity-monitor's api: unprivileged, keyless. It drives the hasher, runs the state
//! machine, serves HTTP and keeps the audit log.
#![deny(unsafe_code)]
// The cast lints: why, beside `[workspace.lints]` (Cargo.toml).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod adopted;
pub mod audit;
pub mod autoreply;
pub mod ceremony;
pub mod demo;
pub mod error;
pub mod events;
pub mod http;
pub mod incident;
pub mod link;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod recorder;
pub mod sandbox;
pub mod seal;
mod serve;
pub mod snapshot;
mod start;
pub mod state;
mod supervise;
#[allow(unsafe_code)]
pub mod sys;
pub mod token;
pub mod tools;
pub mod verdict;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The hasher's baseline store on the appliance.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/secure-ai/integrity";

/// Exit code for a configuration the operator must fix (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// The production policy path.
pub const DEFAULT_POLICY: &str = "/etc/secure-ai/policy/integrity-monitor.yaml";
/// Runtime worker threads. Measured on 2 cores under wrk with full rehashes running: one
/// worker served more requests with a shorter tail (p99 2.4 ms vs 2.8 ms; 0.5 vs 0.7 ms idle)
/// than two, which contend with the client and the hasher for the same cores.
const WORKER_THREADS: usize = 1;
/// Threads tokio may add for blocking work (the audit log has its own writer thread): few, so
/// the api stays well under its unit's TasksMax=32; past it, work queues instead of spawning.
const MAX_BLOCKING_THREADS: usize = 8;

/// Everything `integrity-monitor` is started with.
#[derive(Debug, Clone)]
pub struct Config {
    /// Policy file, handed to the hasher (the api never reads it).
    pub policy: PathBuf,
    /// Address to bind when no listener is socket-activated.
    pub listen: SocketAddr,
    /// Token file; `None` picks `$CREDENTIALS_DIRECTORY/service-token` or the default.
    pub token_file: Option<PathBuf>,
    /// Audit log path.
    pub audit_log: PathBuf,
    /// State dir holding baseline.json.
    pub state_dir: PathBuf,
    /// The integrity-hasher binary (spawned when no hasher socket is given).
    pub hasher: PathBuf,
    /// Connect to a systemd-started hasher here instead of spawning one.
    pub hasher_socket: Option<PathBuf>,
    /// Besides root (a systemd-created listener), the uid the hasher socket's peer may have.
    pub hasher_peer_uid: Option<u32>,
    /// Run both processes without Landlock and seccomp (refused with the production policy).
    pub insecure_no_sandbox: bool,
    /// The incident recorder's report URL (loopback only); `None`: no reporting.
    pub incident_url: Option<String>,
    /// Token for the recorder [default: the service token].
    pub incident_token_file: Option<PathBuf>,
    /// The hasher's baseline file instead of `state_dir` (its directory is the store).
    pub baseline_path: Option<PathBuf>,
    /// The HMAC key file, over the policy's (passed to a spawned hasher).
    pub hmac_key_file: Option<PathBuf>,
    /// The release baseline, over the policy's (passed to a spawned hasher).
    pub release_baseline: Option<PathBuf>,
    /// The TPM the spawned hasher opens [default: /dev/tpmrm0]; tests give a swtpm socket.
    pub tpm_device: Option<PathBuf>,
    /// `initialize-baseline`: stop after the first baseline and scan.
    pub initialize_only: bool,
    /// Test harness: after sandboxing, attempt this act instead of serving.
    pub probe: Option<(String, String)>,
}

/// Sends logs to stderr; under journald each line carries its priority.
pub fn init_logging() {
    imsys::logging::init();
}

/// The hasher binary next to this executable.
pub fn default_hasher() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("integrity-hasher")))
        .unwrap_or_else(|| PathBuf::from("/usr/libexec/secure-ai/integrity-hasher"))
}

/// Runs the monitor; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let mut prepared = match start::prepare(&config) {
        Ok(p) => p,
        Err(code) => return code,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let outcome = runtime.block_on(serve::serve(prepared.parts));
    runtime.shutdown_timeout(Duration::from_secs(1));
    start::exit_code(outcome, prepared.child.as_mut())
}
