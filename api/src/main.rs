//! integrity-monitor: parses flags and hands over to the api library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// Continuously verifies critical appliance files against an HMAC-signed baseline and serves
/// the verdict on HTTP (127.0.0.1:8510).
#[derive(Parser, Debug)]
#[command(name = "integrity-monitor", version)]
struct Args {
    /// Monitor policy (read by the hasher, never by this process).
    #[arg(long, global = true, env = "MONITOR_POLICY_PATH", default_value = api::DEFAULT_POLICY)]
    policy: PathBuf,
    /// Address to listen on when not socket-activated.
    #[arg(
        long,
        global = true,
        env = "BIND_ADDR",
        default_value = "127.0.0.1:8510"
    )]
    listen: SocketAddr,
    /// Service token file, read by the hasher this process spawns [default: its credential,
    /// else /run/secure-ai/service-token]; the service never reads it itself. `rebaseline`
    /// reads it to ask for a plan.
    #[arg(long, global = true, env = "SERVICE_TOKEN_PATH")]
    token_file: Option<PathBuf>,
    /// JSONL audit log.
    #[arg(long, global = true, env = "AUDIT_LOG_PATH", default_value = api::audit::DEFAULT_AUDIT_LOG)]
    audit_log: PathBuf,
    /// The hasher's baseline store (passed to a hasher this process spawns; a systemd hasher
    /// unit has its own StateDirectory=). This process never writes there.
    #[arg(long, global = true, default_value = api::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// The hasher's baseline file (its directory is the store), instead of --state-dir.
    #[arg(
        long,
        global = true,
        env = "BASELINE_PATH",
        conflicts_with = "state_dir"
    )]
    baseline_path: Option<PathBuf>,
    /// The HMAC key file, over the policy's hmac_key_path (passed to the spawned hasher).
    #[arg(long, global = true, env = "HMAC_KEY_PATH")]
    hmac_key_file: Option<PathBuf>,
    /// The OS image's release baseline, over the policy's (passed to the spawned hasher).
    #[arg(long, global = true, env = "EXPECTED_BASELINE_PATH")]
    release_baseline: Option<PathBuf>,
    /// The TPM the hasher anchors the baseline's generation in [default: /dev/tpmrm0]: a
    /// character device, or (tests) a swtpm unix socket. Passed to the spawned hasher and to
    /// tpm-enroll.
    #[arg(long, global = true, env = "TPM_DEVICE")]
    tpm_device: Option<PathBuf>,
    /// The integrity-hasher binary [default: next to this executable].
    #[arg(long, global = true, conflicts_with = "hasher_socket")]
    hasher: Option<PathBuf>,
    /// Connect to a systemd-started hasher on this SEQPACKET socket instead of spawning one;
    /// reconnects with backoff when it goes away.
    #[arg(long, global = true)]
    hasher_socket: Option<PathBuf>,
    /// Report each transition into degraded/recovery_required to this incident recorder URL
    /// (loopback only), e.g. http://127.0.0.1:8515/api/v1/incidents/report.
    #[arg(long, global = true, env = "INCIDENT_RECORDER_URL")]
    incident_url: Option<String>,
    /// Bearer token file for the incident recorder (never the service token) [default:
    /// $CREDENTIALS_DIRECTORY/incident-reporter-token; with none, no Authorization header].
    #[arg(long, global = true, env = "INCIDENT_RECORDER_TOKEN_PATH")]
    incident_token_file: Option<PathBuf>,
    /// Besides root, the uid allowed at the other end of --hasher-socket (SO_PEERCRED).
    #[arg(long, global = true)]
    hasher_peer_uid: Option<u32>,
    /// Run on a demo appliance tree written under a temp dir (policy, files, key, token).
    #[arg(long)]
    demo: bool,
    /// Run both processes without Landlock and seccomp (for kernels without Landlock; refused
    /// with the production policy path).
    #[arg(long, global = true)]
    insecure_no_sandbox: bool,
    /// First boot, as the Go service's flag: same as the `initialize-baseline` command.
    #[arg(long)]
    initialize_baseline: bool,
    /// Test harness: install the sandbox, attempt ACT on ARG, report, exit.
    #[cfg(feature = "probe")]
    #[arg(long, hide = true, num_args = 2, value_names = ["ACT", "ARG"])]
    sandbox_probe: Option<Vec<String>>,
    #[command(subcommand)]
    command: Option<Tool>,
}

/// Operator tools.
#[derive(clap::Subcommand, Debug)]
enum Tool {
    /// Validate a policy file and what it names: exit 0, or 78 naming the key and line (or
    /// path) at fault.
    CheckConfig {
        /// Only the policy's form, not the files and key it names (e.g. on a build host).
        #[arg(long)]
        syntax_only: bool,
    },
    /// Make a new baseline of the current files by the key ceremony: fetch the hasher's
    /// signed plan of what it would change (with the service token), show it, ask, then prove
    /// the rebaseline authority derived from the HMAC key over a challenge, the plan and its
    /// generation. Exit 0 adopted, 1 failed before any proof, 2 usage (or no terminal and no
    /// --yes), 3 refused (signed; a new plan is shown), 4 declined, 5 outcome unknown (the
    /// answer was not signed).
    Rebaseline {
        /// The HMAC key file (root only: /var/lib/secure-ai/credentials/integrity-hmac.key).
        #[arg(long)]
        key: PathBuf,
        /// The monitor.
        #[arg(long, default_value = "http://127.0.0.1:8510")]
        url: String,
        /// Approve the plan without asking (scripts).
        #[arg(long)]
        yes: bool,
        /// One JSON document on stdout (the plan, the result, the signed outcome).
        #[arg(long)]
        json: bool,
    },
    /// Seal model files with fs-verity (a directory: every file beneath it), so the monitor
    /// proves them by their seal after every reboot instead of reading them; prints each
    /// digest. Root (or the registry at promotion) runs it; the filesystem must have verity.
    Seal {
        /// Files or directories.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Print the appliance's Ed25519 public key (derived from the HMAC key) for a fleet
    /// verifier: `ed25519:<hex>` on stdout, its key id on stderr.
    PublicKey {
        /// The HMAC key file (root only).
        #[arg(long)]
        key: PathBuf,
    },
    /// Check a baseline manifest (e.g. a backup) against the HMAC key, offline.
    VerifyBaseline {
        /// The HMAC key file.
        #[arg(long)]
        key: PathBuf,
        /// The baseline.json to check.
        baseline: PathBuf,
    },
    /// Root, with the monitor stopped: anchor the baseline's generation in the TPM. Defines
    /// the monitor's NV counter (0x013f4d49) if missing, counts it once, and pins the store's
    /// signed generation record to it. Idempotent; `--reenroll` defines it anew (a rotated
    /// key, a cleared TPM, a replaced board: docs/operations.md#the-tpm-counter).
    TpmEnroll {
        /// Remove the monitor's counter first and pin the store to a new one.
        #[arg(long)]
        reenroll: bool,
    },
    /// First boot: compute, sign and store the baseline, run one scan, and exit (0 = trusted).
    InitializeBaseline,
    /// Check the audit log's hash chain across rotated files, oldest first.
    VerifyAudit {
        /// Audit log files, oldest rotation first.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Check a tail on purpose: the first record follows record SEQ whose hash is HASH
        /// (otherwise the first record must be the genesis record).
        #[arg(long, value_name = "SEQ:HASH", value_parser = api::tools::parse_position)]
        from: Option<api::audit::Head>,
        /// Also require the chain to contain record SEQ with hash HASH (an attestation's
        /// audit_seq and audit_head): the log is complete up to it.
        #[arg(long, value_name = "SEQ:HASH", value_parser = api::tools::parse_position)]
        head: Option<api::audit::Head>,
    },
    /// Ask the running monitor PID to reopen its audit log (what `systemctl reload` runs).
    Reload {
        /// The monitor's pid ($MAINPID).
        pid: i32,
    },
    /// Check an attestation (JSON on stdin) against the appliance's public key (or its HMAC
    /// key), the nonce and its age.
    #[command(group = clap::ArgGroup::new("by").required(true).args(["key", "public_key"]))]
    VerifyAttestation {
        /// The HMAC key file (whoever holds it can also forge: prefer --public-key).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The appliance's public key file (`integrity-monitor public-key` output): checks the
        /// Ed25519 signature, no secret needed.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// The nonce the attestation was requested with (hex).
        #[arg(long)]
        nonce: String,
        /// Oldest acceptable latest scan, in seconds.
        #[arg(long, default_value_t = 120)]
        max_age: u64,
        /// Also fail when the attested scan found any violation.
        #[arg(long)]
        require_clean: bool,
        /// Also fail unless the attested baseline has this SHA-256 (hex).
        #[arg(long)]
        baseline: Option<String>,
        /// Also fail when the attested baseline's store generation is below N.
        #[arg(long, value_name = "N")]
        min_generation: Option<u64>,
        /// Also fail unless the attested OS release commit is one of these (repeatable).
        #[arg(long = "release", value_name = "COMMIT")]
        releases: Vec<String>,
        /// Also fail unless the TPM's counter guards the attested baseline against a
        /// rollback (the appliance ran `tpm-enroll`).
        #[arg(long)]
        require_tpm: bool,
    },
}

fn main() {
    api::init_logging();
    let args = Args::parse();
    let config = config(&args);
    let config = match args.command {
        None if args.initialize_baseline => api::Config {
            initialize_only: true,
            ..config
        },
        None => config,
        Some(Tool::InitializeBaseline) => api::Config {
            initialize_only: true,
            ..config
        },
        Some(tool) => std::process::exit(run_tool(tool, &config)),
    };
    if args.demo {
        std::process::exit(demo(&config));
    }
    std::process::exit(api::run(config));
}

/// The monitor's configuration from the flags (and the environment clap read for them).
fn config(args: &Args) -> api::Config {
    api::Config {
        policy: args.policy.clone(),
        listen: args.listen,
        token_file: args.token_file.clone(),
        audit_log: args.audit_log.clone(),
        state_dir: args.state_dir.clone(),
        baseline_path: args.baseline_path.clone(),
        hmac_key_file: args.hmac_key_file.clone(),
        release_baseline: args.release_baseline.clone(),
        tpm_device: args.tpm_device.clone(),
        hasher: args.hasher.clone().unwrap_or_else(api::default_hasher),
        hasher_socket: args.hasher_socket.clone(),
        hasher_peer_uid: args.hasher_peer_uid,
        insecure_no_sandbox: args.insecure_no_sandbox,
        initialize_only: false,
        incident_url: args.incident_url.clone(),
        incident_token_file: args.incident_token_file.clone(),
        #[cfg(feature = "probe")]
        probe: args
            .sandbox_probe
            .as_ref()
            .and_then(|v| Some((v.first()?.clone(), v.get(1)?.clone()))),
        #[cfg(not(feature = "probe"))]
        probe: None,
    }
}

/// Runs one of the offline tools; returns its exit code.
fn run_tool(tool: Tool, config: &api::Config) -> i32 {
    match tool {
        Tool::CheckConfig { syntax_only } => api::tools::check_config(config, syntax_only),
        Tool::TpmEnroll { reenroll } => api::tools::tpm_enroll(config, reenroll),
        Tool::VerifyBaseline { key, baseline } => api::tools::verify_baseline(&key, &baseline),
        Tool::Rebaseline {
            key,
            url,
            yes,
            json,
        } => api::ceremony::rebaseline(&api::ceremony::Options {
            key,
            url,
            token_file: config.token_file.clone(),
            yes,
            json,
        }),
        Tool::Reload { pid } => api::tools::signal_reload(pid),
        Tool::Seal { paths } => api::seal::seal(&paths),
        Tool::VerifyAudit { files, from, head } => api::tools::verify_audit(&files, from, head),
        Tool::PublicKey { key } => api::tools::public_key(&key),
        Tool::VerifyAttestation {
            key,
            public_key,
            nonce,
            max_age,
            require_clean,
            baseline,
            min_generation,
            releases,
            require_tpm,
        } => api::tools::verify_attestation(
            &api::tools::Trust::of(key, public_key),
            &nonce,
            &api::tools::Pins {
                max_age: std::time::Duration::from_secs(max_age),
                require_clean,
                baseline,
                min_generation,
                releases,
                require_tpm,
            },
        ),
        // Not a tool: the caller runs the monitor once.
        Tool::InitializeBaseline => 2,
    }
}

/// `--demo`: a throwaway tree, key and token, and the monitor on them; returns its exit code.
fn demo(config: &api::Config) -> i32 {
    match api::demo::prepare(config) {
        Ok((config, instructions, root)) => {
            // Instructions are a courtesy: a closed stdout must not stop the demo.
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{instructions}").and_then(|()| out.flush());
            drop(out);
            // The monitor runs sandboxed in a child; this unsandboxed parent removes the
            // demo's tree (its key and token included) once it is done.
            let code = api::sys::run_in_child(|| api::run(config));
            let _ = std::fs::remove_dir_all(&root);
            code
        }
        Err(e) => {
            eprintln!("integrity-monitor: demo setup failed: {e}");
            1
        }
    }
}
