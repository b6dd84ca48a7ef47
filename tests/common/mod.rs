//! Shared helpers for the whole-system tests: an appliance tree, the real binaries, HTTP.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789";

/// The integrity-monitor binary under test.
pub fn monitor_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_integrity-monitor"))
}

/// The integrity-hasher binary, built beside integrity-monitor by `cargo test --workspace`.
pub fn hasher_bin() -> PathBuf {
    let p = monitor_bin().with_file_name("integrity-hasher");
    assert!(
        p.exists(),
        "{} missing: run `cargo test --workspace` so both binaries are built",
        p.display()
    );
    p
}

/// A temp appliance tree with a policy, key and token.
pub struct Appliance {
    pub dir: tempfile::TempDir,
}

pub const BINARIES: [&str; 4] = ["bin/registry", "bin/tool-firewall", "bin/agent", "bin/ui"];

impl Appliance {
    pub fn new() -> Appliance {
        Appliance::with_options("scan_interval: 1h\n")
    }

    /// `extra` is YAML appended to the policy (e.g. a scan_interval).
    pub fn with_options(extra: &str) -> Appliance {
        let dir = tempfile::tempdir().unwrap();
        let a = Appliance { dir };
        for b in BINARIES {
            a.write(b, &format!("#!/bin/sh\necho {b}\n"));
        }
        a.write("policy/policy.yaml", "default: deny\n");
        a.write("units/secure-ai-registry.service", "[Service]\n");
        a.write("trust/cosign.pub", "PUBLIC KEY\n");
        a.write("models/a.gguf", "model a");
        a.write("models/sub/b.gguf", "model b");
        // The secrets sit apart from every watched directory: the hasher refuses a policy
        // whose read set would cover them.
        a.write("secret/token", TOKEN);
        std::fs::write(a.path("secret/key"), [0x42u8; 32]).unwrap();
        // Credentials readable by their owner only, or the hasher refuses them (as ssh does).
        for secret in ["secret/token", "secret/key"] {
            std::fs::set_permissions(
                a.path(secret),
                std::os::unix::fs::PermissionsExt::from_mode(0o600),
            )
            .unwrap();
        }
        a.write_policy(extra);
        a
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    /// The policy: `extra` appended (the settle window as shipped: none; each change is
    /// proven by its one read after writeback).
    pub fn policy_text(&self, extra: &str) -> String {
        let r = self.dir.path().display();
        let bins: String = BINARIES.iter().map(|b| format!("  - {r}/{b}\n")).collect();
        format!(
            "service_binaries:\n{bins}policy_files:\n  - {r}/policy/policy.yaml\nmodel_dirs:\n  - {r}/models\n\
             systemd_units:\n  - {r}/units/secure-ai-registry.service\ntrust_material:\n  - {r}/trust/cosign.pub\n\
             hmac_key_path: {r}/secret/key\ndegradation_threshold: 3\n{extra}"
        )
    }

    pub fn write_policy(&self, extra: &str) {
        self.write("etc/monitor.yaml", &self.policy_text(extra));
    }

    /// The HMAC key's bytes (for the key ceremony).
    pub fn key(&self) -> Vec<u8> {
        std::fs::read(self.path("secret/key")).unwrap()
    }

    pub fn audit_log(&self) -> PathBuf {
        self.path("logs/audit.jsonl")
    }

    pub fn audit_events(&self) -> Vec<serde_json::Value> {
        settled_audit(&self.audit_log())
    }

    pub fn count_events(&self, event: &str) -> usize {
        self.audit_events()
            .iter()
            .filter(|e| e["event"] == event)
            .count()
    }

    /// Standard arguments for integrity-monitor on this tree.
    pub fn args(&self, addr: SocketAddr) -> Vec<String> {
        vec![
            "--policy".into(),
            self.path("etc/monitor.yaml").display().to_string(),
            "--listen".into(),
            addr.to_string(),
            "--token-file".into(),
            self.path("secret/token").display().to_string(),
            "--audit-log".into(),
            self.audit_log().display().to_string(),
            "--state-dir".into(),
            self.path("state").display().to_string(),
            "--hasher".into(),
            hasher_bin().display().to_string(),
        ]
    }
}

/// A loopback listener a test hands to the process it starts as fd 3, as systemd does: the
/// port is the test's from bind to exit, so no other test can take it in between.
pub struct Handed {
    listener: TcpListener,
    pub addr: SocketAddr,
}

impl Handed {
    pub fn new() -> Handed {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        Handed { listener, addr }
    }

    /// `inner` (program, arguments, environment, directory) started with this listener as
    /// fd 3 and `LISTEN_FDS=1`. `LISTEN_PID` must name the process itself: a shell sets it to
    /// its own pid, then execs the program, which keeps that pid. The listener lives as long
    /// as the returned command: drop it once spawned, so that after the process exits a
    /// client is refused rather than queued on a socket nobody serves.
    pub fn command(self, inner: &Command) -> Command {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let listener = self.listener;
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("LISTEN_PID=$$ exec \"$0\" \"$@\"")
            .arg(inner.get_program())
            .args(inner.get_args())
            .env("LISTEN_FDS", "1");
        for (k, v) in inner.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        if let Some(dir) = inner.get_current_dir() {
            cmd.current_dir(dir);
        }
        // SAFETY: between fork and exec only async-signal-safe calls: dup2 and fcntl on fds.
        unsafe {
            cmd.pre_exec(move || {
                let fd = listener.as_raw_fd();
                let ok = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0) == 0
                } else {
                    libc::dup2(fd, 3) == 3
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            })
        };
        cmd
    }
}

/// A port free a moment ago: only for a process that must bind the port itself (its own
/// listener under test, the demo, systemd-socket-activate) or never listens; anything else
/// gets a [`Handed`] listener.
pub fn free_addr() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

/// A running integrity-monitor, killed on drop.
pub struct Running {
    pub child: Child,
    pub addr: SocketAddr,
}

impl Running {
    pub fn start(a: &Appliance) -> Running {
        Running::start_with(a, &[])
    }

    /// Starts the monitor on a listener this test made and hands over as fd 3, as systemd
    /// does (no race with other tests for a port).
    pub fn start_with(a: &Appliance, extra: &[&str]) -> Running {
        Running::start_with_stderr(a, extra, Stdio::inherit())
    }

    /// As [`Running::start_with`], with the monitor's stderr going to `stderr`.
    pub fn start_with_stderr(a: &Appliance, extra: &[&str], stderr: Stdio) -> Running {
        let handed = Handed::new();
        let addr = handed.addr;
        let mut inner = Command::new(monitor_bin());
        inner.args(a.args(addr)).args(extra);
        let child = handed
            .command(&inner)
            .stdin(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut r = Running { child, addr };
        r.wait_ready();
        r
    }

    /// Starts the monitor binding `--listen` itself (its own listener's settings are tested).
    pub fn start_listening(a: &Appliance) -> Running {
        let addr = free_addr();
        let child = Command::new(monitor_bin())
            .args(a.args(addr))
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let mut r = Running { child, addr };
        r.wait_ready();
        r
    }

    /// Waits until /health answers and a first scan (or a failed start) is in.
    pub fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("integrity-monitor exited early: {status}");
            }
            if let Ok((200, body)) = get(self.addr, "/api/v1/status") {
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                if v["scan_count"].as_u64().unwrap_or(0) > 0
                    || v["baseline_problem"].is_string() && v["reason"] != "awaiting_first_scan"
                {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("integrity-monitor did not become ready");
    }

    pub fn status(&self) -> serde_json::Value {
        let (code, body) = get(self.addr, "/api/v1/status").unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn scan(&self) -> serde_json::Value {
        let (code, body) = post(self.addr, "/api/v1/scan", Some(TOKEN)).unwrap();
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    pub fn verify_code(&self) -> u16 {
        get(self.addr, "/api/v1/verify").map(|r| r.0).unwrap_or(0)
    }

    pub fn hasher_pid(&self) -> i32 {
        let children = std::fs::read_to_string(format!(
            "/proc/{}/task/{}/children",
            self.child.id(),
            self.child.id()
        ))
        .unwrap();
        children
            .split_whitespace()
            .next()
            .expect("hasher child")
            .parse()
            .unwrap()
    }

    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(s) = self.child.try_wait().unwrap() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// SIGTERM, then the clean exit (code 0) a service manager expects.
    pub fn stop_cleanly(&mut self) {
        self.signal(libc::SIGTERM);
        let status = self
            .wait_exit(Duration::from_secs(15))
            .expect("stopped within 15 s");
        assert_eq!(status.code(), Some(0), "{status}");
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes())?;
    s.write_all(body)?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .get(9..12)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad response: {text:?}")))?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    request(addr, "GET", path, &[], b"")
}

pub fn post(addr: SocketAddr, path: &str, token: Option<&str>) -> std::io::Result<(u16, String)> {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    request(addr, "POST", path, &headers, b"")
}

/// A rebaseline by the key ceremony, as `integrity-monitor rebaseline --key --yes` makes it:
/// the hasher's signed plan (with the service token), a challenge, the proof over both made
/// with the authority derived from `key`, sent back. Returns the rebaseline's status and body
/// (or the plan's, when there is none).
pub fn rebaseline(addr: SocketAddr, key: &[u8]) -> std::io::Result<(u16, String)> {
    let (code, body, plan) = rebaseline_plan(addr)?;
    let Some((digest, generation)) = plan else {
        return Ok((code, body));
    };
    let proof = prove(addr, key, &digest, generation)?;
    request(
        addr,
        "POST",
        "/api/v1/rebaseline",
        &[("X-Rebaseline-Proof", &proof)],
        b"",
    )
}

/// A plan the hasher holds: its digest and the generation it is adopted at.
pub type PlanHeld = (String, u64);

/// `POST /api/v1/rebaseline/plan` with the service token: status, body, and the plan's
/// digest and generation when there is one.
pub fn rebaseline_plan(addr: SocketAddr) -> std::io::Result<(u16, String, Option<PlanHeld>)> {
    let auth = format!("Bearer {TOKEN}");
    let (code, body) = request(
        addr,
        "POST",
        "/api/v1/rebaseline/plan",
        &[("Authorization", &auth)],
        b"",
    )?;
    if code != 200 {
        return Ok((code, body, None));
    }
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    let payload = answer["plan"]["payload"].as_str().unwrap_or_default();
    let plan: serde_json::Value = serde_json::from_str(payload).map_err(std::io::Error::other)?;
    let digest = protocol::sign::sha256_hex(payload.as_bytes());
    let generation = plan["generation"].as_u64().unwrap_or_default();
    Ok((code, body, Some((digest, generation))))
}

/// A fresh challenge and the `X-Rebaseline-Proof` value approving plan `digest` at
/// `generation` with the authority derived from `key`.
pub fn prove(
    addr: SocketAddr,
    key: &[u8],
    digest: &str,
    generation: u64,
) -> std::io::Result<String> {
    let (code, body) = request(addr, "POST", "/api/v1/rebaseline/challenge", &[], b"")?;
    if code != 200 {
        return Err(std::io::Error::other(format!(
            "no challenge ({code}): {body}"
        )));
    }
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(std::io::Error::other)?;
    let challenge = answer["challenge"].as_str().unwrap_or_default();
    let proof = protocol::authority::Authority::derive(key).prove(challenge, digest, generation);
    Ok(format!("{challenge}:{digest}:{generation}:{proof}"))
}

/// Whether `/api/v1/verify` at `addr` answers 200 to a request carrying the service token
/// (reads may be closed by the policy).
pub fn verify_ok_with_token(addr: SocketAddr) -> bool {
    let auth = format!("Bearer {TOKEN}");
    request(
        addr,
        "GET",
        "/api/v1/verify",
        &[("Authorization", &auth)],
        b"",
    )
    .is_ok_and(|r| r.0 == 200)
}

pub fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A `kB` field (`VmRSS:`, `VmHWM:`…) of `/proc/PID/status`.
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// `GET /api/v1/attestation?nonce=NONCE`.
pub fn attestation(m: &Running, nonce: &str) -> (u16, String) {
    get(m.addr, &format!("/api/v1/attestation?nonce={nonce}")).unwrap()
}

/// Runs `integrity-monitor verify-attestation` on `body` with the appliance's key.
pub fn verify_attestation(
    a: &Appliance,
    nonce: &str,
    body: &str,
    extra: &[&str],
) -> std::process::Output {
    let key = path_str(&a.path("secret/key"));
    verify_attestation_by(&["--key", &key], nonce, body, extra)
}

/// Runs `integrity-monitor verify-attestation` on `body`, trusting what `by` names (`--key
/// FILE` or `--public-key FILE`).
pub fn verify_attestation_by(
    by: &[&str],
    nonce: &str,
    body: &str,
    extra: &[&str],
) -> std::process::Output {
    let mut child = Command::new(monitor_bin())
        .arg("verify-attestation")
        .args(by)
        .args(["--nonce", nonce])
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Runs `integrity-monitor verify-audit FILE…`.
pub fn verify_audit(files: &[PathBuf]) -> std::process::Output {
    Command::new(monitor_bin())
        .arg("verify-audit")
        .args(files)
        .output()
        .unwrap()
}

/// The audit log's records once its writer has caught up. Records reach the disk on the api's
/// writer thread a moment after the state they describe shows in `/status` (only mutations wait
/// for them), so this reads until two reads 50 ms apart agree (at most 5 s).
pub fn settled_audit(path: &Path) -> Vec<serde_json::Value> {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut text = read();
    loop {
        std::thread::sleep(Duration::from_millis(50));
        let again = read();
        if again == text || Instant::now() > deadline {
            break;
        }
        text = again;
    }
    text.lines()
        .map(|l| serde_json::from_str(l).expect("audit lines are JSON"))
        .collect()
}

/// Helpers the e2e test files share.
pub fn tamper(a: &Appliance, rel: &str) {
    a.write(rel, "tampered!\n");
}

pub fn restore_binary(a: &Appliance, rel: &str) {
    a.write(rel, &format!("#!/bin/sh\necho {rel}\n"));
}

pub fn violations_with(status: &serde_json::Value, marker: &str) -> Vec<String> {
    status["active_violations"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["actual_hash"] == marker)
        .map(|v| v["path"].as_str().unwrap().to_owned())
        .collect()
}

/// logrotate's `copytruncate`: a copy of `log` at `rotated`, then `log` cut to nothing.
pub fn copytruncate(log: &Path, rotated: &Path) {
    std::fs::copy(log, rotated).unwrap();
    std::fs::OpenOptions::new()
        .write(true)
        .open(log)
        .unwrap()
        .set_len(0)
        .unwrap();
}

/// The code block after `<!-- MARKER -->` in the docs page `page` (under docs/), as written.
pub fn doc_block(page: &str, marker: &str) -> String {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs")
            .join(page),
    )
    .unwrap();
    text.split(&format!("<!-- {marker} -->\n```python\n"))
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap()
        .to_owned()
}

/// A writable `MAP_SHARED` mapping of a file, unmapped when dropped.
pub struct Mapping {
    at: *mut u8,
    len: usize,
}

impl Mapping {
    /// Maps `path`, opened read-write (the descriptor is closed at once: the mapping stays).
    pub fn of(path: &Path) -> Mapping {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        Mapping::of_file(&file)
    }

    /// Maps `file`, open read-write, whole.
    pub fn of_file(file: &std::fs::File) -> Mapping {
        use std::os::fd::AsRawFd;
        let len = usize::try_from(file.metadata().unwrap().len()).unwrap();
        assert!(len > 0, "an empty file cannot be mapped");
        // SAFETY: a fresh shared mapping of `len` bytes of a file opened read-write, touched
        // only through `peek` and `poke` within its bounds, and unmapped once, on drop.
        let at = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        assert_ne!(at, libc::MAP_FAILED);
        Mapping { at: at.cast(), len }
    }

    /// The byte at offset 0 (volatile: read from the page).
    pub fn peek(&self) -> u8 {
        // SAFETY: offset 0 of a live mapping of at least one byte.
        unsafe { self.at.read_volatile() }
    }

    /// Writes `byte` at offset 0 (volatile: not elided).
    pub fn poke(&self, byte: u8) {
        // SAFETY: offset 0 of a live mapping of at least one byte.
        unsafe { self.at.write_volatile(byte) };
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `of_file`, unmapped once.
        unsafe { libc::munmap(self.at.cast(), self.len) };
    }
}

/// `SecAI-Directory-Hash-v1` of a directory artifact holding `files` (relative path, content),
/// given in byte order of their paths: what a registry manifest enrols it by.
pub fn dir_digest(files: &[(&str, &[u8])]) -> String {
    use sha2::Digest;
    let mut h = sha2::Sha256::new();
    h.update(b"SecAI-Directory-Hash-v1\0");
    for (path, content) in files {
        h.update((path.len() as u64).to_be_bytes());
        h.update(path.as_bytes());
        h.update((content.len() as u64).to_be_bytes());
        h.update(content);
    }
    protocol::hexfmt::encode(&h.finalize())
}
