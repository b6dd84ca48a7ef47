//! integrity-monitor's api: unprivileged, keyless. It drives the hasher, runs the state
//! machine, serves HTTP and keeps the audit log.

pub mod audit;
pub mod demo;
pub mod error;
pub mod http;
pub mod link;
pub mod monitor;
pub mod sandbox;
pub mod state;
pub mod store;
pub mod sys;
pub mod token;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::{mpsc, watch};

/// Exit code for a configuration the operator must fix (sysexits EX_CONFIG).
pub const EXIT_CONFIG: i32 = 78;
/// The production policy path.
pub const DEFAULT_POLICY: &str = "/etc/secure-ai/policy/integrity-monitor.yaml";

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
    /// The integrity-hasher binary.
    pub hasher: PathBuf,
    /// Run both processes without Landlock and seccomp (refused with the production policy).
    pub insecure_no_sandbox: bool,
    /// Test harness: after sandboxing, attempt this act instead of serving.
    pub probe: Option<(String, String)>,
}

/// Sends logs to stderr, without timestamps under journald.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).init();
    } else {
        builder.init();
    }
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

/// Runs the monitor; returns the process exit code.
pub fn run(config: Config) -> i32 {
    let token = token::load(&token::token_path(config.token_file.as_deref()));
    let store = store::BaselineStore::new(&config.state_dir);
    if let Err(e) = create_dir(&config.state_dir) {
        tracing::error!(dir = %config.state_dir.display(), error = %e, "cannot create the state dir");
        return EXIT_CONFIG;
    }
    let stored = store.read().map_err(|e| e.to_string());
    if let Some(dir) = config.audit_log.parent() {
        let _ = create_dir(dir);
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
        .chain([config.state_dir.clone()])
        .collect();
    if let Some((act, arg)) = &config.probe {
        return match sandbox::install(&write_dirs) {
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
        None => std::net::TcpListener::bind(config.listen),
    };
    let listener = match listener.and_then(|l| l.set_nonblocking(true).map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(listen = %config.listen, error = %e, "cannot listen");
            return 1;
        }
    };
    if !config.listen.ip().is_loopback() {
        tracing::warn!(listen = %config.listen, "listening on a non-loopback address");
    }
    // The hasher is spawned before any thread exists: fork in a multi-threaded process is unsafe.
    let (api_end, hasher_end) = match sys::seqpacket_pair() {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(error = %e, "socketpair failed");
            return 1;
        }
    };
    let mut args = vec!["--policy".into(), config.policy.clone().into_os_string()];
    if config.insecure_no_sandbox {
        args.push("--insecure-no-sandbox".into());
    }
    let mut child = match sys::spawn_hasher(&config.hasher, &args, hasher_end) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(hasher = %config.hasher.display(), error = %e, "cannot start the hasher (use --hasher PATH)");
            return EXIT_CONFIG;
        }
    };
    tracing::info!(pid = child.id(), "hasher started");
    if config.insecure_no_sandbox {
        tracing::error!("SANDBOX DISABLED (--insecure-no-sandbox): no Landlock, no seccomp; never use this in production");
    } else {
        match sandbox::install(&write_dirs) {
            Ok(status) => {
                tracing::info!(landlock = status, write_dirs = ?write_dirs, seccomp = "api.json", "sandbox installed")
            }
            Err(e) => {
                tracing::error!(error = %e, "sandbox could not be installed; refusing to run");
                let _ = child.kill();
                let _ = child.wait();
                return EXIT_CONFIG;
            }
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the runtime");
            return 1;
        }
    };
    let outcome = runtime.block_on(serve(listener, api_end, audit, store, token, stored));
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Outcome::HasherLost = outcome {
        // A hasher that misbehaved is not waited for: PR_SET_PDEATHSIG kills it as we exit
        // (the sandbox's signal scope keeps this process from signalling it).
        return 1;
    }
    let hasher_status = reap(&mut child);
    match outcome {
        Outcome::Stopped => 0,
        Outcome::HasherLost => 1,
        Outcome::StartFailed => match hasher_status.and_then(|s| s.code()) {
            Some(EXIT_CONFIG) => {
                tracing::error!("the hasher refused its configuration (see its error above)");
                EXIT_CONFIG
            }
            _ => 1,
        },
    }
}

fn reap(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
    for _ in 0..50 {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Refused by the sandbox's signal scope; PR_SET_PDEATHSIG ends the hasher with us anyway.
    let _ = child.kill();
    None
}

enum Outcome {
    Stopped,
    HasherLost,
    StartFailed,
}

async fn serve(
    listener: std::net::TcpListener,
    api_end: std::os::fd::OwnedFd,
    audit: audit::AuditLog,
    store: store::BaselineStore,
    token: Option<token::Token>,
    stored: Result<Option<Vec<u8>>, String>,
) -> Outcome {
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "listener unusable");
            return Outcome::StartFailed;
        }
    };
    let link = match link::Link::new(api_end) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(error = %e, "hasher channel unusable");
            return Outcome::StartFailed;
        }
    };
    let (calls_tx, calls_rx) = mpsc::channel(8);
    let (down_tx, mut down_rx) = watch::channel(None);
    let down_tx = Arc::new(down_tx);
    let (link_down_tx, mut link_down_rx) = watch::channel(None);
    tokio::spawn(link::run(link, calls_rx, link_down_tx));
    let monitor = Arc::new(monitor::Monitor::new(
        calls_tx,
        down_tx.clone(),
        audit,
        store,
        token,
    ));
    let watcher = monitor.clone();
    tokio::spawn(async move {
        if link_down_rx.wait_for(Option::is_some).await.is_ok() {
            let why = link_down_rx.borrow().clone().unwrap_or_default();
            watcher.hasher_lost(&why);
        }
    });
    if let Err(e) = monitor.hello().await {
        tracing::error!(error = %e, "hasher did not complete the handshake");
        return Outcome::StartFailed;
    }
    monitor.audit(
        "start",
        json!({ "version": env!("CARGO_PKG_VERSION"), "pid": std::process::id() }),
    );
    let (stop_tx, stop_rx) = watch::channel(false);
    let server = tokio::spawn(http::serve(listener, monitor.clone(), wait_true(stop_rx)));
    let starter = monitor.clone();
    let scheduler = tokio::spawn(async move {
        starter.start(stored).await;
        starter.schedule().await;
    });
    let outcome = tokio::select! {
        () = signals() => Outcome::Stopped,
        _ = down_rx.wait_for(Option::is_some) => Outcome::HasherLost,
    };
    if let Outcome::Stopped = outcome {
        monitor.begin_stop();
    }
    if let Outcome::HasherLost = outcome {
        // Keep answering 503 briefly so callers see the failure, then let the service manager
        // restart the pair: a standalone api cannot start a new sandboxed hasher itself.
        tracing::error!("hasher lost: answering 503, then exiting for a restart of the pair");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    scheduler.abort();
    let _ = stop_tx.send(true);
    let _ = server.await;
    monitor.audit("stop", json!({ "reason": if matches!(outcome, Outcome::Stopped) { "signal" } else { "hasher_lost" } }));
    outcome
}

async fn wait_true(mut rx: watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
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
