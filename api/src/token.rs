//! The api's gate for token-protected endpoints. It holds no token: the hasher, which reads
//! the service token, hands over its SHA-256, and the api compares the SHA-256 of what a client
//! presents, in constant time (`protocol::token`, the one check both processes use). The
//! hasher makes a baseline only for a proof of the rebaseline authority, which the api never
//! sees.

pub use protocol::token::Token;
