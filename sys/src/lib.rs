//! What both integrity-monitor processes do to themselves before they serve: give up every
//! privilege and log so that journald keeps each line's priority.
#![forbid(unsafe_code)]

pub mod logging;
pub mod privileges;
