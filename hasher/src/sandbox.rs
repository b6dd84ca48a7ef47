//! The hasher's walls: no_new_privs, no capabilities, Landlock read-only beneath the watched
//! paths, no network, scoped signals, and a seccomp allowlist kept as data in
//! `seccomp/hasher.json`. Installed before any watched file is read; any failure stops the
//! process (fail closed).

use std::path::{Path, PathBuf};

use landlock::{AccessFs, BitFlags};

use crate::policy::Policy;

/// The filter, compiled at start and embedded in the binary.
const SECCOMP_JSON: &str = include_str!("../../seccomp/hasher.json");
/// The filters installed, in order.
const FILTERS: [&str; 2] = ["hasher_enosys", "hasher"];

use imsys::walls::Landlock;
pub use imsys::walls::{drop_privileges, SandboxError};

/// What got enforced, for the log.
#[derive(Debug, Clone)]
pub struct Enforced {
    /// Landlock's verdict (fully or partly enforced).
    pub landlock: String,
    /// Directories readable beneath.
    pub read_set: Vec<PathBuf>,
}

/// The directories the hasher may read beneath: each listed file's parent (a file replaced by
/// rename is a new inode, so a rule on the file itself would go stale), each model dir, and
/// the policy's parent. Not the key's: it is read before the sandbox, and the hasher never
/// reads it again.
pub fn read_set(policy: &Policy, policy_path: &Path) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = policy
        .files
        .iter()
        .filter_map(|(p, _)| p.parent().map(Path::to_path_buf))
        .chain(policy.model_dirs.iter().cloned())
        .chain(policy_path.parent().map(Path::to_path_buf))
        .chain(
            policy
                .release_baseline
                .iter()
                .chain(&policy.registry_manifest)
                .filter_map(|p| p.parent().map(Path::to_path_buf)),
        )
        .collect();
    dirs.retain(|d| d.is_absolute());
    dirs.sort();
    dirs.dedup();
    // A directory beneath another one already in the set adds nothing.
    let all = dirs.clone();
    dirs.retain(|d| !all.iter().any(|o| o != d && d.starts_with(o)));
    dirs
}

/// True when every path the new policy needs lies beneath the running sandbox's read set.
pub fn covers(read_set: &[PathBuf], needed: &[PathBuf]) -> Option<PathBuf> {
    needed
        .iter()
        .find(|n| !read_set.iter().any(|r| n.starts_with(r)))
        .cloned()
}

/// Installs every wall. The process must be single-threaded (Landlock binds the calling
/// thread and threads created later).
pub fn install(read_set: &[PathBuf], store: &Path) -> Result<Enforced, SandboxError> {
    drop_privileges()?;
    let landlock = landlock(read_set, store)?;
    seccomp()?;
    Ok(Enforced {
        landlock,
        read_set: read_set.to_vec(),
    })
}

/// Why the read set cannot be the sandbox's: it would reach a secret (by any spelling of a
/// directory above it), or it names `/proc`.
pub fn refusal(read_set: &[PathBuf], secrets: &[PathBuf]) -> Option<String> {
    if let Some((dir, secret)) = exposes(read_set, secrets) {
        return Some(format!("the policy's watched paths would let the hasher read a secret after start: {} is {} or a directory above it (compared by device and inode: an alias such as /proc/self/root/... or a bind mount counts); keep the key and token out of every watched file's directory, the model dirs and the policy's directory", dir.display(), secret.display()));
    }
    in_proc(read_set).map(|dir| format!("the policy names {} in /proc: a read rule there would follow the kernel's aliases of any file; name the files where they are", dir.display()))
}

/// The first secret that a directory of the read set would expose, with that directory.
/// Compared by identity, not by text: a directory of the read set exposes a secret when it is
/// the secret or one of the directories above it (the same device and inode, whatever the
/// spelling: a `/proc/self/root/...` alias, a bind mount, a symlink), or when its path is a
/// prefix of the secret's path as given or as resolved (a secret not there yet).
pub fn exposes<'a>(
    read_set: &'a [PathBuf],
    secrets: &'a [PathBuf],
) -> Option<(&'a Path, &'a Path)> {
    secrets.iter().find_map(|s| {
        let s_abs = std::fs::canonicalize(s).unwrap_or_else(|_| s.clone());
        let above: Vec<(u64, u64)> = s
            .ancestors()
            .chain(s_abs.ancestors())
            .filter_map(identity)
            .collect();
        read_set
            .iter()
            .find(|d| {
                s.starts_with(d)
                    || s_abs.starts_with(d)
                    || identity(d).is_some_and(|i| above.contains(&i))
            })
            .map(|d| (d.as_path(), s.as_path()))
    })
}

/// The first directory of the read set that is in `/proc` by its name or its filesystem: a
/// Landlock rule there would follow the kernel's aliases of other processes' and its own
/// files, which no path comparison can see through.
pub fn in_proc(read_set: &[PathBuf]) -> Option<&Path> {
    read_set
        .iter()
        .find(|d| {
            d.components().nth(1) == Some(std::path::Component::Normal("proc".as_ref()))
                || nix::sys::statfs::statfs(d.as_path())
                    .is_ok_and(|f| f.filesystem_type() == nix::sys::statfs::PROC_SUPER_MAGIC)
        })
        .map(PathBuf::as_path)
}

/// A path's device and inode, symlinks followed as Landlock's rules follow them.
fn identity(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

fn landlock(read_set: &[PathBuf], store: &Path) -> Result<String, SandboxError> {
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let mut walls = Landlock::new()?;
    for dir in read_set {
        let access = if dir.is_dir() {
            read
        } else {
            BitFlags::from(AccessFs::ReadFile)
        };
        match walls.allow_beneath(dir, access) {
            // A parent that does not exist yet holds nothing to read; scans report the files.
            Err(SandboxError::LandlockPath { source, .. }) => {
                tracing::warn!(path = %dir.display(), error = %source, "not in the sandbox read set: does not exist")
            }
            other => other?,
        }
    }
    // The store: the one place the hasher writes (its baseline and generation record, each
    // a temp file renamed over the old one).
    let store_access = AccessFs::ReadFile
        | AccessFs::ReadDir
        | AccessFs::WriteFile
        | AccessFs::MakeReg
        | AccessFs::RemoveFile;
    match walls.allow_beneath(store, store_access) {
        Err(SandboxError::LandlockPath { source, .. }) => {
            tracing::warn!(path = %store.display(), error = %source, "no baseline store in the sandbox")
        }
        other => other?,
    }
    walls.enforce()
}

fn seccomp() -> Result<(), SandboxError> {
    // The errno filter goes first; the kernel applies the strictest verdict of all filters.
    imsys::seccomp::install(SECCOMP_JSON, &FILTERS, |_| false).map_err(SandboxError::Seccomp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_set_is_parents_and_model_dirs_without_nesting() {
        let p = Policy::parse(
            "service_binaries: [/usr/libexec/sa/registry, /usr/libexec/sa/fw]\nmodel_dirs: [/var/lib/sa/registry]\n\
             trust_material: [/etc/sa/cosign.pub]\npolicy_files: [/etc/sa/policy/a.yaml]\nhmac_key_path: /run/sa/key\n",
        )
        .expect("policy");
        let set = read_set(&p, Path::new("/etc/sa/policy/im.yaml"));
        let expected: Vec<PathBuf> = ["/etc/sa", "/usr/libexec/sa", "/var/lib/sa/registry"]
            .iter()
            .map(PathBuf::from)
            .collect();
        assert_eq!(set, expected);
        assert_eq!(covers(&set, &[PathBuf::from("/etc/sa/x/y")]), None);
        assert_eq!(
            covers(&set, &[PathBuf::from("/opt/new")]),
            Some(PathBuf::from("/opt/new"))
        );
    }

    #[test]
    fn a_secret_is_exposed_under_any_spelling_of_a_directory_above_it() {
        let d = tempfile::tempdir().expect("tempdir");
        let creds = d.path().join("creds");
        std::fs::create_dir(&creds).expect("mkdir");
        let key = creds.join("key");
        std::fs::write(&key, "k").expect("write");
        std::os::unix::fs::symlink(&creds, d.path().join("link")).expect("symlink");
        let proc_alias = Path::new("/proc/self/root").join(creds.strip_prefix("/").expect("abs"));
        let secrets = [key.clone()];
        for dir in [
            creds.clone(),
            d.path().to_path_buf(),
            d.path().join("link"),
            proc_alias.clone(),
            PathBuf::from("/proc/self/root"),
        ] {
            let set = [dir.clone()];
            assert_eq!(
                exposes(&set, &secrets).map(|(d, s)| (d.to_owned(), s.to_owned())),
                Some((dir.clone(), key.clone())),
                "{}",
                dir.display()
            );
        }
        std::fs::create_dir(d.path().join("models")).expect("mkdir");
        assert_eq!(exposes(&[d.path().join("models")], &secrets), None);
        assert_eq!(
            in_proc(std::slice::from_ref(&proc_alias)),
            Some(proc_alias.as_path())
        );
        assert_eq!(in_proc(&[d.path().join("models")]), None);
    }

    #[test]
    fn embedded_filter_compiles() {
        for arch in imsys::seccomp::ARCHES {
            let filters = imsys::seccomp::compile(SECCOMP_JSON, arch).expect("compiles");
            assert!(FILTERS.iter().all(|f| filters.contains_key(*f)), "{arch:?}");
        }
    }
}
