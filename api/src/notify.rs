//! sd_notify: READY once the first verdict is in, STATUS after each scan, WATCHDOG only while
//! the hasher answers, STOPPING at shutdown. A no-op outside systemd.

use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;

use crate::monitor::Monitor;
use crate::verdict::verdict;

fn send(states: &[NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "sd_notify failed");
    }
}

/// The status line systemd shows for the service.
pub fn status_line(monitor: &Monitor) -> String {
    let s = monitor.snapshot();
    format!(
        "state={} trusted={} violations={} scans={} hasher={}",
        s.machine.state.as_str(),
        verdict(&s).is_ok(),
        s.machine.violation_count,
        s.machine.scan_count,
        if s.hasher_down.is_some() {
            "down"
        } else {
            "up"
        }
    )
}

/// Tells systemd the service is ready.
pub fn ready(monitor: &Monitor) {
    let status = status_line(monitor);
    send(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

/// Sends STATUS every few seconds and WATCHDOG=1 at half the watchdog period, the latter only
/// while the hasher is connected: a monitor without its hasher should be restarted.
pub async fn keepalive(monitor: Arc<Monitor>) {
    let watchdog = sd_notify::watchdog_enabled();
    let period = watchdog.map_or(Duration::from_secs(5), |w| {
        (w / 2).min(Duration::from_secs(5))
    });
    let mut last_status = String::new();
    loop {
        tokio::time::sleep(period).await;
        let status = status_line(&monitor);
        let hasher_up = monitor.snapshot().hasher_down.is_none();
        let mut states = Vec::new();
        if status != last_status {
            states.push(NotifyState::Status(&status));
        }
        if watchdog.is_some() && hasher_up {
            states.push(NotifyState::Watchdog);
        }
        if !states.is_empty() {
            send(&states);
        }
        last_status.clone_from(&status);
    }
}
