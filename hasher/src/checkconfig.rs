//! `--check-config`: whether a policy can work on this machine, each problem with its key.

use crate::policy::{self, Policy};
use crate::{storing::key, Options, EXIT_CONFIG};

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
    for dir in &policy.model_dirs {
        if !std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_dir()) {
            problems.push(format!("model_dirs: {}: not a directory", dir.display()));
        }
    }
    if let Some(manifest) = &policy.registry_manifest {
        match crate::verifying::registry::Registry::load(manifest) {
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
    let token_path = crate::storing::credentials::token_path(options.token_file.as_deref());
    match crate::storing::token::load(&token_path) {
        Err(e) => problems.push(e.to_string()),
        Ok(None) => eprintln!(
            "{}: note: no service token at {}: scan, reload and rebaseline would answer 503",
            options.policy.display(),
            token_path.display()
        ),
        Ok(Some(_)) => {}
    }
    let key_path =
        crate::storing::credentials::key_path(options.key_file.as_deref(), &policy.hmac_key_path);
    match key::load(&key_path) {
        Ok(Some(_)) => {}
        Ok(None) => problems.push(format!(
            "hmac_key_path: {}: does not exist (the service would run unsigned and a boot check would refuse it)",
            key_path.display()
        )),
        Err(e) => problems.push(format!("hmac_key_path: {e}")),
    }
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
