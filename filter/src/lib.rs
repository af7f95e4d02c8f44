//! missiongate proxy-wasm host layer: thin glue that maps Envoy callbacks onto `missiongate-core`.
//!
//! - [`root`]: the root context (configure, tick, counters).
//! - [`stream`]: the HTTP context; each request is a `missiongate_core::stream::Stream` state
//!   machine, which decides when the request may go on (the core holds every undecided request
//!   against headers, body, trailers and tunnel data alike).
//! - [`callouts`]: JWKS, Mission Status, event and PDP callouts, coalesced per VM.
//! - [`shared`]: the bounded replay ledger and decision cache in Envoy's shared data.
//! - [`abi`]: the host calls, none of which can panic on what the host returns.
//!
//! Hot path (token seen before, Mission state cached): one call for all request headers, one for
//! the clock (read once per callback, [`Vm::now`]), one to put evidence in filter state, optionally
//! one log line. Counters are kept in the VM and flushed to Envoy stats on the tick, never per
//! request. `make bench-hostcalls-only` counts them per path.

mod abi;
mod callouts;
mod root;
mod shared;
mod stream;

use missiongate_core::config::EvidenceLog;
use missiongate_core::decision::{Decision, Denial, Evidence, Reason, Response};
use missiongate_core::engine::Need;
use missiongate_core::stream::Stream;
use missiongate_core::verifier::HostVerifier;
use missiongate_core::Engine;
use proxy_wasm::traits::RootContext;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use callouts::Kind;

proxy_wasm::main! {{
    std::panic::set_hook(Box::new(|info| {
        abi::log(abi::Level::Critical, &format!("missiongate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(root::Root::new(context_id)) });
}}

fn log(level: abi::Level, msg: &str) {
    abi::log(level, msg);
}

/// A dispatched callout: what it is for, the context whose callback dispatched it (the SDK routes
/// the answer there) and the context that was effective (Envoy cancels it when that one goes).
#[derive(Debug, Clone)]
struct Dispatched {
    kind: Kind,
    routed_to: u32,
    owned_by: u32,
}

/// State shared by the root and HTTP contexts of one plugin in one VM.
#[derive(Default)]
struct Vm {
    engine: RefCell<Option<Engine>>,
    /// The state machine of every live request, by context id.
    streams: RefCell<HashMap<u32, Stream>>,
    /// token -> callout
    callouts: RefCell<HashMap<u32, Dispatched>>,
    /// need -> waiting contexts
    waiters: RefCell<HashMap<Need, std::collections::BTreeSet<u32>>>,
    /// Needs whose callout died with its owner; the root re-dispatches them.
    orphans: RefCell<Vec<Need>>,
    /// Requests whose PDP callout died with the context that dispatched it; the root asks again.
    pdp_lost: RefCell<Vec<u32>>,
    events_in_flight: RefCell<HashMap<usize, bool>>,
    metrics: RefCell<HashMap<String, u32>>,
    /// The host verifier the engine uses, if the probe chose it: its tally is flushed as
    /// `verify.foreign`.
    verifier: RefCell<Option<Rc<HostVerifier>>>,
    root_id: Cell<u32>,
    /// The context whose callback is running (the SDK routes a callout's answer to it).
    active: Cell<u32>,
    /// The context host calls act on now (Envoy ties a callout to it).
    effective: Cell<u32>,
    evidence_log: Cell<Option<EvidenceLog>>,
    /// Gateway errors refused while no engine could count them (flushed as `decision.gateway_error`).
    uncounted: Cell<u64>,
    /// The clock (Unix seconds) as read in the running callback: read once per callback, not once
    /// per use (the request headers and the decision used to read it twice).
    clock: Cell<Option<i64>>,
    /// The last clock reading of any callback (the tick reads it every 200 ms).
    last_clock: Cell<i64>,
}

impl Vm {
    /// A callback of context `ctx` starts.
    fn enter(&self, ctx: u32) {
        self.active.set(ctx);
        self.effective.set(ctx);
        self.clock.set(None);
    }

    /// Unix seconds, read from the host at most once per callback.
    fn now(&self) -> i64 {
        if let Some(t) = self.clock.get() {
            return t;
        }
        let t = abi::now_secs();
        self.clock.set(Some(t));
        self.last_clock.set(t);
        t
    }

    /// The last clock reading of this VM (at most a tick old), without a host call; the clock
    /// itself if it was never read. For events whose `now` the core does not use (a body chunk
    /// that neither ends the body nor is the first over the limit: the core only buffers it).
    fn recent_now(&self) -> i64 {
        match (self.clock.get(), self.last_clock.get()) {
            (Some(t), _) => t,
            (None, 0) => self.now(),
            (None, t) => t,
        }
    }

    /// Make `ctx` the effective context; `false` when it is gone.
    fn switch_to(&self, ctx: u32) -> bool {
        if self.effective.get() == ctx {
            return true;
        }
        if abi::set_effective_context(ctx).is_err() {
            return false;
        }
        self.effective.set(ctx);
        true
    }

    /// A refusal the host or the state machine found (an oversized body, a failed host call, a
    /// busy or unconfigured engine): problem+json like every denial, with evidence and its counter.
    /// Without an engine to render it (re-entrant call, not configured) the same answer is rendered
    /// with the default realm and counted here.
    fn refusal(&self, reason: Reason, detail: &str) -> (Response, Evidence) {
        let now = self.now();
        let out = self.engine.try_borrow_mut().ok().and_then(|mut g| g.as_mut().map(|e| e.refuse(reason, detail, now)));
        match out {
            Some(x) => x,
            None => {
                self.uncounted.set(self.uncounted.get().saturating_add(1));
                let ev = Evidence {
                    decision_id: "unavailable".to_owned(),
                    decision: Decision::Deny,
                    reason,
                    status: reason.status(),
                    at: now,
                    ..Evidence::default()
                };
                (Denial::new(reason, detail).render("missiongate", None, "unavailable"), ev)
            }
        }
    }

    fn evidence(&self, ev: &Evidence) {
        let json = ev.to_json();
        if let Err(e) = abi::set_property("missiongate.evidence", json.as_bytes()) {
            log(abi::Level::Debug, &format!("missiongate: set_property failed: status {}", e.0));
        }
        let log_it = match self.evidence_log.get() {
            Some(EvidenceLog::All) | None => true,
            Some(EvidenceLog::Denials) => ev.decision != Decision::Allow,
            Some(EvidenceLog::Off) => false,
        };
        if log_it {
            log(abi::Level::Info, &format!("missiongate evidence {json}"));
        }
        // Shadow mode: say plainly what enforcing would have done (at the evidence-log level, so
        // `evidence.log: off` silences it too; the counter `shadow.would_deny.<reason>` always counts).
        if ev.would_deny() && !matches!(self.evidence_log.get(), Some(EvidenceLog::Off)) {
            log(
                abi::Level::Info,
                &format!(
                    "missiongate shadow: would deny {} (status {}) decision {} destination {} action {} mission {}: enforcing would have refused this request; it was forwarded",
                    ev.reason,
                    ev.status,
                    ev.decision_id,
                    ev.destination.as_deref().unwrap_or("-"),
                    ev.action.as_deref().unwrap_or("-"),
                    ev.mission_id.as_deref().unwrap_or("-"),
                ),
            );
        }
    }
}

/// Send a local reply for the effective context; if Envoy refuses it, reset the stream rather than
/// leave it paused (or let it through).
fn send(resp: &Response) {
    if let Err(e) = abi::send_local_response(resp.status, &resp.headers, &resp.body) {
        log(abi::Level::Error, &format!("missiongate: send_local_response failed: status {}", e.0));
        if let Err(e) = abi::reset_request() {
            log(abi::Level::Error, &format!("missiongate: reset failed too: status {}", e.0));
        }
    }
}
