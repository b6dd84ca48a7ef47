//! The monitor policy: YAML parsed into typed structs, then validated into a checked [`Policy`].

mod validate;

use std::path::{Path, PathBuf};
use std::time::Duration;

use protocol::message::PolicySummary;
use protocol::Category;
use serde::Deserialize;
use serde_saphyr::Spanned;

use crate::error::PolicyError;
use protocol::baseline::MAX_ENTRIES;

/// Default place of the policy file.
pub const DEFAULT_POLICY: &str = "/etc/secure-ai/policy/integrity-monitor.yaml";
/// Default `max_file_size`: 256 GiB.
pub(crate) const DEFAULT_MAX_FILE_SIZE: u64 = 256 << 30;
/// Default HMAC key file.
const DEFAULT_KEY: &str = "/run/secure-ai/integrity-hmac-key";
/// Where the appliance's boot-chain verification writes its result (secure-ai-boot-verify).
const DEFAULT_BOOT_VERIFY: &str = "/var/lib/secure-ai/logs/boot-verify-last.json";
/// Largest policy file read (100,000 listed paths of ~100 bytes fit).
const MAX_POLICY_BYTES: u64 = 16 * 1024 * 1024;
/// Most paths a policy may list, over all categories: far more than the Go service's 10,000,
/// and few enough that the policy itself (held as paths, about 100 bytes each) stays small
/// beside the baseline the hasher holds.
const MAX_LISTED: usize = 100_000;
/// Default `sweep_files_per_second`: at a million files, about 0.2% of a core idle (1,000 a
/// second measured 0.67%: BENCHMARKS.md).
const DEFAULT_SWEEP_RATE: usize = 500;
/// Default `max_watched_files`: a million and a half files fit the hasher's unit
/// (MemoryMax=256M) at about 110 bytes each, with room to spare.
const DEFAULT_MAX_WATCHED: usize = 1_500_000;
/// Longest full re-verification interval: beyond it, time arithmetic is not worth the risk.
const MAX_REHASH_INTERVAL: Duration = Duration::from_secs(366 * 24 * 3600);
/// Most hashing threads a policy may ask for.
const MAX_HASH_THREADS: usize = 16;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    /// The appliance's policy files start with `version: 1`; no other version is known.
    version: Option<Spanned<i64>>,
    scan_interval: Option<Spanned<String>>,
    #[serde(default)]
    service_binaries: Vec<Spanned<String>>,
    #[serde(default)]
    policy_files: Vec<Spanned<String>>,
    #[serde(default)]
    model_dirs: Vec<Spanned<String>>,
    #[serde(default)]
    systemd_units: Vec<Spanned<String>>,
    #[serde(default)]
    trust_material: Vec<Spanned<String>>,
    hmac_key_path: Option<Spanned<String>>,
    degradation_threshold: Option<Spanned<i64>>,
    require_token_for_reads: Option<bool>,
    full_rehash_interval: Option<Spanned<String>>,
    hash_rate_limit: Option<Spanned<u64>>,
    max_file_size: Option<Spanned<u64>>,
    hash_threads: Option<Spanned<i64>>,
    max_watched_files: Option<Spanned<i64>>,
    sweep_files_per_second: Option<Spanned<i64>>,
    release_baseline: Option<Spanned<String>>,
    boot_verify_result: Option<Spanned<String>>,
    registry_manifest: Option<Spanned<String>>,
    rebaseline_auth: Option<RebaselineAuth>,
    settle_window: Option<Spanned<String>>,
    fsverity: Option<FsVerity>,
    tpm: Option<TpmMode>,
}

/// Whether watched files sealed with fs-verity are proven by their seal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsVerity {
    /// A file with fs-verity is read once through it, its digest bound to its seal; later
    /// checks (after a reboot too) measure the seal, in O(1), and read nothing.
    #[default]
    Auto,
    /// Seals are neither measured nor used: every check reads as if none existed.
    Off,
    /// As `auto`, and a model file without fs-verity is a `not_sealed` finding.
    Require,
}

impl FsVerity {
    /// Whether seals are measured and used.
    pub(crate) fn enabled(self) -> bool {
        self != FsVerity::Off
    }
}

/// Whether the baseline's generation is anchored in the TPM's NV counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TpmMode {
    /// Used when there is a TPM (`/dev/tpmrm0`); once the store is enrolled, a missing TPM or
    /// counter rejects the store all the same (hiding the device switches nothing off).
    #[default]
    Auto,
    /// No TPM: refuse to start (exit 78).
    Require,
    /// Never opened. A store enrolled with the counter is then rejected until an authorised
    /// rebaseline commits an unpinned generation.
    Off,
}

/// What authorises a new baseline once one exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RebaselineAuth {
    /// Only a proof made with the key derived from the HMAC key over a one-time challenge
    /// (`integrity-monitor rebaseline --key FILE`): the api, which sees every bearer token,
    /// can never make one.
    #[default]
    Proof,
    /// Also the service token, as the Go service took it. The token crosses the api with
    /// every scan, so a compromised api can then bless tampering: drop-in compatibility only.
    Bearer,
}

/// A validated policy: every path absolute and normal, every setting in range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Time between scheduled scans.
    pub(crate) scan_interval: Duration,
    /// Explicitly listed files with their categories, sorted by path.
    pub(crate) files: Vec<(PathBuf, Category)>,
    /// Directories whose every regular file is a model file.
    pub(crate) model_dirs: Vec<PathBuf>,
    /// The HMAC key file.
    pub(crate) hmac_key_path: PathBuf,
    /// Violations at which the state becomes `recovery_required`.
    pub(crate) degradation_threshold: u32,
    /// Whether GET endpoints need the token too.
    pub(crate) require_token_for_reads: bool,
    /// Every file is read in full at least this often, whatever its metadata says.
    pub(crate) full_rehash_interval: Duration,
    /// Read budget for hashing, bytes per second (`None`: unlimited).
    pub(crate) hash_rate_limit: Option<u64>,
    /// Larger files are a `too_large` finding and are never read.
    pub(crate) max_file_size: u64,
    /// Files read in parallel when many need a full read (1: one at a time).
    pub(crate) hash_threads: usize,
    /// Most entries a walk of one model dir takes in: past it the dir is a `limit_exceeded`
    /// finding (never trusted), so memory stays bounded whatever is put there.
    pub(crate) max_watched_files: usize,
    /// The spread sweep checks at most this many files a second on average: a cycle over a
    /// tree takes the scan interval or, for a larger tree, its size over this rate.
    pub(crate) sweep_files_per_second: usize,
    /// The OS image's release baseline; a new baseline must agree with it, and another
    /// release than the one in force drives a release transition at start.
    pub(crate) release_baseline: Option<PathBuf>,
    /// The appliance's boot-chain verification result (secure-ai-boot-verify), read at
    /// start: a release transition needs it to vouch for the booted image in this boot.
    pub(crate) boot_verify_result: PathBuf,
    /// The model registry's manifest of promoted models: when set, every model dir follows it.
    pub(crate) registry_manifest: Option<PathBuf>,
    /// What authorises a new baseline once one exists.
    pub(crate) rebaseline_auth: RebaselineAuth,
    /// How long after its proving read a changed file is read once more (`None`: never, the
    /// default: the proving read suffices; see `reading::proof`).
    pub(crate) settle_window: Option<Duration>,
    /// The line that sets `settle_window`, for [`Policy::check_settle_window`].
    pub(crate) settle_window_line: u64,
    /// Whether files sealed with fs-verity are proven by their seal (`auto`, `off`, `require`).
    pub(crate) fsverity: FsVerity,
    /// Whether the baseline's generation is anchored in the TPM (`auto`, `require`, `off`).
    pub(crate) tpm: TpmMode,
}

impl Policy {
    /// Refuses a settle window shorter than the kernel's writeback window `kernel`: a read
    /// that early may find the change's pages still dirty, and its assurance would be false.
    pub(crate) fn check_settle_window(&self, kernel: Duration) -> Result<(), PolicyError> {
        match self.settle_window {
            Some(w) if w < kernel => Err(validate::invalid(
                "settle_window",
                self.settle_window_line,
                format!(
                    "{} is shorter than this kernel's writeback window, {} (vm.dirty_expire_centisecs + vm.dirty_writeback_centisecs, + 2s): pages a change dirtied may still be unwritten when it is read; leave it out (each change is proven by one read after writeback) or set at least {}",
                    humantime::format_duration(w),
                    humantime::format_duration(kernel),
                    humantime::format_duration(Duration::from_secs(
                        kernel.as_secs() + u64::from(kernel.subsec_nanos() > 0)
                    )),
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Reads and validates the policy at `path`; a missing file is an error.
    pub(crate) fn load(path: &Path) -> Result<Policy, PolicyError> {
        use std::os::unix::fs::PermissionsExt;
        // Whoever may write the policy decides what is watched: its owner alone.
        if let Ok(m) = std::fs::metadata(path) {
            let mode = m.permissions().mode() & 0o7777;
            if mode & 0o022 != 0 {
                return Err(PolicyError::Read {
                    path: path.to_owned(),
                    why: format!(
                        "mode {mode:04o} lets others than its owner write it; `chmod go-w {}`",
                        path.display()
                    ),
                });
            }
        }
        if let Some(dir) = imsys::paths::world_writable_parent(path) {
            return Err(PolicyError::Read {
                path: path.to_owned(),
                why: format!(
                    "{} above it is world-writable: anyone could replace the policy by rename; `chmod o-w {}`",
                    dir.display(),
                    dir.display()
                ),
            });
        }
        let text = crate::reading::read_bounded_text(path, MAX_POLICY_BYTES).map_err(|e| {
            PolicyError::Read {
                path: path.to_owned(),
                why: e.to_string(),
            }
        })?;
        Policy::parse(&text).map_err(|e| e.in_file(path))
    }

    /// Parses and validates policy YAML.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let raw: RawPolicy = serde_saphyr::from_str(text).map_err(|e| PolicyError::Syntax {
            path: None,
            why: e.to_string(),
        })?;
        raw.validate()
    }

    /// The policy with the release baseline given outside it (flag or EXPECTED_BASELINE_PATH),
    /// which wins over the file's.
    pub(crate) fn with_release_baseline(mut self, path: Option<PathBuf>) -> Policy {
        if path.is_some() {
            self.release_baseline = path;
        }
        self
    }

    /// What the api needs to know of this policy.
    pub(crate) fn summary(&self) -> PolicySummary {
        PolicySummary {
            scan_interval_ms: u64::try_from(self.scan_interval.as_millis()).unwrap_or(u64::MAX),
            degradation_threshold: self.degradation_threshold,
            require_token_for_reads: self.require_token_for_reads,
            watched_paths: u32::try_from(self.files.len() + self.model_dirs.len())
                .unwrap_or(u32::MAX),
        }
    }
}

/// The policy key that lists files of `category`.
pub(crate) fn key_of(category: Category) -> &'static str {
    match category {
        Category::ServiceBinary => "service_binaries",
        Category::PolicyFile => "policy_files",
        Category::ModelFile => "model_dirs",
        Category::SystemdUnit => "systemd_units",
        Category::TrustMaterial => "trust_material",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_appliance_policy_shape_is_accepted() {
        let p = Policy::parse(
            "version: 1\nscan_interval: \"30s\"\nfull_rehash_interval: \"24h\"\nservice_binaries: [\"/usr/libexec/secure-ai/registry\"]\n",
        )
        .expect("the appliance's own shape");
        assert_eq!(p.scan_interval, Duration::from_secs(30));
        let e = Policy::parse("version: 2\n").expect_err("unknown version");
        assert!(e.to_string().contains("key `version` (line 1)"), "{e}");
        let e = Policy::parse("full_rehash_interval: 100000000000years\n").expect_err("bounded");
        assert!(e.to_string().contains("full_rehash_interval"), "{e}");
    }

    #[test]
    fn a_settle_window_shorter_than_the_kernels_writeback_window_is_refused() {
        let kernel = Duration::from_millis(37_000);
        let with = |w: &str| Policy::parse(&format!("model_dirs: [/m]\nsettle_window: {w}\n"));
        let e = with("3s")
            .expect("parses")
            .check_settle_window(kernel)
            .expect_err("shorter than the kernel's window");
        let e = e.to_string();
        assert!(e.contains("key `settle_window` (line 2)"), "{e}");
        assert!(
            e.contains("3s is shorter than this kernel's writeback window, 37s"),
            "{e}"
        );
        assert!(e.contains("at least 37s"), "{e}");
        let longer = with("40s").expect("parses");
        assert_eq!(longer.settle_window, Some(Duration::from_secs(40)));
        assert!(longer.check_settle_window(kernel).is_ok());
        for none in ["auto", "off", "0s"] {
            let p = with(none).expect("parses");
            assert_eq!(p.settle_window, None, "{none}: proving reads alone");
            assert!(p.check_settle_window(kernel).is_ok());
        }
        let p = Policy::parse("model_dirs: [/m]\n").expect("parses");
        assert!(p.check_settle_window(kernel).is_ok(), "absent");
    }

    const GOOD: &str = "scan_interval: 10s\nservice_binaries:\n  - /usr/bin/a\npolicy_files: [/etc/p.yaml]\nmodel_dirs:\n  - /var/lib/models/\nhmac_key_path: /run/k\ndegradation_threshold: 2\n";

    fn err(text: &str) -> String {
        match Policy::parse(text) {
            Ok(p) => panic!("accepted: {p:?}"),
            Err(e) => e.to_string(),
        }
    }

    /// As many listed files as the memory budget holds are accepted; one more is refused
    /// with the key named.
    #[test]
    fn lists_up_to_the_budget_not_the_go_cap() {
        let list = |n: usize| {
            let mut y = String::from("service_binaries:\n");
            for i in 0..n {
                y.push_str(&format!("  - /usr/libexec/secure-ai/d{}/bin{i}\n", i % 997));
            }
            y
        };
        let p = Policy::parse(&list(MAX_LISTED)).expect("the budget's worth");
        assert_eq!(p.files.len(), MAX_LISTED);
        assert!(p.files.windows(2).all(|w| w[0].0 < w[1].0), "kept sorted");
        assert!(list(MAX_LISTED).len() < usize::try_from(MAX_POLICY_BYTES).expect("fits"));
        let e = err(&list(MAX_LISTED + 1));
        assert!(
            e.contains("service_binaries") && e.contains("more than 100000"),
            "{e}"
        );
    }

    #[test]
    fn parses_and_defaults() {
        let p = Policy::parse(GOOD).expect("valid");
        assert_eq!(p.scan_interval, Duration::from_secs(10));
        assert_eq!(p.degradation_threshold, 2);
        assert_eq!(p.model_dirs, vec![PathBuf::from("/var/lib/models")]);
        assert_eq!(p.files.len(), 2);
        let d = Policy::parse("trust_material: [/etc/cosign.pub]\n").expect("valid");
        assert_eq!(d.scan_interval, Duration::from_secs(30));
        assert_eq!(d.degradation_threshold, 3);
        assert_eq!(d.hmac_key_path, PathBuf::from(DEFAULT_KEY));
        assert!(!d.require_token_for_reads);
        assert_eq!(d.hash_threads, 1);
        let t = Policy::parse("trust_material: [/k]\nhash_threads: 4\n").expect("valid");
        assert_eq!(t.hash_threads, 4);
        assert_eq!(d.max_watched_files, DEFAULT_MAX_WATCHED);
        let w = Policy::parse("trust_material: [/k]\nmax_watched_files: 1000\n").expect("valid");
        assert_eq!(w.max_watched_files, 1000);
        assert_eq!(d.sweep_files_per_second, DEFAULT_SWEEP_RATE);
        let e = err("trust_material: [/k]\nsweep_files_per_second: 0\n");
        assert!(
            e.contains("sweep_files_per_second") && e.contains("line 2"),
            "{e}"
        );
        for bad in ["0", "-1", "2000001", "x"] {
            let e = err(&format!("trust_material: [/k]\nmax_watched_files: {bad}\n"));
            assert!(
                e.contains("max_watched_files") && e.contains("line 2"),
                "{e}"
            );
        }
        for bad in ["0", "17", "-1"] {
            let e = err(&format!("trust_material: [/k]\nhash_threads: {bad}\n"));
            assert!(e.contains("hash_threads") && e.contains("line 2"), "{e}");
        }
    }

    #[test]
    fn errors_name_key_and_line() {
        let e = err("service_binaries: [/a]\nscan_interval: 0s\n");
        assert!(e.contains("scan_interval") && e.contains("line 2"), "{e}");
        let e = err("service_binaries: [/a]\nscan_interval: soon\n");
        assert!(e.contains("scan_interval"), "{e}");
        let e = err("service_binaries: [/a]\n\ndegradation_threshold: 0\n");
        assert!(
            e.contains("degradation_threshold") && e.contains("line 3"),
            "{e}"
        );
        let e = err("service_binaries:\n  - /a\n  - relative/b\n");
        assert!(
            e.contains("service_binaries") && e.contains("line 3"),
            "{e}"
        );
        let e = err("service_binaries: [/a]\nscan_intervall: 5s\n");
        assert!(e.contains("scan_intervall"), "{e}");
        let e = err("service_binaries: [/a/../etc/shadow]\n");
        assert!(e.contains("service_binaries"), "{e}");
        let e = err("service_binaries: [/a]\npolicy_files: [/a]\n");
        assert!(e.contains("listed twice"), "{e}");
        let e = err("model_dirs: [/m, /m/sub]\n");
        assert!(e.contains("overlaps"), "{e}");
        let e = err("scan_interval: 5s\n");
        assert!(e.contains("watches nothing"), "{e}");
        assert!(!err("service_binaries: [/a\n").is_empty());
    }

    #[test]
    fn alias_bomb_is_refused() {
        let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            bomb.push_str(&format!(
                "{}: &{} [*{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}, *{}]\n",
                (b'a' + i) as char,
                (b'a' + i) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char,
                (b'a' + i - 1) as char
            ));
        }
        assert!(Policy::parse(&bomb).is_err());
    }
}
