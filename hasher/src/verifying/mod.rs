//! Deciding whether the files are the ones the baseline names: full sweeps and new baselines (`scan`), checks of the named paths (`rescan`), the sweep spread over its interval (`spread`), model dirs walked with bounds (`walk`), the model registry (`registry`), the OS image's release baseline (`release`), and the file memory that makes a check cheap: `hashing` (fast path, backstop, prefetch), `slots`, `settle` (settle reads), sealed files' contents bound to their fs-verity digests (`seals`; directory artifacts: `dirseals`), and what of it is kept in the store for a restart (`remember`: versions.bin; `chunkstore`: chunks.bin; `sealstore`: seals.bin).
//!
//! May call: `reading`, `storing` (the side-file format), `live` (to arm the sentinel for a long read).

mod chunkstore;
mod cycle;
mod dirseals;
mod hashing;
mod paths;
mod reference;
mod registry;
mod release;
mod releasestore;
mod remember;
mod rescan;
mod scan;
mod seals;
mod sealstore;
mod settle;
mod slots;
mod spread;
mod sweep;
mod transition;
mod verifier;
mod vouch;
mod walk;

// The face: what the server, start and checkconfig name (module-named functions renamed here:
// `build_reference`, `load_releases`, `keep_releases`, `plan_transition`, `transition_agrees`,
// `read_vouch`); public for the benches (`Verifier`, `FileHasher`, `Given`, `Outcome`) and the
// fuzz test (`Registry::load`, `check_release`).
pub(crate) use hashing::read_kernel_window;
pub use hashing::{FileHasher, Given, Outcome};
pub(crate) use paths::now_rfc3339;
pub(crate) use reference::build as build_reference;
pub use registry::Registry;
pub use release::check_release;
pub(crate) use release::Release;
pub(crate) use releasestore::{keep as keep_releases, load as load_releases, InForce};
pub(crate) use remember::boot_id;
pub(crate) use slots::Slot;
pub(crate) use transition::{agrees as transition_agrees, plan as plan_transition};
pub(crate) use verifier::Keeping;
pub use verifier::Verifier;
pub(crate) use vouch::{read_for as read_vouch, Vouch};
pub(crate) use walk::{Found, Walk};
