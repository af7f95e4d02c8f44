//! missiongate wire contract (`SPEC.md`): the one place where the types that cross the wire live.
//!
//! Filter, portal and tests all depend on this crate so the two sides cannot drift. It has no
//! proxy-wasm dependency and takes no clock or randomness of its own: callers pass them in
//! (the optional `sign` feature, for the portal and tests, uses the OS RNG).

pub mod authzen;
pub mod b64;
pub mod claims;
pub mod constraints;
pub mod decimal;
pub mod digest;
pub mod dpop;
pub mod jcs;
mod jcs_stream;
pub mod jose;
pub mod jws;
pub mod p256_fast;
pub mod problem;
pub mod rar;
pub mod time;
pub mod uri;
