//! missiongate proxy-wasm host layer: maps Envoy callbacks onto `missiongate-core`.
//!
//! Hot path (token seen before, Mission state cached): one call for all request headers, one for
//! the clock, one to put evidence in filter state, optionally one log line. Counters are kept in the
//! VM and flushed to Envoy stats on the tick, never per request.
//!
//! Callouts (JWKS, Mission Status) are coalesced per VM: the first request that needs one
//! dispatches it, later ones wait for the same answer. Waiting requests are resumed (or answered)
//! from whichever context receives the answer, via `set_effective_context`. If the dispatching
//! request goes away (Envoy then cancels its callout), the root context dispatches again on the
//! next tick; waiters never wait longer than the callout timeout plus a margin.

use missiongate_core::config::EvidenceLog;
use missiongate_core::decision::ALL_REASONS;
use missiongate_core::decision::{Denial, Evidence, Reason};
use missiongate_core::engine::{Callout, ALL_STATS};
use missiongate_core::engine::{Extra, PdpAnswer};
use missiongate_core::{Attempts, Authz, Config, Engine, Need, Outcome, ReplayGuard, Request};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, BufferType, ContextType, LogLevel, MapType, MetricType};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

const TICK: Duration = Duration::from_millis(200);
const METRIC_PREFIX: &str = "missiongate.";

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    std::panic::set_hook(Box::new(|info| {
        let _ = hostcalls::log(LogLevel::Critical, &format!("missiongate: panic: {info}"));
    }));
    proxy_wasm::set_root_context(|context_id| -> Box<dyn RootContext> { Box::new(Root::new(context_id)) });
}}

fn log(level: LogLevel, msg: &str) {
    let _ = hostcalls::log(level, msg);
}

fn now_secs() -> i64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .unwrap_or(0)
}

/// What a dispatched callout is for.
#[derive(Debug, Clone)]
enum Kind {
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

/// A request the filter has not finished deciding.
#[derive(Default)]
struct Pending {
    headers: Vec<(String, String)>,
    attempts: Attempts,
    body: Option<Vec<u8>>,
    pdp: Option<PdpAnswer>,
}

/// A request waiting for a callout.
struct Waiter {
    pending: Pending,
    deadline: i64,
}

/// What `run` did.
enum Ran {
    /// Allowed: continue the request.
    Continue,
    /// Answered locally, or waiting for a callout.
    Stopped,
    /// The body is needed: buffer it, then run again with it.
    NeedBody(Pending),
}

/// State shared by the root and HTTP contexts of one plugin in one VM.
#[derive(Default)]
struct Vm {
    engine: RefCell<Option<Engine>>,
    /// token -> (kind, owning context)
    callouts: RefCell<HashMap<u32, (Kind, u32)>>,
    /// need -> waiting contexts
    waiters: RefCell<HashMap<Need, Vec<u32>>>,
    waiting: RefCell<HashMap<u32, Waiter>>,
    /// Needs whose callout died with its owner; the root re-dispatches them.
    orphans: RefCell<Vec<Need>>,
    events_in_flight: RefCell<HashMap<usize, bool>>,
    metrics: RefCell<HashMap<String, u32>>,
    /// Undecided requests whose whole body has already arrived (context -> body size).
    eos: RefCell<HashMap<u32, usize>>,
    /// Requests resumed from a callout that now need their body buffered.
    body_waiting: RefCell<HashMap<u32, Pending>>,
    root_id: Cell<u32>,
    /// The context whose callback is running: the SDK routes a callout's answer to the context
    /// that was active when it was dispatched, so that is the callout's owner.
    active: Cell<u32>,
    /// PDP waiters whose callout died with the context that dispatched it; the root redoes them.
    redo: RefCell<Vec<u32>>,
    evidence_log: Cell<Option<EvidenceLog>>,
    /// Gateway errors refused while no engine could count them (flushed as `decision.gateway_error`).
    uncounted: Cell<u64>,
}

/// Single-use memory shared by every worker: Envoy shared data, sharded into buckets.
///
/// Envoy's shared data only compare-and-swaps keys that already exist (a set on an absent key always
/// succeeds), so "insert if absent" cannot be done on a per-jti key without a race. Instead each key
/// hashes to one of `BUCKETS` ledger entries created at configure time, and an insert is a
/// read-modify-write of the ledger with CAS, retried on conflict: exactly one worker wins.
struct SharedReplay;

const BUCKETS: u64 = 64;
const BUCKET_PREFIX: &str = "missiongate.once.";
const MAX_CAS_RETRIES: usize = 16;

fn bucket_key(key: &str) -> String {
    // FNV-1a: stable across workers and builds.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{BUCKET_PREFIX}{}", h % BUCKETS)
}

const DECISION_SLOTS: u64 = 1024;

fn slot_key(key: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("missiongate.decision.{}", h % DECISION_SLOTS)
}

/// Create the ledger buckets that do not exist yet (another worker may have made them already).
fn init_buckets() {
    for i in 0..BUCKETS {
        let k = format!("{BUCKET_PREFIX}{i}");
        if let Ok((None, _)) | Err(proxy_wasm::types::Status::NotFound) = hostcalls::get_shared_data(&k) {
            let _ = hostcalls::set_shared_data(&k, Some(b"#\n"), None);
        }
    }
}

impl ReplayGuard for SharedReplay {
    fn remember(&mut self, key: &str, until: i64, now: i64) -> Result<bool, String> {
        if key.contains('\n') || key.contains(' ') {
            return Err("key has a separator".into());
        }
        let bucket = bucket_key(key);
        for _ in 0..MAX_CAS_RETRIES {
            let (value, cas) = match hostcalls::get_shared_data(&bucket) {
                Ok((v, Some(cas))) if cas != 0 => (v.unwrap_or_default(), cas),
                Ok(_) | Err(proxy_wasm::types::Status::NotFound) => {
                    init_buckets();
                    continue;
                }
                Err(e) => return Err(format!("{e:?}")),
            };
            let text = String::from_utf8_lossy(&value);
            let mut kept = String::with_capacity(text.len() + key.len() + 24);
            for line in text.lines() {
                let Some((exp, k)) = line.split_once(' ') else { continue };
                let exp: i64 = exp.parse().unwrap_or(0);
                if exp <= now {
                    continue; // expired: prune
                }
                if k == key {
                    return Ok(false);
                }
                kept.push_str(line);
                kept.push('\n');
            }
            kept.push_str(&until.to_string());
            kept.push(' ');
            kept.push_str(key);
            kept.push('\n');
            match hostcalls::set_shared_data(&bucket, Some(kept.as_bytes()), Some(cas)) {
                Ok(()) => return Ok(true),
                Err(proxy_wasm::types::Status::CasMismatch) => continue,
                Err(e) => return Err(format!("{e:?}")),
            }
        }
        Err("shared data contention".into())
    }

    // The shared decision cache lives in a fixed number of slots (shared data is never freed, so
    // one key per decision would grow without bound): a slot holds one key and its value, a
    // colliding write replaces it, and a read checks the key.
    fn load(&mut self, key: &str) -> Option<Vec<u8>> {
        let slot = slot_key(key);
        let bytes = hostcalls::get_shared_data(&slot).ok().and_then(|(v, _)| v)?;
        let rest = bytes.strip_prefix(key.as_bytes())?.strip_prefix(b"\n")?;
        Some(rest.to_vec())
    }

    fn store(&mut self, key: &str, value: &[u8]) {
        let mut bytes = Vec::with_capacity(key.len() + 1 + value.len());
        bytes.extend_from_slice(key.as_bytes());
        bytes.push(b'\n');
        bytes.extend_from_slice(value);
        // Last writer wins: entries are whole answers with their own expiry.
        let _ = hostcalls::set_shared_data(&slot_key(key), Some(&bytes), None);
    }
}

fn request_from<'a>(headers: &'a [(String, String)]) -> Request<'a> {
    let mut req = Request {
        method: "",
        scheme: "http",
        authority: "",
        path: "/",
        authorization: Authz::Missing,
        dpop: None,
        dpop_count: 0,
    };
    for (k, v) in headers {
        match k.as_str() {
            ":method" => req.method = v,
            ":scheme" => req.scheme = v,
            ":authority" => req.authority = v,
            ":path" => req.path = v,
            "authorization" => {
                req.authorization = match req.authorization {
                    Authz::Missing => Authz::One(v),
                    _ => Authz::Multiple,
                }
            }
            "dpop" => {
                req.dpop_count += 1;
                req.dpop = Some(v);
            }
            _ => {}
        }
    }
    req
}

impl Vm {
    /// Run the engine and act on the outcome for `ctx` (which must be the effective context).
    fn run(&self, ctx: u32, pending: Pending) -> Ran {
        let now = now_secs();
        let outcome = {
            let Ok(mut guard) = self.engine.try_borrow_mut() else {
                self.refuse(Reason::GatewayError, "the decision engine is busy (re-entrant call)");
                return Ran::Stopped;
            };
            let Some(engine) = guard.as_mut() else {
                drop(guard);
                self.refuse(Reason::GatewayError, "the filter is not configured");
                return Ran::Stopped;
            };
            let req = request_from(&pending.headers);
            let extra = Extra { headers: &pending.headers, body: pending.body.as_deref(), pdp: pending.pdp.as_ref() };
            engine.decide_full(&req, &extra, now, pending.attempts, &mut SharedReplay)
        };
        match outcome {
            Outcome::Allow(ev) => {
                self.evidence(&ev);
                Ran::Continue
            }
            Outcome::Deny(resp, ev) => {
                self.evidence(&ev);
                send(&resp);
                Ran::Stopped
            }
            Outcome::Need(Need::Body) => Ran::NeedBody(pending),
            Outcome::Need(Need::Pdp(callout)) => match dispatch(&callout) {
                Ok(token) => {
                    self.callouts.borrow_mut().insert(token, (Kind::Pdp(ctx), self.active.get()));
                    let deadline = now + i64::try_from(callout.timeout_ms.div_ceil(1000)).unwrap_or(1) + 2;
                    self.waiting.borrow_mut().insert(ctx, Waiter { pending, deadline });
                    Ran::Stopped
                }
                Err(e) => {
                    log(
                        LogLevel::Warn,
                        &format!("missiongate: dispatch to PDP cluster {} failed: {e}", callout.cluster),
                    );
                    let mut p = pending;
                    p.pdp = Some(PdpAnswer { status: None, body: Vec::new() });
                    self.run(ctx, p)
                }
            },
            Outcome::Need(need) => {
                let deadline = now + self.timeout_secs(&need) + 2;
                self.waiting.borrow_mut().insert(ctx, Waiter { pending, deadline });
                let first = {
                    let mut w = self.waiters.borrow_mut();
                    let list = w.entry(need.clone()).or_default();
                    list.push(ctx);
                    list.len() == 1
                };
                if first && !self.dispatch_need(&need) {
                    // Could not even dispatch: answer every waiter now.
                    self.complete_need(&need, now);
                }
                Ran::Stopped
            }
        }
    }

    /// Re-run a waiting request from another context and act on the result.
    fn resume(&self, ctx: u32, pending: Pending) {
        if hostcalls::set_effective_context(ctx).is_err() {
            return; // the request is gone
        }
        match self.run(ctx, pending) {
            Ran::Continue => {
                if let Err(e) = hostcalls::resume_http_request() {
                    log(LogLevel::Warn, &format!("missiongate: resume failed: {e:?}"));
                }
            }
            Ran::Stopped => {}
            Ran::NeedBody(mut pending) => {
                let seen = self.eos.borrow_mut().remove(&ctx);
                match seen {
                    // The whole body is already held by Envoy: read it and decide again.
                    Some(size) => {
                        let body = if size == 0 {
                            Ok(Some(Vec::new()))
                        } else {
                            hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
                        };
                        match body {
                            Ok(b) => {
                                pending.body = Some(b.unwrap_or_default());
                                self.resume(ctx, pending);
                            }
                            Err(e) => {
                                log(LogLevel::Error, &format!("missiongate: cannot read request body: {e:?}"));
                                self.refuse(Reason::GatewayError, "the request body could not be read");
                            }
                        }
                    }
                    // More is coming: the stream's body callback takes it from here.
                    None => {
                        self.body_waiting.borrow_mut().insert(ctx, pending);
                    }
                }
            }
        }
    }

    fn timeout_secs(&self, need: &Need) -> i64 {
        let guard = self.engine.borrow();
        let Some(e) = guard.as_ref() else { return 1 };
        let ms = match need {
            Need::Keys(i) => match e.config.issuers.get(*i).map(|x| &x.keys) {
                Some(missiongate_core::config::KeySource::Remote { upstream, .. }) => upstream.timeout_ms,
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
        };
        i64::try_from(ms.div_ceil(1000)).unwrap_or(1)
    }

    /// Dispatch the callout for a need. On failure the engine is told (so the retry denies).
    fn dispatch_need(&self, need: &Need) -> bool {
        let owner = self.active.get();
        let now = now_secs();
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
        match dispatch(&callout) {
            Ok(token) => {
                self.callouts.borrow_mut().insert(token, (kind, owner));
                true
            }
            Err(e) => {
                log(LogLevel::Warn, &format!("missiongate: dispatch to cluster {} failed: {e}", callout.cluster));
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
                    log(LogLevel::Warn, &format!("missiongate: JWKS of issuer #{i}: {e}"));
                }
                None
            }
            Kind::Status(i, id, nonce) => engine.on_status(*i, id, nonce, status, body, now),
            Kind::Events(i) => {
                let (_, more, refetch) = engine.on_events(*i, status, body, now);
                self.events_in_flight.borrow_mut().insert(*i, false);
                let _ = more;
                refetch
            }
            Kind::Pdp(_) => None,
        }
    }

    /// Re-decide every request waiting for `need`.
    fn complete_need(&self, need: &Need, _now: i64) {
        let list = self.waiters.borrow_mut().remove(need).unwrap_or_default();
        for ctx in list {
            let Some(w) = self.waiting.borrow_mut().remove(&ctx) else { continue };
            let mut pending = w.pending;
            match need {
                Need::Keys(_) => pending.attempts.keys = true,
                Need::Status(..) => pending.attempts.status = true,
                Need::Body | Need::Pdp(_) => {}
            }
            self.resume(ctx, pending);
        }
    }

    /// A callout answered (or failed: status None).
    fn on_response(&self, token: u32, body_size: usize) {
        let Some((kind, _owner)) = self.callouts.borrow_mut().remove(&token) else { return };
        let status = hostcalls::get_map_value(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| s.parse::<u16>().ok());
        let body = if body_size > 0 {
            hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, body_size).ok().flatten().unwrap_or_default()
        } else {
            Vec::new()
        };
        let now = now_secs();
        let refetch = if matches!(kind, Kind::Pdp(_)) { None } else { self.apply_answer(&kind, status, &body, now) };
        if let Some(i) = refetch {
            self.start_jwks(i);
        }
        match &kind {
            Kind::Pdp(ctx) => {
                let waiter = self.waiting.borrow_mut().remove(ctx);
                if let Some(w) = waiter {
                    let mut pending = w.pending;
                    pending.pdp = Some(PdpAnswer { status, body });
                    self.resume(*ctx, pending);
                }
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

    fn start_jwks(&self, issuer: usize) {
        let need = Need::Keys(issuer);
        if self.waiters.borrow().contains_key(&need) {
            return;
        }
        self.dispatch_need(&need);
    }

    fn poll_events(&self, issuer: usize, immediately: bool) {
        if self.events_in_flight.borrow().get(&issuer).copied().unwrap_or(false) {
            return;
        }
        let callout = {
            let guard = self.engine.borrow();
            guard.as_ref().and_then(|e| e.events_callout(issuer, immediately))
        };
        let Some(c) = callout else { return };
        match dispatch(&c) {
            Ok(token) => {
                self.events_in_flight.borrow_mut().insert(issuer, true);
                self.callouts.borrow_mut().insert(token, (Kind::Events(issuer), self.active.get()));
            }
            Err(e) => log(LogLevel::Warn, &format!("missiongate: event poll dispatch failed: {e}")),
        }
    }

    /// A context is going away: forget it; its callouts become orphans for the root to redo.
    fn forget(&self, ctx: u32) {
        self.waiting.borrow_mut().remove(&ctx);
        self.eos.borrow_mut().remove(&ctx);
        self.body_waiting.borrow_mut().remove(&ctx);
        for list in self.waiters.borrow_mut().values_mut() {
            list.retain(|c| *c != ctx);
        }
        let mut orphaned = Vec::new();
        let mut redo = Vec::new();
        let mut events = Vec::new();
        self.callouts.borrow_mut().retain(|_, (kind, owner)| {
            if *owner != ctx {
                return true;
            }
            match kind {
                Kind::Pdp(w) if *w != ctx => redo.push(*w),
                Kind::Events(i) => events.push(*i),
                other => {
                    if let Some(n) = other.need() {
                        orphaned.push(n);
                    }
                }
            }
            false
        });
        self.redo.borrow_mut().extend(redo);
        for i in events {
            self.events_in_flight.borrow_mut().insert(i, false);
        }
        let waiters = self.waiters.borrow();
        for n in orphaned {
            if waiters.get(&n).is_some_and(|l| !l.is_empty()) {
                self.orphans.borrow_mut().push(n);
            }
        }
    }

    fn tick(&self) {
        let now = now_secs();
        // Orphaned callouts: dispatch again from the root.
        let orphans: Vec<Need> = self.orphans.borrow_mut().drain(..).collect();
        // PDP evaluations lost with their dispatching context: evaluate again from the root.
        let redo: Vec<u32> = self.redo.borrow_mut().drain(..).collect();
        for ctx in redo {
            let waiter = self.waiting.borrow_mut().remove(&ctx);
            if let Some(w) = waiter {
                let mut pending = w.pending;
                pending.pdp = None;
                self.resume(ctx, pending);
            }
        }
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
        // Waiters past their deadline are answered (the retry denies with 503).
        let late: Vec<Need> = {
            let waiting = self.waiting.borrow();
            self.waiters
                .borrow()
                .iter()
                .filter(|(_, l)| l.iter().any(|c| waiting.get(c).is_some_and(|w| w.deadline < now)))
                .map(|(n, _)| n.clone())
                .collect()
        };
        for n in late {
            self.complete_need(&n, now);
        }
        // PDP waiters past their deadline: answer as "PDP unavailable".
        let late_pdp: Vec<u32> = {
            let waiting = self.waiting.borrow();
            let waiters = self.waiters.borrow();
            waiting
                .iter()
                .filter(|(c, w)| w.deadline < now && !waiters.values().any(|l| l.contains(c)))
                .map(|(c, _)| *c)
                .collect()
        };
        for ctx in late_pdp {
            self.callouts.borrow_mut().retain(|_, (k, _)| !matches!(k, Kind::Pdp(c) if *c == ctx));
            let waiter = self.waiting.borrow_mut().remove(&ctx);
            if let Some(w) = waiter {
                let mut pending = w.pending;
                pending.pdp = Some(PdpAnswer { status: None, body: Vec::new() });
                self.resume(ctx, pending);
            }
        }
        // JWKS initial load and refresh; event polls.
        let (due, event_issuers) = {
            let guard = self.engine.borrow();
            match guard.as_ref() {
                Some(e) => (e.jwks_due(now), e.event_issuers()),
                None => (Vec::new(), Vec::new()),
            }
        };
        for i in due {
            self.start_jwks(i);
        }
        for i in event_issuers {
            self.poll_events(i, false);
        }
        self.flush_counters();
        if let Some(e) = self.engine.borrow_mut().as_mut() {
            e.sweep(now);
        }
    }

    fn flush_counters(&self) {
        let mut deltas = match self.engine.borrow_mut().as_mut() {
            Some(e) => e.take_counters(),
            None => return,
        };
        let uncounted = self.uncounted.replace(0);
        if uncounted > 0 {
            deltas.push((format!("decision.{}", Reason::GatewayError.as_str()), uncounted));
        }
        let metrics = self.metrics.borrow();
        for (name, delta) in deltas {
            if let Some(id) = metrics.get(&name) {
                let _ = hostcalls::increment_metric(*id, i64::try_from(delta).unwrap_or(i64::MAX));
            }
        }
    }

    /// Refuse the current request for a reason the host found (an oversized body, a failed host
    /// call, a busy or unconfigured engine): problem+json like every denial, with evidence and its
    /// counter. Without an engine to render it (re-entrant call, not configured) the same answer
    /// is rendered with the default realm and counted here.
    fn refuse(&self, reason: Reason, detail: &str) {
        let out = self
            .engine
            .try_borrow_mut()
            .ok()
            .and_then(|mut g| g.as_mut().map(|e| e.refuse(reason, detail, now_secs())));
        match out {
            Some((resp, ev)) => {
                self.evidence(&ev);
                send(&resp);
            }
            None => {
                self.uncounted.set(self.uncounted.get().saturating_add(1));
                send(&Denial::new(reason, detail).render("missiongate", None, "unavailable"));
            }
        }
    }

    fn evidence(&self, ev: &Evidence) {
        let json = ev.to_json();
        if let Err(e) = hostcalls::set_property(vec!["missiongate.evidence"], Some(json.as_bytes())) {
            log(LogLevel::Debug, &format!("missiongate: set_property failed: {e:?}"));
        }
        let log_it = match self.evidence_log.get() {
            Some(EvidenceLog::All) | None => true,
            Some(EvidenceLog::Denials) => ev.decision != "allow",
            Some(EvidenceLog::Off) => false,
        };
        if log_it {
            log(LogLevel::Info, &format!("missiongate evidence {json}"));
        }
    }
}

fn send(resp: &missiongate_core::decision::Response) {
    let hs: Vec<(&str, &str)> = resp.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    if let Err(e) = hostcalls::send_http_response(u32::from(resp.status), hs, Some(&resp.body)) {
        log(LogLevel::Error, &format!("missiongate: send_http_response failed: {e:?}"));
        let _ = hostcalls::reset_http_request();
    }
}

fn dispatch(c: &Callout) -> Result<u32, String> {
    let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let body = if c.body.is_empty() { None } else { Some(c.body.as_slice()) };
    hostcalls::dispatch_http_call(&c.cluster, headers, body, vec![], Duration::from_millis(c.timeout_ms))
        .map_err(|e| format!("{e:?}"))
}

struct Root {
    vm: Rc<Vm>,
}

impl Root {
    fn new(context_id: u32) -> Root {
        let vm = Vm::default();
        vm.root_id.set(context_id);
        Root { vm: Rc::new(vm) }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.vm.active.set(self.vm.root_id.get());
        self.vm.on_response(token_id, body_size);
    }
}

fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::getrandom(&mut seed).is_err() {
        log(LogLevel::Warn, "missiongate: no random source; seeding from the clock");
        let t = hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos());
        for (i, b) in t.to_le_bytes().iter().enumerate() {
            if let Some(s) = seed.get_mut(i) {
                *s = *b;
            }
        }
    }
    seed
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.vm.active.set(self.vm.root_id.get());
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) => b,
            Ok(None) => {
                log(LogLevel::Critical, "invalid missiongate config: (root): configuration is empty");
                return false;
            }
            Err(e) => {
                log(LogLevel::Critical, &format!("missiongate: cannot read configuration: {e:?}"));
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(LogLevel::Critical, &e.to_string());
                return false;
            }
        };
        self.vm.evidence_log.set(Some(config.evidence_log));
        let mut metrics = HashMap::new();
        let names = ALL_REASONS
            .iter()
            .map(|r| format!("decision.{}", r.as_str()))
            .chain(ALL_STATS.iter().map(|s| s.as_str().to_owned()));
        for name in names {
            match hostcalls::define_metric(MetricType::Counter, &format!("{METRIC_PREFIX}{name}")) {
                Ok(id) => {
                    metrics.insert(name, id);
                }
                Err(e) => log(LogLevel::Warn, &format!("missiongate: define_metric {name}: {e:?}")),
            }
        }
        *self.vm.metrics.borrow_mut() = metrics;
        init_buckets();
        // Build the P-256 generator table now rather than on the first request.
        missiongate_wire::p256_fast::precompute_generator();
        *self.vm.engine.borrow_mut() =
            Some(Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: seed(), ids: seed() }));
        if let Err(e) = hostcalls::set_tick_period(TICK) {
            log(LogLevel::Critical, &format!("missiongate: set_tick_period failed: {e:?}"));
            return false;
        }
        // Load remote keys and start event polls at once rather than on the first tick.
        self.vm.tick();
        log(LogLevel::Info, "missiongate: configured");
        true
    }

    fn on_tick(&mut self) {
        self.vm.active.set(self.vm.root_id.get());
        self.vm.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Stream { id: context_id, vm: Rc::clone(&self.vm), body_wait: None }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Stream {
    id: u32,
    vm: Rc<Vm>,
    /// Set while the body of a consequential call is being buffered.
    body_wait: Option<Pending>,
}

impl Context for Stream {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.vm.active.set(self.id);
        self.vm.on_response(token_id, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.vm.active.set(self.id);
        self.vm.forget(self.id);
        true
    }
}

impl Stream {
    fn act(&mut self, ran: Ran, end_of_stream: bool) -> Action {
        match ran {
            Ran::Continue => Action::Continue,
            Ran::Stopped => Action::Pause,
            Ran::NeedBody(mut pending) => {
                if end_of_stream {
                    // No body at all.
                    pending.body = Some(Vec::new());
                    let again = self.vm.run(self.id, pending);
                    return match again {
                        Ran::Continue => Action::Continue,
                        _ => Action::Pause,
                    };
                }
                self.body_wait = Some(pending);
                Action::Pause
            }
        }
    }
}

impl HttpContext for Stream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.vm.active.set(self.id);
        let headers = match hostcalls::get_map(MapType::HttpRequestHeaders) {
            Ok(h) => h,
            Err(e) => {
                log(LogLevel::Error, &format!("missiongate: cannot read request headers: {e:?}"));
                self.vm.refuse(Reason::GatewayError, "the request headers could not be read");
                return Action::Pause;
            }
        };
        let ran = self.vm.run(self.id, Pending { headers, ..Pending::default() });
        if end_of_stream && matches!(ran, Ran::Stopped) && self.vm.waiting.borrow().contains_key(&self.id) {
            // No body will come; remember that for a decision resumed later.
            self.vm.eos.borrow_mut().insert(self.id, 0);
        }
        self.act(ran, end_of_stream)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.vm.active.set(self.id);
        if self.body_wait.is_none() {
            let resumed = self.vm.body_waiting.borrow_mut().remove(&self.id);
            self.body_wait = resumed;
        }
        if self.body_wait.is_none() {
            // Still waiting for a callout to decide: hold the body (and so the request) back. Data
            // arrives here even while the headers are stopped (CONNECT tunnels, uploads), and a
            // Continue would let the request through undecided.
            if self.vm.waiting.borrow().contains_key(&self.id) {
                if end_of_stream {
                    self.vm.eos.borrow_mut().insert(self.id, body_size);
                }
                return Action::Pause;
            }
            return Action::Continue;
        }
        let limit = self.vm.engine.borrow().as_ref().map_or(0, |e| e.config.max_body_bytes);
        if body_size > limit {
            self.body_wait = None;
            self.vm.refuse(Reason::BodyTooLarge, "request body exceeds the limit for a bound call");
            return Action::Pause;
        }
        if !end_of_stream {
            return Action::Pause; // keep buffering
        }
        let body = match hostcalls::get_buffer(BufferType::HttpRequestBody, 0, body_size) {
            Ok(b) => b.unwrap_or_default(),
            Err(e) => {
                log(LogLevel::Error, &format!("missiongate: cannot read request body: {e:?}"));
                self.body_wait = None;
                self.vm.refuse(Reason::GatewayError, "the request body could not be read");
                return Action::Pause;
            }
        };
        let Some(mut pending) = self.body_wait.take() else { return Action::Continue };
        pending.body = Some(body);
        match self.vm.run(self.id, pending) {
            Ran::Continue => Action::Continue,
            _ => Action::Pause,
        }
    }
}
