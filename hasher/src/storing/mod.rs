//! What the hasher keeps and what it holds secret: the baseline store, anchored in the TPM's counter (`anchor`), and its generation record (`store`), the baseline's life as it records it (`ledger`: what loading found, the next generation), the signed side-file format (`sidefile`), the HMAC key (`key`), the service token (`token`), where both come from and which modes are accepted (`credentials`), and the rebaseline authority's one-time challenges (`authority`).
//!
//! May call: `reading` (bounded reads of secrets, and remembering them), `tpm` (the counter).

mod anchor;
mod authority;
mod credentials;
mod key;
mod ledger;
mod sidefile;
mod store;
mod token;

// The face: the store (and, for `main` and the benches, its default place and `Store` itself),
// the ledger, the anchor's TPM, the secrets and where they come from, the rebaseline authority,
// and the signed side-file format the verifier's own files are written in.
pub(crate) use anchor::Tpm;
pub(crate) use authority::{check as check_proof, Challenges, Pending, TTL as CHALLENGE_TTL};
pub(crate) use credentials::{key_path, token_path};
pub(crate) use key::{load as load_key, load_in_use as load_key_in_use, Key};
pub(crate) use ledger::{summary as ledger_summary, Ledger};
pub(crate) use sidefile::{
    header as sidefile_header, put_path, read_records, write as write_sidefile, Reading,
};
pub(crate) use store::Loaded;
pub use store::{Current, Store, DEFAULT_STATE_DIR};
pub(crate) use token::{load as load_token, load_in_use as load_token_in_use, Token};
