//! Reading a file's bytes, and nothing else: opening it with no symlink followed (`resolve`), streaming it through one buffer under the shared read budget (`reader`, `budget`), noticing a write mid-read (`current`), clean pages before a read that proves a changed file (`proof`), large files by their chunks (`chunks`), reads issued ahead (`ahead`), small bounded reads of configuration and secrets (`fsread`), what a file's filesystem lets its metadata say (`fskind`), what a read found (`version`), the api's hang-up seen between buffers (`lifeline`), the secrets a read must never give out (`secrets`), those three and the budget handed to every read (`context`), and a file's fs-verity seal (`verity`).
//!
//! May call: nothing of the other groups (the crate's shared `sys`, `error`, `policy` aside).

pub mod ahead;
pub mod budget;
pub mod chunks;
pub mod context;
pub mod current;
pub mod fskind;
pub mod fsread;
pub mod lifeline;
pub mod proof;
pub mod reader;
pub mod resolve;
pub mod secrets;
pub mod verity;
pub mod version;
