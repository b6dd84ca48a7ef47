//! What both integrity-monitor processes do to themselves before they serve: give up every
//! privilege, install their seccomp filters (kept as data, per architecture), and log so that
//! journald keeps each line's priority.
#![deny(unsafe_code)]
// A silent `as` that truncates, wraps or drops a sign is a wrong number nobody sees; each
// conversion here says what happens when it does not fit. (The hasher is not held to it yet:
// its sites are in the files being changed for another issue.)
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
