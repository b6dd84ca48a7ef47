//! Opening a path with no symlink in any of its components: `openat2(RESOLVE_NO_SYMLINKS)`,
//! or, where that syscall is missing (Linux before 5.6, or a container filter that lacks it),
//! one `openat(O_NOFOLLOW)` per component from `/`. A symlink anywhere gives ELOOP.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Component, Path};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, AtFlags, OFlag, OpenHow, ResolveFlag, AT_FDCWD};
use nix::sys::stat::Mode;

/// Opens `path` read-only with no symlink in any of its components (a directory swapped for a
/// symlink mid-scan gives ELOOP, reported as `symlink`, never a file elsewhere).
pub(crate) fn open_no_symlinks(path: &Path) -> std::io::Result<File> {
    let fd = open(path, OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY)
        .map_err(std::io::Error::from)?;
    Ok(File::from(fd))
}

static NO_OPENAT2: AtomicBool = AtomicBool::new(false);

/// Opens `path` (absolute) with `flags` (`O_NOFOLLOW | O_CLOEXEC` are added).
pub(crate) fn open(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    if !NO_OPENAT2.load(Ordering::Relaxed) {
        let how = OpenHow::new()
            .flags(flags)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        match openat2(AT_FDCWD, path, how) {
            Err(Errno::ENOSYS) => {
                tracing::warn!(
                    "openat2 is unavailable: paths are resolved one component at a time"
                );
                NO_OPENAT2.store(true, Ordering::Relaxed);
            }
            // O_DIRECTORY|O_NOFOLLOW on a final symlink says ENOTDIR: say what it is.
            Err(Errno::ENOTDIR)
                if std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
            {
                return Err(Errno::ELOOP)
            }
            other => return other,
        }
    }
    by_components(path, flags)
}

fn by_components(path: &Path, flags: OFlag) -> nix::Result<OwnedFd> {
    let flags = flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut names: Vec<&OsStr> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir => {}
            Component::Normal(n) => names.push(n),
            // Policies hold absolute, normalised paths only.
            _ => return Err(Errno::EINVAL),
        }
    }
    // O_PATH: walking through a directory needs no right on it (Landlock checks only what is
    // finally opened), exactly as openat2's own resolution does.
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut dir = openat(AT_FDCWD, "/", dir_flags, Mode::empty())?;
    let Some((last, parents)) = names.split_last() else {
        return openat(AT_FDCWD, "/", flags, Mode::empty());
    };
    for name in parents {
        dir = match openat(&dir, *name, dir_flags, Mode::empty()) {
            Err(Errno::ENOTDIR) if is_symlink(&dir, name) => return Err(Errno::ELOOP),
            other => other?,
        };
    }
    match openat(&dir, *last, flags, Mode::empty()) {
        Err(Errno::ENOTDIR) if is_symlink(&dir, last) => Err(Errno::ELOOP),
        other => other,
    }
}

fn is_symlink(dir: &OwnedFd, name: &OsStr) -> bool {
    nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_ways_refuse_a_symlink_in_any_component() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        std::fs::create_dir(&real).expect("mkdir");
        std::fs::write(real.join("f"), "x").expect("write");
        std::os::unix::fs::symlink(&real, dir.path().join("link")).expect("symlink");
        let good = real.join("f");
        let bad = dir.path().join("link/f");
        for f in [open, by_components] {
            assert!(f(&good, OFlag::O_RDONLY).is_ok());
            assert_eq!(f(&bad, OFlag::O_RDONLY).err(), Some(Errno::ELOOP));
            assert_eq!(
                f(
                    &dir.path().join("link"),
                    OFlag::O_RDONLY | OFlag::O_DIRECTORY
                )
                .err(),
                Some(Errno::ELOOP)
            );
        }
    }
}
