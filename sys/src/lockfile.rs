//! One process per resource: an exclusive `flock` on a lock file holding the holder's pid.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

/// Takes the lock at `path` (created 0600 if missing), waiting up to `wait` for a holder that
/// is on its way out, and writes this pid into it. Held until the process exits, when the
/// kernel releases it (the guard is not dropped: unlocking needs a syscall the sandboxes do
/// not allow). `Err` names the holder's pid.
pub fn acquire(path: &Path, wait: Duration) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc_o_nofollow())
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let deadline = Instant::now() + wait;
    let held = loop {
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(l) => break l,
            Err((f, _)) if Instant::now() < deadline => {
                file = f;
                std::thread::sleep(Duration::from_millis(50));
            }
            Err((f, e)) => return Err(format!("held by pid {} ({e})", holder(&f))),
        }
    };
    held.set_len(0)
        .and_then(|()| held.write_all_at(std::process::id().to_string().as_bytes(), 0))
        .map_err(|e| format!("{}: {e}", path.display()))?;
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
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
