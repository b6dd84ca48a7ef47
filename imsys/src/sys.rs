//! The two fs-verity ioctls, made once for both binaries: the hasher measures a seal (the one
//! ioctl its filter admits), `integrity-monitor seal` enables one. Layouts in [`crate::verity`].

use std::fs::File;
use std::os::fd::AsRawFd;

use crate::verity::{DigestArg, EnableArg, Seal, FS_IOC_ENABLE_VERITY, FS_IOC_MEASURE_VERITY};

/// The fs-verity digest of the open `file` (`FS_IOC_MEASURE_VERITY`, O(1)): `ENODATA` when it
/// has none, `ENOTTY` or `EOPNOTSUPP` when its filesystem or kernel has no fs-verity.
pub fn measure_verity(file: &File) -> std::io::Result<Seal> {
    let mut arg = DigestArg::default();
    // SAFETY: the kernel writes at most `arg.size` digest bytes after the 4-byte header into
    // `arg`, which has exactly that room and lives across the call.
    let r = unsafe {
        nix::libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_MEASURE_VERITY as nix::libc::Ioctl,
            &mut arg as *mut DigestArg,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Seal::from_arg(&arg)
        .ok_or_else(|| std::io::Error::other(format!("a seal of algorithm {}", arg.algorithm)))
}

/// Enables fs-verity on `file`, opened read-only with no writer anywhere
/// (`FS_IOC_ENABLE_VERITY`: SHA-256, 4 KiB blocks, no salt); the kernel reads the whole file to
/// build its Merkle tree.
pub fn enable_verity(file: &File) -> std::io::Result<()> {
    let arg = EnableArg::default();
    // SAFETY: the kernel only reads the 128-byte `arg` (its salt and signature pointers are
    // null with sizes 0), which lives across the call.
    let r = unsafe {
        nix::libc::ioctl(
            file.as_raw_fd(),
            FS_IOC_ENABLE_VERITY as nix::libc::Ioctl,
            &arg as *const EnableArg,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
