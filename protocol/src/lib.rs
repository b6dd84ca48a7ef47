//! Messages between the integrity-monitor api and its hasher, and the signed artifacts they carry.
//!
//! No I/O lives here: the crate turns typed messages into bounded datagrams and back, and defines
//! the exact bytes the HMAC key signs, so both processes (and offline tools) agree on them.
#![forbid(unsafe_code)]
// The cast lints: why, beside `[workspace.lints]` (Cargo.toml).
#![warn(
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss,
    clippy::cast_possible_wrap
)]

pub mod attest;
pub mod authority;
pub mod baseline;
pub mod category;
pub mod entries;
pub mod finding;
pub mod fleet;
pub mod frame;
pub mod generation;
pub mod hexfmt;
pub mod message;
pub mod plan;
pub mod report;
pub mod sign;
pub mod standing;
pub mod token;

pub use category::{Action, Category};
pub use finding::{Actual, Finding};
pub use frame::{FrameError, Reassembler, MAX_FRAME, MAX_MESSAGE};
pub use message::{Envelope, Request, Response, PROTOCOL_VERSION};
