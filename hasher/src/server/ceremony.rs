//! The key ceremony as the hasher runs it: a plan of what a rebaseline would change (the
//! candidate made from the files, compared with the baseline in force, signed), held for a
//! proof; then, for a proof over that plan, the candidate made again and adopted only when it
//! is the one planned, with a signed outcome bound to the proof either way.

use protocol::hexfmt::Sha256Digest;
use protocol::message::{ErrorKind, Proof, Response};
use protocol::plan::{self, Adopted, Base, Outcome, Plan, Signed};

use super::{error, Server};
use crate::storing::Key;
use crate::storing::{check_proof, Pending};

impl Server {
    /// A signed plan for a rebaseline of the current files (a full read), held for a proof;
    /// the operator's token is needed.
    pub(super) fn plan(&mut self, presented: Option<&[u8]>) -> Response {
        match (presented, &self.token) {
            (Some(p), Some(t)) if t.matches(p) => {}
            (_, None) => {
                return error(
                    ErrorKind::Unauthorized,
                    "no service token is configured: no plan is made",
                )
            }
            _ => {
                return error(
                    ErrorKind::Unauthorized,
                    "a plan needs the service token (it reads every watched file)",
                )
            }
        }
        if self.key.is_none() {
            return error(
                ErrorKind::BaselineFailed,
                "no HMAC key: there is no rebaseline authority to prove, so no plan to approve",
            );
        }
        let generation = self.ledger.next_generation();
        let key = self.key.as_ref().map(Key::bytes);
        let manifest = match self.v.make_baseline(key, generation) {
            Ok((manifest, _)) => manifest,
            Err(e) => {
                tracing::error!(error = %e, "no rebaseline plan");
                return error(ErrorKind::BaselineFailed, e.to_string());
            }
        };
        match self.hold_plan(&manifest, generation) {
            Ok(signed) => Response::Plan(signed),
            Err(e) => error(ErrorKind::BaselineFailed, e),
        }
    }

    /// Signs the plan of adopting `candidate` at `generation` and holds it (replacing any
    /// plan held before); only its digests are kept, never the candidate.
    fn hold_plan(
        &mut self,
        candidate: &protocol::baseline::Manifest,
        generation: u64,
    ) -> Result<Signed, String> {
        let Some(key) = self.key.as_ref() else {
            return Err("no HMAC key".into());
        };
        let mut id = [0u8; 16];
        getrandom::fill(&mut id).map_err(|e| format!("no plan: no randomness: {e}"))?;
        let base = self.base();
        let (counts, changes) = plan::compare(
            self.v.baseline().map(|b| &b.manifest.entries),
            &candidate.entries,
        );
        let digest = plan::entries_digest(&candidate.entries);
        let p = Plan {
            version: plan::VERSION,
            id: protocol::hexfmt::encode(&id),
            planned_at: candidate.created_at.clone(),
            base: base.clone(),
            generation,
            candidate: digest.to_hex(),
            entries: candidate.entries.len() as u64,
            added: counts[0],
            removed: counts[1],
            changed: counts[2],
            changes,
        };
        let signed = Signed::sign(&p, plan::PLAN_DOMAIN, key.bytes());
        tracing::info!(
            plan = signed.digest(),
            generation,
            added = p.added,
            removed = p.removed,
            changed = p.changed,
            "rebaseline plan made and held for a proof"
        );
        self.pending = Some(Pending {
            digest: signed.digest(),
            candidate: digest,
            generation,
            base,
        });
        Ok(signed)
    }

    /// The baseline in force, as a plan names it.
    fn base(&self) -> Option<Base> {
        self.v.baseline().map(|b| Base {
            generation: b.generation,
            digest: b.digest.clone(),
        })
    }

    /// A proof over the plan held: the candidate is made again from the files and adopted
    /// only if it is the one planned, at the generation planned; otherwise refused with a new
    /// plan. Every answer is signed and bound to the proof.
    pub(super) fn ceremony(&mut self, proof: &Proof) -> Response {
        let Some(key) = self.key.as_ref().map(|k| k.bytes().to_vec()) else {
            return error(
                ErrorKind::Unauthorized,
                "no HMAC key: there is no rebaseline authority to prove",
            );
        };
        let key = zeroize::Zeroizing::new(key);
        let outcome = |adopted: Option<Adopted>, refused: &str, new_plan: Option<String>| {
            let o = Outcome {
                challenge: proof.challenge.clone(),
                plan: proof.plan.clone(),
                proof: proof.proof.clone(),
                adopted,
                refused: refused.to_owned(),
                new_plan,
            };
            Signed::sign(&o, plan::OUTCOME_DOMAIN, &key)
        };
        if let Err(why) = check_proof(
            self.key.as_ref(),
            &self.challenges,
            self.pending.as_ref(),
            proof,
        ) {
            // Anyone may send a made-up proof: the api audits refusals coalesced, and this
            // log stays quiet so a flood fills neither.
            tracing::debug!(why, "rebaseline proof refused");
            return Response::CeremonyRefused {
                outcome: outcome(None, why, None),
                plan: None,
            };
        }
        // The plan is spent now, whatever follows: no second adoption from it.
        let Some(pending) = self.pending.take() else {
            return error(ErrorKind::Protocol, "no plan held");
        };
        let generation = self.ledger.next_generation();
        let (manifest, slots) = match self.v.make_baseline(Some(&key), generation) {
            Ok(made) => made,
            Err(e) => {
                let why = format!("the files no longer make a baseline: {e}");
                tracing::error!(why, "rebaseline refused");
                return Response::CeremonyRefused {
                    outcome: outcome(None, &why, None),
                    plan: None,
                };
            }
        };
        let candidate = plan::entries_digest(&manifest.entries);
        if !same(&pending, candidate, generation, self.base()) {
            let why = "the files (or the baseline in force) changed since the plan: nothing adopted; here is the new plan";
            tracing::warn!(
                planned = pending.candidate.to_hex(),
                found = candidate.to_hex(),
                "rebaseline refused: not the candidate planned"
            );
            return match self.hold_plan(&manifest, generation) {
                Ok(new) => Response::CeremonyRefused {
                    outcome: outcome(None, why, Some(new.digest())),
                    plan: Some(new),
                },
                Err(e) => Response::CeremonyRefused {
                    outcome: outcome(None, &format!("{why} (none made: {e})"), None),
                    plan: None,
                },
            };
        }
        match self.commit_made(manifest, slots, super::requests::Authority::KeyCeremony) {
            Ok(summary) => {
                let adopted = Adopted {
                    generation: summary.generation,
                    digest: summary.digest.clone(),
                    entries: u64::from(summary.entries),
                    candidate: candidate.to_hex(),
                };
                Response::BaselineCreated {
                    summary,
                    outcome: Some(outcome(Some(adopted), "", None)),
                }
            }
            Err(e) => Response::CeremonyRefused {
                outcome: outcome(None, &e, None),
                plan: None,
            },
        }
    }
}

/// Whether what was made now is the candidate `pending` planned, at its generation, against
/// the same baseline in force.
fn same(pending: &Pending, candidate: Sha256Digest, generation: u64, base: Option<Base>) -> bool {
    pending.candidate == candidate && pending.generation == generation && pending.base == base
}
