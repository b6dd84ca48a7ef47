//! Path checks both processes make on what they are told to trust.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Whether `a` names the file `b` names: the same inode when both exist (so `..`, a symlink
/// or a bind mount cannot dodge a check), else the same absolute path once `.` and `..` are
/// taken out.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => lexical(a) == lexical(b),
    }
}

/// `p` made absolute with `.` and `..` taken out by their words.
fn lexical(p: &Path) -> PathBuf {
    use std::path::Component;
    let abs = std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

/// The first directory above `file` that anyone may write to without the sticky bit: there,
/// anyone could swap `file` (or a directory on its way) by rename. As sshd's StrictModes, the
/// caller refuses such a file; a sticky world-writable directory (`/tmp`) lets only an
/// entry's owner rename it, so it passes.
pub fn world_writable_parent(file: &Path) -> Option<PathBuf> {
    let file = std::path::absolute(file).ok()?;
    file.ancestors().skip(1).find_map(|dir| {
        let m = std::fs::metadata(dir).ok()?;
        let mode = m.mode();
        (mode & 0o002 != 0 && mode & 0o1000 == 0).then(|| dir.to_owned())
    })
}

/// A file root made (firstboot runs `--initialize-baseline` as root) in a directory that
/// belongs to the service's user goes to that user, or the service could never open it.
pub fn give_to_dir_owner(file: &std::fs::File, path: &Path) -> std::io::Result<()> {
    let ours = file.metadata()?;
    let Some(dir) = path.parent() else {
        return Ok(());
    };
    let dir = std::fs::metadata(dir)?;
    if ours.uid() == 0 && dir.uid() != 0 {
        std::os::unix::fs::fchown(file, Some(dir.uid()), Some(dir.gid()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn same_file_sees_through_dot_dot_and_symlinks() {
        let d = tempfile::tempdir().expect("tempdir");
        let f = d.path().join("p.yaml");
        std::fs::write(&f, "x").expect("write");
        std::fs::create_dir(d.path().join("sub")).expect("mkdir");
        std::os::unix::fs::symlink(&f, d.path().join("link")).expect("symlink");
        assert!(same_file(&d.path().join("sub/../p.yaml"), &f));
        assert!(same_file(&d.path().join("link"), &f));
        assert!(!same_file(&d.path().join("sub"), &f));
        assert!(same_file(
            Path::new("/nonexistent/x"),
            Path::new("/nonexistent/x")
        ));
        assert!(same_file(
            Path::new("/nonexistent/a/../x"),
            Path::new("/nonexistent/./x")
        ));
    }

    #[test]
    fn a_world_writable_directory_above_is_found_unless_sticky() {
        let d = tempfile::tempdir().expect("tempdir");
        let open = d.path().join("open");
        std::fs::create_dir(&open).expect("mkdir");
        std::fs::write(open.join("key"), "k").expect("write");
        assert_eq!(world_writable_parent(&open.join("key")), None);
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
        assert_eq!(world_writable_parent(&open.join("key")), Some(open.clone()));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o1777)).expect("chmod");
        assert_eq!(world_writable_parent(&open.join("key")), None);
    }
}
