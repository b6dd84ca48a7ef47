//! The TPM: the monitor's NV counter, which anchors the baseline's generation below root's
//! reach (a counter only goes up). `wire` marshals the few TPM 2.0 commands used (pure),
//! `device` carries them to `/dev/tpmrm0` (or a swtpm socket in tests), `counter` is the
//! monitor's index and what is done to it.
//!
//! A leaf: calls no other group (`storing` calls it).

mod counter;
mod device;
#[cfg(test)]
mod swtpm;
mod wire;

// The face: what the rest of the crate names (the TPM's response codes storing and enrolment
// explain to the operator; the anchor's tests define a rogue index and run a swtpm).
pub(crate) use counter::{Counter, Found, DEFAULT_INDEX};
pub(crate) use device::{Device, DeviceError, DEFAULT_DEVICE};
#[cfg(test)]
pub(crate) use swtpm::Swtpm;
#[cfg(test)]
pub(crate) use wire::{attr, define_space, NvPublic};
pub(crate) use wire::{RC_AUTH_FAIL, RC_BAD_AUTH, RC_NV_SPACE};
