//! The hasher's system calls that need more than std: fd hand-over checks, fadvise, writeback,
//! priority.

use std::fs::File;
use std::os::fd::{AsFd, FromRawFd, OwnedFd, RawFd};

use nix::fcntl::{fcntl, posix_fadvise, FcntlArg, FdFlag, PosixFadviseAdvice};
use nix::sys::socket::{getsockopt, sockopt, SockType};

/// The channel to the api was not handed over as integrity-monitor and systemd hand it.
#[derive(Debug, thiserror::Error)]
pub enum HandOverError {
    /// No `LISTEN_FDS`: started by hand.
    #[error("LISTEN_FDS is not set; integrity-hasher is started by integrity-monitor or systemd, not by hand")]
    NotHanded,
    /// `LISTEN_FDS` other than 1.
    #[error("LISTEN_FDS={0}; the hasher takes exactly one channel on fd 3")]
    Count(String),
    /// `LISTEN_PID` names another process (the variables were inherited, not meant for us).
    #[error("LISTEN_PID={0} is not this process")]
    OtherPid(String),
    /// fd 3 is closed.
    #[error("fd 3 is not open")]
    Closed,
    /// fd 3 is not a SEQPACKET socket.
    #[error("fd 3 is not a SEQPACKET socket: {0}")]
    NotSeqPacket(String),
    /// fd 3 could not be made close-on-exec.
    #[error("fd 3: cannot set FD_CLOEXEC: {0}")]
    Cloexec(nix::errno::Errno),
}

/// The fd the channel arrives on, as systemd's LISTEN_FDS would hand it.
pub const CHANNEL_FD: RawFd = 3;

/// Takes ownership of fd 3 after checking the hand-over: `LISTEN_FDS=1`, `LISTEN_PID` (when
/// set) naming this process, and fd 3 being a SEQPACKET socket. Not `sd_notify::listen_fds`:
/// the api spawns the hasher without `LISTEN_PID` (a parent cannot know the child's pid when
/// it builds the environment, short of a shell), and that function then hands over nothing.
pub fn take_channel() -> Result<OwnedFd, HandOverError> {
    match std::env::var("LISTEN_FDS") {
        Ok(v) if v == "1" => {}
        Ok(v) => return Err(HandOverError::Count(v)),
        Err(_) => return Err(HandOverError::NotHanded),
    }
    if let Ok(pid) = std::env::var("LISTEN_PID") {
        if pid != std::process::id().to_string() {
            return Err(HandOverError::OtherPid(pid));
        }
    }
    // SAFETY: fd 3 was handed to this process by its parent (checked just above through
    // LISTEN_FDS) and nothing else in the process owns it; fcntl validates it is open.
    let fd = unsafe {
        if libc::fcntl(CHANNEL_FD, libc::F_GETFD) < 0 {
            return Err(HandOverError::Closed);
        }
        OwnedFd::from_raw_fd(CHANNEL_FD)
    };
    match getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::SeqPacket) => {}
        Ok(other) => return Err(HandOverError::NotSeqPacket(format!("a {other:?} socket"))),
        Err(e) => return Err(HandOverError::NotSeqPacket(e.to_string())),
    }
    // Keep the channel out of anything this process might exec (it execs nothing).
    fcntl(&fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).map_err(HandOverError::Cloexec)?;
    Ok(fd)
}

/// The fixed descriptor the TPM is kept at: the one besides stderr that the seccomp filter lets
/// `write(2)` reach (a command to the TPM), so no other descriptor can be written that way.
pub const TPM_FD: RawFd = 9;

/// Moves `file` (the open TPM) to [`TPM_FD`], close-on-exec; refused when that descriptor is
/// already open (nothing of this process is closed under it).
pub fn place_tpm(file: File) -> std::io::Result<File> {
    use std::os::fd::AsRawFd;
    if file.as_raw_fd() == TPM_FD {
        return Ok(file);
    }
    // SAFETY: F_GETFD on an integer descriptor reads no memory; -1 with EBADF means free.
    if unsafe { libc::fcntl(TPM_FD, libc::F_GETFD) } >= 0 {
        return Err(std::io::Error::other(format!(
            "fd {TPM_FD}, where the TPM is kept, is already open: start the hasher without it"
        )));
    }
    // SAFETY: dup3 onto a descriptor just checked to be free; the new descriptor is owned
    // below and nothing else refers to it.
    let fd = unsafe { libc::dup3(file.as_raw_fd(), TPM_FD, libc::O_CLOEXEC) };
    if fd != TPM_FD {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: TPM_FD was just made a duplicate of the open TPM and is owned by no one else.
    Ok(unsafe { File::from_raw_fd(TPM_FD) })
}

/// Tells the kernel the file is read once, front to back (larger read-ahead).
pub fn advise_sequential(file: &File) {
    let _ = posix_fadvise(
        file.as_fd(),
        0,
        0,
        PosixFadviseAdvice::POSIX_FADV_SEQUENTIAL,
    );
}

/// Asks the kernel to start reading the whole file into the cache now (it does not wait).
pub fn advise_willneed(file: &File) {
    let _ = posix_fadvise(file.as_fd(), 0, 0, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
}

/// Drops the file's pages from the cache once hashed, so a 70 GB model does not evict the
/// appliance's working set.
pub fn advise_done(file: &File) {
    advise_done_range(file, 0, 0);
}

/// Drops `len` bytes from `offset` (0: to the end) from the cache: the drop-behind of a read.
pub fn advise_done_range(file: &File, offset: u64, len: u64) {
    let (Ok(offset), Ok(len)) = (i64::try_from(offset), i64::try_from(len)) else {
        return;
    };
    let _ = posix_fadvise(
        file.as_fd(),
        offset,
        len,
        PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    );
}

/// Writes back the file's dirty pages and waits for it (`sync_file_range` with
/// `WAIT_BEFORE|WRITE|WAIT_AFTER` over the whole file): allowed on a read-only descriptor, and
/// writeback write-protects every shared mapping of the pages it cleans, so a later write
/// through a mapping faults and moves the file's ctime. Nothing reaches the disk's own cache
/// (no flush): only the pages' state matters here.
pub fn write_back(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
        | libc::SYNC_FILE_RANGE_WRITE
        | libc::SYNC_FILE_RANGE_WAIT_AFTER;
    // SAFETY: sync_file_range takes a descriptor and integers (offset 0, length 0: to the
    // end); no memory is passed.
    let r = unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Lowers the hasher's CPU and I/O priority (nice 10, idle I/O class) so a full rehash never
/// starves the api or the appliance's own workload. Best effort: failures are logged.
pub fn lower_priority() {
    // Under the unit, systemd has already set Nice=10 and the idle class, and its
    // SystemCallFilter refuses both calls: only ask for what is not in place yet.
    // SAFETY: getpriority takes integers only; -1 (an error) reads as "not lowered".
    let already_nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) } >= 10;
    // IOPRIO_WHO_PROCESS = 1, IOPRIO_CLASS_IDLE = 3 shifted by IOPRIO_CLASS_SHIFT (13).
    // SAFETY: ioprio_get takes two integers; no memory is passed.
    let already_idle = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) } >> 13 == 3;
    let nice = if already_nice {
        0
    } else {
        // SAFETY: setpriority on this process (who = 0) with a plain integer niceness.
        unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) }
    };
    let io = if already_idle {
        0
    } else {
        // SAFETY: ioprio_set takes three integers; no memory is passed.
        unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, 3 << 13) }
    };
    if nice != 0 || io != 0 {
        tracing::warn!(nice, io, "could not lower CPU or I/O priority");
    }
}

/// `FS_IOC_GETFLAGS` on `file`: an ioctl the hasher never makes, for the sandbox probe to try.
#[cfg(feature = "probe")]
pub fn get_flags(file: &File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long into `flags`, which outlives the call.
    let r = unsafe { libc::ioctl(file.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
