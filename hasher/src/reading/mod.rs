//! Reading a file's bytes, and nothing else: opening it with no symlink followed (`resolve`), streaming it through one buffer under the shared read budget (`reader`, `budget`), noticing a write mid-read (`current`), clean pages before a read that proves a changed file (`proof`), large files by their chunks (`chunks`), reads issued ahead (`ahead`), small bounded reads of configuration and secrets (`fsread`), what a file's filesystem lets its metadata say (`fskind`), what a read found (`version`), the api's hang-up seen between buffers (`lifeline`), the secrets a read must never give out (`secrets`), those three and the budget handed to every read (`context`), and a file's fs-verity seal (`verity`).
//!
//! May call: nothing of the other groups (the crate's shared `sys`, `error`, `policy` aside).

mod ahead;
mod budget;
mod chunks;
mod context;
mod current;
mod fskind;
mod fsread;
mod lifeline;
mod proof;
mod reader;
mod resolve;
mod secrets;
mod verity;
mod version;

// The face: what the verifier, the store, the server and start name (module-named functions
// renamed here: `open_resolved`, `look_seal`, `prepare_proof`, `verify_chunks`); a read's
// outcome is public, for the benches' `FileHasher::check`.
pub(crate) use ahead::Ahead;
#[cfg(test)]
pub(crate) use budget::BUF_SIZE;
pub(crate) use chunks::{verify as verify_chunks, Known, Verdict, CHUNK, MIN_SIZE as MIN_CHUNKED};
pub(crate) use context::ReadContext;
#[cfg(test)]
pub(crate) use current::write_later;
pub(crate) use current::{changed_outcome, CHANGED_WHILE_READ};
pub(crate) use fskind::{FsKind, Kinds};
pub(crate) use fsread::{
    read_bounded, read_bounded_file, read_bounded_text, read_secret_file, ReadError,
};
pub(crate) use lifeline::{ApiGone, Lifeline};
pub(crate) use proof::{prepare as prepare_proof, Proof};
pub(crate) use reader::{is_long, ReadResult, Reader};
pub(crate) use resolve::{open as open_resolved, open_no_symlinks};
pub(crate) use secrets::Secrets;
pub(crate) use verity::{look as look_seal, Seal, Sealing};
pub use version::{Outcome, Version};
