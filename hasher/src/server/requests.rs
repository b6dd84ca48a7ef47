//! What each request of the api does: the baseline's life (who may make one, making it,
//! serving it), scans of everything or of the named changes, reloads, and attestations of
//! the latest scan.

use super::*;

/// Who authorised a new baseline: named in the journal when it is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Authority {
    /// The operator's token, where the policy says `rebaseline_auth: bearer`.
    ServiceToken,
    /// Nobody needed: a store that has never held a baseline.
    FirstInitialization,
    /// A proof of the rebaseline authority over an approved plan (`ceremony.rs`).
    KeyCeremony,
}

impl Authority {
    fn as_str(self) -> &'static str {
        match self {
            Authority::ServiceToken => "service token (rebaseline_auth: bearer)",
            Authority::FirstInitialization => "first initialization of an empty store",
            Authority::KeyCeremony => "rebaseline authority (key ceremony)",
        }
    }
}

/// Why a baseline without a plan was refused: the message the api is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(super) enum Unauthorised {
    /// The service token, where the policy does not let it rebaseline.
    #[error("the service token does not authorise a rebaseline (it crosses the api with every scan); prove the rebaseline authority: `integrity-monitor rebaseline --key FILE`")]
    TokenNotEnough,
    /// A token that is not the service token.
    #[error("the token presented is not the service token")]
    WrongToken,
    /// Nothing presented, and the store is not empty.
    #[error(
        "a new baseline needs the rebaseline authority: `integrity-monitor rebaseline --key FILE`"
    )]
    NoAuthority,
}

impl Server {
    /// Who may make a baseline without a plan, decided here: the operator's token only where
    /// the policy says `rebaseline_auth: bearer`; nobody else but the first initialization of
    /// a store that has never held a baseline. The key ceremony goes through a plan
    /// (`ceremony.rs`).
    pub(super) fn authorised(&self, presented: Option<&[u8]>) -> Result<Authority, Unauthorised> {
        let bearer = self.v.policy().rebaseline_auth == RebaselineAuth::Bearer;
        match (presented, &self.token) {
            (Some(p), Some(t)) if t.matches(p) && bearer => Ok(Authority::ServiceToken),
            (Some(p), Some(t)) if t.matches(p) => Err(Unauthorised::TokenNotEnough),
            (Some(_), _) => Err(Unauthorised::WrongToken),
            (None, _)
                if *self.ledger.status() == StoreStatus::Empty && self.v.baseline().is_none() =>
            {
                Ok(Authority::FirstInitialization)
            }
            (None, _) => Err(Unauthorised::NoAuthority),
        }
    }

    pub(super) fn create_baseline(
        &mut self,
        presented: Option<&[u8]>,
        proof: Option<&Proof>,
    ) -> Response {
        if let Some(proof) = proof {
            return self.ceremony(proof);
        }
        let by = match self.authorised(presented) {
            Ok(by) => by,
            Err(why) => {
                tracing::warn!(%why, "baseline refused: not authorised");
                return error(ErrorKind::Unauthorized, why.to_string());
            }
        };
        let key = self.key.as_ref().map(Key::bytes);
        let generation = self.ledger.next_generation();
        let (manifest, slots) = match self.v.make_baseline(key, generation) {
            Ok(made) => made,
            Err(e) => {
                tracing::error!(error = %e, "baseline refused");
                return error(ErrorKind::BaselineFailed, e.to_string());
            }
        };
        match self.commit_made(manifest, slots, by) {
            Ok(summary) => Response::BaselineCreated {
                summary,
                outcome: None,
            },
            Err(e) => error(ErrorKind::BaselineFailed, e),
        }
    }

    /// Stores, records and adopts a baseline just made; `Err` says why it was not stored (the
    /// old one stays). Any plan held is dropped: it was made against what is no longer in force.
    pub(super) fn commit_made(
        &mut self,
        manifest: protocol::baseline::Manifest,
        slots: Vec<crate::verifying::Slot>,
        by: Authority,
    ) -> Result<BaselineSummary, String> {
        self.pending = None;
        let key = self.key.as_ref().map(Key::bytes);
        let generation = manifest.generation.unwrap_or_default();
        let release = self.release_for_commit();
        let named = release.as_ref().map(|r| r.commit.clone());
        let current = match self.ledger.commit(manifest, named, key) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "new baseline could not be stored; the old one stays");
                return Err(format!("new baseline not stored: {e}"));
            }
        };
        tracing::info!(
            digest = current.digest,
            generation,
            entries = current.manifest.entries.len(),
            signing = if current.manifest.is_signed() {
                "hmac-sha256"
            } else {
                "unsigned"
            },
            by = by.as_str(),
            "new baseline signed, stored and adopted"
        );
        let mut s = crate::storing::ledger_summary(&current, self.ledger.guard());
        let before = self.v.baseline().map(|b| b.digest.clone());
        if let Some(next) = release {
            self.record_release(before.as_deref(), &current, next);
        }
        s.release = self.release.in_force.clone();
        self.v.adopt(current, slots);
        Ok(s)
    }

    /// A part of the adopted manifest, read from the store file.
    pub(super) fn baseline_part(&self, offset: u64) -> Response {
        let Some(b) = self.v.baseline() else {
            return error(ErrorKind::NoBaseline, "no baseline is adopted");
        };
        let start = offset.min(b.len);
        let want = usize::try_from(b.len - start).map_or(BASELINE_PART, |l| l.min(BASELINE_PART));
        match self.ledger.store().read_part(start, want) {
            Ok(part) => Response::Baseline {
                total: b.len,
                offset: start,
                part,
            },
            Err(e) => error(ErrorKind::BaselineRejected, e.to_string()),
        }
    }

    /// A full sweep (`Verifier::sweep_all`), kept for a restart, reported.
    pub(super) fn scan(&mut self) -> Response {
        let Some(report) = self.v.sweep_all(self.sentinel.complete()) else {
            return error(
                ErrorKind::NoBaseline,
                "no baseline is adopted; rebaseline first",
            );
        };
        self.keep_versions();
        tracing::info!(
            seq = report.seq,
            violations = report.violation_count,
            bytes = report.bytes_hashed,
            ms = report.duration_ms,
            "scan complete"
        );
        self.finish(report)
    }

    /// A report as sent: saying how many changed files await their settle read and how many
    /// are proven by their seal, kept as the latest, signed.
    pub(super) fn finish(&mut self, mut report: protocol::report::ScanReport) -> Response {
        if report.seq == 1 && report.bytes_hashed > crate::checkconfig::BOOT_CHECK_UNSEALED_BYTES {
            tracing::warn!(
                bytes = report.bytes_hashed,
                ms = report.duration_ms,
                "the first check after this start read more unsealed bytes than a boot check's 30 s allows under CPUQuota=15% (about 5 GiB): seal the models (integrity-monitor seal DIR) or the boot check may fail"
            );
        }
        self.v.stamp(&mut report);
        self.add_release_finding(&mut report);
        self.last_report = Some((report.clone(), std::time::Instant::now()));
        let key = self.key.as_ref().map(|k| (k.bytes(), k.signer()));
        Response::Report(report.sign(key))
    }

    /// Checks only the paths the kernel named since the last scan, when they are all that
    /// changed and the sweep is current (`Verifier::check_named`); sweeps otherwise. The
    /// hasher decides: an api that only ever asks for this still gets a full sweep every
    /// interval.
    pub(super) fn scan_changed(&mut self) -> Response {
        let Some((report, paths)) = self.v.check_named(self.sentinel.watching()) else {
            return self.scan();
        };
        self.keep_versions();
        tracing::info!(
            seq = report.seq,
            paths,
            violations = report.violation_count,
            bytes = report.bytes_hashed,
            ms = report.duration_ms,
            "changes checked"
        );
        self.finish(report)
    }

    pub(super) fn reload(&mut self) -> Response {
        let kernel = self.v.kernel_window();
        let loaded = Policy::load(&self.policy_path).and_then(|p| {
            p.check_settle_window(kernel)
                .map_err(|e| e.in_file(&self.policy_path))?;
            Ok(p)
        });
        let policy = match loaded {
            Ok(p) => p.with_release_baseline(self.release_override.clone()),
            Err(e) => {
                tracing::error!(error = %e, "reload refused; the old policy stays in force");
                return error(ErrorKind::PolicyInvalid, e.to_string());
            }
        };
        if policy.hmac_key_path != self.v.policy().hmac_key_path {
            return error(
                ErrorKind::RestartRequired,
                "hmac_key_path changed: the key is loaded at start; restart the service to use the new one",
            );
        }
        if let Some((key, path, fs)) = crate::checkconfig::untrusted_roots(&policy).first() {
            return error(
                ErrorKind::PolicyInvalid,
                format!("{key}: {} is on {fs}, whose server decides what a read returns; the old policy stays in force", path.display()),
            );
        }
        let wanted = crate::sandbox::read_set(&policy, &self.policy_path);
        if let Some(outside) = crate::sandbox::covers(&self.read_set, &wanted) {
            tracing::warn!(path = %outside.display(), "reloaded policy reaches outside the sandbox; old policy stays until a restart");
            return error(
                ErrorKind::RestartRequired,
                format!("{} is outside what the running sandbox may read; restart the service to watch it (the old policy stays in force)", outside.display()),
            );
        }
        tracing::info!(path = %self.policy_path.display(), "policy reloaded");
        self.sentinel
            .replace(crate::live::Watcher::new(&policy).ok());
        self.v.reload(policy);
        Response::Reloaded {
            policy: self.v.policy().summary(),
        }
    }

    /// Signs the latest completed scan for a verifier's nonce.
    pub(super) fn attest(&self, nonce: String, audit_seq: u64, audit_head: String) -> Response {
        use protocol::attest::{nonce_ok, Attestation, DOMAIN};
        if !nonce_ok(&nonce) || !(protocol::hexfmt::is_sha256_hex(&audit_head)) {
            return error(
                ErrorKind::Protocol,
                "nonce must be 16-64 bytes of hex and the audit head a SHA-256",
            );
        }
        if let StoreStatus::Rejected { reason, .. } = self.ledger.status() {
            // A scan against a reference proves nothing a verifier could rely on.
            return error(
                ErrorKind::BaselineRejected,
                format!("no attestation while the stored baseline is rejected: {reason}"),
            );
        }
        let Some((report, completed)) = &self.last_report else {
            return error(ErrorKind::NoBaseline, "no scan has completed yet");
        };
        let attestation = Attestation {
            nonce,
            scan_seq: report.seq,
            scan_completed_at: report.completed_at.clone(),
            scan_age_ms: u64::try_from(completed.elapsed().as_millis()).unwrap_or(u64::MAX),
            baseline_digest: report.baseline_digest.clone(),
            baseline_generation: self.v.baseline().map_or(0, |b| b.generation),
            release: self.release.in_force.clone(),
            rollback_anchor: self.ledger.guard().anchor.as_str().to_owned(),
            tpm_counter: self.ledger.guard().tpm_counter,
            violation_count: report.violation_count,
            violations: report.violations.clone(),
            degradation_threshold: self.v.policy().degradation_threshold,
            audit_seq,
            audit_head,
            issued_at: crate::verifying::now_rfc3339(),
        };
        let payload = serde_json::to_vec(&attestation).unwrap_or_default();
        let (hmac, ed25519) = match &self.key {
            Some(k) => (
                protocol::sign::hmac_hex(k.bytes(), &[DOMAIN, &payload]),
                k.signer().sign(&[DOMAIN, &payload]),
            ),
            None => (protocol::sign::UNSIGNED.to_owned(), String::new()),
        };
        Response::Attestation {
            payload,
            hmac,
            ed25519,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the api is told, and shows the operator, as before the refusals were typed.
    #[test]
    fn each_refusal_says_what_it_always_said() {
        assert_eq!(
            [
                Unauthorised::TokenNotEnough,
                Unauthorised::WrongToken,
                Unauthorised::NoAuthority
            ]
            .map(|u| u.to_string()),
            [
                "the service token does not authorise a rebaseline (it crosses the api with every scan); prove the rebaseline authority: `integrity-monitor rebaseline --key FILE`",
                "the token presented is not the service token",
                "a new baseline needs the rebaseline authority: `integrity-monitor rebaseline --key FILE`",
            ]
        );
    }
}
