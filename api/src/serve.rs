//! The running monitor: the audit writer, the hasher's supervisor, the HTTP server, the
//! scheduler and the signal handlers started together, and stopped together with a `stop` record.

use crate::events::{AuditRecord, StopReason};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::supervise::{supervise, Outcome, Source};
use crate::{audit, http, incident, monitor, notify, recorder};

/// Everything prepared before the runtime starts.
pub(crate) struct Parts {
    pub(crate) recorder: Option<incident::Recorder>,
    pub(crate) listener: std::net::TcpListener,
    pub(crate) source: Source,
    pub(crate) audit: audit::AuditLog,
    pub(crate) once: bool,
}

/// The incident reporter's queue and task, when a recorder is configured: handed to the
/// monitor at its making (the reporter audits through the writer, not through the monitor).
fn reporter(
    recorder: Option<incident::Recorder>,
    audit: &recorder::Recorder,
) -> (Option<incident::Queue>, Option<tokio::task::JoinHandle<()>>) {
    let Some(rec) = recorder else {
        return (None, None);
    };
    let (tx, rx) = mpsc::channel(incident::QUEUE);
    let task = tokio::spawn(incident::run(rec, rx, audit.clone()));
    (Some(tx), Some(task))
}

/// Serves until a signal or the hasher ends it; returns how it ended.
pub(crate) async fn serve(parts: Parts) -> Outcome {
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
    let memory = audit.memory().clone();
    let record = crate::adopted::record_path(audit.path());
    let audit_writer = match recorder::Recorder::start(audit) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit writer");
            return Outcome::StartFailed;
        }
    };
    let (queue, reporter) = reporter(recorder, &audit_writer);
    let monitor = Arc::new(
        monitor::Monitor::new(calls_tx, audit_writer)
            .recalling(memory, Some(record))
            .reporting_to(queue),
    );
    monitor.audit(AuditRecord::Start {
        version: env!("CARGO_PKG_VERSION"),
        pid: std::process::id(),
    });
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
        Outcome::Stopped => StopReason::Signal,
        Outcome::HasherLost => StopReason::HasherLost,
        Outcome::StartFailed => StopReason::StartFailed,
        Outcome::Initialized(_) => StopReason::Initialized,
    };
    monitor.audit(AuditRecord::Stop { reason });
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
