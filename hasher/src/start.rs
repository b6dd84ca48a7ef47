//! Start-up, in the order it must happen: the channel taken, the policy loaded, the key and
//! token read, the store opened and loaded, then the sandbox; then serving the api.
//! Each step's `Err` is the exit code to stop with, its reason already logged.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::policy::{self, Policy};
use crate::{
    live::Channel,
    reading::Lifeline,
    reading::Secrets,
    sandbox, server,
    storing::{load_key_in_use, load_token_in_use, Key, Store},
    sys, Options, EXIT_CONFIG,
};

/// Starts and serves; the exit code either way.
pub(crate) fn run(options: Options) -> Result<i32, i32> {
    let (fd, lifeline) = take_channel(&options)?;
    // Filled as the key and the token are read; then every read is handed it, read-only.
    let mut secrets = Secrets::default();
    // Read now, before the sandbox (`/proc/sys` is out of it), and before the policy: a
    // settle window shorter than it is refused.
    let kernel_window = crate::verifying::read_kernel_window();
    let policy = load_policy(&options, kernel_window)?;
    if options.check_config {
        return Ok(crate::checkconfig::check_config(&options, &policy));
    }
    let (key_path, key) = load_key(&options, &policy, &mut secrets)?;
    if let Some(anew) = options.tpm_enroll {
        return Ok(crate::enroll::run(&options, &policy, key.as_ref(), anew));
    }
    let token_path = crate::storing::token_path(options.token_file.as_deref());
    let token = load_token_in_use(&token_path, &mut secrets).map_err(|e| {
        tracing::error!(error = %e, "service token refused");
        EXIT_CONFIG
    })?;
    sys::lower_priority();
    let read_set = sandbox::read_set(&policy, &options.policy);
    let secret_paths = [key_path, token_path];
    if let Some(why) = sandbox::refusal(&read_set, &secret_paths) {
        tracing::error!("{why}");
        return Err(EXIT_CONFIG);
    }
    let tpm = open_tpm(&options, &policy, key.as_ref())?;
    let store = open_store(&options)?;
    let loaded = store.as_ref().map(|s| s.load(key.as_ref().map(Key::bytes)));
    // Read now, before the sandbox narrows what may be read.
    let boot_id = crate::verifying::boot_id();
    let vouch = crate::verifying::read_vouch(&policy.boot_verify_result);
    let clock = crate::live::ClockWatch::new()
        .map_err(
            |e| tracing::warn!(error = %e, "no timer on the wall clock: a step of it goes unseen"),
        )
        .ok();
    enter_sandbox(&options, &read_set)?;
    if !options.insecure_no_sandbox {
        secrets_walled(&secret_paths)?;
    }
    #[cfg(feature = "probe")]
    if let Some((act, arg)) = &options.probe {
        return Ok(crate::probe::run(act, arg));
    }
    let (Some(fd), Some(store), Some(loaded)) = (fd, store, loaded) else {
        return Err(1);
    };
    serve(
        fd,
        server::Parts {
            policy_path: options.policy,
            policy,
            key,
            token,
            store,
            loaded,
            read_set,
            release_override: options.release_baseline,
            boot_id,
            vouch,
            kernel_window,
            tpm,
            clock,
            reads: crate::reading::ReadContext::new(lifeline, std::sync::Arc::new(secrets)),
        },
    )
}

/// Serves the api until it goes (or the channel fails): the exit code.
fn serve(fd: OwnedFd, parts: server::Parts) -> Result<i32, i32> {
    let mut server = server::Server::new(parts);
    match server.serve(&mut Channel::new(fd)) {
        Ok(server::Ended::Closed) => {
            tracing::info!("api closed the channel; exiting");
            Ok(0)
        }
        // Exited 0 as a close between requests: the api going away is its decision, not a fault.
        Ok(server::Ended::DuringRead) => {
            tracing::warn!("the api closed the channel during a read; exiting");
            Ok(0)
        }
        Err(e) => {
            tracing::error!(error = %e, "stopping");
            Err(1)
        }
    }
}

/// The channel to the api on fd 3 and the lifeline the reads look at (none for
/// `--check-config`, `--tpm-enroll` and the probe harness).
fn take_channel(options: &Options) -> Result<(Option<OwnedFd>, Lifeline), i32> {
    if options.probe.is_some() || options.check_config || options.tpm_enroll.is_some() {
        return Ok((None, Lifeline::default()));
    }
    let fd = sys::take_channel().map_err(|e| {
        tracing::error!(error = %e, "no channel");
        EXIT_CONFIG
    })?;
    // Duplicated now: the sandbox allows no F_DUPFD later.
    let lifeline = fd.try_clone().map(Lifeline::to).unwrap_or_default();
    Ok((Some(fd), lifeline))
}

fn load_policy(options: &Options, kernel_window: std::time::Duration) -> Result<Policy, i32> {
    let loaded = Policy::load(&options.policy).and_then(|p| {
        p.check_settle_window(kernel_window)
            .map_err(|e| e.in_file(&options.policy))?;
        Ok(p)
    });
    if let Ok(p) = &loaded {
        if !options.check_config {
            refuse_untrusted_filesystems(p)?;
        }
    }
    match loaded {
        Ok(p) => Ok(p.with_release_baseline(options.release_baseline.clone())),
        Err(e) => {
            tracing::error!(error = %e, "policy refused");
            Err(EXIT_CONFIG)
        }
    }
}

/// Stops (78) when a listed file or model dir is on FUSE or a network filesystem, naming it.
fn refuse_untrusted_filesystems(policy: &Policy) -> Result<(), i32> {
    let untrusted = crate::checkconfig::untrusted_roots(policy);
    for (key, path, fs) in &untrusted {
        tracing::error!(key, path = %path.display(), filesystem = fs, "policy refused: a watched path is on a filesystem whose server decides what a read returns; move it to a local filesystem");
    }
    if untrusted.is_empty() {
        Ok(())
    } else {
        Err(EXIT_CONFIG)
    }
}

/// The HMAC key and where it came from (`credentials::key_path`), remembered in `secrets`.
fn load_key(
    options: &Options,
    policy: &Policy,
    secrets: &mut Secrets,
) -> Result<(PathBuf, Option<Key>), i32> {
    let key_path = crate::storing::key_path(options.key_file.as_deref(), &policy.hmac_key_path);
    let key = load_key_in_use(&key_path, secrets).map_err(|e| {
        tracing::error!(error = %e, "HMAC key refused");
        EXIT_CONFIG
    })?;
    if key.is_none() {
        tracing::warn!(path = %key_path.display(), "no HMAC key file: baselines and reports will be \"unsigned\"");
    }
    Ok((key_path, key))
}

/// The TPM's counter, opened now (before the sandbox) and kept at `sys::TPM_FD`. `tpm:
/// require` without one stops here (78).
fn open_tpm(
    options: &Options,
    policy: &Policy,
    key: Option<&Key>,
) -> Result<crate::storing::Tpm, i32> {
    use crate::storing::Tpm;
    use crate::tpm::{Counter, Device, DEFAULT_DEVICE, DEFAULT_INDEX};
    if policy.tpm == policy::TpmMode::Off || options.probe.is_some() {
        return Ok(Tpm::Off);
    }
    let require = policy.tpm == policy::TpmMode::Require;
    let path = options
        .tpm_device
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_DEVICE));
    let opened = match key {
        None => Err("no HMAC key: the counter's auth value is made from it".to_owned()),
        Some(k) => Device::open(&path)
            .map_err(|e| e.to_string())
            .and_then(|d| {
                let (file, path) = d.into_parts();
                let placed = sys::place_tpm(file).map_err(|e| e.to_string())?;
                let d = Device::open_placed(placed, path);
                Ok(Counter::new(d, DEFAULT_INDEX, k.bytes()))
            }),
    };
    match opened {
        Ok(c) => Ok(Tpm::At(c)),
        Err(why) if require => {
            tracing::error!(tpm = %path.display(), why, "tpm: require, but there is no usable TPM: refusing to start (tpm: auto uses one when there is one)");
            Err(EXIT_CONFIG)
        }
        Err(why) => {
            tracing::info!(tpm = %path.display(), why, "no TPM: the audit log guards against a rollback");
            Ok(Tpm::Missing(format!("{}: {why}", path.display())))
        }
    }
}

/// The baseline store (none for the probe harness).
fn open_store(options: &Options) -> Result<Option<Store>, i32> {
    if options.probe.is_some() {
        return Ok(None);
    }
    let name = options.baseline_name.as_deref().unwrap_or("baseline.json");
    Store::open_named(&options.state_dir, name)
        .map(Some)
        .map_err(|e| {
            tracing::error!(error = %e, "baseline store unusable");
            EXIT_CONFIG
        })
}

/// The walls proven at every start: once the sandbox is in, opening the key or the token must
/// fail, whatever alias of them the read set holds (Landlock's rules follow inodes).
fn secrets_walled(secrets: &[PathBuf]) -> Result<(), i32> {
    match secrets.iter().find(|s| std::fs::File::open(s).is_ok()) {
        Some(secret) => {
            tracing::error!(secret = %secret.display(), "the sandbox still lets the hasher open a secret: keep the key and token out of the read set (every watched file's directory, the model dirs, the policy's directory)");
            Err(EXIT_CONFIG)
        }
        None => Ok(()),
    }
}

fn enter_sandbox(options: &Options, read_set: &[PathBuf]) -> Result<(), i32> {
    if options.insecure_no_sandbox {
        if imsys::paths::same_file(&options.policy, Path::new(policy::DEFAULT_POLICY)) {
            tracing::error!("--insecure-no-sandbox is refused with the production policy");
            return Err(EXIT_CONFIG);
        }
        tracing::error!("SANDBOX DISABLED (--insecure-no-sandbox): no Landlock, no seccomp; never use this in production");
        return Ok(());
    }
    match sandbox::install(read_set, &options.state_dir) {
        Ok(e) => {
            tracing::info!(landlock = e.landlock, read_set = ?e.read_set, store = %options.state_dir.display(), seccomp = "hasher.json", "sandbox installed");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "sandbox could not be installed; refusing to run");
            Err(EXIT_CONFIG)
        }
    }
}
