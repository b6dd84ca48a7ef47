//! A file's fs-verity seal: measured on the descriptor the read uses (before and after it), or
//! by itself when a binding may answer for the file without a read.

use std::fs::Metadata;
use std::path::Path;

pub(crate) use imsys::verity::Seal;

/// What a read learned of its file's seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Sealing {
    /// Not asked (seals are off, or the read was not one whole read of the file).
    #[default]
    Unknown,
    /// The file has no fs-verity.
    Unsealed,
    /// Every byte read came through fs-verity with this digest, measured before and after.
    Sealed(Seal),
}

/// The seal of the regular file at `path` and the metadata of what was opened, when it has one
/// (opened with no symlink followed; never a secret's inode).
pub(crate) fn look(
    path: &Path,
    secrets: &crate::reading::secrets::Secrets,
) -> Option<(Seal, Metadata)> {
    let file = crate::reading::resolve::open_no_symlinks(path).ok()?;
    let opened = file.metadata().ok()?;
    if !opened.file_type().is_file() || secrets.is_inode(&opened) {
        return None;
    }
    let seal = measure(&file)?;
    Some((seal, opened))
}

/// The seal of the open `file`, if it has one (`None` also when its filesystem or kernel has
/// no fs-verity, or on any other error: the file is then read). Only a filesystem whose kernel
/// driver keeps the Merkle tree itself (ext4, f2fs, btrfs) is asked: a FUSE server, say, can
/// answer the ioctl with any digest it likes while serving other bytes.
pub(crate) fn measure(file: &std::fs::File) -> Option<Seal> {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC};
    let kind = nix::sys::statfs::fstatfs(file).ok()?.filesystem_type();
    if ![EXT4_SUPER_MAGIC, F2FS_SUPER_MAGIC, BTRFS_SUPER_MAGIC].contains(&kind) {
        return None;
    }
    imsys::sys::measure_verity(file).ok()
}
