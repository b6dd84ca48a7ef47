//! The request and response enums, one per direction, and the envelope that versions them.

use serde::{Deserialize, Serialize};

pub use crate::category::{Action, Category};
use crate::report::SignedReport;

/// Wire version; a peer speaking another one is refused at the handshake.
pub const PROTOCOL_VERSION: u16 = 8;

/// What the api may ask of the hasher. None of it names a path: the hasher opens only what its
/// own policy lists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// First message on a channel: the api's protocol version and its memory of earlier
    /// lives, which the hasher holds its store to (a store older than it, or emptied, is
    /// rejected; no new generation is committed at or below it). A compromised api can only
    /// make the hasher trust less with it, never more.
    Hello {
        /// The api's [`PROTOCOL_VERSION`].
        version: u16,
        /// What the api remembers.
        prior: crate::standing::Prior,
    },
    /// Hash every watched file, sign a new baseline, store it and adopt it. The hasher does
    /// so only for a proof made with the rebaseline authority over a challenge it issued and
    /// the plan it holds (`protocol::authority`, `protocol::plan`), and then only when the
    /// files still make that plan's candidate; for the operator's token when its policy says
    /// `rebaseline_auth: bearer`; or with neither while its store has never held a baseline
    /// (first initialization).
    CreateBaseline {
        /// The bearer token the operator presented, as received.
        token: Option<Vec<u8>>,
        /// The key ceremony's proof, as received.
        proof: Option<Proof>,
    },
    /// Issue a challenge for a rebaseline proof (valid 120 s; the hasher keeps no table of
    /// them: it recognises its own by their MAC).
    RebaselineChallenge,
    /// Make the candidate baseline of the current files and a signed plan of what adopting
    /// it changes; the hasher holds that plan (one: a new plan replaces it) for a proof.
    RebaselinePlan {
        /// The bearer token the operator presented, as received (a plan is a full read).
        token: Option<Vec<u8>>,
    },
    /// A part of the adopted baseline manifest, byte for byte as stored, from `offset`: the
    /// manifest travels in parts of at most [`BASELINE_PART`] bytes, so neither process holds
    /// a second copy of a large one and the api relays it as it comes.
    GetBaseline {
        /// Where the part starts.
        offset: u64,
    },
    /// Verify every watched file against the adopted baseline.
    Scan,
    /// Re-read and validate the policy; the old one stays in force on error.
    Reload,
    /// Sign an attestation of the latest completed scan for this nonce.
    Attest {
        /// The verifier's nonce, hex (16 to 64 bytes).
        nonce: String,
        /// The api's audit chain head: sequence number.
        audit_seq: u64,
        /// The api's audit chain head: hex SHA-256 of the last record.
        audit_head: String,
    },
    /// Bring the last scan up to date with the changes announced since: the hasher checks
    /// only the paths the kernel named, and sweeps everything when they may not be all.
    ScanChanged,
}

/// A client's proof that it holds the rebaseline authority and approves a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proof {
    /// The challenge the hasher issued, hex.
    pub challenge: String,
    /// SHA-256 (hex) of the signed plan approved.
    pub plan: String,
    /// The generation that plan is adopted at.
    pub generation: u64,
    /// Hex HMAC-SHA256 under the authority over the challenge, the plan and the generation.
    pub proof: String,
}

impl Proof {
    /// Whether every field has its form (hex of the right length).
    pub fn well_formed(&self) -> bool {
        crate::authority::challenge_ok(&self.challenge)
            && crate::hexfmt::is_sha256_hex(&self.plan)
            && crate::hexfmt::is_sha256_hex(&self.proof)
    }
}

/// What the hasher answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Response {
    /// Handshake answer with the settings of the policy the hasher enforces.
    Hello {
        /// The hasher's [`PROTOCOL_VERSION`].
        version: u16,
        /// Settings the api needs and may not read from disk itself.
        policy: PolicySummary,
        /// Whether baselines and reports are signed.
        key: KeyStatus,
        /// What the hasher found in its own baseline store at start.
        store: StoreStatus,
        /// Hex SHA-256 of the service token, for the api's gate; `None`: no token, the
        /// token-gated endpoints stay closed.
        token_digest: Option<String>,
        /// What loading the store repaired or converted, for the audit log.
        store_event: Option<StoreEvent>,
        /// The OS image's release: the one in force, a transition made or refused.
        release: crate::standing::ReleaseNews,
    },
    /// A one-time challenge for a rebaseline proof.
    Challenge {
        /// 32 random bytes, hex.
        challenge: String,
        /// How long it may be used, in milliseconds.
        ttl_ms: u64,
    },
    /// A new signed baseline was stored and adopted.
    BaselineCreated {
        /// Digest and size of the adopted manifest.
        summary: BaselineSummary,
        /// For a ceremony: the hasher's signed word on it (`plan::Outcome`).
        outcome: Option<crate::plan::Signed>,
    },
    /// A signed plan (`plan::Plan`), held by the hasher for a proof.
    Plan(crate::plan::Signed),
    /// A ceremony's proof adopted nothing: the signed outcome says why, and where the files
    /// changed since the plan, the new plan the hasher now holds.
    CeremonyRefused {
        /// The signed `plan::Outcome`.
        outcome: crate::plan::Signed,
        /// The new signed plan, when the files no longer make the approved candidate.
        plan: Option<crate::plan::Signed>,
    },
    /// The adopted manifest (answer to `GetBaseline`).
    Baseline {
        /// The whole manifest's length.
        total: u64,
        /// Where this part starts.
        offset: u64,
        /// The manifest JSON's bytes from `offset`, exactly as stored (`hmac` included).
        part: Vec<u8>,
    },
    /// The outcome of one scan, signed by the hasher.
    Report(SignedReport),
    /// The policy was re-read and is now in force.
    Reloaded {
        /// Settings of the new policy.
        policy: PolicySummary,
    },
    /// A signed attestation (see `attest`).
    Attestation {
        /// The exact signed bytes: compact JSON of `attest::Attestation`.
        payload: Vec<u8>,
        /// Hex HMAC-SHA256 over the domain and the payload, or "unsigned".
        hmac: String,
        /// Ed25519 over the same bytes (`<key id>:<hex>`, see `fleet`); empty when unsigned.
        ed25519: String,
    },
    /// Unsolicited (id 0): watched paths changed; the api should scan now.
    Notice {
        /// Watched paths touched since the last notice.
        changed: u32,
        /// Events were lost: the next scan re-reads every file.
        overflow: bool,
        /// Sent while a request was being answered: that answer does not cover these changes
        /// (the next check does).
        during_request: bool,
    },
    /// The request failed; nothing changed in the hasher.
    Error {
        /// Machine-readable class of the failure.
        kind: ErrorKind,
        /// What an operator should fix.
        message: String,
    },
}

/// Failure classes the api maps to HTTP statuses and audit events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The stored baseline's HMAC or form is wrong, or it is unsigned while a key exists.
    BaselineRejected,
    /// A scan was asked for before any baseline was adopted.
    NoBaseline,
    /// A baseline could not be made (a listed file is missing, unreadable or a symlink).
    BaselineFailed,
    /// The policy on disk does not parse or validate.
    PolicyInvalid,
    /// The reloaded policy names a path outside what the running sandbox may read.
    RestartRequired,
    /// The request made no sense in this state or version.
    Protocol,
    /// A baseline was asked for without the rebaseline authority (or, under
    /// `rebaseline_auth: bearer`, the operator's token).
    Unauthorized,
}

/// Something loading the store did besides verifying it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreEvent {
    /// The stored baseline was signed the Go service's way; adopted, and re-signed in this
    /// format at the next new baseline.
    MigratedFromGo,
    /// A commit had stored its baseline but not its record; the record was rolled forward.
    RolledForward {
        /// The generation the record said before.
        from: u64,
    },
}

/// The hasher's own baseline store, as found at start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoreStatus {
    /// A baseline verified (HMAC, generation record) and is adopted.
    Adopted(BaselineSummary),
    /// The store has never held a baseline: first initialization may make one.
    Empty,
    /// The store holds something that does not verify, or rolls back what the api
    /// remembers; nothing is adopted.
    Rejected {
        /// What was found, for the audit log.
        reason: String,
        /// What scans compare the files with meanwhile, if anything.
        reference: Option<crate::standing::Reference>,
    },
}

/// Whether an HMAC key is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyStatus {
    /// The key file exists and is loaded: artifacts are signed.
    Present,
    /// No key file: artifacts are marked "unsigned".
    Absent,
}

/// Policy settings the api acts on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicySummary {
    /// Milliseconds between scheduled scans.
    pub scan_interval_ms: u64,
    /// Violations at which the state becomes `recovery_required`.
    pub degradation_threshold: u32,
    /// Whether the GET endpoints also require the bearer token.
    pub require_token_for_reads: bool,
    /// Number of explicitly listed files plus model directories.
    pub watched_paths: u32,
}

/// Identity of an adopted baseline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BaselineSummary {
    /// SHA-256 (hex) of the manifest bytes.
    pub digest: String,
    /// Number of entries.
    pub entries: u32,
    /// False when the manifest is marked "unsigned".
    pub signed: bool,
    /// The manifest's `created_at`.
    pub created_at: String,
    /// The store generation of this baseline.
    pub generation: u64,
    /// The OS image's release commit recorded in force with it, if any.
    pub release: Option<String>,
    /// What guards it against a rollback (the TPM's counter, or the audit log).
    pub rollback: crate::standing::Guard,
}

/// Largest part of a baseline manifest in one answer.
pub const BASELINE_PART: usize = 1024 * 1024;
/// Largest baseline manifest relayed (200,000 entries of the longest paths fit).
pub const MAX_MANIFEST: u64 = 1 << 30;

/// Whether a `Baseline` answer to `GetBaseline { offset: asked }` is one the api can relay: the
/// part asked for, within the manifest, not empty before its end, and no larger than a part.
pub fn baseline_part_ok(asked: u64, total: u64, offset: u64, part: &[u8]) -> bool {
    let end = offset.saturating_add(part.len() as u64);
    offset == asked
        && total <= MAX_MANIFEST
        && part.len() <= BASELINE_PART
        && end <= total
        && (!part.is_empty() || offset == total)
}

/// Longest store rejection reason the api accepts from the hasher.
pub const MAX_REASON_LEN: usize = 4096;

impl BaselineSummary {
    /// Well-formed for a hasher whose key is `key`: the digest is SHA-256 hex, the time
    /// bounded, and a baseline is signed exactly when there is a key.
    pub fn well_formed(&self, key: KeyStatus) -> bool {
        crate::hexfmt::is_sha256_hex(&self.digest)
            && self.created_at.len() <= crate::report::MAX_TIME_LEN
            && self
                .release
                .as_deref()
                .is_none_or(crate::standing::commit_ok)
            && self.signed == (key == KeyStatus::Present)
            && self.rollback.well_formed()
    }
}

impl StoreStatus {
    /// Well-formed for a hasher whose key is `key` (see [`BaselineSummary::well_formed`]; a
    /// stored baseline may be unsigned under a key: the Go service's, before its migration).
    pub fn well_formed(&self, key: KeyStatus) -> bool {
        match self {
            StoreStatus::Adopted(s) => {
                crate::hexfmt::is_sha256_hex(&s.digest)
                    && s.created_at.len() <= crate::report::MAX_TIME_LEN
                    && s.release.as_deref().is_none_or(crate::standing::commit_ok)
                    && (!s.signed || key == KeyStatus::Present)
                    && s.rollback.well_formed()
            }
            StoreStatus::Empty => true,
            StoreStatus::Rejected { reason, reference } => {
                reason.len() <= MAX_REASON_LEN
                    && reference
                        .as_ref()
                        .is_none_or(crate::standing::Reference::well_formed)
            }
        }
    }
}

impl StoreStatus {
    /// Why what the store holds rolls back what the api remembers (`prior`), if it does: an
    /// older generation (a baseline of the Go service's counts as 0), another baseline at the
    /// same generation, or nothing at all where an earlier life left a trace. The hasher
    /// rejects such a store itself; the api checks that it did.
    pub fn rolls_back(&self, prior: &crate::standing::Prior) -> Option<String> {
        use crate::standing::Prior;
        match (self, prior) {
            (_, Prior::Nothing) | (StoreStatus::Rejected { .. }, _) => None,
            (StoreStatus::Empty, Prior::Adopted { generation, digest }) => Some(format!(
                "rollback: the hasher's store is empty, but the api last adopted baseline generation {generation} ({digest}): the store was emptied"
            )),
            (StoreStatus::Empty, Prior::Trace { what }) => Some(format!(
                "the hasher's store is empty, but {what}: an earlier life left a trace, so this is no first start"
            )),
            (StoreStatus::Adopted(s), Prior::Adopted { generation, digest })
                if s.generation < *generation =>
            {
                Some(format!(
                    "rollback: the hasher's store holds baseline generation {} ({}), older than generation {generation} ({digest}) the api last adopted",
                    s.generation, s.digest
                ))
            }
            (StoreStatus::Adopted(s), Prior::Adopted { generation, digest })
                if s.generation == *generation && s.digest != *digest =>
            {
                Some(format!(
                    "rollback: the hasher's store holds another baseline ({}) at generation {generation} than the one the api adopted ({digest})",
                    s.digest
                ))
            }
            (StoreStatus::Adopted(_), _) => None,
        }
    }
}

impl PolicySummary {
    /// Settings the api can act on: a threshold and an interval of at least one.
    pub fn well_formed(&self) -> bool {
        self.degradation_threshold >= 1 && self.scan_interval_ms >= 1
    }
}

/// Every message travels in an envelope carrying the version and the request id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Sender's [`PROTOCOL_VERSION`].
    pub version: u16,
    /// Request id; a response carries the id of its request.
    pub id: u64,
    /// The request or response.
    pub body: T,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(signed: bool) -> BaselineSummary {
        BaselineSummary {
            digest: "ab".repeat(32),
            entries: 1,
            signed,
            created_at: "2026-11-25T00:00:00Z".into(),
            generation: 1,
            release: None,
            rollback: Default::default(),
        }
    }

    #[test]
    fn a_baseline_part_must_be_the_one_asked_for_and_fit() {
        let part = vec![b'x'; 10];
        assert!(baseline_part_ok(0, 25, 0, &part));
        assert!(baseline_part_ok(20, 25, 20, &part[..5]));
        assert!(
            !baseline_part_ok(10, 25, 0, &part),
            "another offset than asked"
        );
        assert!(!baseline_part_ok(20, 25, 20, &part), "past the end");
        assert!(!baseline_part_ok(0, 25, 0, &[]), "empty before the end");
        assert!(baseline_part_ok(25, 25, 25, &[]), "empty at the end");
        assert!(
            !baseline_part_ok(0, MAX_MANIFEST + 1, 0, &part),
            "too large a manifest"
        );
        let big = vec![0u8; BASELINE_PART + 1];
        assert!(
            !baseline_part_ok(0, u64::MAX / 2, 0, &big),
            "too large a part"
        );
    }

    #[test]
    fn older_other_or_no_baseline_rolls_back_what_the_api_remembers_newer_does_not() {
        use crate::standing::Prior;
        let at = |generation: u64, c: char| {
            let mut s = summary(true);
            s.generation = generation;
            s.digest = c.to_string().repeat(64);
            StoreStatus::Adopted(s)
        };
        let m = Prior::Adopted {
            generation: 3,
            digest: "b".repeat(64),
        };
        assert_eq!(at(0, 'a').rolls_back(&Prior::Nothing), None, "first start");
        assert_eq!(StoreStatus::Empty.rolls_back(&Prior::Nothing), None);
        assert_eq!(at(3, 'b').rolls_back(&m), None, "the same");
        assert_eq!(at(4, 'c').rolls_back(&m), None, "newer");
        assert!(at(2, 'b').rolls_back(&m).is_some(), "older");
        assert!(
            at(0, 'a').rolls_back(&m).is_some(),
            "a Go baseline put back"
        );
        assert!(
            at(3, 'c').rolls_back(&m).is_some(),
            "same generation, other digest"
        );
        assert!(StoreStatus::Empty.rolls_back(&m).is_some(), "emptied");
        let trace = Prior::Trace {
            what: "a rotated log".into(),
        };
        assert!(
            StoreStatus::Empty.rolls_back(&trace).is_some(),
            "emptied after rotation"
        );
        assert_eq!(
            at(1, 'a').rolls_back(&trace),
            None,
            "a store with a baseline"
        );
    }

    #[test]
    fn answers_the_api_cannot_act_on_are_not_well_formed() {
        assert!(summary(true).well_formed(KeyStatus::Present));
        assert!(
            !summary(true).well_formed(KeyStatus::Absent),
            "signed without a key"
        );
        assert!(
            !summary(false).well_formed(KeyStatus::Present),
            "unsigned with a key"
        );
        let mut bad = summary(true);
        bad.digest = "xyz".into();
        assert!(!bad.well_formed(KeyStatus::Present));
        bad = summary(true);
        bad.created_at = "9".repeat(4096);
        assert!(!bad.well_formed(KeyStatus::Present));

        assert!(StoreStatus::Adopted(summary(false)).well_formed(KeyStatus::Present));
        assert!(!StoreStatus::Adopted(summary(true)).well_formed(KeyStatus::Absent));
        let long = StoreStatus::Rejected {
            reason: "r".repeat(MAX_REASON_LEN + 1),
            reference: None,
        };
        assert!(!long.well_formed(KeyStatus::Present));

        let mut p = PolicySummary {
            scan_interval_ms: 30_000,
            degradation_threshold: 3,
            require_token_for_reads: false,
            watched_paths: 1,
        };
        assert!(p.well_formed());
        p.degradation_threshold = 0;
        assert!(!p.well_formed());
    }
}
