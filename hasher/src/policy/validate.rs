//! From the policy as written to the policy in force: each key checked, with its line, in
//! the order the keys are documented.

use super::*;

/// An integer setting: `default` when absent; otherwise it must fit `T` and pass `accept`,
/// else the error names the key, the line and `expected`.
pub(super) fn integer<T: TryFrom<i64>>(
    key: &'static str,
    value: &Option<Spanned<i64>>,
    default: T,
    accept: impl Fn(&T) -> bool,
    expected: &str,
) -> Result<T, PolicyError> {
    let Some(v) = value else {
        return Ok(default);
    };
    T::try_from(v.value).ok().filter(accept).ok_or_else(|| {
        invalid(
            key,
            v.referenced.line(),
            format!("{} is not {expected}", v.value),
        )
    })
}

pub(super) fn invalid(key: &'static str, line: u64, why: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        path: None,
        key,
        line,
        why: why.into(),
    }
}

pub(super) fn checked_path(
    key: &'static str,
    value: &Spanned<String>,
) -> Result<PathBuf, PolicyError> {
    let line = value.referenced.line();
    let text = value.value.as_str();
    if !text.starts_with('/') {
        return Err(invalid(
            key,
            line,
            format!("{text:?} is not an absolute path"),
        ));
    }
    if text.contains('\0') || text.split('/').any(|c| c == ".." || c == ".") {
        return Err(invalid(
            key,
            line,
            format!("{text:?} has a `.` or `..` component or a NUL"),
        ));
    }
    if text.len() > protocol::report::MAX_PATH_LEN {
        return Err(invalid(key, line, "path is longer than 4096 bytes"));
    }
    let trimmed = if text.len() > 1 {
        text.trim_end_matches('/')
    } else {
        text
    };
    Ok(PathBuf::from(trimmed))
}

impl RawPolicy {
    pub(super) fn validate(self) -> Result<Policy, PolicyError> {
        // Settings first, then paths: an operator sees errors in the order the keys are documented.
        self.check_version()?;
        let scan_interval = self.scan_interval()?;
        let full_rehash_interval = self.full_rehash_interval()?;
        let hash_rate_limit = self.hash_rate_limit()?;
        let max_file_size = self.max_file_size()?;
        let hash_threads = integer(
            "hash_threads",
            &self.hash_threads,
            1,
            |v: &usize| (1..=MAX_HASH_THREADS).contains(v),
            &format!("an integer from 1 to {MAX_HASH_THREADS}"),
        )?;
        let max_watched_files = integer(
            "max_watched_files",
            &self.max_watched_files,
            DEFAULT_MAX_WATCHED,
            |v: &usize| (1..=MAX_ENTRIES).contains(v),
            &format!("an integer from 1 to {MAX_ENTRIES}"),
        )?;
        let sweep_files_per_second = integer(
            "sweep_files_per_second",
            &self.sweep_files_per_second,
            DEFAULT_SWEEP_RATE,
            |v: &usize| (1..=10_000_000).contains(v),
            "an integer from 1 to 10000000",
        )?;
        let degradation_threshold = integer(
            "degradation_threshold",
            &self.degradation_threshold,
            3,
            |v: &u32| *v >= 1,
            "an integer >= 1",
        )?;
        let hmac_key_path = match &self.hmac_key_path {
            None => PathBuf::from(DEFAULT_KEY),
            Some(p) => checked_path("hmac_key_path", p)?,
        };
        let (files, model_dirs) = self.watched()?;
        let registry_manifest = self.registry_manifest(&model_dirs)?;
        let release_baseline = self
            .release_baseline
            .as_ref()
            .map(|p| checked_path("release_baseline", p))
            .transpose()?;
        Ok(Policy {
            scan_interval,
            files,
            model_dirs,
            hmac_key_path,
            degradation_threshold,
            require_token_for_reads: self.require_token_for_reads.unwrap_or(false),
            full_rehash_interval,
            hash_rate_limit,
            max_file_size,
            hash_threads,
            max_watched_files,
            sweep_files_per_second,
            release_baseline,
            boot_verify_result: match &self.boot_verify_result {
                None => PathBuf::from(DEFAULT_BOOT_VERIFY),
                Some(p) => checked_path("boot_verify_result", p)?,
            },
            registry_manifest,
            rebaseline_auth: self.rebaseline_auth.unwrap_or_default(),
            settle_window: self.settle_window()?,
            settle_window_line: self
                .settle_window
                .as_ref()
                .map_or(0, |s| s.referenced.line()),
            fsverity: self.fsverity.unwrap_or_default(),
            tpm: self.tpm.unwrap_or_default(),
        })
    }

    fn check_version(&self) -> Result<(), PolicyError> {
        match &self.version {
            Some(v) if v.value != 1 => Err(invalid(
                "version",
                v.referenced.line(),
                format!("{} is not a known policy version (only 1 is)", v.value),
            )),
            _ => Ok(()),
        }
    }

    fn scan_interval(&self) -> Result<Duration, PolicyError> {
        let Some(s) = &self.scan_interval else {
            return Ok(Duration::from_secs(30));
        };
        let line = s.referenced.line();
        let d = humantime::parse_duration(s.value.trim()).map_err(|e| {
            invalid(
                "scan_interval",
                line,
                format!("{:?} is not a duration like \"30s\": {e}", s.value),
            )
        })?;
        if d.is_zero() {
            return Err(invalid("scan_interval", line, "must be greater than zero"));
        }
        if d > Duration::from_secs(24 * 3600) {
            return Err(invalid("scan_interval", line, "must be at most 24h"));
        }
        Ok(d)
    }

    fn settle_window(&self) -> Result<Option<Duration>, PolicyError> {
        let Some(s) = &self.settle_window else {
            return Ok(None);
        };
        if ["auto", "off"].contains(&s.value.trim()) {
            return Ok(None);
        }
        humantime::parse_duration(s.value.trim())
            .ok()
            .filter(|d| *d <= Duration::from_secs(3600))
            .map(|d| Some(d).filter(|d| !d.is_zero()))
            .ok_or_else(|| {
                invalid(
                    "settle_window",
                    s.referenced.line(),
                    format!(
                        "{:?} is neither \"auto\", \"off\" nor a duration up to 1h",
                        s.value
                    ),
                )
            })
    }

    fn full_rehash_interval(&self) -> Result<Duration, PolicyError> {
        let Some(s) = &self.full_rehash_interval else {
            return Ok(Duration::from_secs(24 * 3600));
        };
        humantime::parse_duration(s.value.trim())
            .ok()
            .filter(|d| *d >= Duration::from_secs(1) && *d <= MAX_REHASH_INTERVAL)
            .ok_or_else(|| {
                invalid(
                    "full_rehash_interval",
                    s.referenced.line(),
                    format!("{:?} is not a duration from 1s to 366d", s.value),
                )
            })
    }

    fn hash_rate_limit(&self) -> Result<Option<u64>, PolicyError> {
        match &self.hash_rate_limit {
            None => Ok(None),
            Some(r) if r.value >= 1024 * 1024 => Ok(Some(r.value)),
            Some(r) => Err(invalid(
                "hash_rate_limit",
                r.referenced.line(),
                "must be at least 1048576 bytes/s",
            )),
        }
    }

    fn max_file_size(&self) -> Result<u64, PolicyError> {
        match &self.max_file_size {
            None => Ok(DEFAULT_MAX_FILE_SIZE),
            Some(v) if v.value >= 1 => Ok(v.value),
            Some(v) => Err(invalid(
                "max_file_size",
                v.referenced.line(),
                "must be at least 1 byte",
            )),
        }
    }

    /// The listed files (sorted, each once) and the model dirs (none overlapping another
    /// watched path).
    #[allow(clippy::type_complexity)]
    fn watched(&self) -> Result<(Vec<(PathBuf, Category)>, Vec<PathBuf>), PolicyError> {
        let files = self.listed_files()?;
        let mut model_dirs: Vec<PathBuf> = Vec::new();
        for value in &self.model_dirs {
            let dir = checked_path("model_dirs", value)?;
            let overlaps = model_dirs
                .iter()
                .any(|d| d.starts_with(&dir) || dir.starts_with(d));
            if overlaps || files.iter().any(|(p, _)| p.starts_with(&dir)) {
                return Err(invalid(
                    "model_dirs",
                    value.referenced.line(),
                    format!("{} overlaps another watched path", dir.display()),
                ));
            }
            model_dirs.push(dir);
        }
        if files.len() + model_dirs.len() > MAX_LISTED {
            return Err(invalid(
                "service_binaries",
                1,
                format!("more than {MAX_LISTED} paths listed"),
            ));
        }
        if files.is_empty() && model_dirs.is_empty() {
            return Err(invalid(
                "service_binaries",
                1,
                "the policy watches nothing: list at least one file or model dir",
            ));
        }
        Ok((files, model_dirs))
    }

    /// Every file the four lists name, sorted; a file listed twice (in any lists) is an error.
    fn listed_files(&self) -> Result<Vec<(PathBuf, Category)>, PolicyError> {
        let lists: [(&'static str, &Vec<Spanned<String>>, Category); 4] = [
            (
                "service_binaries",
                &self.service_binaries,
                Category::ServiceBinary,
            ),
            ("policy_files", &self.policy_files, Category::PolicyFile),
            ("systemd_units", &self.systemd_units, Category::SystemdUnit),
            (
                "trust_material",
                &self.trust_material,
                Category::TrustMaterial,
            ),
        ];
        let mut seen = std::collections::HashSet::new();
        let mut files = Vec::new();
        for (key, list, category) in lists {
            for value in list {
                let path = checked_path(key, value)?;
                if !seen.insert(path.clone()) {
                    return Err(invalid(
                        key,
                        value.referenced.line(),
                        format!("{} is listed twice", path.display()),
                    ));
                }
                files.push((path, category));
            }
        }
        files.sort();
        Ok(files)
    }

    /// The registry manifest: anywhere (the appliance keeps it beside the vault, in
    /// `/var/lib/secure-ai/registry/`), or directly in a model dir; never deeper inside one,
    /// where it would sit in an artifact.
    fn registry_manifest(&self, model_dirs: &[PathBuf]) -> Result<Option<PathBuf>, PolicyError> {
        let Some(m) = &self.registry_manifest else {
            return Ok(None);
        };
        let path = checked_path("registry_manifest", m)?;
        let inside = model_dirs
            .iter()
            .find(|d| path.starts_with(d) && path.parent() != Some(d.as_path()));
        if let Some(dir) = inside {
            return Err(invalid(
                "registry_manifest",
                m.referenced.line(),
                format!(
                    "{} lies inside an artifact of the model dir {} (keep it outside the model dirs, or directly in one)",
                    path.display(),
                    dir.display()
                ),
            ));
        }
        Ok(Some(path))
    }
}
