//! Live detection and the line to the api: inotify (`watch`), the sentinel thread that announces a write while a request is answered (`sentinel`), the SEQPACKET channel (`channel`), and a step of the wall clock (`clock`).
//!
//! May call: `reading`.

mod channel;
mod clock;
mod sentinel;
mod watch;

// The face: the channel to the api, the clock's watch, the sentinel and its arm, the watcher
// and the changes it drains.
pub(crate) use channel::{Channel, RecvError};
pub(crate) use clock::ClockWatch;
pub(crate) use sentinel::{Arm, Sentinel};
pub(crate) use watch::{Changes, Watcher};
