//! missiongate control plane.
//!
//! This crate ships the **reference Mission authority** (SPEC §1, "State authority"): it holds
//! Missions and their lifecycle, signs Mission-bound access tokens (RFC 9068), answers Mission Status
//! requests (`draft-mcguinness-oauth-mission-status`) and publishes state changes as signed SETs
//! (RFC 8417) over RFC 8936 poll delivery. The filter talks to it only through those wire contracts.
//!
//! Layout:
//! - [`mission`]: the domain (Mission Intent validation, integrity anchors, the state machine, audiences);
//! - [`store`]: persistence (SQLite today), behind a small backend-neutral API;
//! - [`keys`]: the signing key ring and the JWKS it publishes;
//! - [`dpop`]: RFC 9449 proof checks at the token endpoint;
//! - [`authority`]: the service that ties them together (create, transition, mint, status, events);
//! - [`access`], [`access_store`]: the AuthZEN PDP and the Access Request Service (requestable
//!   denials, tasks, grants);
//! - [`gateway`]: who may call the gateway surfaces (PDP, Mission Status, event feed);
//! - [`http`]: the axum router, one module per area (Mission authority, access requests and the
//!   Captive Portal API, the approver pages, operations), with one error type for every answer;
//! - [`cli`] and [`client`]: the command line, both the server and an HTTP client of it.

pub mod access;
pub mod access_store;
pub mod authority;
pub mod cli;
pub mod client;
pub mod dpop;
pub mod gateway;
pub mod gateway_ca;
pub mod http;
pub mod keys;
pub mod metrics;
pub mod mission;
pub mod notify;
pub mod ready;
pub mod serve;
pub mod store;
pub mod util;
