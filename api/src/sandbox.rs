//! The api's walls: no_new_privs, no capabilities, Landlock with no read access to any file
//! and write access only beneath the audit log dir and the state dir, no new TCP bind or
//! connect, scoped signals, and the seccomp filters of `seccomp/api.json`. Installed after the
//! hasher is spawned and before the runtime starts its threads; any failure stops the process.

use std::path::PathBuf;

use landlock::{AccessFs, BitFlags};
/// The filters, compiled at start and embedded in the binary.
const SECCOMP_JSON: &str = include_str!("../../seccomp/api.json");
/// Installed in this order; the allowlist last, since installing needs `seccomp` and `prctl`.
/// `api_no_inet` only when incident reporting is off: then no internet socket at all;
/// `api_no_unix` only with a spawned hasher: then no Unix socket at all; `api_no_connect` when
/// neither a hasher socket nor a recorder is configured; `api_notify_fd` when there is a
/// notify socket.
const FILTERS: [&str; 7] = [
    "api_enosys",
    "api_eacces",
    "api_no_inet",
    "api_no_unix",
    "api_no_connect",
    "api_notify_fd",
    "api",
];

use imsys::walls::Landlock;
pub use imsys::walls::{drop_privileges, SandboxError};

/// The Unix sockets the api reaches after start, besides the channel it may have inherited.
#[derive(Clone, Copy, Debug)]
pub struct Unix {
    /// `--hasher-socket`: a SEQPACKET connect to the hasher's socket at every reconnect.
    pub hasher_socket: bool,
    /// A notify socket was connected before the sandbox (`notify::connect`).
    pub notify: bool,
}

/// Installs every wall; `write_dirs` are the audit log dir and the state dir, `connect_port`
/// the incident recorder's loopback port, if reporting is on.
pub fn install(
    write_dirs: &[PathBuf],
    connect_port: Option<u16>,
    unix: Unix,
) -> Result<String, SandboxError> {
    drop_privileges()?;
    let status = landlock(write_dirs, connect_port)?;
    seccomp(connect_port.is_some(), unix)?;
    Ok(status)
}

fn landlock(write_dirs: &[PathBuf], connect_port: Option<u16>) -> Result<String, SandboxError> {
    // Create and write files, replace them by rename, list the dir (an O_DIRECTORY open is
    // needed to fsync it), truncate (an audit record cut short by a full disk is cut back
    // out): never read a file's content, never execute.
    let write: BitFlags<AccessFs> = AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile
        | AccessFs::ReadDir
        | AccessFs::Truncate;
    let mut walls = Landlock::new()?;
    for dir in write_dirs {
        walls.allow_beneath(dir, write)?;
    }
    if let Some(port) = connect_port {
        walls.allow_connect(port)?;
    }
    walls.enforce()
}

fn seccomp(incidents: bool, unix: Unix) -> Result<(), SandboxError> {
    imsys::seccomp::install(SECCOMP_JSON, &FILTERS, |name| match name {
        "api_no_inet" => incidents,
        "api_no_unix" => unix.hasher_socket,
        "api_no_connect" => unix.hasher_socket || incidents,
        "api_notify_fd" => !unix.notify,
        _ => false,
    })
    .map_err(SandboxError::Seccomp)
}

#[cfg(feature = "probe")]
/// Test harness (`--sandbox-probe`): after the real sandbox, attempt one act and report.
pub fn probe(act: &str, arg: &str) -> i32 {
    use std::io::Read;
    let result: std::io::Result<()> = match act {
        "read" => std::fs::File::open(arg).and_then(|mut f| f.read(&mut [0u8; 1]).map(drop)),
        "create" => std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(arg)
            .map(drop),
        "exec" => std::process::Command::new(arg).status().map(drop),
        "connect" => {
            std::net::TcpStream::connect(("127.0.0.1", arg.parse().unwrap_or(1))).map(drop)
        }
        // An MPTCP stream to the given loopback port: Landlock's TCP rules do not cover MPTCP,
        // so seccomp must refuse the socket itself.
        "mptcp" => crate::sys::mptcp_connect(arg.parse().unwrap_or(1)),
        // A datagram to the given loopback port: the api may never send one.
        "udp" => std::net::UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.send_to(b"probe", ("127.0.0.1", arg.parse().unwrap_or(9))))
            .map(drop),
        // A Unix socket, named (a path) or abstract (`@name`): connect and send one message.
        "unix-stream" => unix_probe(nix::sys::socket::SockType::Stream, arg),
        "unix-dgram" => unix_probe(nix::sys::socket::SockType::Datagram, arg),
        "unix-seqpacket" => unix_probe(nix::sys::socket::SockType::SeqPacket, arg),
        // Whether a path is there to be seen (a socket the unit's namespace hides is not).
        "stat" => std::fs::metadata(arg).map(drop),
        // The notify socket: a message to systemd; pointing it elsewhere; a datagram from it
        // to another address.
        "notify" => notify_socket().and_then(|s| s.send(arg.as_bytes()).map(drop)),
        "notify-connect" => notify_socket().and_then(|s| {
            use std::os::fd::AsRawFd;
            nix::sys::socket::connect(s.as_raw_fd(), &unix_addr(arg)?).map_err(std::io::Error::from)
        }),
        "notify-sendto" => notify_socket().and_then(|s| s.send_to(b"probe", arg).map(drop)),
        other => {
            eprintln!("probe: unknown act {other}");
            return 2;
        }
    };
    imsys::walls::report_probe(act, result)
}

#[cfg(feature = "probe")]
fn unix_addr(arg: &str) -> std::io::Result<nix::sys::socket::UnixAddr> {
    match arg.strip_prefix('@') {
        Some(name) => nix::sys::socket::UnixAddr::new_abstract(name.as_bytes()),
        None => nix::sys::socket::UnixAddr::new(arg),
    }
    .map_err(std::io::Error::from)
}

#[cfg(feature = "probe")]
fn unix_probe(kind: nix::sys::socket::SockType, arg: &str) -> std::io::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, MsgFlags, SockFlag};
    use std::os::fd::AsRawFd;
    let addr = unix_addr(arg)?;
    let fd = socket(AddressFamily::Unix, kind, SockFlag::SOCK_CLOEXEC, None)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &addr)?;
    nix::sys::socket::send(fd.as_raw_fd(), b"probe\n", MsgFlags::MSG_NOSIGNAL)?;
    Ok(())
}

#[cfg(feature = "probe")]
fn notify_socket() -> std::io::Result<&'static std::os::unix::net::UnixDatagram> {
    crate::notify::socket()
        .ok_or_else(|| std::io::Error::other("no notify socket (NOTIFY_SOCKET unset)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_filters_compile() {
        for arch in imsys::seccomp::ARCHES {
            let filters = imsys::seccomp::compile(SECCOMP_JSON, arch).expect("compiles");
            for name in FILTERS {
                assert!(filters.contains_key(name), "{name} {arch:?}");
            }
        }
    }

    #[test]
    fn the_notify_filter_names_the_notify_fd() {
        let doc: serde_json::Value = serde_json::from_str(SECCOMP_JSON).expect("json");
        let rules = doc["api_notify_fd"]["filter"].as_array().expect("rules");
        assert!(!rules.is_empty());
        for rule in rules {
            assert_eq!(rule["args"][0]["val"], crate::notify::NOTIFY_FD, "{rule}");
        }
    }
}
