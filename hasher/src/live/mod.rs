//! Live detection and the line to the api: inotify (`watch`), the sentinel thread that announces a write while a request is answered (`sentinel`), the SEQPACKET channel (`channel`), and a step of the wall clock (`clock`).
//!
//! May call: `reading`.

pub mod channel;
pub mod clock;
pub mod sentinel;
pub mod watch;
