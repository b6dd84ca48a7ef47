//! What a file's filesystem lets its metadata say. The metadata fast path (an unchanged
//! version answers without a read) holds only where every change of content moves the file's
//! ctime: a filesystem with writeback that write-protects shared mappings, or one nothing can
//! write. tmpfs has neither (a write through a `MAP_SHARED` mapping moves no timestamp, ever),
//! so a file there is read in full at every sweep. On FUSE and network filesystems a server,
//! not this kernel, decides what a read returns — it can give the hasher other bytes than the
//! model loader — so files there are refused, never read.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::statfs::FsType;

/// How long what `statfs` said of a device is believed (a device number can be reused by
/// another mount after an unmount).
const BELIEVED_FOR: Duration = Duration::from_secs(60);
/// Most devices remembered at once (a few in practice).
const MAX_DEVICES: usize = 1024;

/// What a filesystem lets the metadata of its files say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FsKind {
    /// ext2/3/4, xfs, btrfs, f2fs: every write moves ctime once the file's pages are clean
    /// (see [`crate::reading::proof`]); an unchanged version answers without a read.
    Tracked,
    /// Nothing writes it: erofs, squashfs, iso9660, cramfs, romfs.
    ReadOnly,
    /// Anything else (tmpfs, ramfs, an overlay, vfat…): a write may move nothing, so every
    /// sweep reads the file in full. The filesystem's name, for the operator. An overlay even
    /// mounted read-only: its files' pages belong to the layer's file, which a writeback on
    /// the overlay's descriptor does not reach, and that file may be written where it lies.
    ReadEverySweep(&'static str),
    /// FUSE or a network or cluster filesystem: refused, never read.
    Untrusted(&'static str),
}

impl FsKind {
    /// Whether an unchanged version may answer without a read.
    pub(crate) fn trusts_metadata(self) -> bool {
        matches!(self, FsKind::Tracked | FsKind::ReadOnly)
    }

    /// The kind of the filesystem `path` is on (`statfs`); one that cannot be asked is read
    /// at every sweep.
    pub(crate) fn of(path: &Path) -> FsKind {
        match nix::sys::statfs::statfs(path) {
            Ok(s) => classify(s.filesystem_type()),
            Err(_) => FsKind::ReadEverySweep("unknown"),
        }
    }
}

/// The kind of a filesystem of type `magic` (`statfs`'s `f_type`). Read-only mounts are not
/// trusted as such: a read-only bind of a tmpfs, or an overlay, is written where it lies.
pub(crate) fn classify(magic: FsType) -> FsKind {
    // Magic numbers from linux/magic.h; nix names only some of them.
    // `f_type` is a signed word holding an unsigned magic: the same bits.
    let m = magic.0.cast_unsigned();
    match m {
        0xEF53 | 0x5846_5342 | 0x9123_683E | 0xF2F5_2010 => FsKind::Tracked,
        0xE0F5_E1E2 | 0x7371_7368 | 0x9660 | 0x28CD_3D45 | 0x7275 => FsKind::ReadOnly,
        0x6573_5546 => FsKind::Untrusted("fuse"),
        0x6969 => FsKind::Untrusted("nfs"),
        0x517B | 0xFF53_4D42 | 0xFE53_4D42 => FsKind::Untrusted("smb"),
        0x00C3_6400 => FsKind::Untrusted("ceph"),
        0x0102_1997 => FsKind::Untrusted("9p"),
        0x5346_414F | 0x6B41_4653 => FsKind::Untrusted("afs"),
        0x7375_7245 => FsKind::Untrusted("coda"),
        0x0116_1970 => FsKind::Untrusted("gfs2"),
        0x7461_636F => FsKind::Untrusted("ocfs2"),
        0x1366_1366 => FsKind::Untrusted("orangefs"),
        0x0BD0_0BD0 => FsKind::Untrusted("lustre"),
        0x4750_4653 => FsKind::Untrusted("gpfs"),
        0x0102_1994 => FsKind::ReadEverySweep("tmpfs"),
        0x8584_58F6 => FsKind::ReadEverySweep("ramfs"),
        0x794C_7630 => FsKind::ReadEverySweep("overlay"),
        _ => FsKind::ReadEverySweep("another filesystem"),
    }
}

/// What `statfs` said of each device seen, for a while.
#[derive(Debug, Default)]
pub(crate) struct Kinds {
    seen: HashMap<u64, (FsKind, Instant)>,
}

impl Kinds {
    /// The kind of the filesystem on device `dev`, where `path` is (asked of `path` when the
    /// device is new or what was said of it is old).
    pub(crate) fn of(&mut self, dev: u64, path: &Path) -> FsKind {
        if let Some((kind, at)) = self.seen.get(&dev) {
            if at.elapsed() < BELIEVED_FOR {
                return *kind;
            }
        }
        let kind = FsKind::of(path);
        if self.seen.len() >= MAX_DEVICES {
            self.seen.clear();
        }
        self.seen.insert(dev, (kind, Instant::now()));
        kind
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_writeback_and_read_only_filesystems_are_trusted_and_remote_ones_refused() {
        let kind = |m: u64| classify(FsType(m.cast_signed()));
        for ext4_xfs_btrfs_f2fs in [0xEF53, 0x5846_5342, 0x9123_683E, 0xF2F5_2010] {
            assert_eq!(kind(ext4_xfs_btrfs_f2fs), FsKind::Tracked);
        }
        assert_eq!(kind(0xE0F5_E1E2), FsKind::ReadOnly, "erofs");
        assert_eq!(
            kind(0x794C_7630),
            FsKind::ReadEverySweep("overlay"),
            "even read-only: its layer's file is written where it lies"
        );
        assert_eq!(kind(0x0102_1994), FsKind::ReadEverySweep("tmpfs"));
        assert_eq!(kind(0x6573_5546), FsKind::Untrusted("fuse"));
        assert_eq!(kind(0x6969), FsKind::Untrusted("nfs"));
        assert!(!FsKind::ReadEverySweep("tmpfs").trusts_metadata());
    }

    #[test]
    fn the_filesystem_here_is_asked_once_per_device() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let dev = std::fs::metadata(dir.path()).expect("stat").dev();
        let mut kinds = Kinds::default();
        let first = kinds.of(dev, dir.path());
        assert_eq!(first, FsKind::of(dir.path()));
        assert_eq!(
            kinds.of(dev, Path::new("/nonexistent")),
            first,
            "remembered"
        );
    }
}
