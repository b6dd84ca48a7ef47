//! What both integrity-monitor processes do to themselves before they serve: give up every
//! privilege, install their seccomp filters (kept as data, per architecture), and log so that
//! journald keeps each line's priority.
#![deny(unsafe_code)]
// The cast lints: why, beside `[workspace.lints]` (Cargo.toml).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod lockfile;
pub mod logging;
pub mod paths;
pub mod privileges;
pub mod seccomp;
/// The fs-verity ioctls: the crate's only unsafe code.
#[allow(unsafe_code)]
pub mod sys;
pub mod verity;
pub mod walls;
