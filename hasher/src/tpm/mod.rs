//! The TPM: the monitor's NV counter, which anchors the baseline's generation below root's
//! reach (a counter only goes up). `wire` marshals the few TPM 2.0 commands used (pure),
//! `device` carries them to `/dev/tpmrm0` (or a swtpm socket in tests), `counter` is the
//! monitor's index and what is done to it.
//!
//! A leaf: calls no other group (`storing` calls it).

pub mod counter;
pub mod device;
#[cfg(test)]
pub mod swtpm;
pub mod wire;
