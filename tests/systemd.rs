//! The appliance shapes, tested with `systemd-socket-activate` (PID 1 need not be systemd):
//! a socket-activated api, and a hasher started per connection on a SEQPACKET socket.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Guard(Child);
impl Drop for Guard {
    fn drop(&mut self) {
        // SAFETY: kill(2) on our own child's process group.
        unsafe { libc::kill(-(self.0.id() as i32), libc::SIGKILL) };
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn own_group(cmd: &mut Command) -> &mut Command {
    use std::os::unix::process::CommandExt;
    cmd.process_group(0)
}

fn children(pid: u32) -> Vec<i32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn socket_activated_api_serves_curl() {
    let a = Appliance::new();
    let addr = free_addr();
    let mut args = a.args(addr);
    let i = args.iter().position(|x| x == "--listen").unwrap();
    args.drain(i..i + 2);
    let listen = addr.to_string();
    let monitor = path_str(&monitor_bin());
    let mut cmd = Command::new("systemd-socket-activate");
    cmd.args(["-l", listen.as_str(), monitor.as_str()])
        .args(&args)
        .stdin(Stdio::null());
    let _g = Guard(
        own_group(&mut cmd)
            .spawn()
            .expect("systemd-socket-activate is installed by .ci/run"),
    );
    // The first connection starts the service; curl's request waits in the inherited backlog.
    let ok = wait_until(Duration::from_secs(20), || {
        Command::new("curl")
            .args([
                "-sf",
                "--max-time",
                "10",
                &format!("http://{addr}/api/v1/verify"),
            ])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    });
    assert!(ok, "curl never got 200 from the socket-activated api");
    let events = a.audit_events();
    assert!(events.iter().any(|e| e["event"] == "start"));
}

#[test]
fn hasher_unit_on_a_seqpacket_socket_is_reconnected_after_it_dies() {
    let a = Appliance::new();
    let sock = a.path("hasher.sock");
    let hasher = path_str(&hasher_bin());
    let policy = path_str(&a.path("etc/monitor.yaml"));
    let (state, token) = (
        path_str(&a.path("state")),
        path_str(&a.path("secret/token")),
    );
    let mut act = Command::new("systemd-socket-activate");
    act.args([
        "--seqpacket",
        "-a",
        "-l",
        &path_str(&sock),
        &hasher,
        "--policy",
        &policy,
        "--state-dir",
        &state,
        "--token-file",
        &token,
    ])
    .stdin(Stdio::null());
    let activator = Guard(
        own_group(&mut act)
            .spawn()
            .expect("systemd-socket-activate"),
    );
    assert!(wait_until(Duration::from_secs(5), || sock.exists()));

    let addr = free_addr();
    let mut args = a.args(addr);
    let i = args.iter().position(|x| x == "--hasher").unwrap();
    args.drain(i..i + 2);
    args.extend(["--hasher-socket".into(), path_str(&sock)]);
    let api = Guard(Command::new(monitor_bin()).args(&args).spawn().unwrap());
    assert!(wait_until(Duration::from_secs(20), || get(
        addr,
        "/api/v1/verify"
    )
    .map(|r| r.0 == 200)
    .unwrap_or(false)));

    let instances = children(activator.0.id());
    assert_eq!(
        instances.len(),
        1,
        "one hasher instance per connection: {instances:?}"
    );
    // SAFETY: kill(2) on the hasher instance our activator started.
    unsafe { libc::kill(instances[0], libc::SIGKILL) };
    let t = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || get(addr, "/api/v1/verify")
            .map(|r| r.0 == 503)
            .unwrap_or(false)),
        "503 within 1 s of the hasher's death"
    );
    let to_503 = t.elapsed();
    assert!(
        wait_until(Duration::from_secs(15), || get(addr, "/api/v1/verify")
            .map(|r| r.0 == 200)
            .unwrap_or(false)),
        "a new hasher instance restores 200"
    );
    let new = children(activator.0.id());
    assert_eq!(new.len(), 1);
    assert_ne!(
        new[0], instances[0],
        "a new instance, after {to_503:?} to 503"
    );
    let mut api = api;
    assert!(
        api.0.try_wait().unwrap().is_none(),
        "the api was not restarted"
    );
    assert_eq!(a.count_events("hasher_lost"), 1);
    assert_eq!(a.count_events("hasher_reconnected"), 1);
    let _ = api.0.kill();
}

#[test]
fn sighup_reopens_the_audit_log_after_rotation() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let rotated = a.path("logs/audit.jsonl.1");
    std::fs::rename(a.audit_log(), &rotated).unwrap();
    m.signal(libc::SIGHUP);
    assert!(
        wait_until(Duration::from_secs(5), || a.audit_log().exists()),
        "a new log file is created"
    );
    tamper_one(&a);
    m.scan();
    let old = std::fs::read_to_string(&rotated).unwrap();
    let new = a.audit_events();
    assert!(old.lines().count() >= 2, "the old file keeps its records");
    // The new file starts with the record that links it to the old one: the reopen the
    // signal asked for, or (when a scan's records reached the writer first) the writer's own
    // noticing that the file was renamed away.
    let first = new.first().map(|e| e["event"].clone());
    assert!(
        first == Some("audit_reopened".into()) || first == Some("audit_log_replaced".into()),
        "{new:?}"
    );
    assert!(
        wait_until(Duration::from_secs(5), || a
            .audit_events()
            .iter()
            .any(|e| e["event"] == "audit_reopened")),
        "the signal's reopen is recorded: {new:?}"
    );
    assert!(
        new.iter().any(|e| e["event"] == "violation"),
        "the next record lands in the new file: {new:?}"
    );
}

fn tamper_one(a: &Appliance) {
    a.write(BINARIES[3], "changed");
}

#[test]
fn sigterm_during_a_slow_request_completes_it() {
    let a = Appliance::new();
    let m = Running::start(&a);
    // A slow client: the head trickles in, then SIGTERM arrives before it is complete.
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(m.addr).unwrap();
    s.write_all(b"GET /api/v1/status HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    m.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(b"Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(
        out.starts_with("HTTP/1.1 200"),
        "in-flight request completed: {out:.80}"
    );
    let mut m = m;
    assert_eq!(
        m.wait_exit(Duration::from_secs(15)).and_then(|s| s.code()),
        Some(0)
    );
}

/// A hasher behind a socket-activated SEQPACKET socket (as the units run it) reading a 48 MiB
/// model under a 16 MiB/s budget (about 3 s a full read), and an api connected to it and
/// trusted. Returns the activator, the api and the api's address.
fn slow_pair(a: &Appliance) -> (Guard, Guard, std::net::SocketAddr) {
    std::fs::write(a.path("models/big.gguf"), vec![0x5au8; 48 * 1024 * 1024]).unwrap();
    let sock = a.path("hasher.sock");
    let (hasher, policy) = (
        path_str(&hasher_bin()),
        path_str(&a.path("etc/monitor.yaml")),
    );
    let (state, token) = (
        path_str(&a.path("state")),
        path_str(&a.path("secret/token")),
    );
    let mut act = Command::new("systemd-socket-activate");
    act.args([
        "--seqpacket",
        "-a",
        "-l",
        &path_str(&sock),
        &hasher,
        "--policy",
        &policy,
        "--state-dir",
        &state,
        "--token-file",
        &token,
    ])
    .stdin(Stdio::null());
    let activator = Guard(
        own_group(&mut act)
            .spawn()
            .expect("systemd-socket-activate"),
    );
    assert!(wait_until(Duration::from_secs(5), || sock.exists()));
    let addr = free_addr();
    let mut args = a.args(addr);
    let i = args.iter().position(|x| x == "--hasher").unwrap();
    args.drain(i..i + 2);
    args.extend(["--hasher-socket".into(), path_str(&sock)]);
    let api = Guard(Command::new(monitor_bin()).args(&args).spawn().unwrap());
    assert!(wait_until(Duration::from_secs(30), || get(
        addr,
        "/api/v1/verify"
    )
    .map(|r| r.0 == 200)
    .unwrap_or(false)));
    (activator, api, addr)
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

#[test]
fn the_hasher_never_outlives_its_api_even_mid_read() {
    let a = Appliance::with_options("scan_interval: 1h\nhash_rate_limit: 16777216\n");
    let (activator, mut api, addr) = slow_pair(&a);
    // Not its parent (systemd's socket is): no PR_SET_PDEATHSIG can help here.
    let hasher = children(activator.0.id())[0];
    let key = a.key();
    std::thread::spawn(move || rebaseline(addr, &key));
    std::thread::sleep(Duration::from_millis(800));
    assert!(alive(hasher), "the hasher is in its long read");
    api.0.kill().unwrap();
    api.0.wait().unwrap();
    let killed = Instant::now();
    assert!(
        wait_until(Duration::from_secs(1), || !alive(hasher)),
        "the hasher still runs {:?} after its api died",
        killed.elapsed()
    );
}

#[test]
fn hasher_killed_during_a_scan_fails_closed_and_recovers() {
    let a = Appliance::with_options("scan_interval: 1h\nhash_rate_limit: 16777216\n");
    let (activator, _api, addr) = slow_pair(&a);

    let key = a.key();
    let rebaseline =
        std::thread::spawn(move || common::rebaseline(addr, &key).map(|r| r.0).unwrap_or(0));
    std::thread::sleep(Duration::from_millis(800));
    let pid = children(activator.0.id())[0];
    // SAFETY: kill(2) on the hasher instance our activator started, mid-read.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        wait_until(Duration::from_secs(1), || get(addr, "/api/v1/verify")
            .map(|r| r.0 == 503)
            .unwrap_or(false)),
        "503 within 1 s"
    );
    assert_eq!(
        rebaseline.join().unwrap(),
        503,
        "the interrupted rebaseline reports the lost hasher"
    );
    assert!(
        wait_until(Duration::from_secs(30), || get(addr, "/api/v1/verify")
            .map(|r| r.0 == 200)
            .unwrap_or(false)),
        "recovered"
    );
    assert_eq!(a.count_events("hasher_lost"), 1);
    assert_eq!(a.count_events("hasher_reconnected"), 1);
    assert_eq!(
        a.count_events("rebaseline"),
        0,
        "no half-made baseline was adopted"
    );
}

#[test]
fn sd_notify_ready_status_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let a = Appliance::new();
    let sock_path = a.path("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let addr = free_addr();
    let mut child = Command::new(monitor_bin())
        .args(a.args(addr))
        .env("NOTIFY_SOCKET", &sock_path)
        .env("WATCHDOG_USEC", "1000000")
        .spawn()
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline && !(seen.contains("READY=1") && seen.contains("WATCHDOG=1")) {
        if let Ok(n) = sock.recv(&mut buf) {
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    }
    assert!(seen.contains("READY=1"), "{seen}");
    assert!(
        seen.contains("STATUS=state=trusted trusted=true violations=0 scans=1 hasher=up"),
        "{seen}"
    );
    assert!(seen.contains("WATCHDOG=1"), "{seen}");
    // READY comes only once the first verdict is in: /verify already says 200.
    assert_eq!(get(addr, "/api/v1/verify").unwrap().0, 200);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let mut stopping = false;
    while let Ok(n) = sock.recv(&mut buf) {
        if String::from_utf8_lossy(&buf[..n]).contains("STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert_eq!(child.wait().unwrap().code(), Some(0));
}
