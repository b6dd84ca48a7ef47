//! Everything done before the runtime starts, in the order it must happen: the audit log locked
//! and opened, the recorder configured, the listener taken, the hasher spawned (before any
//! thread exists: fork in a multi-threaded process is unsafe), then the sandbox.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::serve::Parts;
use crate::supervise::{Outcome, Source};
use crate::{audit, incident, sandbox, sys, Config, DEFAULT_POLICY, EXIT_CONFIG};

/// What the runtime is started with, and the hasher this process spawned (if it did).
pub(crate) struct Prepared {
    pub(crate) parts: Parts,
    pub(crate) child: Option<std::process::Child>,
}

/// Prepares the monitor; `Err` is the exit code to stop with (the reason is already logged).
pub(crate) fn prepare(config: &Config) -> Result<Prepared, i32> {
    let audit = open_audit(&config.audit_log)?;
    if config.insecure_no_sandbox
        && imsys::paths::same_file(&config.policy, Path::new(DEFAULT_POLICY))
    {
        tracing::error!("--insecure-no-sandbox is refused with the production policy");
        return Err(EXIT_CONFIG);
    }
    let write_dirs: Vec<PathBuf> = config
        .audit_log
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    let recorder = incident_recorder(config)?;
    let connect_port = recorder.as_ref().map(|r| r.addr.port());
    // Raised first: the notify socket is kept at fd 1000, which must be below the soft limit.
    let fds = sys::raise_fd_limit();
    tracing::debug!(fds, "open-file limit");
    let unix = sandbox::Unix {
        hasher_socket: config.hasher_socket.is_some(),
        notify: connect_notify(),
    };
    #[cfg(feature = "probe")]
    if let Some((act, arg)) = &config.probe {
        // Without the sandbox the act shows what it reaches with no wall: the tests' control.
        if config.insecure_no_sandbox {
            return Err(sandbox::probe(act, arg));
        }
        return Err(match sandbox::install(&write_dirs, connect_port, unix) {
            Ok(_) => sandbox::probe(act, arg),
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed");
                EXIT_CONFIG
            }
        });
    }
    let listener = listener(config)?;
    let (source, child) = match &config.hasher_socket {
        Some(path) => (
            Source::Socket {
                path: path.clone(),
                peer_uid: config.hasher_peer_uid,
            },
            None,
        ),
        None => {
            let (fd, child) = spawn(config)?;
            (Source::Spawned(Some(fd)), Some(child))
        }
    };
    if config.insecure_no_sandbox {
        tracing::error!("SANDBOX DISABLED (--insecure-no-sandbox): no Landlock, no seccomp; never use this in production");
    } else {
        match sandbox::install(&write_dirs, connect_port, unix) {
            Ok(status) => {
                tracing::info!(landlock = status, write_dirs = ?write_dirs, unix = ?unix, seccomp = "api.json", "sandbox installed")
            }
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed; refusing to run");
                return Err(EXIT_CONFIG);
            }
        }
    }
    let parts = Parts {
        recorder,
        listener,
        source,
        audit,
        once: config.initialize_only,
    };
    Ok(Prepared { parts, child })
}

/// The notify socket, connected before the sandbox (which refuses any later datagram socket).
/// One that cannot be reached is logged and left out, as sd_notify failures always were.
fn connect_notify() -> bool {
    crate::notify::connect().unwrap_or_else(|e| {
        let target = std::env::var_os("NOTIFY_SOCKET").unwrap_or_default();
        tracing::warn!(notify_socket = %target.to_string_lossy(), error = %e, "cannot connect to NOTIFY_SOCKET (the service manager's notify socket): no notifications");
        false
    })
}

/// Locks the audit log (one monitor per log, before anything else touches it) and opens it.
fn open_audit(path: &Path) -> Result<audit::AuditLog, i32> {
    if let Some(dir) = path.parent() {
        let _ = create_dir(dir);
    }
    if let Err(e) = audit::lock(path) {
        tracing::error!(error = %e, "refusing to start a second monitor");
        return Err(EXIT_CONFIG);
    }
    audit::AuditLog::open(path).map_err(|e| {
        tracing::error!(path = %path.display(), error = %e, "cannot open the audit log");
        EXIT_CONFIG
    })
}

/// The incident recorder, when one is configured.
fn incident_recorder(config: &Config) -> Result<Option<incident::Recorder>, i32> {
    let Some(url) = &config.incident_url else {
        return Ok(None);
    };
    // Never the service token: with it a compromised api could have the hasher bless
    // tampering. The recorder gets a token of its own (the appliance's
    // incident-reporter-integrity-monitor.token), if it wants one.
    let path = config.incident_token_file.clone().or_else(|| {
        std::env::var_os("CREDENTIALS_DIRECTORY")
            .map(|d| Path::new(&d).join(incident::TOKEN_CREDENTIAL))
            .filter(|p| p.exists())
    });
    let secret = match &path {
        Some(path) => match incident::read_token(path) {
            Ok(None) => {
                tracing::warn!(path = %path.display(), source = incident::TOKEN_SOURCE, "no incident recorder token (under our unit: its source was missing): incidents are sent without one");
                None
            }
            Ok(t) => t,
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "incident recorder token unusable");
                return Err(EXIT_CONFIG);
            }
        },
        None => {
            tracing::warn!(url, "no incident recorder token (INCIDENT_RECORDER_TOKEN_PATH, --incident-token-file or the incident-reporter-token credential): incidents are sent without one");
            None
        }
    };
    incident::Recorder::parse(url, secret)
        .map(Some)
        .map_err(|e| {
            tracing::error!(error = %e, "--incident-url refused");
            EXIT_CONFIG
        })
}

/// The socket-activated listener, or one bound to `--listen` with a wide backlog.
fn listener(config: &Config) -> Result<std::net::TcpListener, i32> {
    let listener = match sys::take_listener() {
        Some(l) => {
            tracing::info!("using the socket-activated listener");
            Ok(l)
        }
        None => std::net::TcpListener::bind(config.listen)
            .and_then(|l| sys::widen_backlog(&l).map(|()| l)),
    };
    listener
        .and_then(|l| l.set_nonblocking(true).map(|()| l))
        .map_err(|e| {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            1
        })
}

/// The process exit code for how the monitor ended, after reaping a spawned hasher.
pub(crate) fn exit_code(outcome: Outcome, child: Option<&mut std::process::Child>) -> i32 {
    match (outcome, child) {
        (Outcome::Stopped | Outcome::Initialized(_), child) => {
            if let Some(child) = child {
                reap(child);
            }
            match outcome {
                Outcome::Initialized(false) => 1,
                _ => 0,
            }
        }
        // A hasher that misbehaved is not waited for: PR_SET_PDEATHSIG kills it as we exit
        // (the sandbox's signal scope keeps this process from signalling it).
        (Outcome::HasherLost, _) => 1,
        (Outcome::StartFailed, child) => match child.and_then(reap).and_then(|s| s.code()) {
            Some(EXIT_CONFIG) => {
                tracing::error!("the hasher refused its configuration (see its error above)");
                EXIT_CONFIG
            }
            _ => 1,
        },
    }
}

/// Spawns the hasher before any thread exists (fork in a multi-threaded process is unsafe).
fn spawn(config: &Config) -> Result<(std::os::fd::OwnedFd, std::process::Child), i32> {
    let (api_end, hasher_end) = sys::seqpacket_pair().map_err(|e| {
        tracing::error!(error = %e, "socketpair failed");
        1
    })?;
    let mut args = vec!["--policy".into(), config.policy.clone().into_os_string()];
    match &config.baseline_path {
        Some(file) => args.extend(["--baseline-path".into(), file.clone().into_os_string()]),
        None => args.extend([
            "--state-dir".into(),
            config.state_dir.clone().into_os_string(),
        ]),
    }
    // The hasher's environment is cleared: what came by flag or environment goes by flag.
    for (flag, value) in [
        ("--token-file", &config.token_file),
        ("--hmac-key-file", &config.hmac_key_file),
        ("--release-baseline", &config.release_baseline),
        ("--tpm-device", &config.tpm_device),
    ] {
        if let Some(v) = value {
            args.extend([flag.into(), v.clone().into_os_string()]);
        }
    }
    if config.insecure_no_sandbox {
        args.push("--insecure-no-sandbox".into());
    }
    let child = sys::spawn_hasher(&config.hasher, &args, hasher_end).map_err(|e| {
        tracing::error!(hasher = %config.hasher.display(), error = %e, "cannot start the hasher (use --hasher PATH)");
        EXIT_CONFIG
    })?;
    tracing::info!(pid = child.id(), "hasher started");
    Ok((api_end, child))
}

fn reap(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    // The hasher exits within milliseconds of its channel closing: poll fast, then back off,
    // for about two seconds in all.
    let mut pause = Duration::from_millis(1);
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(100));
    }
    // Refused by the sandbox's signal scope; PR_SET_PDEATHSIG ends the hasher with us anyway.
    let _ = child.kill();
    None
}

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}
