//! integrity-monitor's api: unprivileged, keyless. It drives the hasher, runs the state
//! machine, serves HTTP and keeps the audit log.
#![deny(unsafe_code)]

pub mod audit;
pub mod autoreply;
pub mod demo;
pub mod error;
pub mod http;
pub mod incident;
pub mod link;
pub mod metrics;
pub mod monitor;
pub mod notify;
pub mod recorder;
pub mod sandbox;
pub mod snapshot;
pub mod state;
#[allow(unsafe_code)]
pub mod sys;
pub mod token;
pub mod tools;
pub mod verdict;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch, Notify};

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

fn create_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

/// Where the hasher comes from.
enum Source {
    /// Spawned by this process: one channel, no second chance.
    Spawned(Option<std::os::fd::OwnedFd>),
    /// A socket-activated hasher unit: reconnect with backoff whenever it goes away.
    Socket {
        path: PathBuf,
        peer_uid: Option<u32>,
    },
}

/// Runs the monitor; returns the process exit code.
pub fn run(config: Config) -> i32 {
    if let Some(dir) = config.audit_log.parent() {
        let _ = create_dir(dir);
    }
    // One monitor per audit log, before anything else touches it.
    match audit::lock(&config.audit_log) {
        Ok(()) => {}
        Err(why) => {
            tracing::error!(why, "refusing to start a second monitor");
            return EXIT_CONFIG;
        }
    }
    let audit = match audit::AuditLog::open(&config.audit_log) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(path = %config.audit_log.display(), error = %e, "cannot open the audit log");
            return EXIT_CONFIG;
        }
    };
    if config.insecure_no_sandbox && config.policy == Path::new(DEFAULT_POLICY) {
        tracing::error!("--insecure-no-sandbox is refused with the production policy");
        return EXIT_CONFIG;
    }
    let write_dirs: Vec<PathBuf> = config
        .audit_log
        .parent()
        .map(Path::to_path_buf)
        .into_iter()
        .collect();
    let recorder = match &config.incident_url {
        None => None,
        Some(url) => {
            // Never the service token: with it a compromised api could have the hasher bless
            // tampering. The recorder gets a token of its own, if it wants one.
            let secret = match &config.incident_token_file {
                Some(path) => match std::fs::read_to_string(path) {
                    Ok(t) => t.trim().to_owned(),
                    Err(e) => {
                        tracing::error!(path = %path.display(), error = %e, "incident recorder token unreadable");
                        return EXIT_CONFIG;
                    }
                },
                None => String::new(),
            };
            match incident::Recorder::parse(url, secret) {
                Ok(r) => Some(r),
                Err(e) => {
                    tracing::error!(error = e, "--incident-url refused");
                    return EXIT_CONFIG;
                }
            }
        }
    };
    let connect_port = recorder.as_ref().map(|r| r.addr.port());
    #[cfg(feature = "probe")]
    if let Some((act, arg)) = &config.probe {
        return match sandbox::install(&write_dirs, connect_port) {
            Ok(_) => sandbox::probe(act, arg),
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed");
                EXIT_CONFIG
            }
        };
    }
    let listener = match sys::take_listener() {
        Some(l) => {
            tracing::info!("using the socket-activated listener");
            Ok(l)
        }
        None => std::net::TcpListener::bind(config.listen)
            .and_then(|l| sys::widen_backlog(&l).map(|()| l)),
    };
    let listener = match listener.and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            return 1;
        }
    };
    let fds = sys::raise_fd_limit();
    tracing::debug!(fds, "open-file limit");
    let (source, mut child) = match &config.hasher_socket {
        Some(path) => (
            Source::Socket {
                path: path.clone(),
                peer_uid: config.hasher_peer_uid,
            },
            None,
        ),
        None => match spawn(&config) {
            Ok((fd, child)) => (Source::Spawned(Some(fd)), Some(child)),
            Err(code) => return code,
        },
    };
    if config.insecure_no_sandbox {
        tracing::error!("SANDBOX DISABLED (--insecure-no-sandbox): no Landlock, no seccomp; never use this in production");
    } else {
        match sandbox::install(&write_dirs, connect_port) {
            Ok(status) => {
                tracing::info!(landlock = status, write_dirs = ?write_dirs, seccomp = "api.json", "sandbox installed")
            }
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed; refusing to run");
                return EXIT_CONFIG;
            }
        }
    }
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
    let outcome = runtime.block_on(serve(Parts {
        recorder,
        listener,
        source,
        audit,
        once: config.initialize_only,
    }));
    runtime.shutdown_timeout(Duration::from_secs(1));
    match (outcome, child.as_mut()) {
        (Outcome::Stopped, Some(child)) => {
            reap(child);
            0
        }
        (Outcome::Stopped, None) => 0,
        (Outcome::Initialized(trusted), child) => {
            if let Some(child) = child {
                reap(child);
            }
            if trusted {
                0
            } else {
                1
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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Initialized(bool),
    Stopped,
    HasherLost,
    StartFailed,
}

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

fn connect(path: &Path, peer_uid: Option<u32>) -> Result<std::os::fd::OwnedFd, String> {
    let (fd, uid) = sys::connect_hasher(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if uid != 0 && Some(uid) != peer_uid {
        return Err(format!(
            "{}: peer uid {uid} is neither root (systemd) nor --hasher-peer-uid",
            path.display()
        ));
    }
    Ok(fd)
}

/// Keeps a hasher connected: hands each new link to the monitor, records each loss, and in
/// spawned mode gives up after the first (the service manager restarts the pair).
async fn supervise(
    mut source: Source,
    mut calls: mpsc::Receiver<link::Call>,
    monitor: Arc<monitor::Monitor>,
    end: watch::Sender<Option<Outcome>>,
    once: bool,
) {
    let mut backoff = BACKOFF_MIN;
    let mut connected_once = false;
    loop {
        let fd = match &mut source {
            Source::Spawned(fd) => match fd.take() {
                Some(fd) => fd,
                None => {
                    let _ = end.send(Some(Outcome::HasherLost));
                    return;
                }
            },
            Source::Socket { path, peer_uid } => match connect(path, *peer_uid) {
                Ok(fd) => fd,
                Err(why) => {
                    tracing::warn!(
                        why,
                        retry_ms = backoff.as_millis() as u64,
                        "hasher not reachable"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        let link = match link::Link::new(fd, monitor.changes()) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "hasher channel unusable");
                let _ = end.send(Some(Outcome::StartFailed));
                return;
            }
        };
        let cut = Arc::new(Notify::new());
        monitor.set_link_cutter(cut.clone());
        let mut task = tokio::spawn(link::run(link, calls, cut));
        let first = !connected_once;
        connected_once = true;
        // The handshake races the link: a hasher that dies before answering must not leave
        // the handshake waiting on a queue nobody reads.
        let handshake = monitor.connected(first);
        tokio::pin!(handshake);
        let (handshake, joined) = tokio::select! {
            r = &mut handshake => (Some(r), None),
            j = &mut task => (None, Some(j)),
        };
        let spawned_first = first && matches!(source, Source::Spawned(_));
        match handshake {
            Some(Ok(())) => {
                backoff = BACKOFF_MIN;
                tracing::info!("hasher connected");
                if first && once {
                    let trusted = verdict::verdict(&monitor.snapshot()).is_ok();
                    let _ = end.send(Some(Outcome::Initialized(trusted)));
                    return;
                }
                if first {
                    notify::ready(&monitor);
                }
            }
            _ if spawned_first => {
                monitor.hasher_lost("hasher did not complete the start-up");
                let _ = end.send(Some(Outcome::StartFailed));
                return;
            }
            Some(Err(e)) => tracing::error!(error = %e, "hasher handshake failed"),
            None => tracing::error!("hasher went away during the handshake"),
        }
        let joined = match joined {
            Some(j) => j,
            None => task.await,
        };
        let (mut rx, failure) = match joined {
            Ok(r) => r,
            Err(_) => return,
        };
        link::refuse_pending(&mut rx);
        calls = rx;
        let why = failure.map_or_else(|| "call queue closed".to_owned(), |e| e.to_string());
        monitor.hasher_lost(&why);
        if let Source::Socket { .. } = source {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(BACKOFF_MAX);
        }
    }
}

/// Everything prepared before the runtime starts.
struct Parts {
    recorder: Option<incident::Recorder>,
    listener: std::net::TcpListener,
    source: Source,
    audit: audit::AuditLog,
    once: bool,
}

async fn serve(parts: Parts) -> Outcome {
    let Parts {
        recorder,
        listener,
        source,
        audit,
        once,
    } = parts;
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listener unusable");
            return Outcome::StartFailed;
        }
    };
    let spawned = matches!(source, Source::Spawned(_));
    let (calls_tx, calls_rx) = mpsc::channel(8);
    let audit_writer = match recorder::Recorder::start(audit) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit writer");
            return Outcome::StartFailed;
        }
    };
    let monitor = Arc::new(monitor::Monitor::new(calls_tx, audit_writer));
    let reporter = recorder.map(|rec| {
        let (tx, rx) = mpsc::channel(incident::QUEUE);
        monitor.set_incident_queue(tx);
        tokio::spawn(incident::run(rec, rx, monitor.clone()))
    });
    monitor.audit(
        "start",
        json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
    );
    let (end_tx, mut end_rx) = watch::channel(None);
    let supervisor = tokio::spawn(supervise(source, calls_rx, monitor.clone(), end_tx, once));
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, monitor.clone(), wait_true(stop_rx)));
    let scheduler = tokio::spawn(monitor.clone().schedule());
    let keepalive = tokio::spawn(notify::keepalive(monitor.clone()));
    let hup = tokio::spawn(reopen_on_hup(monitor.clone()));
    let outcome = tokio::select! {
        () = signals() => Outcome::Stopped,
        r = end_rx.wait_for(Option::is_some) => r.ok().and_then(|o| *o).unwrap_or(Outcome::HasherLost),
    };
    if matches!(outcome, Outcome::Stopped | Outcome::Initialized(_)) {
        monitor.begin_stop();
    }
    notify::stopping();
    if outcome == Outcome::HasherLost && spawned {
        // Keep answering 503 briefly so callers see the failure, then let the service manager
        // restart the pair: a sandboxed api cannot start a new hasher itself.
        tracing::error!("hasher lost: answering 503, then exiting for a restart of the pair");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for task in [scheduler, keepalive, hup, supervisor]
        .into_iter()
        .chain(reporter)
    {
        task.abort();
    }
    let _ = stop_tx.send(true);
    let _ = server.await;
    let reason = match outcome {
        Outcome::Stopped => "signal",
        Outcome::HasherLost => "hasher_lost",
        Outcome::StartFailed => "start_failed",
        Outcome::Initialized(_) => "initialized",
    };
    monitor.audit("stop", json!({ "reason": reason }));
    if !monitor.audit_flush().await {
        tracing::error!("stopping with audit records not on disk (see the errors above)");
    }
    outcome
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

async fn reopen_on_hup(monitor: Arc<monitor::Monitor>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("cannot install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("SIGHUP: reopening the audit log");
        monitor.reopen_audit();
    }
}

async fn signals() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
}
