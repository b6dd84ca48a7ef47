//! The api's system calls that need `unsafe`: the hasher spawn, inherited listeners, entropy.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

/// The fd a channel or listener is handed on, as systemd does.
pub const HANDED_FD: RawFd = 3;

/// A connected SEQPACKET pair, both ends close-on-exec.
pub fn seqpacket_pair() -> std::io::Result<(OwnedFd, OwnedFd)> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(std::io::Error::from)
}

/// Environment variables passed through to the hasher; everything else is cleared. The unit's
/// credentials directory goes too: under `LoadCredential=` it is where the hasher finds the
/// key and the token (their paths only: this process reads neither).
const PASSED_ENV: [&str; 5] = [
    "RUST_LOG",
    "JOURNAL_STREAM",
    "NO_COLOR",
    "TZ",
    "CREDENTIALS_DIRECTORY",
];

/// Starts the hasher with `channel` as fd 3 and `LISTEN_FDS=1`, dying with this process.
/// Must run before any thread is started: the child runs code between fork and exec.
pub fn spawn_hasher(program: &Path, args: &[OsString], channel: OwnedFd) -> std::io::Result<Child> {
    let parent = std::process::id();
    let raw = channel.as_raw_fd();
    let mut cmd = Command::new(program);
    cmd.args(args).env_clear().env("LISTEN_FDS", "1");
    for var in PASSED_ENV {
        if let Some(v) = std::env::var_os(var) {
            cmd.env(var, v);
        }
    }
    // SAFETY: the closure runs in the forked child before exec and only makes
    // async-signal-safe system calls (dup2, fcntl, prctl, signal, getppid, _exit) on fds it owns.
    unsafe {
        cmd.pre_exec(move || {
            if raw == HANDED_FD {
                // dup2(3, 3) is a no-op that leaves FD_CLOEXEC set: clear it instead.
                if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(raw, HANDED_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            ) < 0
            {
                return Err(std::io::Error::last_os_error());
            }
            // A stop signal for the whole process group (Ctrl-C, systemd's cgroup SIGTERM) is
            // the api's to handle: the hasher leaves when the api closes the channel.
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            // The parent may have died before PDEATHSIG was armed.
            if libc::getppid().cast_unsigned() != parent {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let child = cmd.spawn();
    drop(channel);
    child
}

/// Takes a socket-activated listener: `LISTEN_FDS=1` and `LISTEN_PID` naming this process
/// (checked by `sd_notify::listen_fds`, which also sets `FD_CLOEXEC`). The variables are
/// removed so nothing started later inherits them.
pub fn take_listener() -> Option<std::net::TcpListener> {
    // SAFETY: called once at start, before any thread exists (the runtime starts later), so
    // removing the environment variables races no reader.
    let fds = unsafe { sd_notify::listen_fds_and_unset_env() };
    let mut fds = match fds {
        Ok(fds) if fds.len() == 1 => fds,
        Ok(fds) if fds.len() == 0 => return None,
        Ok(fds) => {
            tracing::error!(
                count = fds.len(),
                "socket activation handed more than one fd; expected one listener"
            );
            return None;
        }
        Err(e) => {
            tracing::error!(error = %e, "LISTEN_FDS/LISTEN_PID unusable");
            return None;
        }
    };
    let raw = fds.next()?;
    // SAFETY: systemd handed `raw` (fd 3) to this process, as LISTEN_FDS and LISTEN_PID say,
    // and listen_fds just made it close-on-exec (an fcntl that fails on a closed fd); nothing
    // else in the process owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    Some(std::net::TcpListener::from(fd))
}

/// Moves `fd` to the descriptor number `at` (close-on-exec), which must be free: a fixed
/// number the seccomp filters can name. Before the sandbox.
pub fn place_at(fd: OwnedFd, at: RawFd) -> std::io::Result<OwnedFd> {
    // SAFETY: fcntl(F_GETFD) on a number only asks whether it is open; it changes nothing.
    if unsafe { libc::fcntl(at, libc::F_GETFD) } >= 0 {
        return Err(std::io::Error::other(format!(
            "descriptor {at} is already open (inherited?): start the service without it"
        )));
    }
    // SAFETY: `at` is not open (checked above, before any thread exists), so dup3 closes
    // nothing; the new descriptor is owned at once below and `fd` is closed by its drop.
    let placed = unsafe { libc::dup3(fd.as_raw_fd(), at, libc::O_CLOEXEC) };
    if placed < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: dup3 just opened `placed` for this process and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(placed) })
}

/// Fills `buf` from the kernel's CSPRNG (getrandom(2), through the crate rand itself uses).
pub fn random_bytes(buf: &mut [u8]) -> std::io::Result<()> {
    getrandom::fill(buf).map_err(std::io::Error::from)
}

/// Registers an owned socket with the tokio reactor.
pub fn register(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: an OwnedFd is open for its whole life and always returns the same raw fd; the
    // AsyncFd owns it, so it stays open until the AsyncFd is dropped.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(|e| e.into_parts().1)
}

/// Connects to a hasher's SEQPACKET socket and returns the socket and the peer's uid
/// (SO_PEERCRED: for a socket-activated listener, the uid that created it).
pub fn connect_hasher(path: &Path) -> std::io::Result<(OwnedFd, u32)> {
    use nix::sys::socket::{connect, getsockopt, socket, sockopt, UnixAddr};
    let fd = socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    connect(fd.as_raw_fd(), &UnixAddr::new(path)?)?;
    let creds = getsockopt(&fd, sockopt::PeerCredentials)?;
    Ok((fd, creds.uid()))
}

static FD_LIMIT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1024);

/// Raises the soft open-file limit to the hard one, so a flood of idle connections meets the
/// connection cap, not EMFILE. Runs before the sandbox (which has no `prlimit64`); returns the
/// soft limit now in force and remembers it for [`fd_limit`].
pub fn raise_fd_limit() -> usize {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(1024, |(soft, _)| {
        usize::try_from(soft).unwrap_or(usize::MAX)
    });
    FD_LIMIT.store(soft, std::sync::atomic::Ordering::Relaxed);
    soft
}

/// The soft open-file limit as [`raise_fd_limit`] left it (1024 if it never ran).
pub fn fd_limit() -> usize {
    FD_LIMIT.load(std::sync::atomic::Ordering::Relaxed)
}

/// Backlog of the listener bound in standalone mode, as the socket unit's `Backlog=`.
const LISTEN_BACKLOG: i32 = 4096;

/// Raises the accept queue of a listener std bound with 128 (a burst of health checks or
/// connection floods then waits in the queue instead of being dropped into SYN retries).
/// Linux updates the backlog of a socket already listening; the kernel caps it at somaxconn.
pub fn widen_backlog(listener: &std::net::TcpListener) -> std::io::Result<()> {
    let backlog = nix::sys::socket::Backlog::new(LISTEN_BACKLOG).map_err(std::io::Error::from)?;
    nix::sys::socket::listen(listener, backlog).map_err(std::io::Error::from)
}

/// The child [`run_in_child`] waits for, for the signal forwarder.
static DEMO_CHILD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward_signal(sig: libc::c_int) {
    let pid = DEMO_CHILD.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe; `pid` is our own child.
        unsafe { libc::kill(pid, sig) };
    }
}

/// Runs `work` in a forked child and waits for it, forwarding SIGINT, SIGTERM and SIGHUP;
/// returns the child's exit code (128 + signal if it died of one). The parent installs no
/// sandbox, so it can clean up after a child that does. Call before any thread exists.
#[allow(
    clippy::exit,
    reason = "the forked child ends with its work's code: returning would run the rest of main twice"
)]
pub fn run_in_child(work: impl FnOnce() -> i32) -> i32 {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    // SAFETY: called from main before any thread is started, so the child is a faithful copy
    // of a single-threaded process; it only runs `work` and exits.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => std::process::exit(work()),
        Ok(ForkResult::Parent { child }) => {
            DEMO_CHILD.store(child.as_raw(), std::sync::atomic::Ordering::SeqCst);
            let forward = SigAction::new(
                SigHandler::Handler(forward_signal),
                SaFlags::SA_RESTART,
                SigSet::empty(),
            );
            for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
                // SAFETY: the handler only calls kill(2), which is async-signal-safe.
                let _ = unsafe { sigaction(sig, &forward) };
            }
            loop {
                match waitpid(child, None) {
                    Ok(WaitStatus::Exited(_, code)) => return code,
                    Ok(WaitStatus::Signaled(_, sig, _)) => return 128 + sig as i32,
                    Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return 1,
                }
            }
        }
        Err(e) => {
            eprintln!("integrity-monitor: fork failed: {e}");
            1
        }
    }
}

/// Test harness (`--sandbox-probe mptcp PORT`): an MPTCP stream to 127.0.0.1:`port`.
#[cfg(feature = "probe")]
pub fn mptcp_connect(port: u16) -> std::io::Result<()> {
    const IPPROTO_MPTCP: libc::c_int = 262;
    // SAFETY: socket(2) with constant arguments; the fd it returns is owned at once below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            IPPROTO_MPTCP,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = libc::sockaddr_in {
        sin_family: libc::sa_family_t::try_from(libc::AF_INET).map_err(std::io::Error::other)?,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>())
        .map_err(std::io::Error::other)?;
    // SAFETY: `addr` is a valid sockaddr_in and the length passed is its size.
    let r = unsafe { libc::connect(sock.as_raw_fd(), std::ptr::from_ref(&addr).cast(), len) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
