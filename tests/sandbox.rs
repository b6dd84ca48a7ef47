//! Each sandbox wall, proven by attempting the forbidden act in the real binary after its
//! sandbox is installed (`--sandbox-probe`), next to the allowed act that must still work.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Output};

use common::*;

#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Allowed,
    Errno(i32),
    Sigsys,
}

fn verdict(out: &Output) -> Verdict {
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.signal() == Some(libc::SIGSYS) {
        return Verdict::Sigsys;
    }
    match out.status.code() {
        Some(0) => Verdict::Allowed,
        Some(3) => {
            let n = stderr
                .split("errno=")
                .nth(1)
                .and_then(|s| s.split(' ').next())
                .and_then(|s| s.parse().ok())
                .unwrap();
            Verdict::Errno(n)
        }
        _ => panic!("probe failed to run: {:?}\n{stderr}", out.status),
    }
}

fn hasher_probe(a: &Appliance, act: &str, arg: &str) -> Verdict {
    std::fs::create_dir_all(a.path("state")).unwrap();
    let out = Command::new(hasher_bin())
        .args([
            "--policy",
            &path_str(&a.path("etc/monitor.yaml")),
            "--state-dir",
            &path_str(&a.path("state")),
            "--sandbox-probe",
            act,
            arg,
        ])
        .output()
        .unwrap();
    verdict(&out)
}

fn api_probe(a: &Appliance, act: &str, arg: &str) -> Verdict {
    let mut args = a.args(free_addr());
    args.extend(["--sandbox-probe".into(), act.into(), arg.into()]);
    std::fs::create_dir_all(a.path("state")).unwrap();
    std::fs::create_dir_all(a.path("logs")).unwrap();
    verdict(&Command::new(monitor_bin()).args(args).output().unwrap())
}

struct Sleeper(std::process::Child);
impl Sleeper {
    fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("30").spawn().unwrap())
    }
    fn pid(&self) -> String {
        self.0.id().to_string()
    }
}
impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The hasher's one ioctl is FS_IOC_MEASURE_VERITY: it reaches the kernel (which, without
/// fs-verity here, says the file has none), and any other ioctl on the same file is killed by
/// the filter. Under a verity kernel the same probes run in tests/verity.
#[test]
fn hasher_may_measure_a_seal_and_make_no_other_ioctl() {
    let a = Appliance::new();
    let watched = path_str(&a.path(BINARIES[0]));
    match hasher_probe(&a, "measure", &watched) {
        Verdict::Errno(e) => assert!(
            [libc::ENODATA, libc::ENOTTY, libc::EOPNOTSUPP].contains(&e),
            "FS_IOC_MEASURE_VERITY reached the kernel and got errno {e}"
        ),
        other => panic!("FS_IOC_MEASURE_VERITY: {other:?}"),
    }
    assert_eq!(
        hasher_probe(&a, "ioctl", &watched),
        Verdict::Sigsys,
        "FS_IOC_GETFLAGS"
    );
}

#[test]
fn hasher_reads_only_its_watch_set_and_does_nothing_else() {
    let a = Appliance::new();
    let watched = path_str(&a.path(BINARIES[0]));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let victim = Sleeper::new();
    let cases: Vec<(&str, String, Verdict)> = vec![
        ("read", watched.clone(), Verdict::Allowed),
        ("list", path_str(&a.path("models")), Verdict::Allowed),
        ("read", "/etc/shadow".into(), Verdict::Errno(libc::EACCES)),
        ("read", "/etc/passwd".into(), Verdict::Errno(libc::EACCES)),
        // The key and the token are read before the sandbox and never again.
        (
            "read",
            path_str(&a.path("secret/key")),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "read",
            path_str(&a.path("secret/token")),
            Verdict::Errno(libc::EACCES),
        ),
        // Its own store is the one place it may create a file (a new one only: seccomp admits
        // no other write flags) ...
        ("create", path_str(&a.path("state/probe")), Verdict::Allowed),
        // ... anywhere else Landlock refuses it, and the removal or renaming of a watched file.
        (
            "create",
            path_str(&a.path("bin/planted")),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "create",
            "/tmp/integrity-hasher-probe".into(),
            Verdict::Errno(libc::EACCES),
        ),
        ("unlink", watched.clone(), Verdict::Errno(libc::EACCES)),
        ("rename", watched.clone(), Verdict::Errno(libc::EACCES)),
        // Appending or truncating is refused by seccomp's flag check before Landlock is asked.
        ("append", watched.clone(), Verdict::Sigsys),
        ("exec", "/bin/true".into(), Verdict::Sigsys),
        // Threads (hash_threads, read-ahead) may start; a new process may not (exec above).
        ("thread", "-".into(), Verdict::Allowed),
        ("connect", port, Verdict::Sigsys),
        ("bind", "0".into(), Verdict::Sigsys),
        ("ptrace", victim.pid(), Verdict::Sigsys),
        ("kill", victim.pid(), Verdict::Sigsys),
        (
            "read",
            format!("/proc/{}/mem", victim.pid()),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "read",
            format!("/proc/{}/environ", std::process::id()),
            Verdict::Errno(libc::EACCES),
        ),
        ("stdout", "-".into(), Verdict::Sigsys),
    ];
    for (act, arg, expected) in cases {
        assert_eq!(hasher_probe(&a, act, &arg), expected, "hasher {act} {arg}");
    }
    assert!(
        listener.accept().is_err(),
        "no connection reached the test's listener"
    );
    assert!(a.path(BINARIES[0]).exists() && !a.path("bin/planted").exists());
}

#[test]
fn api_reads_nothing_and_writes_only_its_two_dirs() {
    let a = Appliance::new();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let cases: Vec<(&str, String, Verdict)> = vec![
        // The hasher's store is not the api's to write: a compromised api cannot put an old
        // baseline back or delete one.
        (
            "create",
            path_str(&a.path("state/probe")),
            Verdict::Errno(libc::EACCES),
        ),
        ("create", path_str(&a.path("logs/probe")), Verdict::Allowed),
        (
            "read",
            path_str(&a.path("secret/key")),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "read",
            path_str(&a.path("secret/token")),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "read",
            path_str(&a.path(BINARIES[0])),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "read",
            path_str(&a.path("etc/monitor.yaml")),
            Verdict::Errno(libc::EACCES),
        ),
        ("read", "/etc/passwd".into(), Verdict::Errno(libc::EACCES)),
        (
            "create",
            path_str(&a.path("bin/planted")),
            Verdict::Errno(libc::EACCES),
        ),
        (
            "create",
            "/tmp/integrity-api-probe".into(),
            Verdict::Errno(libc::EACCES),
        ),
        ("exec", "/bin/true".into(), Verdict::Sigsys),
        // No incident recorder configured: not even a TCP socket can be made.
        ("connect", port.clone(), Verdict::Sigsys),
        // Never a datagram (Landlock does not cover UDP; seccomp does).
        ("udp", port.clone(), Verdict::Sigsys),
    ];
    for (act, arg, expected) in cases {
        assert_eq!(api_probe(&a, act, &arg), expected, "api {act} {arg}");
    }
    // With a recorder on `port`, that port alone may be reached.
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other_port = other.local_addr().unwrap().port().to_string();
    let url = format!("http://127.0.0.1:{port}/api/v1/incidents/report");
    let probe_act = |act: &str, arg: &str| {
        let mut args = a.args(free_addr());
        args.extend([
            "--incident-url".into(),
            url.clone(),
            "--sandbox-probe".into(),
            act.into(),
            arg.into(),
        ]);
        verdict(&Command::new(monitor_bin()).args(args).output().unwrap())
    };
    let probe = |arg: &str| probe_act("connect", arg);
    assert_eq!(probe(&port), Verdict::Allowed, "the recorder's port");
    assert_eq!(
        probe(&other_port),
        Verdict::Errno(libc::EACCES),
        "any other port"
    );
    assert_eq!(
        probe_act("udp", &port),
        Verdict::Sigsys,
        "no datagram even with reporting on"
    );
    // MPTCP escapes Landlock's TCP port rules on this kernel: seccomp refuses the socket.
    assert_eq!(
        probe_act("mptcp", &other_port),
        Verdict::Sigsys,
        "no MPTCP socket, to any port"
    );
    // The api never reads, even what it wrote itself.
    assert_eq!(
        api_probe(&a, "read", &path_str(&a.path("logs/probe"))),
        Verdict::Errno(libc::EACCES)
    );
}

fn thread_status(pid: u32) -> Vec<(String, String, String, String)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .map(|t| {
            let s = std::fs::read_to_string(t.unwrap().path().join("status")).unwrap();
            let field = |k: &str| {
                s.lines()
                    .find(|l| l.starts_with(k))
                    .unwrap()
                    .split_whitespace()
                    .nth(1)
                    .unwrap()
                    .to_owned()
            };
            (
                field("Name:"),
                field("Seccomp:"),
                field("NoNewPrivs:"),
                field("CapEff:"),
            )
        })
        .collect()
}

#[test]
fn every_thread_of_both_processes_is_sandboxed() {
    let a = Appliance::new();
    let m = Running::start(&a);
    m.scan();
    let api = thread_status(m.child.id());
    let hasher = thread_status(m.hasher_pid() as u32);
    assert!(
        api.len() >= 2 && api.iter().any(|t| t.0 == "tokio-rt-worker"),
        "the api's runtime threads are there: {api:?}"
    );
    for (name, seccomp, nnp, capeff) in api.iter().chain(&hasher) {
        assert_eq!(
            (seccomp.as_str(), nnp.as_str(), capeff.as_str()),
            ("2", "1", "0000000000000000"),
            "thread {name}"
        );
    }
}

#[test]
fn watched_file_replaced_by_rename_is_still_read() {
    let a = Appliance::new();
    let m = Running::start(&a);
    // Replace a binary the way package managers do: new inode, renamed over the old name.
    let bin = a.path(BINARIES[0]);
    let content = std::fs::read(&bin).unwrap();
    std::fs::write(a.path("bin/.new"), &content).unwrap();
    std::fs::rename(a.path("bin/.new"), &bin).unwrap();
    assert_eq!(
        m.scan()["state"],
        "trusted",
        "same content under a new inode is readable and matches"
    );
    let mut different = content.clone();
    different[0] ^= 1; // same size, so the digest (not a size check) must catch it
    std::fs::write(a.path("bin/.new"), &different).unwrap();
    std::fs::rename(a.path("bin/.new"), &bin).unwrap();
    let s = m.scan();
    let actual = s["active_violations"][0]["actual_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(actual.len(), 64, "a digest, not \"unreadable\": {s}");
}

#[test]
fn reload_reaching_outside_the_sandbox_needs_a_restart() {
    let a = Appliance::new();
    let m = Running::start(&a);
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("new-binary"), "x").unwrap();
    let text = a.policy_text("scan_interval: 1h\n").replace(
        "trust_material:\n",
        &format!(
            "trust_material:\n  - {}/new-binary\n",
            outside.path().display()
        ),
    );
    a.write("etc/monitor.yaml", &text);
    let (code, body) = post(m.addr, "/api/v1/reload", Some(TOKEN)).unwrap();
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("restart"), "{body}");
    assert_eq!(
        m.scan()["state"],
        "trusted",
        "the old policy stays in force"
    );
}

/// A Unix listener the test holds (named in a temp dir, or abstract as `@name`), non-blocking,
/// so what reached it can be counted after each probe.
struct Target {
    kind: nix::sys::socket::SockType,
    addr: String,
    fd: std::os::fd::OwnedFd,
}

impl Target {
    fn new(kind: nix::sys::socket::SockType, addr: String) -> Target {
        use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, UnixAddr};
        use std::os::fd::AsRawFd;
        let fd = socket(
            AddressFamily::Unix,
            kind,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        let ua = match addr.strip_prefix('@') {
            Some(name) => UnixAddr::new_abstract(name.as_bytes()).unwrap(),
            None => UnixAddr::new(addr.as_str()).unwrap(),
        };
        bind(fd.as_raw_fd(), &ua).unwrap();
        if kind != nix::sys::socket::SockType::Datagram {
            listen(&fd, Backlog::new(8).unwrap()).unwrap();
        }
        Target { kind, addr, fd }
    }

    fn act(&self) -> &'static str {
        use nix::sys::socket::SockType;
        match self.kind {
            SockType::Stream => "unix-stream",
            SockType::Datagram => "unix-dgram",
            _ => "unix-seqpacket",
        }
    }

    /// The messages that reached it since the last call.
    fn received(&self) -> Vec<String> {
        use nix::sys::socket::{accept, recv, MsgFlags};
        use std::os::fd::AsRawFd;
        let mut got = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            if self.kind == nix::sys::socket::SockType::Datagram {
                match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
                    Ok(n) => got.push(String::from_utf8_lossy(&buf[..n]).into_owned()),
                    Err(_) => return got,
                }
                continue;
            }
            let Ok(conn) = accept(self.fd.as_raw_fd()) else {
                return got;
            };
            std::thread::sleep(std::time::Duration::from_millis(20));
            let n = recv(conn, &mut buf, MsgFlags::MSG_DONTWAIT).unwrap_or(0);
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
            nix::unistd::close(conn).unwrap();
        }
    }
}

/// The api's probe with extra flags and environment; `--hasher` is dropped under
/// `--hasher-socket` (the two conflict).
fn api_probe_with(
    a: &Appliance,
    extra: &[&str],
    env: &[(&str, &str)],
    act: &str,
    arg: &str,
) -> Verdict {
    let mut args = a.args(free_addr());
    if extra.contains(&"--hasher-socket") {
        let i = args.iter().position(|x| x == "--hasher").unwrap();
        args.drain(i..i + 2);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args.extend(["--sandbox-probe".into(), act.into(), arg.into()]);
    std::fs::create_dir_all(a.path("logs")).unwrap();
    let mut cmd = Command::new(monitor_bin());
    cmd.args(args).env_remove("NOTIFY_SOCKET");
    for (k, v) in env {
        cmd.env(k, v);
    }
    verdict(&cmd.output().unwrap())
}

/// Issue #38: the api reaches no Unix socket but its own. Each target exists, listens and is
/// reached by the very same act without the walls (`--insecure-no-sandbox`, the control, its
/// message received); from inside the sandbox the act fails and nothing arrives.
#[test]
fn api_reaches_no_unix_socket_but_its_hasher_and_systemd() {
    use nix::sys::socket::SockType::{Datagram, SeqPacket, Stream};
    let a = Appliance::new();
    let dir = tempfile::tempdir().unwrap();
    let at = |n: &str| path_str(&dir.path().join(n));
    let tag = std::process::id();
    let targets = [
        Target::new(Stream, at("stream.sock")),
        Target::new(Datagram, at("dgram.sock")),
        Target::new(SeqPacket, at("seqpacket.sock")),
        Target::new(Stream, format!("@im-probe-{tag}-stream")),
        Target::new(Datagram, format!("@im-probe-{tag}-dgram")),
        Target::new(SeqPacket, format!("@im-probe-{tag}-seqpacket")),
    ];
    let hasher = Target::new(SeqPacket, at("hasher.sock"));
    let notify = Target::new(Datagram, at("notify.sock"));
    let probe = |extra: &[&str], t: &Target| api_probe_with(&a, extra, &[], t.act(), &t.addr);
    let socket_mode = ["--hasher-socket", hasher.addr.as_str()];
    for t in &targets {
        assert_eq!(
            probe(&["--insecure-no-sandbox"], t),
            Verdict::Allowed,
            "control: {} {} is reachable without the walls",
            t.act(),
            t.addr
        );
        assert_eq!(t.received(), ["probe\n"], "control reached {}", t.addr);
        // One-command mode: the channel is inherited, so no Unix socket may be made at all.
        assert_eq!(
            probe(&[], t),
            Verdict::Sigsys,
            "one-command {} {}",
            t.act(),
            t.addr
        );
        // Under --hasher-socket: SEQPACKET only (the hasher's kind); an abstract one is
        // outside Landlock's scope (ABI 6).
        let expected = match (t.kind, t.addr.starts_with('@')) {
            (SeqPacket, true) => Verdict::Errno(libc::EPERM),
            (SeqPacket, false) => Verdict::Allowed,
            _ => Verdict::Sigsys,
        };
        assert_eq!(
            probe(&socket_mode, t),
            expected,
            "--hasher-socket {} {}",
            t.act(),
            t.addr
        );
        let reached: &[&str] = if expected == Verdict::Allowed {
            &["probe\n"]
        } else {
            &[]
        };
        assert_eq!(t.received(), reached, "{}", t.addr);
    }
    // Its hasher's socket, at every reconnect.
    assert_eq!(probe(&socket_mode, &hasher), Verdict::Allowed);
    assert_eq!(hasher.received(), ["probe\n"]);
    // systemd's notify socket: connected before the sandbox, it carries the api's messages, but
    // cannot be pointed at another socket nor send to another address, even with TCP allowed.
    let recorder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/api/v1/incidents/report",
        recorder.local_addr().unwrap()
    );
    let env = [("NOTIFY_SOCKET", notify.addr.as_str())];
    let other = &targets[1];
    for extra in [
        &[][..],
        &socket_mode[..],
        &["--incident-url", url.as_str()][..],
    ] {
        let p = |act: &str, arg: &str| api_probe_with(&a, extra, &env, act, arg);
        assert_eq!(p("notify", "STATUS=probe"), Verdict::Allowed, "{extra:?}");
        assert_eq!(notify.received(), ["STATUS=probe"], "{extra:?}");
        assert_eq!(
            p("notify-connect", &other.addr),
            Verdict::Sigsys,
            "{extra:?}"
        );
        assert_eq!(
            p("notify-sendto", &other.addr),
            Verdict::Sigsys,
            "{extra:?}"
        );
        assert_eq!(p("unix-dgram", &other.addr), Verdict::Sigsys, "{extra:?}");
        assert_eq!(other.received(), Vec::<String>::new(), "{extra:?}");
    }
    let control =
        |act: &str| api_probe_with(&a, &["--insecure-no-sandbox"], &env, act, &other.addr);
    assert_eq!(control("notify-sendto"), Verdict::Allowed, "control");
    assert_eq!(control("notify-connect"), Verdict::Allowed, "control");
    assert_eq!(
        other.received(),
        ["probe"],
        "control: the datagram sent elsewhere arrived"
    );
}
