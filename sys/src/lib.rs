//! What both integrity-monitor processes do to themselves before they serve: give up every
//! privilege, install their seccomp filters (kept as data, per architecture), and log so that
//! journald keeps each line's priority.
#![forbid(unsafe_code)]

pub mod lockfile;
pub mod logging;
pub mod paths;
pub mod privileges;
pub mod seccomp;
pub mod verity;
pub mod walls;
