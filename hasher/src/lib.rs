//! integrity-hasher: reads the watched files and the HMAC key, and nothing else; answers the
//! api over the channel on fd 3 with signed baselines and scan reports.

#![deny(unsafe_code)]

pub mod budget;
pub mod channel;
pub mod chunks;
pub mod error;
pub mod fsread;
pub mod hashing;
pub mod key;
pub mod lifeline;
pub mod policy;
#[cfg(feature = "probe")]
pub mod probe;
pub mod reader;
pub mod registry;
pub mod release;
pub mod resolve;
pub mod sandbox;
pub mod scan;
pub mod server;
pub mod store;
#[allow(unsafe_code)]
pub mod sys;
pub mod token;
pub mod version;
pub mod walk;
pub mod watch;

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
    let fd = if options.probe.is_some() || options.check_config {
        None
    } else {
        match sys::take_channel() {
            Ok(fd) => {
                // Duplicated now: the sandbox allows no F_DUPFD later.
                if let Ok(dup) = fd.try_clone() {
                    lifeline::watch(dup);
                }
                Some(fd)
            }
            Err(why) => {
                tracing::error!(why, "no channel");
                return EXIT_CONFIG;
            }
        }
    };
    let policy = match policy::Policy::load(&options.policy) {
        Ok(p) => p.with_release_baseline(options.release_baseline.clone()),
        Err(e) => {
            tracing::error!(error = %e, "policy refused");
            return EXIT_CONFIG;
        }
    };
    if options.check_config {
        return check_config(&options, &policy);
    }
    // An explicit key file (flag or HMAC_KEY_PATH) first; under systemd the credential;
    // elsewhere the policy's path.
    let key_path = options.key_file.clone().unwrap_or_else(|| {
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| std::path::Path::new(&d).join("integrity-hmac-key"))
            .filter(|p| p.exists())
            .unwrap_or_else(|| policy.hmac_key_path.clone())
    });
    let key = match key::load(&key_path) {
        Ok(k) => k,
        Err(e) => {
            tracing::error!(error = %e, "HMAC key refused");
            return EXIT_CONFIG;
        }
    };
    if key.is_none() {
        tracing::warn!(path = %key_path.display(), "no HMAC key file: baselines and reports will be \"unsigned\"");
    }
    let token_path = token::path(options.token_file.as_deref());
    let token = match token::load(&token_path) {
        Ok(t) => t,
        Err(why) => {
            tracing::error!(why, "service token refused");
            return EXIT_CONFIG;
        }
    };
    sys::lower_priority();
    let read_set = sandbox::read_set(&policy, &options.policy);
    if let Some((dir, secret)) = sandbox::exposes(&read_set, &[key_path.clone(), token_path]) {
        tracing::error!(dir = %dir.display(), secret = %secret.display(), "the policy's watched paths would let the hasher read a secret after start: keep the key and token out of every watched file's directory, the model dirs and the policy's directory");
        return EXIT_CONFIG;
    }
    let store = if options.probe.is_some() {
        None
    } else {
        let name = options.baseline_name.as_deref().unwrap_or("baseline.json");
        match store::Store::open_named(&options.state_dir, name) {
            Ok(s) => Some(s),
            Err(why) => {
                tracing::error!(why, "baseline store unusable");
                return EXIT_CONFIG;
            }
        }
    };
    let loaded = store
        .as_ref()
        .map(|s| s.load(key.as_ref().map(key::Key::bytes)));
    if options.insecure_no_sandbox {
        if options.policy == std::path::Path::new(policy::DEFAULT_POLICY) {
            tracing::error!("--insecure-no-sandbox is refused with the production policy");
            return EXIT_CONFIG;
        }
        tracing::error!("SANDBOX DISABLED (--insecure-no-sandbox): no Landlock, no seccomp; never use this in production");
    } else {
        match sandbox::install(&read_set, &options.state_dir) {
            Ok(e) => {
                tracing::info!(landlock = e.landlock, read_set = ?e.read_set, store = %options.state_dir.display(), seccomp = "hasher.json", "sandbox installed")
            }
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed; refusing to run");
                return EXIT_CONFIG;
            }
        }
    }
    #[cfg(feature = "probe")]
    if let Some((act, arg)) = &options.probe {
        return probe::run(act, arg);
    }
    let (Some(fd), Some(store), Some(loaded)) = (fd, store, loaded) else {
        return 1;
    };
    let mut server = server::Server::new(server::Parts {
        policy_path: options.policy,
        policy,
        key,
        token,
        store,
        loaded,
        read_set,
        release_override: options.release_baseline.clone(),
    });
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

/// `--check-config`: the policy parses and validates (done by the caller), and what it names
/// can work: every listed file is a readable regular file, every model dir a directory, the
/// key file there and readable by its owner only. Each problem names the key and the path.
fn check_config(options: &Options, policy: &policy::Policy) -> i32 {
    let mut problems = Vec::new();
    if options.syntax_only {
        println!(
            "{}: form OK (files not looked at)",
            options.policy.display()
        );
        return 0;
    }
    for (path, category) in &policy.files {
        let key = policy::key_of(*category);
        match std::fs::symlink_metadata(path) {
            Err(e) => problems.push(format!(
                "{key}: {}: {e} (a baseline could never be made; rebaseline answers 409)",
                path.display()
            )),
            Ok(m) if m.file_type().is_symlink() => problems.push(format!(
                "{key}: {}: is a symlink (list its target)",
                path.display()
            )),
            Ok(m) if !m.file_type().is_file() => {
                problems.push(format!("{key}: {}: not a regular file", path.display()))
            }
            Ok(_) => {}
        }
    }
    for dir in &policy.model_dirs {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
            problems.push(format!("model_dirs: {}: not a directory", dir.display()));
        }
    }
    let key_path = options
        .key_file
        .clone()
        .unwrap_or_else(|| policy.hmac_key_path.clone());
    match key::load(&key_path) {
        Ok(Some(_)) => {}
        Ok(None) => problems.push(format!(
            "hmac_key_path: {}: does not exist (the service would run unsigned and a boot check would refuse it)",
            key_path.display()
        )),
        Err(e) => problems.push(format!("hmac_key_path: {e}")),
    }
    if problems.is_empty() {
        println!(
            "{}: OK ({} files, {} model dirs, interval {:?}, threshold {})",
            options.policy.display(),
            policy.files.len(),
            policy.model_dirs.len(),
            policy.scan_interval,
            policy.degradation_threshold
        );
        0
    } else {
        for p in &problems {
            eprintln!("{}: {p}", options.policy.display());
        }
        EXIT_CONFIG
    }
}
