//! What the hasher keeps and what it holds secret: the baseline store, anchored in the TPM's counter (`anchor`), and its generation record (`store`), the baseline's life as it records it (`ledger`: what loading found, the next generation), the signed side-file format (`sidefile`), the HMAC key (`key`), the service token (`token`), where both come from and which modes are accepted (`credentials`), and the rebaseline authority's one-time challenges (`authority`).
//!
//! May call: `reading` (bounded reads of secrets, and remembering them), `tpm` (the counter).

pub mod anchor;
pub mod authority;
pub mod credentials;
pub mod key;
pub mod ledger;
pub mod sidefile;
pub mod store;
pub mod token;
