//! The rebaseline authority as the hasher holds it: challenges it recognises by their MAC
//! (no table a flood could fill or push out), the one plan it holds for a proof, and the check
//! of a proof made over both with the key derived from the HMAC key (`protocol::authority`).
//! The api relays all of it and can forge none: it never sees the HMAC key.

use std::time::{Duration, Instant};

use protocol::authority::{Authority, CHALLENGE_LEN};
use protocol::hexfmt::Sha256Digest;
use protocol::message::Proof;
use protocol::plan::Base;
use subtle::ConstantTimeEq;

use crate::storing::key::Key;

/// How long a challenge may be used.
pub(crate) const TTL: Duration = Duration::from_secs(120);
/// Domain of a challenge's tag.
const DOMAIN: &[u8] = b"integrity-monitor rebaseline challenge v1\0";
/// Bytes of a challenge that are its issue time and its random part; the rest is their tag.
const BODY: usize = 16;

/// Issues challenges and recognises them: 8 bytes of issue time (ms on this process's
/// monotonic clock), 8 random bytes, and 16 bytes of an HMAC under a secret of this process.
#[derive(Debug)]
pub(crate) struct Challenges {
    secret: Option<zeroize::Zeroizing<[u8; 32]>>,
    epoch: Instant,
}

impl Default for Challenges {
    fn default() -> Challenges {
        Challenges {
            secret: None,
            epoch: Instant::now(),
        }
    }
}

impl Challenges {
    /// A new challenge, hex.
    pub(crate) fn issue(&mut self) -> std::io::Result<String> {
        if self.secret.is_none() {
            let mut secret = zeroize::Zeroizing::new([0u8; 32]);
            getrandom::fill(secret.as_mut_slice()).map_err(std::io::Error::from)?;
            self.secret = Some(secret);
        }
        let mut bytes = [0u8; CHALLENGE_LEN];
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
        bytes[..8].copy_from_slice(&now.to_be_bytes());
        getrandom::fill(&mut bytes[8..BODY]).map_err(std::io::Error::from)?;
        let tag = self.tag(&bytes[..BODY]);
        bytes[BODY..].copy_from_slice(&tag[..CHALLENGE_LEN - BODY]);
        Ok(protocol::hexfmt::encode(&bytes))
    }

    fn tag(&self, body: &[u8]) -> [u8; 32] {
        let secret = self
            .secret
            .as_ref()
            .map_or(&[0u8; 32][..], |s| s.as_slice());
        protocol::sign::hmac_raw(secret, &[DOMAIN, body])
    }

    /// Whether `challenge` is one this process issued less than [`TTL`] ago.
    pub(crate) fn fresh(&self, challenge: &str) -> Result<(), &'static str> {
        let Some(bytes) = protocol::hexfmt::decode(challenge).filter(|b| b.len() == CHALLENGE_LEN)
        else {
            return Err("the challenge is not one this hasher issued");
        };
        let tag = self.tag(&bytes[..BODY]);
        if self.secret.is_none() || !bool::from(tag[..CHALLENGE_LEN - BODY].ct_eq(&bytes[BODY..])) {
            return Err("the challenge is not one this hasher issued (or it restarted since)");
        }
        let mut at = [0u8; 8];
        at.copy_from_slice(&bytes[..8]);
        let issued = Duration::from_millis(u64::from_be_bytes(at));
        match self.epoch.elapsed().checked_sub(issued) {
            Some(age) if age < TTL => Ok(()),
            _ => Err("the challenge expired (120 s): ask for another"),
        }
    }
}

/// The plan the hasher holds for a proof: no candidate is kept, only what identifies it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pending {
    /// SHA-256 (hex) of the signed plan.
    pub(crate) digest: String,
    /// SHA-256 of the candidate's entries.
    pub(crate) candidate: Sha256Digest,
    /// The generation it is adopted at.
    pub(crate) generation: u64,
    /// The baseline in force it was made against.
    pub(crate) base: Option<Base>,
}

/// Whether `proof` authorises adopting `pending`: a key, a fresh challenge of ours, the plan
/// held and its generation, and the authority's MAC over them. A wrong proof spends nothing.
pub(crate) fn check(
    key: Option<&Key>,
    challenges: &Challenges,
    pending: Option<&Pending>,
    proof: &Proof,
) -> Result<(), &'static str> {
    let Some(key) = key else {
        return Err("no HMAC key: there is no rebaseline authority to prove");
    };
    challenges.fresh(&proof.challenge)?;
    if !Authority::derive(key.bytes()).verify(
        &proof.challenge,
        &proof.plan,
        proof.generation,
        &proof.proof,
    ) {
        return Err("the proof was not made with this appliance's rebaseline authority");
    }
    match pending {
        Some(p) if p.digest == proof.plan && p.generation == proof.generation => Ok(()),
        _ => Err("the plan proven is not the one this hasher holds: it was used already, a newer plan replaced it, or the hasher restarted; fetch a new plan"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_authorises_the_held_plan_under_a_fresh_challenge_only() {
        let key = Key::for_test(b"an HMAC key of thirty-two bytes!".to_vec());
        let mut c = Challenges::default();
        let challenge = c.issue().expect("random");
        let pending = Pending {
            digest: "ab".repeat(32),
            candidate: Sha256Digest([1; 32]),
            generation: 4,
            base: None,
        };
        let a = Authority::derive(key.bytes());
        let proof = |challenge: &str, plan: &str, generation| Proof {
            challenge: challenge.to_owned(),
            plan: plan.to_owned(),
            generation,
            proof: a.prove(challenge, plan, generation),
        };
        let right = proof(&challenge, &pending.digest, 4);
        assert!(check(Some(&key), &c, Some(&pending), &right).is_ok());
        assert!(check(None, &c, Some(&pending), &right).is_err(), "no key");
        assert!(check(Some(&key), &c, None, &right).is_err(), "no plan held");
        let other = proof(&challenge, &"cd".repeat(32), 4);
        assert!(
            check(Some(&key), &c, Some(&pending), &other).is_err(),
            "another plan"
        );
        let later = proof(&challenge, &pending.digest, 5);
        assert!(
            check(Some(&key), &c, Some(&pending), &later).is_err(),
            "another generation"
        );
        let made_up = "ab".repeat(32);
        let forged = proof(&made_up, &pending.digest, 4);
        assert!(
            check(Some(&key), &c, Some(&pending), &forged).is_err(),
            "not our challenge"
        );
        let mut wrong = right.clone();
        wrong.proof = "0".repeat(64);
        assert!(check(Some(&key), &c, Some(&pending), &wrong).is_err());
        assert!(
            check(Some(&key), &c, Some(&pending), &right).is_ok(),
            "a wrong proof spends nothing"
        );
        // Any number of challenges: none pushes another out.
        for _ in 0..1000 {
            c.issue().expect("random");
        }
        assert!(c.fresh(&challenge).is_ok());
        // Another process (a restarted hasher) does not know them.
        assert!(Challenges::default().fresh(&challenge).is_err());
        // An expired one.
        let mut old = Challenges::default();
        let stale = old.issue().expect("random");
        old.epoch = old.epoch.checked_sub(TTL).expect("up for 2 minutes");
        assert!(old.fresh(&stale).is_err());
    }
}
