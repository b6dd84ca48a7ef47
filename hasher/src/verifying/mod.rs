//! Deciding whether the files are the ones the baseline names: full sweeps and new baselines (`scan`), checks of the named paths (`rescan`), the sweep spread over its interval (`spread`), model dirs walked with bounds (`walk`), the model registry (`registry`), the OS image's release baseline (`release`), and the file memory that makes a check cheap: `hashing` (fast path, backstop, prefetch), `slots`, `settle` (settle reads), sealed files' contents bound to their fs-verity digests (`seals`; directory artifacts: `dirseals`), and what of it is kept in the store for a restart (`remember`: versions.bin; `chunkstore`: chunks.bin; `sealstore`: seals.bin).
//!
//! May call: `reading`, `storing` (the side-file format), `live` (to arm the sentinel for a long read).

pub mod chunkstore;
pub mod cycle;
pub mod dirseals;
pub mod hashing;
pub mod paths;
pub mod reference;
pub mod registry;
pub mod release;
pub mod releasestore;
pub mod remember;
pub mod rescan;
pub mod scan;
pub mod seals;
pub mod sealstore;
pub mod settle;
pub mod slots;
pub mod spread;
pub mod sweep;
pub mod transition;
pub mod verifier;
pub mod vouch;
pub mod walk;
