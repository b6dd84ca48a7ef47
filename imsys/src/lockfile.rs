//! One process per resource: an exclusive `flock` on a lock file holding the holder's pid.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The lock file could not be opened or written.
    #[error("{}: {why}", path.display())]
    File {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        why: std::io::Error,
    },
    /// Another process holds it.
    #[error("held by pid {pid} ({why})")]
    Held {
        /// The holder's pid, as it wrote it.
        pid: String,
        /// The OS error of the last attempt.
        why: nix::errno::Errno,
    },
}

/// Takes the lock at `path` (created 0600 if missing), waiting up to `wait` for a holder that
/// is on its way out, and writes this pid into it. Held until the process exits, when the
/// kernel releases it (the guard is not dropped: unlocking needs a syscall the sandboxes do
/// not allow). `Err` names the holder's pid.
pub fn acquire(path: &Path, wait: Duration) -> Result<(), LockError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|why| LockError::File {
            path: path.to_owned(),
            why,
        })?;
    // Made by root for a service's directory (firstboot): the service must open it later.
    let _ = crate::paths::give_to_dir_owner(&file, path);
    let deadline = Instant::now() + wait;
    let held = loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((f, why)) => {
                return Err(LockError::Held {
                    pid: holder(&f),
                    why,
                })
            }
        }
    };
    held.set_len(0)
        .and_then(|()| held.write_all_at(std::process::id().to_string().as_bytes(), 0))
        .map_err(|why| LockError::File {
            path: path.to_owned(),
            why,
        })?;
    std::mem::forget(held);
    Ok(())
}

fn holder(f: &File) -> String {
    let mut pid = String::new();
    let _ = f.take(32).read_to_string(&mut pid);
    pid.trim().to_owned()
}

fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = std::env::temp_dir().join(format!("imsys-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let p = dir.join("l");
        acquire(&p, Duration::ZERO).expect("first");
        // flock is per open file description: a second open in this process conflicts too.
        let e = acquire(&p, Duration::from_millis(100)).expect_err("second");
        assert!(
            matches!(&e, LockError::Held { pid, .. } if *pid == std::process::id().to_string()),
            "{e}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
