//! Start-up and hand-over: the handshake with a (new) hasher and what its store holds.

use crate::events::AuditRecord;
use protocol::message::{BaselineSummary, KeyStatus, StoreEvent, StoreStatus};
use protocol::standing::{Reference, ReleaseNews};
use protocol::{Request, Response, PROTOCOL_VERSION};

use super::{lock, Monitor};
use crate::error::MonitorError;
use crate::state::{Input, Reason};
use crate::token::Token;

impl Monitor {
    /// A (re)connected hasher: handshake, then on the first connection the start-up, on a
    /// later one the hand-over to the new hasher instance (it loaded the same store).
    pub async fn connected(&self, first: bool) -> Result<(), MonitorError> {
        // Held throughout: no scheduled scan may reach the hasher before the handshake.
        let _op = self.op.lock().await;
        let again = {
            let mut snap = lock(&self.snap);
            snap.link_seq = 0;
            snap.hasher_down.take()
        };
        let store = self.hello().await?;
        if first {
            self.start(store).await;
            self.started
                .store(true, std::sync::atomic::Ordering::SeqCst);
            self.first_verdict.send_replace(true);
        } else {
            self.audit(AuditRecord::HasherReconnected { after: again });
            self.restore(store).await;
        }
        Ok(())
    }

    async fn restore(&self, store: StoreStatus) {
        let before = lock(&self.snap).baseline.clone();
        match (store, before) {
            (StoreStatus::Adopted(now), Some(was)) if now.digest == was.digest => {}
            (StoreStatus::Adopted(now), was) => {
                tracing::warn!(digest = now.digest, "the new hasher instance holds another baseline; adopting it");
                self.audit(AuditRecord::BaselineChanged {
                    from: was.map(|b| b.digest),
                    to: now.digest.clone(),
                    generation: now.generation,
                });
                self.adopt(now);
            }
            (StoreStatus::Rejected { reason, reference }, _) => {
                return self.rejected_but_compared(&reason, reference).await
            }
            (StoreStatus::Empty, Some(was)) => {
                return self.baseline_rejected(&format!(
                    "the hasher's store is empty although baseline {} (generation {}) was adopted: it was deleted",
                    was.digest, was.generation
                ))
            }
            (StoreStatus::Empty, None) => {
                tracing::warn!("hasher reconnected with an empty store; awaiting an authorised rebaseline");
                return;
            }
        }
        if let Err(e) = self.scan_locked(super::ops::Scan::Full).await {
            tracing::error!(error = %e, "scan after reconnection failed");
        }
    }

    /// Handshake: learns the policy settings, key status, token gate and what the store holds.
    async fn hello(&self) -> Result<StoreStatus, MonitorError> {
        let prior = lock(&self.memory).prior();
        match self
            .call(Request::Hello {
                version: PROTOCOL_VERSION,
                prior: prior.clone(),
            })
            .await?
        {
            Response::Hello {
                version,
                policy,
                key,
                store,
                token_digest,
                store_event,
                release,
            } if version == PROTOCOL_VERSION
                && release.well_formed()
                // A transition made at this start is the generation the store now holds.
                && release.transition.as_ref().is_none_or(|t| {
                    matches!(&store, StoreStatus::Adopted(s) if s.generation == t.generation)
                })
                && policy.well_formed()
                && store.well_formed(key)
                // Told what the api remembers, the hasher rejects a store that rolls it back.
                && store.rolls_back(&prior).is_none()
                && token_digest
                    .as_deref()
                    .is_none_or(|d| Token::from_digest_hex(d).is_some()) =>
            {
                tracing::info!(interval_ms = policy.scan_interval_ms, threshold = policy.degradation_threshold, key = ?key, token = token_digest.is_some(), "hasher ready");
                if key == KeyStatus::Absent {
                    tracing::warn!("no HMAC key: baselines and reports are unsigned");
                    self.audit(AuditRecord::HmacKeyAbsent {
                        signing: "unsigned",
                    });
                }
                *lock(&self.token) = token_digest.as_deref().and_then(Token::from_digest_hex);
                match (store_event, &store) {
                    (Some(StoreEvent::MigratedFromGo), StoreStatus::Adopted(s)) => {
                        tracing::warn!(digest = s.digest, "stored baseline signed the Go service's way: verified and adopted; the next rebaseline re-signs it in this format");
                        self.audit(AuditRecord::BaselineMigrated {
                            from: "go",
                            digest: s.digest.clone(),
                            entries: s.entries,
                        });
                    }
                    (Some(StoreEvent::RolledForward { from }), StoreStatus::Adopted(s)) => {
                        self.audit(AuditRecord::BaselineRolledForward {
                            from,
                            to: s.generation,
                            digest: s.digest.clone(),
                        });
                    }
                    _ => {}
                }
                self.release_news(&release);
                let mut snap = lock(&self.snap);
                snap.policy = policy;
                snap.key = key;
                snap.policy_known = true;
                snap.release = release;
                Ok(store)
            }
            _ => Err(self.misbehaved("hello")),
        }
    }

    /// Start-up: adopt what the hasher's store holds (or have it make the first), then scan.
    async fn start(&self, store: StoreStatus) {
        match store {
            StoreStatus::Rejected { reason, reference } => {
                self.rejected_but_compared(&reason, reference).await
            }
            StoreStatus::Empty => {
                tracing::info!("the hasher's store is empty: first start, computing a baseline");
                if let Err(e) = self
                    .rebaseline_locked(AuditRecord::Initialized, None, None)
                    .await
                {
                    tracing::error!(error = %e, "first baseline failed");
                    if !matches!(e, MonitorError::HasherDown(_)) {
                        lock(&self.snap).baseline_problem = Some(e.to_string());
                        self.apply(Input::Compromised(Reason::NoBaseline));
                    }
                }
            }
            StoreStatus::Adopted(summary) => {
                tracing::info!(
                    digest = summary.digest,
                    generation = summary.generation,
                    "the hasher's store already holds a baseline: adopted (nothing to initialize)"
                );
                self.audit(AuditRecord::BaselineLoaded {
                    digest: summary.digest.clone(),
                    generation: summary.generation,
                    entries: summary.entries,
                    signed: summary.signed,
                });
                self.adopt(summary);
                if let Err(e) = self.scan_locked(super::ops::Scan::Full).await {
                    tracing::error!(error = %e, "first scan failed");
                }
            }
        }
    }

    /// Records what the hasher did with the booted image's release: a transition (a new
    /// generation it made itself, each path that moved), or why it made none.
    fn release_news(&self, news: &ReleaseNews) {
        if let Some(t) = &news.transition {
            tracing::warn!(
                from = t.from,
                to = t.to,
                downgrade = t.downgrade,
                generation = t.generation,
                moved = t.moved_count,
                "release transition: the baseline follows the booted image's release"
            );
            self.audit(AuditRecord::ReleaseTransition {
                from: t.from.clone(),
                to: t.to.clone(),
                downgrade: t.downgrade,
                generation: t.generation,
                moved_count: t.moved_count,
                moved: t.moved.clone(),
                dropped: t.dropped.clone(),
            });
        }
        if let Some(why) = &news.refused {
            tracing::error!(why, "the booted image's release made no transition");
            self.audit(AuditRecord::ReleaseRefused {
                reason: why.clone(),
            });
        }
    }

    /// The stored baseline is rejected: `recovery_required`, and while the hasher has a
    /// reference to compare with, scans go on against it so the operator sees what differs.
    async fn rejected_but_compared(&self, why: &str, reference: Option<Reference>) {
        self.baseline_rejected(why);
        let Some(reference) = reference else {
            return;
        };
        tracing::warn!(digest = reference.digest, entries = reference.entries, release = ?reference.release, store = ?reference.store, "scans compare with a reference until an authorised rebaseline; never trusted");
        self.audit(AuditRecord::ReferenceInUse {
            digest: reference.digest.clone(),
            entries: reference.entries,
            release: reference.release.clone(),
            store: reference.store,
        });
        lock(&self.snap).reference = Some(reference);
        if let Err(e) = self.scan_locked(super::ops::Scan::Full).await {
            tracing::error!(error = %e, "scan against the reference failed");
        }
    }

    pub(super) fn baseline_rejected(&self, why: &str) {
        tracing::error!(
            why,
            "stored baseline rejected: recovery_required until an authorised rebaseline"
        );
        self.audit(AuditRecord::BaselineRejected {
            reason: why.to_owned(),
        });
        lock(&self.snap).baseline_problem = Some(why.to_owned());
        self.apply(Input::Compromised(Reason::BaselineRejected));
    }

    /// Takes `summary` as the baseline; the audit log records each new adoption (its
    /// generation and digest), which later starts hold the store to.
    pub(super) fn adopt(&self, summary: BaselineSummary) {
        if !summary.signed {
            self.audit(AuditRecord::BaselineUnsigned {
                digest: summary.digest.clone(),
            });
        }
        let now = crate::adopted::Adopted::of(&summary);
        let changed = lock(&self.memory).adopted.as_ref() != Some(&now);
        if changed {
            self.recorder
                .record(AuditRecord::BaselineAdopted(now.clone()));
            *lock(&self.memory) = crate::adopted::Memory {
                adopted: Some(now.clone()),
                trace: None,
            };
        }
        self.keep_record(&now);
        let mut snap = lock(&self.snap);
        snap.baseline = Some(summary);
        snap.baseline_problem = None;
        snap.reference = None;
    }

    /// Replaces the memory record with `now` unless it already holds it. A record that
    /// cannot be written is said and audited; the audit log still carries the adoption.
    fn keep_record(&self, now: &crate::adopted::Adopted) {
        let Some(path) = &self.record else {
            return;
        };
        if lock(&self.recorded).as_ref() == Some(now) {
            return;
        }
        match crate::adopted::write_record(path, now) {
            Ok(()) => *lock(&self.recorded) = Some(now.clone()),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "the memory record beside the audit log cannot be replaced: a rollback after the log's rotation would go unseen until it can");
                self.audit(AuditRecord::MemoryRecordFailed {
                    path: path.display().to_string(),
                    error: e.to_string(),
                });
            }
        }
    }
}
