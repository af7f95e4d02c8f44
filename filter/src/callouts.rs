//! Callouts (JWKS, Mission Status, events, PDP), coalesced per VM.
//!
//! The first request that needs a shared fetch dispatches it, later ones wait for the same answer.
//! Waiting requests are driven (resumed or answered) from whichever context receives the answer,
//! via `set_effective_context`. If a callout's context goes away (Envoy then cancels it, or the SDK
//! can no longer route its answer), the root context dispatches it again on the next tick; waiters
//! never wait longer than the callout timeout plus a margin (their state machine's deadline).

use crate::{abi, log, Dispatched, Vm};
use missiongate_core::config::KeySource;
use missiongate_core::engine::{Callout, Need, PdpAnswer};
use missiongate_core::stream::State;
use std::time::Duration;

/// The most of a callout answer that is read: the largest JWKS `jwks_max_bytes` allows (4 MiB).
const MAX_CALLOUT_BODY: usize = 4 * 1024 * 1024;

/// What a dispatched callout is for.
#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Jwks(usize),
    Status(usize, String, String),
    Events(usize),
    /// A PDP evaluation for one request (context id).
    Pdp(u32),
}

impl Kind {
    fn need(&self) -> Option<Need> {
        match self {
            Kind::Jwks(i) => Some(Need::Keys(*i)),
            Kind::Status(i, id, _) => Some(Need::Status(*i, id.clone())),
            Kind::Events(_) | Kind::Pdp(_) => None,
        }
    }
}

fn dispatch_raw(c: &Callout) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = if c.body.is_empty() { None } else { Some(c.body.as_slice()) };
    crate::abi::counted();
    proxy_wasm::hostcalls::dispatch_http_call(&c.cluster, headers, body, vec![], Duration::from_millis(c.timeout_ms))
        .map_err(|e| format!("{e:?}"))
}

impl Vm {
    /// Dispatch a callout with the root context effective, then switch back. Envoy cancels a
    /// callout, without an answer, when the context it was made from goes away, and the SDK then
    /// keeps its token forever (it forgets a token only when an answer comes): a client resetting
    /// requests while their callouts are under way would grow the VM without bound. The root lives as
    /// long as the VM, so every callout ends in an answer or its timeout; the SDK still routes the
    /// answer to the request that dispatched it (and drops it if that one is gone, which `forget`
    /// turns into a dispatch again from the root).
    fn dispatch(&self, c: &Callout) -> Result<u32, String> {
        let current = self.effective.get();
        let root = self.root_id.get();
        if current != root && !self.switch_to(root) {
            return Err("the root context is not available".into());
        }
        let token = dispatch_raw(c);
        if current != root && !self.switch_to(current) {
            log(abi::Level::Warn, "missiongate: could not switch back to the request after a dispatch");
        }
        token
    }

    fn register(&self, token: u32, kind: Kind) {
        // Every callout is made with the root effective (see `dispatch`).
        let d = Dispatched { kind, routed_to: self.active.get(), owned_by: self.root_id.get() };
        self.callouts.borrow_mut().insert(token, d);
    }

    fn timeout_ms(&self, need: &Need) -> u64 {
        let guard = self.engine.borrow();
        let Some(e) = guard.as_ref() else { return 1000 };
        match need {
            Need::Keys(i) => match e.config.issuers.get(*i).map(|x| &x.keys) {
                Some(KeySource::Remote { upstream, .. }) => upstream.timeout_ms,
                _ => 1000,
            },
            Need::Status(i, _) => e
                .config
                .issuers
                .get(*i)
                .and_then(|x| x.mission_authority.as_ref())
                .map_or(1000, |m| m.status.timeout_ms),
            Need::Pdp(c) => c.timeout_ms,
            Need::Body => 1000,
        }
    }

    /// Request `ctx` waits for `need`; dispatch it if nobody has. Its timeout, or `None` when it
    /// could not be dispatched.
    pub(crate) fn wait(&self, ctx: u32, need: &Need) -> Option<u64> {
        let first = {
            let mut w = self.waiters.borrow_mut();
            let list = w.entry(need.clone()).or_default();
            list.insert(ctx);
            list.len() == 1
        };
        if first && !self.dispatch_need(need) {
            let mut w = self.waiters.borrow_mut();
            if let Some(list) = w.get_mut(need) {
                list.remove(&ctx);
                if list.is_empty() {
                    w.remove(need);
                }
            }
            return None;
        }
        Some(self.timeout_ms(need))
    }

    /// Dispatch request `ctx`'s PDP evaluation.
    pub(crate) fn dispatch_pdp(&self, ctx: u32, c: &Callout) -> bool {
        match self.dispatch(c) {
            Ok(token) => {
                self.register(token, Kind::Pdp(ctx));
                true
            }
            Err(e) => {
                log(abi::Level::Warn, &format!("missiongate: dispatch to PDP cluster {} failed: {e}", c.cluster));
                false
            }
        }
    }

    /// Dispatch the callout for a need. On failure the engine is told (so the retry denies).
    fn dispatch_need(&self, need: &Need) -> bool {
        let now = self.now();
        let built = {
            let mut guard = self.engine.borrow_mut();
            let Some(engine) = guard.as_mut() else { return false };
            if let Need::Keys(i) = need {
                if engine.keys.issuer_in_flight(*i) {
                    // A fetch (the periodic one, or another request's) is already under way: its
                    // answer completes this need too.
                    return true;
                }
            }
            match need {
                Need::Keys(i) => engine.jwks_callout(*i, now).map(|c| (c, Kind::Jwks(*i))),
                Need::Status(i, id) => {
                    engine.status_callout(*i, id).map(|(c, nonce)| (c, Kind::Status(*i, id.clone(), nonce)))
                }
                Need::Body | Need::Pdp(_) => None,
            }
        };
        let Some((callout, kind)) = built else { return false };
        match self.dispatch(&callout) {
            Ok(token) => {
                self.register(token, kind);
                true
            }
            Err(e) => {
                log(abi::Level::Warn, &format!("missiongate: dispatch to cluster {} failed: {e}", callout.cluster));
                self.apply_answer(&kind, None, &[], now);
                false
            }
        }
    }

    fn apply_answer(&self, kind: &Kind, status: Option<u16>, body: &[u8], now: i64) -> Option<usize> {
        let mut guard = self.engine.borrow_mut();
        let engine = guard.as_mut()?;
        match kind {
            Kind::Jwks(i) => {
                if let Err(e) = engine.on_jwks(*i, status, body, now) {
                    log(abi::Level::Warn, &format!("missiongate: JWKS of issuer #{i}: {e}"));
                }
                for m in engine.take_jwks_refused(*i) {
                    log(abi::Level::Warn, &format!("missiongate: JWKS of issuer #{i}: {m}"));
                }
                None
            }
            Kind::Status(i, id, nonce) => {
                let outcome = engine.on_status(*i, id, nonce, status, body, now);
                if let Some(line) = outcome.log {
                    log(abi::Level::Warn, &format!("missiongate: {line}"));
                }
                outcome.refetch_keys
            }
            Kind::Events(i) => {
                let (_, _more, refetch) = engine.on_events(*i, status, body, now);
                self.events_in_flight.borrow_mut().insert(*i, false);
                refetch
            }
            Kind::Pdp(_) => None,
        }
    }

    /// Drive every request waiting for `need` (its fetch finished, failed or timed out).
    pub(crate) fn complete_need(&self, need: &Need, now: i64) {
        let list = self.waiters.borrow_mut().remove(need).unwrap_or_default();
        for ctx in list {
            self.drive_from_afar(ctx, |m, g| m.on_callout_done(g, need, now));
        }
        self.switch_back();
    }

    /// A callout answered (or failed: status None).
    pub(crate) fn on_response(&self, token: u32, body_size: usize) {
        let Some(Dispatched { kind, .. }) = self.callouts.borrow_mut().remove(&token) else { return };
        let status = abi::header_pairs(abi::Map::CallResponseHeaders)
            .ok()
            .and_then(|pairs| pairs.into_iter().find(|(k, _)| k == b":status"))
            .and_then(|(_, v)| std::str::from_utf8(&v).ok().and_then(|s| s.parse::<u16>().ok()));
        // Never more than the largest answer any parser takes (a JWKS within its configurable
        // limit): one byte over is enough for the engine to refuse an answer as too large.
        let body = if body_size > 0 {
            abi::buffer(abi::Buffer::CallResponseBody, body_size.min(MAX_CALLOUT_BODY + 1)).unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = self.now();
        let refetch = if matches!(kind, Kind::Pdp(_)) { None } else { self.apply_answer(&kind, status, &body, now) };
        if let Some(i) = refetch {
            self.start_jwks(i);
        }
        match &kind {
            Kind::Pdp(ctx) => {
                let answer = PdpAnswer { status, body };
                self.drive_from_afar(*ctx, |m, g| m.on_pdp_answer(g, answer, now));
                self.switch_back();
            }
            Kind::Events(i) => {
                // Re-arm the poll; if the authority failed, the tick retries after a pause.
                if status == Some(200) {
                    self.poll_events(*i, false);
                }
            }
            other => {
                if let Some(need) = other.need() {
                    self.complete_need(&need, now);
                }
            }
        }
    }

    pub(crate) fn start_jwks(&self, issuer: usize) {
        let need = Need::Keys(issuer);
        if self.waiters.borrow().contains_key(&need) {
            return;
        }
        self.dispatch_need(&need);
    }

    pub(crate) fn poll_events(&self, issuer: usize, immediately: bool) {
        if self.events_in_flight.borrow().get(&issuer).copied().unwrap_or(false) {
            return;
        }
        let callout = {
            let mut guard = self.engine.borrow_mut();
            guard.as_mut().and_then(|e| e.events_callout(issuer, immediately))
        };
        let Some(c) = callout else { return };
        match self.dispatch(&c) {
            Ok(token) => {
                self.events_in_flight.borrow_mut().insert(issuer, true);
                self.register(token, Kind::Events(issuer));
            }
            Err(e) => log(abi::Level::Warn, &format!("missiongate: event poll dispatch failed: {e}")),
        }
    }

    /// A context is going away: forget its request; callouts tied to it become orphans for the
    /// root to redo.
    pub(crate) fn forget(&self, ctx: u32) {
        if let Some(mut m) = self.streams.borrow_mut().remove(&ctx) {
            m.on_gone();
        }
        // Lists left empty go too: a list under a need means "a fetch for it is being waited for",
        // and an empty one would keep the periodic JWKS refresh from ever starting again.
        self.waiters.borrow_mut().retain(|_, list| {
            list.remove(&ctx);
            !list.is_empty()
        });
        let mut orphaned = Vec::new();
        let mut lost = Vec::new();
        let mut events = Vec::new();
        self.callouts.borrow_mut().retain(|_, d| {
            if d.routed_to != ctx && d.owned_by != ctx {
                return true;
            }
            match &d.kind {
                Kind::Pdp(w) => {
                    if *w != ctx {
                        lost.push(*w);
                    }
                }
                Kind::Events(i) => events.push(*i),
                other => {
                    if let Some(n) = other.need() {
                        orphaned.push(n);
                    }
                }
            }
            false
        });
        self.pdp_lost.borrow_mut().extend(lost);
        for i in events {
            self.events_in_flight.borrow_mut().insert(i, false);
        }
        let waiters = self.waiters.borrow();
        for n in orphaned {
            if waiters.get(&n).is_some_and(|l| !l.is_empty()) {
                self.orphans.borrow_mut().push(n);
            } else if let Need::Keys(i) = n {
                // Nobody waits, but the engine still thinks a fetch is under way.
                if let Some(ik) = self.engine.borrow_mut().as_mut().and_then(|e| e.keys.issuer_mut(i)) {
                    ik.in_flight = false;
                }
            }
        }
    }

    /// The root's periodic work for requests and callouts.
    // Kept out of line (with `drive_from_afar`): inlined into the tick they made one ~12 KB function
    // that V8's TurboFan compiled about 4x slower per byte than the module's average (VMSTART-FINDINGS.md).
    #[inline(never)]
    pub(crate) fn tick_requests(&self, now: i64) {
        // Orphaned callouts: dispatch again from the root.
        let orphans: Vec<Need> = self.orphans.borrow_mut().drain(..).collect();
        for n in orphans {
            if let Need::Keys(i) = n {
                if let Some(ik) = self.engine.borrow_mut().as_mut().and_then(|e| e.keys.issuer_mut(i)) {
                    ik.in_flight = false;
                }
            }
            if !self.dispatch_need(&n) {
                self.complete_need(&n, now);
            }
        }
        // PDP evaluations lost with their dispatching context: ask again.
        let lost: Vec<u32> = self.pdp_lost.borrow_mut().drain(..).collect();
        for ctx in lost {
            self.drive_from_afar(ctx, |m, g| m.on_pdp_lost(g, now));
        }
        // Waits past their deadline: a shared fetch that is that late is given up for every waiter
        // (each then decides without it: 503); a PDP that late is answered as unavailable.
        let (late_needs, late_pdp) = {
            let streams = self.streams.borrow();
            let mut needs = Vec::new();
            let mut pdp = Vec::new();
            for (ctx, m) in streams.iter() {
                match m.state() {
                    State::WaitingCallout { need, deadline } if *deadline < now && !needs.contains(need) => {
                        needs.push(need.clone())
                    }
                    State::WaitingPdp { deadline } if *deadline < now => pdp.push(*ctx),
                    _ => {}
                }
            }
            (needs, pdp)
        };
        for n in late_needs {
            let list = self.waiters.borrow_mut().remove(&n).unwrap_or_default();
            // Every request waiting for it, in the list or not (its deadline is what counts).
            let stuck: std::collections::BTreeSet<u32> = {
                let streams = self.streams.borrow();
                let mut s: std::collections::BTreeSet<u32> = streams
                    .iter()
                    .filter(|(_, m)| matches!(m.state(), State::WaitingCallout { need, .. } if *need == n))
                    .map(|(c, _)| *c)
                    .collect();
                s.extend(list);
                s
            };
            for ctx in stuck {
                self.drive_from_afar(ctx, |m, g| m.on_callout_done(g, &n, now));
            }
        }
        for ctx in late_pdp {
            self.callouts.borrow_mut().retain(|_, d| !matches!(d.kind, Kind::Pdp(c) if c == ctx));
            self.drive_from_afar(ctx, |m, g| m.on_tick(g, now));
        }
        self.switch_back();
    }
}
