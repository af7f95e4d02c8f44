//! `stack`: the test kit's gateway for test suites written in other languages (the Python client's
//! pytest suite): the real Envoy with the built filter, the real portal and the echo upstream on
//! ephemeral loopback ports. Prints one JSON line with the ports, then runs until its stdin closes
//! (the suite that started it exits or closes the pipe), and stops everything.
//!
//! Usage: `stack [-- <extra portal serve arguments>...]`, e.g. `stack -- --task-ttl-seconds 3`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::portal::{Portal, OPERATOR_TOKEN};
use missiongate_tests::upstream::Upstream;
use std::io::Read;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| a != "--").collect();
    let extra: Vec<&str> = args.iter().map(String::as_str).collect();
    let up = Upstream::start(None);
    let mut portal_args = vec!["--status-fresh-seconds", "30"];
    portal_args.extend(extra);
    let portal = Portal::start(&portal_args);
    let envoy = Envoy::start(up.port, portal.port, Opts { concurrency: 2, events: true, pdp: true, ..Opts::default() });
    let info = serde_json::json!({
        "envoy": envoy.port,
        "admin": envoy.admin,
        "portal": portal.port,
        "upstream": up.port,
        "operator_token": OPERATOR_TOKEN,
        "envoy_log": envoy.log.display().to_string(),
        "portal_log": portal.db.with_extension("log").display().to_string(),
    });
    println!("{info}");
    // Until the parent closes our stdin (or dies: every child is killed with us, see `spawn`).
    let mut sink = Vec::new();
    let _ = std::io::stdin().read_to_end(&mut sink);
    drop(envoy);
    drop(portal);
}
