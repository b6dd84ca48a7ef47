//! sd_notify: READY once the first verdict is in, STATUS after each scan, WATCHDOG only while
//! the hasher answers, STOPPING at shutdown. A no-op outside systemd.
//!
//! The datagram socket to `$NOTIFY_SOCKET` is made and connected once, before the sandbox,
//! and kept at [`NOTIFY_FD`]: the sandbox then lets the api make no datagram socket, never
//! reconnect or duplicate this one (seccomp/api.json `api_notify_fd`), and send no datagram
//! with an address of its own, so systemd is the one socket a datagram can reach.

use std::os::unix::net::UnixDatagram;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use sd_notify::NotifyState;

use crate::monitor::Monitor;
use crate::verdict::verdict;

/// The fd the notify socket is kept at; seccomp/api.json names the same number.
pub const NOTIFY_FD: i32 = 1000;

static SOCKET: OnceLock<UnixDatagram> = OnceLock::new();

/// Connects to `$NOTIFY_SOCKET` (a path, or `@name` for an abstract socket) and keeps the
/// socket at [`NOTIFY_FD`]; returns whether there is one. Call before the sandbox, once.
pub fn connect() -> std::io::Result<bool> {
    let Some(target) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(false);
    };
    let socket = UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str());
    match bytes.strip_prefix(b"@") {
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            socket.connect_addr(&std::os::unix::net::SocketAddr::from_abstract_name(name)?)?
        }
        None => socket.connect(&target)?,
    }
    let placed = crate::sys::place_at(socket.into(), NOTIFY_FD)?;
    let _ = SOCKET.set(UnixDatagram::from(placed));
    Ok(true)
}

/// The connected notify socket, if [`connect`] made one.
pub fn socket() -> Option<&'static UnixDatagram> {
    SOCKET.get()
}

fn send(states: &[NotifyState<'_>]) {
    let Some(socket) = socket() else {
        return;
    };
    let message: String = states.iter().map(|s| format!("{s}\n")).collect();
    if let Err(e) = socket.send(message.as_bytes()) {
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
