//! `--check-config`: whether a policy can work on this machine, each problem with its key.

use crate::policy::{self, Policy};
use crate::{storing::load_key, Options, EXIT_CONFIG};

/// `--check-config`: the policy parses and validates (done by the caller), and what it names
/// can work: every listed file is a readable regular file, every model dir a directory, the
/// registry manifest valid, the key file there and not open to others, the token not open to
/// others. Each problem names the key and the path.
pub fn check_config(options: &Options, policy: &Policy) -> i32 {
    let mut problems = Vec::new();
    if options.syntax_only {
        println!(
            "{}: form OK (files not looked at)",
            options.policy.display()
        );
        return 0;
    }
    listed_problems(policy, &mut problems);
    for dir in &policy.model_dirs {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
            problems.push(format!("model_dirs: {}: not a directory", dir.display()));
        }
    }
    if let Some(manifest) = &policy.registry_manifest {
        match crate::verifying::Registry::load(manifest) {
            Err(why) => problems.push(format!(
                "registry_manifest: {why} (every scan would report it manifest_invalid)"
            )),
            Ok(r) => problems.extend(
                r.refused
                    .iter()
                    .map(|why| format!("registry_manifest: {}: {why}", manifest.display())),
            ),
        }
    }
    let token_path = crate::storing::token_path(options.token_file.as_deref());
    match crate::storing::load_token(&token_path) {
        Err(e) => problems.push(e.to_string()),
        Ok(None) => eprintln!(
            "{}: note: no service token at {}: scan, reload and rebaseline would answer 503",
            options.policy.display(),
            token_path.display()
        ),
        Ok(Some(_)) => {}
    }
    let key_path = crate::storing::key_path(options.key_file.as_deref(), &policy.hmac_key_path);
    match load_key(&key_path) {
        Ok(Some(_)) => {}
        Ok(None) => problems.push(format!(
            "hmac_key_path: {}: does not exist (the service would run unsigned and a boot check would refuse it)",
            key_path.display()
        )),
        Err(e) => problems.push(format!("hmac_key_path: {e}")),
    }
    let read_set = crate::sandbox::read_set(policy, &options.policy);
    problems.extend(crate::sandbox::refusal(&read_set, &[key_path, token_path]));
    boot_budget(options, policy);
    problems.extend(untrusted_roots(policy).into_iter().map(|(key, path, fs)| {
        format!(
            "{key}: {}: on {fs}, whose server decides what a read returns (the hasher could be given other bytes than the model loader): move it to a local filesystem",
            path.display()
        )
    }));
    read_every_sweep(options, policy);
    if problems.is_empty() {
        println!(
            "{}: OK ({} files, {} model dirs, interval {:?}, threshold {})",
            options.policy.display(),
            policy.files.len(),
            policy.model_dirs.len(),
            policy.scan_interval,
            policy.degradation_threshold
        );
        0
    } else {
        for p in &problems {
            eprintln!("{}: {p}", options.policy.display());
        }
        EXIT_CONFIG
    }
}

/// What is wrong with the listed files: each missing, a symlink, or not a regular file.
fn listed_problems(policy: &Policy, problems: &mut Vec<String>) {
    for (path, category) in &policy.files {
        let key = policy::key_of(*category);
        match std::fs::symlink_metadata(path) {
            Err(e) => problems.push(format!(
                "{key}: {}: {e} (a baseline could never be made; rebaseline answers 409)",
                path.display()
            )),
            Ok(m) if m.file_type().is_symlink() => problems.push(format!(
                "{key}: {}: is a symlink (list its target)",
                path.display()
            )),
            Ok(m) if !m.file_type().is_file() => {
                problems.push(format!("{key}: {}: not a regular file", path.display()))
            }
            Ok(_) => {}
        }
    }
}

/// Unsealed bytes the first check after a reboot can read within the appliance's boot check
/// (`POST /api/v1/scan` with `curl --max-time 30`): a full read costs the hasher 0.73 s of CPU
/// per GiB (BENCHMARKS.md, full rehash), 4.9 s per GiB under its unit's `CPUQuota=15%`, so 30 s
/// fits about 6 GiB; 5 GiB leaves room for the rest of the boot check. Sealed files cost no read.
pub const BOOT_CHECK_UNSEALED_BYTES: u64 = 5 << 30;

/// What the watched set holds: its regular files' bytes that are not sealed, and how many
/// files are sealed (a seal is measured only where the policy uses seals). Model dirs are
/// walked as a scan walks them; nothing is read.
pub fn unsealed_bytes(policy: &Policy) -> (u64, usize) {
    let (mut unsealed, mut sealed) = (0u64, 0usize);
    // The key and token are not loaded for a check: no file is one of them yet.
    let no_secrets = crate::reading::Secrets::default();
    each_watched_file(policy, |path, m| {
        if policy.fsverity.enabled() && crate::reading::look_seal(path, &no_secrets).is_some() {
            sealed += 1;
        } else {
            unsealed = unsealed.saturating_add(std::os::unix::fs::MetadataExt::size(m));
        }
    });
    (unsealed, sealed)
}

/// Calls `each` with every regular file the policy watches and its `lstat`: the listed files,
/// and the model dirs walked as a scan walks them. Nothing is read.
fn each_watched_file(policy: &Policy, mut each: impl FnMut(&std::path::Path, &std::fs::Metadata)) {
    let mut one = |path: &std::path::Path| {
        if let Ok(m) = std::fs::symlink_metadata(path) {
            if m.file_type().is_file() {
                each(path, &m);
            }
        }
    };
    for (path, _) in &policy.files {
        one(path);
    }
    for dir in &policy.model_dirs {
        for batch in crate::verifying::Walk::new(dir, 0, policy.max_watched_files) {
            for (path, what) in &batch {
                if matches!(what, crate::verifying::Found::File) {
                    one(path);
                }
            }
        }
    }
}

/// The policy's listed files and model dirs that are on FUSE or a network filesystem (see
/// `reading::fskind`), with their key and the filesystem's name: the hasher refuses to start
/// (78). A listed file not there yet is judged by its directory.
pub fn untrusted_roots(policy: &Policy) -> Vec<(&'static str, std::path::PathBuf, &'static str)> {
    use crate::reading::FsKind;
    let listed = policy
        .files
        .iter()
        .map(|(p, c)| (policy::key_of(*c), p.as_path()));
    let dirs = policy
        .model_dirs
        .iter()
        .map(|d| ("model_dirs", d.as_path()));
    listed
        .chain(dirs)
        .filter_map(|(key, path)| {
            let there = if path.exists() { path } else { path.parent()? };
            match FsKind::of(there) {
                FsKind::Untrusted(fs) => Some((key, path.to_owned(), fs)),
                _ => None,
            }
        })
        .collect()
}

/// Says what the watched files on filesystems where a write can leave the metadata as it was
/// (tmpfs, ramfs, a writable overlay…) cost: every sweep reads them in full.
fn read_every_sweep(options: &Options, policy: &Policy) {
    use crate::reading::{FsKind, Kinds};
    use std::os::unix::fs::MetadataExt;
    let mut kinds = Kinds::default();
    let (mut files, mut bytes, mut names) = (0usize, 0u64, std::collections::BTreeSet::new());
    each_watched_file(policy, |path, m| {
        if let FsKind::ReadEverySweep(fs) = kinds.of(m.dev(), path) {
            files += 1;
            bytes = bytes.saturating_add(m.size());
            names.insert(fs);
        }
    });
    if files > 0 {
        let names: Vec<&str> = names.into_iter().collect();
        eprintln!(
            "{}: note: {files} watched file(s), {bytes} bytes, are on {} where a write through a shared mapping moves no timestamp: every sweep (each scan_interval, {:?}) reads them in full. Keep models on ext4, xfs, btrfs or f2fs to have unchanged files cost one stat.",
            options.policy.display(),
            names.join(", "),
            policy.scan_interval
        );
    }
}

/// Warns when the unsealed watched bytes would not be read within the boot check's 30 s.
fn boot_budget(options: &Options, policy: &Policy) {
    let (unsealed, sealed) = unsealed_bytes(policy);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    if unsealed > BOOT_CHECK_UNSEALED_BYTES {
        eprintln!(
            "{}: warning: {:.1} GiB of watched files are not sealed ({sealed} sealed): the first check after a reboot reads them all, about 4.9 s per GiB under the hasher unit's CPUQuota=15%, and the boot check gives it 30 s (about {:.0} GiB). Seal the models (`integrity-monitor seal DIR`, on a filesystem with fs-verity) or expect the boot check to fail.",
            options.policy.display(),
            gib(unsealed),
            gib(BOOT_CHECK_UNSEALED_BYTES)
        );
    }
}
