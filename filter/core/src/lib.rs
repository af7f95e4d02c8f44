//! missiongate pure core: token checks, Mission state, authority matching, decisions and evidence.
//!
//! No proxy-wasm dependency. The clock (`now`, Unix seconds) and randomness (a seed) are inputs, so
//! the core behaves the same natively, inside Envoy and in tests.

pub mod authority;
pub mod config;
pub mod config_error;
pub mod constraints;
pub mod decision;
pub mod destinations;
pub mod dpop;
pub mod engine;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod head;
pub mod jsonrpc;
pub mod keys;
pub mod ledger;
pub mod mcp;
pub mod mission;
pub mod stream;
pub mod tables;
pub mod token;
pub mod verifier;
pub use missiongate_wire::uri;

pub use config::{Config, ConfigError};
pub use engine::{Attempts, Authz, Engine, Need, Outcome, ReplayGuard, Request, Seeds};
