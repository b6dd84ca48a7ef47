//! `integrity-monitor seal PATH…`: enables fs-verity on model files (a directory: every
//! regular file beneath it), so the hasher proves them by their seal after every reboot
//! instead of reading them. Run by root, or by the registry at promotion: never by the
//! read-only hasher. Prints each file's digest as `fsverity measure` does.

use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Seals every file `paths` name; prints `sha256:<digest> PATH` for each sealed file and, on
/// stderr, why any could not be. Exit 0 when every file is sealed, 1 otherwise.
pub fn seal(paths: &[PathBuf]) -> i32 {
    let mut failed = 0usize;
    let mut sealed = 0usize;
    for path in paths {
        let mut files = Vec::new();
        if let Err(why) = collect(path, &mut files) {
            eprintln!("integrity-monitor seal: {}: {why}", path.display());
            failed += 1;
            continue;
        }
        for file in files {
            match seal_one(&file) {
                Ok((seal, fresh)) => {
                    sealed += 1;
                    let note = if fresh { "" } else { " (already sealed)" };
                    println!("{seal} {}{note}", file.display());
                }
                Err(why) => {
                    eprintln!("integrity-monitor seal: {}: {why}", file.display());
                    failed += 1;
                }
            }
        }
    }
    eprintln!("integrity-monitor seal: {sealed} sealed, {failed} not");
    i32::from(failed > 0)
}

/// The regular files `path` names: itself, or every one beneath it (a symlink anywhere is
/// refused, never followed).
fn collect(path: &Path, out: &mut Vec<PathBuf>) -> Result<(), String> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    let kind = meta.file_type();
    if kind.is_file() {
        out.push(path.to_owned());
        return Ok(());
    }
    if kind.is_symlink() {
        return Err("a symlink (seal its target instead)".into());
    }
    if !kind.is_dir() {
        return Err("not a regular file or a directory".into());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(|e| e.to_string())?
        .map(|e| e.map(|e| e.path()).map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    for entry in entries {
        collect(&entry, out)?;
    }
    Ok(())
}

/// Seals `path` (read-only open, no symlink followed); its seal and whether this call made it.
fn seal_one(path: &Path) -> Result<(imsys::verity::Seal, bool), String> {
    let file = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| e.to_string())?;
    if let Ok(seal) = imsys::sys::measure_verity(&file) {
        return Ok((seal, false));
    }
    match imsys::sys::enable_verity(&file) {
        Ok(()) => {}
        // Sealed meanwhile by someone else: as good.
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
        Err(e) => return Err(explain(&e)),
    }
    let seal = imsys::sys::measure_verity(&file).map_err(|e| explain(&e))?;
    Ok((seal, true))
}

/// What an operator does about a failed `FS_IOC_ENABLE_VERITY`.
fn explain(e: &std::io::Error) -> String {
    let why = match e.raw_os_error() {
        Some(libc::EOPNOTSUPP) => "this filesystem has fs-verity off: ext4 needs its verity feature (`tune2fs -O verity DEVICE`, kernel 5.4+ with CONFIG_FS_VERITY)",
        Some(libc::ENOTTY) => "this filesystem or kernel has no fs-verity (ext4, f2fs and btrfs have it; the kernel needs CONFIG_FS_VERITY)",
        Some(libc::ETXTBSY) => "the file is open for writing elsewhere: close the writer, then seal it",
        Some(libc::EACCES) | Some(libc::EPERM) => "sealing needs write permission on the file: run as root or its owner",
        Some(libc::EROFS) => "the filesystem is mounted read-only",
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => "no room for the file's Merkle tree",
        Some(libc::EFBIG) => "the file is too large for its filesystem's Merkle tree",
        Some(libc::EINVAL) => "the filesystem refuses SHA-256 over 4 KiB blocks (its block or page size differs)",
        _ if e.kind() == ErrorKind::NotFound => "no such file",
        _ => "",
    };
    if why.is_empty() {
        e.to_string()
    } else {
        format!("{why} ({e})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a filesystem without fs-verity (tmpfs never has it) the refusal says what to fix,
    /// and nothing is reported sealed. Sealing itself is proven under a verity kernel
    /// (tests/verity).
    #[test]
    fn a_filesystem_without_verity_is_named_and_exits_1() {
        let dir = tempfile::tempdir_in("/dev/shm").expect("a temp dir on tmpfs");
        let model = dir.path().join("m.gguf");
        std::fs::write(&model, b"weights").expect("write");
        let why = seal_one(&model).expect_err("tmpfs has no fs-verity");
        assert!(why.contains("no fs-verity"), "{why}");
        assert_eq!(seal(&[model, dir.path().join("absent")]), 1);
        let link = dir.path().join("link");
        std::os::unix::fs::symlink("m.gguf", &link).expect("symlink");
        let mut out = Vec::new();
        assert!(collect(&link, &mut out)
            .expect_err("a symlink")
            .contains("symlink"));
    }
}
