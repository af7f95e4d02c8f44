//! `stack`: the test kit's gateway for test suites written in other languages (the Python client's
//! pytest suite): the real Envoy with the built filter, the real portal and the echo upstream on
//! ephemeral loopback ports. Prints one JSON line with the ports, then runs until its stdin closes
//! (the suite that started it exits or closes the pipe), and stops everything.
//!
//! Usage: `stack [--upstream-port N] [--mcp JSON] [-- <extra portal serve arguments>...]`, e.g.
//! `stack -- --task-ttl-seconds 3`. `--upstream-port`: Envoy's egress cluster goes to this port
//! (an upstream the caller runs, such as an MCP server) instead of the echo upstream. `--mcp JSON`:
//! `api.partner.example` is marked as an MCP server with this `mcp` config object (SPEC section 7,
//! e.g. `{"path": "/mcp", "tools": [{"name": "list_open_invoices", "consequential": false}]}`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_tests::envoy::{Envoy, Opts};
use missiongate_tests::portal::{Portal, OPERATOR_TOKEN};
use missiongate_tests::upstream::Upstream;
use std::io::Read;

/// The shipped config's destination, and the same marked as an MCP server.
const DESTINATION: &str = r#""origin": "https://api.partner.example","#;

fn main() {
    let mut args = std::env::args().skip(1);
    let (mut upstream_port, mut mcp, mut extra) = (None, None, Vec::new());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream-port" => upstream_port = args.next().and_then(|p| p.parse::<u16>().ok()),
            "--mcp" => mcp = args.next(),
            "--" => extra.extend(args.by_ref()),
            other => {
                panic!("unknown argument {other:?} (usage: stack [--upstream-port N] [--mcp JSON] [-- portal args])")
            }
        }
    }
    let up = Upstream::start(None);
    let mut portal_args = vec!["--status-fresh-seconds", "30"];
    portal_args.extend(extra.iter().map(String::as_str));
    let portal = Portal::start(&portal_args);
    let mut opts = Opts { concurrency: 2, events: true, pdp: true, ..Opts::default() };
    if let Some(config) = &mcp {
        let config: serde_json::Value = serde_json::from_str(config).expect("--mcp takes a JSON object");
        let marked = format!(r#"{DESTINATION} "mcp": {config},"#);
        opts.replace.push((DESTINATION.to_owned(), marked));
    }
    let envoy = Envoy::start(upstream_port.unwrap_or(up.port), portal.port, opts);
    let info = serde_json::json!({
        "envoy": envoy.port,
        "admin": envoy.admin,
        "portal": portal.port,
        "upstream": upstream_port.unwrap_or(up.port),
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
