//! The rebaseline authority as the hasher holds it: one-time challenges, and the check of a
//! proof made over one with the key derived from the HMAC key (`protocol::authority`). The
//! api relays both and can forge neither: it never sees the HMAC key, and a challenge is
//! spent by its first use, right or wrong.

use std::time::{Duration, Instant};

use protocol::authority::{Authority, CHALLENGE_LEN, REBASELINE};
use protocol::message::Proof;

use crate::storing::key::Key;

/// How long a challenge may be used.
pub const TTL: Duration = Duration::from_secs(120);
/// Challenges open at once; the oldest goes when another is issued.
const MAX_OPEN: usize = 8;

/// The challenges issued and not yet used.
#[derive(Debug, Default)]
pub struct Challenges {
    open: Vec<(String, Instant)>,
}

impl Challenges {
    /// A new challenge: [`CHALLENGE_LEN`] random bytes, hex.
    pub fn issue(&mut self) -> std::io::Result<String> {
        let mut bytes = [0u8; CHALLENGE_LEN];
        getrandom::fill(&mut bytes).map_err(std::io::Error::from)?;
        let challenge = protocol::hexfmt::encode(&bytes);
        let now = Instant::now();
        self.open.retain(|(_, at)| now.duration_since(*at) < TTL);
        if self.open.len() >= MAX_OPEN {
            self.open.remove(0);
        }
        self.open.push((challenge.clone(), now));
        Ok(challenge)
    }

    /// Spends the challenge `proof` names and checks the proof; `Err` says why it does not
    /// authorise a rebaseline.
    pub fn redeem(&mut self, key: Option<&Key>, proof: &Proof) -> Result<(), &'static str> {
        let Some(i) = self.open.iter().position(|(c, _)| *c == proof.challenge) else {
            return Err("the challenge was not issued by this hasher, was already used, or was pushed out by newer ones");
        };
        let (challenge, at) = self.open.remove(i);
        if at.elapsed() >= TTL {
            return Err("the challenge expired (120 s)");
        }
        let Some(key) = key else {
            return Err("no HMAC key: there is no rebaseline authority to prove");
        };
        if Authority::derive(key.bytes()).verify(&challenge, REBASELINE, &proof.proof) {
            Ok(())
        } else {
            Err("the proof was not made with this appliance's rebaseline authority")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_challenge_authorises_one_right_proof_once() {
        let key = Key::for_test(b"an HMAC key of thirty-two bytes!".to_vec());
        let mut c = Challenges::default();
        let challenge = c.issue().expect("random");
        let right = Proof {
            challenge: challenge.clone(),
            proof: Authority::derive(key.bytes()).prove(&challenge, REBASELINE),
        };
        assert!(c.redeem(Some(&key), &right).is_ok());
        assert!(c.redeem(Some(&key), &right).is_err(), "spent");
        // A wrong proof spends its challenge too: no second guess.
        let challenge = c.issue().expect("random");
        let wrong = Proof {
            challenge: challenge.clone(),
            proof: "0".repeat(64),
        };
        assert!(c.redeem(Some(&key), &wrong).is_err());
        let late = Proof {
            challenge,
            proof: Authority::derive(key.bytes()).prove(&wrong.challenge, REBASELINE),
        };
        assert!(
            c.redeem(Some(&key), &late).is_err(),
            "spent by the wrong guess"
        );
        // Never more than MAX_OPEN open: the oldest goes.
        let first = c.issue().expect("random");
        for _ in 0..MAX_OPEN {
            c.issue().expect("random");
        }
        let pushed_out = Proof {
            proof: Authority::derive(key.bytes()).prove(&first, REBASELINE),
            challenge: first,
        };
        assert!(c.redeem(Some(&key), &pushed_out).is_err());
    }
}
