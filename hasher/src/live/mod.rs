//! Live detection and the line to the api: inotify (`watch`), the sentinel thread that announces a write while a request is answered (`sentinel`), and the SEQPACKET channel (`channel`).
//!
//! May call: `reading`.

pub mod channel;
pub mod sentinel;
pub mod watch;
