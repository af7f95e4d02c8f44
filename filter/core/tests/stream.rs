//! The per-request state machine (`missiongate_core::stream`), the byte-level head
//! (`missiongate_core::head`) and the replay-ledger bucket (`missiongate_core::ledger`).
//!
//! The machine is driven through every interleaving of the client's events (headers, body chunks,
//! trailers, tunnel data), the answers to its callouts, timeouts and resets, against a scripted
//! engine, and checked after every event: nothing continues before a decision, an allow releases
//! the request exactly once, a denial is answered exactly once and releases nothing, a bound body
//! is read only once complete. Runs natively and under wasm-bindgen-test (`make test-wasm-core`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use missiongate_core::decision::{Decision, Denial, Evidence, Reason, Response};
use missiongate_core::engine::{Attempts, Callout, Need, Outcome, PdpAnswer};
use missiongate_core::head::{decode_pairs, encode_pairs, Head};
use missiongate_core::ledger::{insert, Insert, MAX_PER_BUCKET};
use missiongate_core::stream::{Host, State, Stream, Verdict};
use missiongate_core::Authz;

const NOW: i64 = 1_800_000_000;
const LATE: i64 = NOW + 3600;
const MAX_BODY: usize = 64;

// ------------------------------------------------------------------------ scripted host ---------

/// What the scripted engine needs and answers.
#[derive(Debug, Clone, Copy)]
struct Scenario {
    keys: bool,
    status: bool,
    bound: bool,
    pdp: bool,
    allow: bool,
}

#[derive(Debug, Clone, PartialEq)]
enum Instr {
    Decide { body: Option<usize>, pdp: bool },
    Refuse(Reason),
    Evidence,
    Reply(u16),
    ReadBody(usize),
    Wait(Need),
    DispatchPdp,
    Resume,
}

struct Mock {
    sc: Scenario,
    keys_ok: bool,
    status_ok: bool,
    dispatch_ok: bool,
    log: Vec<Instr>,
}

fn deny(status: u16) -> Outcome {
    let reason = match status {
        503 => Reason::KeysUnavailable,
        413 => Reason::BodyTooLarge,
        _ => Reason::PdpDenied,
    };
    Outcome::Deny(Denial::new(reason, "x").render("mg", None, "d"), Evidence::default())
}

fn pdp_callout() -> Callout {
    Callout { cluster: "pdp".into(), headers: Vec::new(), body: Vec::new(), timeout_ms: 1500 }
}

impl Host for Mock {
    fn decide(&mut self, _head: &Head, body: Option<&[u8]>, pdp: Option<&PdpAnswer>, attempts: Attempts) -> Outcome {
        self.log.push(Instr::Decide { body: body.map(<[u8]>::len), pdp: pdp.is_some() });
        let sc = self.sc;
        if sc.keys {
            if !attempts.keys {
                return Outcome::Need(Need::Keys(0));
            }
            if !self.keys_ok {
                return deny(503);
            }
        }
        if sc.status {
            if !attempts.status {
                return Outcome::Need(Need::Status(0, "m".into()));
            }
            if !self.status_ok {
                return deny(503);
            }
        }
        if sc.bound && body.is_none() {
            return Outcome::Need(Need::Body);
        }
        if sc.pdp {
            match pdp {
                None => return Outcome::Need(Need::Pdp(Box::new(pdp_callout()))),
                Some(a) if a.status != Some(200) => return deny(503),
                Some(_) => {}
            }
        }
        if sc.allow {
            Outcome::Allow(Evidence { decision: Decision::Allow, ..Evidence::default() })
        } else {
            deny(403)
        }
    }
    fn refuse(&mut self, reason: Reason, detail: &str) -> (Response, Evidence) {
        self.log.push(Instr::Refuse(reason));
        (Denial::new(reason, detail).render("mg", None, "d"), Evidence::default())
    }
    fn evidence(&mut self, _: &Evidence) {
        self.log.push(Instr::Evidence);
    }
    fn reply(&mut self, r: &Response) {
        self.log.push(Instr::Reply(r.status));
    }
    fn read_body(&mut self, len: usize) -> Option<Vec<u8>> {
        self.log.push(Instr::ReadBody(len));
        Some(vec![b'x'; len])
    }
    fn wait(&mut self, need: &Need) -> Option<u64> {
        self.log.push(Instr::Wait(need.clone()));
        self.dispatch_ok.then_some(1000)
    }
    fn dispatch_pdp(&mut self, _: &Callout) -> bool {
        self.log.push(Instr::DispatchPdp);
        self.dispatch_ok
    }
    fn resume(&mut self) {
        self.log.push(Instr::Resume);
    }
    fn max_body(&self) -> usize {
        MAX_BODY
    }
}

fn head() -> Head {
    Head::from_pairs(&[
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.example"),
        (":path", "/v1/x"),
        ("authorization", "Bearer t"),
    ])
}

// ------------------------------------------------------------------------ enumeration -----------

#[derive(Debug, Clone, Copy, PartialEq)]
enum Ev {
    Headers {
        eos: bool,
    },
    Body {
        size: usize,
        eos: bool,
    },
    Trailers,
    /// Answer whatever the machine waits for (or a stray answer when it waits for nothing).
    Answer,
    /// The PDP (or a fetch) failed: answered with no status.
    Fail,
    /// A tick before any deadline: must change nothing.
    EarlyTick,
    /// A tick past every deadline.
    Timeout,
    Reset,
}

/// The ways a client can send a request (the cumulative body size Envoy reports per chunk).
fn shapes(large: bool) -> Vec<Vec<Ev>> {
    let last = if large { MAX_BODY + 1 } else { 10 };
    vec![
        vec![Ev::Headers { eos: true }],
        vec![Ev::Headers { eos: false }, Ev::Body { size: last, eos: true }],
        vec![Ev::Headers { eos: false }, Ev::Body { size: 5, eos: false }, Ev::Body { size: last, eos: true }],
        vec![
            Ev::Headers { eos: false },
            Ev::Body { size: 5, eos: false },
            Ev::Body { size: last, eos: false },
            Ev::Trailers,
        ],
        vec![Ev::Headers { eos: false }, Ev::Trailers],
        // Never ends (CONNECT or upgrade tunnel data, a slow upload).
        vec![Ev::Headers { eos: false }, Ev::Body { size: 5, eos: false }, Ev::Body { size: last, eos: false }],
        vec![Ev::Headers { eos: false }, Ev::Body { size: 0, eos: true }],
    ]
}

/// Every merge of `a` and `b` keeping each one's order.
fn merges(a: &[Ev], b: &[Ev]) -> Vec<Vec<Ev>> {
    match (a.split_first(), b.split_first()) {
        (None, _) => vec![b.to_vec()],
        (_, None) => vec![a.to_vec()],
        (Some((x, ra)), Some((y, rb))) => {
            let mut out = Vec::new();
            for mut m in merges(ra, b) {
                m.insert(0, *x);
                out.push(m);
            }
            for mut m in merges(a, rb) {
                m.insert(0, *y);
                out.push(m);
            }
            out
        }
    }
}

/// Every sequence of `n` asynchronous events.
fn async_seqs(n: usize) -> Vec<Vec<Ev>> {
    let mut out = vec![Vec::new()];
    for _ in 0..n {
        let mut next = Vec::new();
        for s in &out {
            for e in [Ev::Answer, Ev::Fail, Ev::EarlyTick, Ev::Timeout] {
                let mut t = s.clone();
                t.push(e);
                next.push(t);
            }
        }
        out = next;
    }
    out
}

struct Run {
    machine: Stream,
    mock: Mock,
    /// Times the request was let through (a Continue that released it, or a resume).
    released: usize,
    replies: usize,
    body_complete_at: Option<usize>,
    last_size: usize,
    failed: bool,
    gone: bool,
}

impl Run {
    fn new(sc: Scenario, dispatch_ok: bool) -> Run {
        Run {
            machine: Stream::new(),
            mock: Mock { sc, keys_ok: false, status_ok: false, dispatch_ok, log: Vec::new() },
            released: 0,
            replies: 0,
            body_complete_at: None,
            last_size: 0,
            failed: false,
            gone: false,
        }
    }

    fn step(&mut self, ev: Ev, trace: &str) {
        let before = self.machine.state().clone();
        let log_from = self.mock.log.len();
        let verdict = match ev {
            Ev::Headers { eos } => {
                if eos {
                    self.body_complete_at = Some(log_from);
                }
                Some(self.machine.on_headers(&mut self.mock, head(), eos, NOW))
            }
            Ev::Body { size, eos } => {
                self.last_size = size;
                if eos {
                    self.body_complete_at = Some(log_from);
                }
                Some(self.machine.on_body(&mut self.mock, size, eos, NOW))
            }
            Ev::Trailers => {
                self.body_complete_at = Some(log_from);
                Some(self.machine.on_trailers(&mut self.mock, NOW))
            }
            Ev::Answer | Ev::Fail => {
                let ok = ev == Ev::Answer;
                match self.machine.state().clone() {
                    State::WaitingCallout { need, .. } => {
                        match need {
                            Need::Keys(_) => self.mock.keys_ok = ok,
                            _ => self.mock.status_ok = ok,
                        }
                        self.machine.on_callout_done(&mut self.mock, &need, NOW);
                    }
                    State::WaitingPdp { .. } => {
                        if !ok {
                            self.failed = true;
                        }
                        let status = ok.then_some(200);
                        self.machine.on_pdp_answer(&mut self.mock, PdpAnswer { status, body: Vec::new() }, NOW);
                    }
                    _ => {
                        // Stray answers for something it does not wait for change nothing.
                        self.machine.on_callout_done(&mut self.mock, &Need::Keys(0), NOW);
                        self.machine.on_callout_done(&mut self.mock, &Need::Status(0, "m".into()), NOW);
                        self.machine.on_pdp_answer(&mut self.mock, PdpAnswer::default(), NOW);
                        self.machine.on_pdp_lost(&mut self.mock, NOW);
                        assert_eq!(self.mock.log.len(), log_from, "{trace}: a stray answer acted");
                        assert_eq!(*self.machine.state(), before, "{trace}: a stray answer moved the state");
                    }
                }
                if !ok && self.mock.log.len() > log_from {
                    self.failed = true;
                }
                None
            }
            Ev::EarlyTick => {
                self.machine.on_tick(&mut self.mock, NOW);
                assert_eq!(self.mock.log.len(), log_from, "{trace}: an early tick acted");
                None
            }
            Ev::Timeout => {
                self.machine.on_tick(&mut self.mock, LATE);
                if self.mock.log.len() > log_from {
                    self.failed = true;
                }
                None
            }
            Ev::Reset => {
                self.machine.on_gone();
                self.gone = true;
                None
            }
        };
        let after = self.machine.state().clone();
        let new: Vec<Instr> = self.mock.log.get(log_from..).unwrap_or_default().to_vec();
        if self.gone && ev != Ev::Reset {
            assert!(new.is_empty(), "{trace}: acted after a reset: {new:?}");
            assert_eq!(verdict.unwrap_or(Verdict::Pause), Verdict::Pause, "{trace}: continued after a reset");
        }
        // The central rule: Continue only once allowed.
        if let Some(v) = verdict {
            if v == Verdict::Continue {
                assert_eq!(after, State::Allowed, "{trace}: {ev:?} continued an undecided/denied request");
                if before != State::Allowed {
                    self.released += 1;
                }
            }
            if before.undecided() && after.undecided() {
                assert_eq!(v, Verdict::Pause, "{trace}: {ev:?} not paused while undecided");
            }
            if matches!(before, State::Denied) {
                assert_eq!(v, Verdict::Pause, "{trace}: {ev:?} continued after a denial");
            }
        }
        for i in &new {
            match i {
                Instr::Resume => {
                    assert!(verdict.is_none(), "{trace}: resume inside a client callback");
                    assert_eq!(after, State::Allowed, "{trace}: resumed without an allow");
                    self.released += 1;
                }
                Instr::Reply(_) => self.replies += 1,
                Instr::ReadBody(n) => {
                    assert!(self.body_complete_at.is_some(), "{trace}: body read before it was complete");
                    assert_eq!(*n, self.last_size, "{trace}: read a partial body");
                }
                Instr::Decide { body: Some(n), .. } => {
                    assert_eq!(*n, self.last_size, "{trace}: decided on part of the body")
                }
                _ => {}
            }
        }
        assert!(self.released <= 1, "{trace}: released twice");
        assert!(self.replies <= 1, "{trace}: answered twice");
        assert!(!(self.released == 1 && self.replies == 1), "{trace}: both released and answered");
        if after == State::Denied {
            assert_eq!(self.replies, 1, "{trace}: denied without an answer");
        }
    }

    /// Feed every pending answer (never a timeout), then check the final state against the script.
    fn finish(&mut self, trace: &str) {
        let large = self.last_size > MAX_BODY;
        for _ in 0..4 {
            if matches!(self.machine.state(), State::WaitingCallout { .. } | State::WaitingPdp { .. }) {
                self.step(Ev::Answer, trace);
            }
        }
        let sc = self.mock.sc;
        match self.machine.state() {
            State::Gone => assert!(self.gone),
            State::Allowed => {
                assert!(sc.allow && !self.failed && !(sc.bound && large), "{trace}: allowed against the script");
                assert_eq!(self.released, 1, "{trace}: allowed but never released");
            }
            State::Denied => {
                let status = self.mock.log.iter().find_map(|i| if let Instr::Reply(s) = i { Some(*s) } else { None });
                let asked = self.mock.log.iter().any(|i| matches!(i, Instr::Wait(_) | Instr::DispatchPdp));
                let expected = if self.failed || (!self.mock.dispatch_ok && asked) {
                    503
                } else if sc.bound && large {
                    413
                } else {
                    403
                };
                assert_eq!(status, Some(expected), "{trace}: wrong answer; log {:?}", self.mock.log);
                assert_eq!(self.released, 0);
            }
            State::BufferingBody => {
                assert!(sc.bound && self.body_complete_at.is_none(), "{trace}: buffering a complete body");
                assert_eq!(self.released, 0);
            }
            other => panic!("{trace}: left undecided in {other:?}; log {:?}", self.mock.log),
        }
    }
}

fn scenarios() -> Vec<Scenario> {
    let mut out = Vec::new();
    for bits in 0..32u32 {
        let b = |i: u32| bits & (1 << i) != 0;
        out.push(Scenario { keys: b(0), status: b(1), bound: b(2), pdp: b(3), allow: b(4) });
    }
    out
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn every_ordering_of_client_events_answers_and_timeouts_holds_until_decided() {
    let mut runs = 0usize;
    for sc in scenarios() {
        let waits = usize::from(sc.keys) + usize::from(sc.status) + usize::from(sc.pdp);
        for large in [false, true] {
            for shape in shapes(large) {
                // Up to one asynchronous event per wait, plus one stray.
                for asy in async_seqs(waits.min(2) + 1) {
                    for order in merges(&shape, &asy) {
                        // Headers always come first (Envoy creates the stream with them).
                        if !matches!(order.first(), Some(Ev::Headers { .. })) {
                            continue;
                        }
                        let trace = format!("{sc:?} large={large} {order:?}");
                        let mut run = Run::new(sc, true);
                        for ev in &order {
                            run.step(*ev, &trace);
                        }
                        run.finish(&trace);
                        runs += 1;
                    }
                }
            }
        }
    }
    assert!(runs > 50_000, "only {runs} orderings");
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_reset_at_any_point_ends_everything() {
    let mut runs = 0usize;
    for sc in scenarios() {
        for shape in shapes(false) {
            let order: Vec<Ev> = shape.iter().copied().chain([Ev::Answer, Ev::Answer, Ev::Answer]).collect();
            for cut in 1..=order.len() {
                let mut seq = order.clone();
                seq.insert(cut, Ev::Reset);
                // Everything after the reset must do nothing.
                seq.extend([Ev::Body { size: 10, eos: true }, Ev::Trailers, Ev::Timeout, Ev::Answer]);
                let trace = format!("{sc:?} {seq:?}");
                let mut run = Run::new(sc, true);
                for ev in &seq {
                    run.step(*ev, &trace);
                }
                assert_eq!(*run.machine.state(), State::Gone, "{trace}");
                runs += 1;
            }
        }
    }
    assert!(runs > 1000);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn callouts_that_cannot_be_dispatched_decide_at_once_and_fail_closed() {
    for sc in scenarios() {
        for shape in shapes(false) {
            let trace = format!("{sc:?} {shape:?} (no dispatch)");
            let mut run = Run::new(sc, false);
            for ev in &shape {
                run.step(*ev, &trace);
            }
            run.finish(&trace);
            let st = run.machine.state().clone();
            if sc.keys || sc.status || (sc.pdp && (!sc.bound || run.body_complete_at.is_some())) {
                assert_eq!(st, State::Denied, "{trace}");
                assert!(run.mock.log.contains(&Instr::Reply(503)), "{trace}: {:?}", run.mock.log);
            }
        }
    }
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn trailers_complete_a_bound_body_and_the_decision_is_their_answer() {
    let sc = Scenario { keys: false, status: false, bound: true, pdp: false, allow: true };
    let mut run = Run::new(sc, true);
    let m = &mut run.machine;
    assert_eq!(m.on_headers(&mut run.mock, head(), false, NOW), Verdict::Pause);
    assert_eq!(*m.state(), State::BufferingBody);
    assert_eq!(m.on_body(&mut run.mock, 7, false, NOW), Verdict::Pause);
    assert_eq!(m.on_body(&mut run.mock, 12, false, NOW), Verdict::Pause);
    assert_eq!(m.on_trailers(&mut run.mock, NOW), Verdict::Continue);
    assert!(run.mock.log.contains(&Instr::ReadBody(12)), "{:?}", run.mock.log);
    assert!(run.mock.log.contains(&Instr::Decide { body: Some(12), pdp: false }));
    // Anything later (there is nothing later in HTTP, but a host may repeat) continues too.
    assert_eq!(m.on_body(&mut run.mock, 12, true, NOW), Verdict::Continue);

    let sc = Scenario { allow: false, ..sc };
    let mut run = Run::new(sc, true);
    let m = &mut run.machine;
    m.on_headers(&mut run.mock, head(), false, NOW);
    m.on_body(&mut run.mock, 3, false, NOW);
    assert_eq!(m.on_trailers(&mut run.mock, NOW), Verdict::Pause);
    assert_eq!(*m.state(), State::Denied);
    assert_eq!(run.mock.log.iter().filter(|i| matches!(i, Instr::Reply(403))).count(), 1);
    assert_eq!(m.on_trailers(&mut run.mock, NOW), Verdict::Pause);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn trailers_while_waiting_for_a_callout_are_held_and_the_answer_resumes() {
    let sc = Scenario { keys: true, status: false, bound: false, pdp: true, allow: true };
    let mut run = Run::new(sc, true);
    let m = &mut run.machine;
    assert_eq!(m.on_headers(&mut run.mock, head(), false, NOW), Verdict::Pause);
    assert!(matches!(m.state(), State::WaitingCallout { need: Need::Keys(0), .. }));
    assert_eq!(m.on_body(&mut run.mock, 4, false, NOW), Verdict::Pause);
    assert_eq!(m.on_trailers(&mut run.mock, NOW), Verdict::Pause);
    run.mock.keys_ok = true;
    m.on_callout_done(&mut run.mock, &Need::Keys(0), NOW);
    assert!(matches!(m.state(), State::WaitingPdp { .. }));
    assert!(!run.mock.log.contains(&Instr::Resume));
    m.on_pdp_answer(&mut run.mock, PdpAnswer { status: Some(200), body: Vec::new() }, NOW);
    assert_eq!(*m.state(), State::Allowed);
    assert_eq!(run.mock.log.last(), Some(&Instr::Resume));
    // The PDP deadline: the callout timeout (1.5 s, rounded up) plus the margin.
    let mut run = Run::new(sc, true);
    run.mock.keys_ok = true;
    let m = &mut run.machine;
    m.on_headers(&mut run.mock, head(), true, NOW);
    m.on_callout_done(&mut run.mock, &Need::Keys(0), NOW);
    assert_eq!(*m.state(), State::WaitingPdp { deadline: NOW + 2 + 2 });
    m.on_tick(&mut run.mock, NOW + 4);
    assert!(matches!(m.state(), State::WaitingPdp { .. }));
    m.on_tick(&mut run.mock, NOW + 5);
    assert_eq!(*m.state(), State::Denied);
    assert!(run.mock.log.contains(&Instr::Reply(503)));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_lost_pdp_callout_is_asked_again() {
    let sc = Scenario { keys: false, status: false, bound: false, pdp: true, allow: true };
    let mut run = Run::new(sc, true);
    let m = &mut run.machine;
    m.on_headers(&mut run.mock, head(), true, NOW);
    m.on_pdp_lost(&mut run.mock, NOW);
    assert_eq!(run.mock.log.iter().filter(|i| **i == Instr::DispatchPdp).count(), 2);
    assert!(matches!(m.state(), State::WaitingPdp { .. }));
}

// ------------------------------------------------------------------------ bytes -----------------

fn bytes_head(extra: &[(&[u8], &[u8])]) -> Head {
    let mut pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":method".to_vec(), b"GET".to_vec()),
        (b":scheme".to_vec(), b"https".to_vec()),
        (b":authority".to_vec(), b"api.example".to_vec()),
        (b":path".to_vec(), b"/v1/x".to_vec()),
    ];
    pairs.extend(extra.iter().map(|(n, v)| (n.to_vec(), v.to_vec())));
    Head::from_pairs(&pairs)
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn non_utf8_header_values_are_refused_by_each_headers_grammar() {
    let obs: &[u8] = b"caf\xe9";
    for name in [":method", ":path", ":authority", ":scheme"] {
        let mut pairs: Vec<(Vec<u8>, Vec<u8>)> =
            vec![(b":method".to_vec(), b"GET".to_vec()), (b":path".to_vec(), b"/".to_vec())];
        pairs.retain(|(n, _)| n != name.as_bytes());
        pairs.push((name.as_bytes().to_vec(), obs.to_vec()));
        pairs.push((b"authorization".to_vec(), b"Bearer \xff".to_vec()));
        let h = Head::from_pairs(&pairs);
        let r = h.refusal.unwrap();
        assert_eq!(r.reason, Reason::MalformedRequest, "{name}");
        assert_eq!(r.reason.status(), 400);
    }
    let h = bytes_head(&[(b"authorization", b"Bearer \x80abc"), (b"dpop", b"\xff")]);
    assert_eq!(h.refusal.unwrap().reason, Reason::TokenMalformed);
    let resp = Denial::new(Reason::TokenMalformed, "x").render("mg", None, "d");
    assert_eq!(resp.status, 401);
    assert!(resp.headers.iter().any(|(k, v)| k == "www-authenticate" && v.contains("error=\"invalid_token\"")));
    let h = bytes_head(&[(b"authorization", b"DPoP abc"), (b"dpop", b"ey\xc3(")]);
    assert_eq!(h.refusal.unwrap().reason, Reason::InvalidDpopProof);
    let resp = Denial::new(Reason::InvalidDpopProof, "x").render("mg", None, "d");
    assert_eq!(resp.status, 401);
    assert!(resp.headers.iter().any(|(k, v)| k == "www-authenticate" && v.starts_with("DPoP ")));
    // Content-Type and the others: carried as unreadable, decided by the engine (bound call only).
    let h = bytes_head(&[
        (b"content-type", b"application/json; x=\xe9"),
        (b"x-idempotency-key", b"\xfe\xfe"),
        (b"user-agent", b"\x80\x81"),
        (b"Accept-Language", b"d\xe9"),
        (b"authorization", b"Bearer abc"),
    ]);
    assert_eq!(h.refusal, None);
    assert_eq!(h.unreadable, ["content-type", "x-idempotency-key", "user-agent", "accept-language"]);
    let req = h.request();
    assert_eq!(req.authorization, Authz::One("Bearer abc"));
    assert_eq!((req.method, req.path, req.authority), ("GET", "/v1/x", "api.example"));
    assert!(h.headers.iter().all(|(k, _)| k != "content-type"));
    let extra = h.extra(None, None);
    assert_eq!(extra.unreadable.len(), 4);
    // A name that is not UTF-8 cannot be a header the filter reads: ignored.
    let h = bytes_head(&[(b"x-\xff", b"v"), (b"authorization", b"Bearer abc")]);
    assert_eq!(h.refusal, None);
    assert!(h.unreadable.is_empty());
    // Two Authorization headers stay a malformed request for the engine; one DPoP counted per header.
    let h = bytes_head(&[(b"authorization", b"Bearer a"), (b"Authorization", b"Bearer b"), (b"dpop", b"p")]);
    assert_eq!(h.request().authorization, Authz::Multiple);
    assert_eq!((h.request().dpop, h.request().dpop_count), (Some("p"), 1));
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_refused_head_is_answered_once_and_never_decided() {
    let sc = Scenario { keys: false, status: false, bound: false, pdp: false, allow: true };
    let mut run = Run::new(sc, true);
    let h = bytes_head(&[(b"authorization", b"Bearer \xff")]);
    assert_eq!(run.machine.on_headers(&mut run.mock, h, false, NOW), Verdict::Pause);
    assert_eq!(run.mock.log, [Instr::Refuse(Reason::TokenMalformed), Instr::Evidence, Instr::Reply(401)]);
    assert_eq!(run.machine.on_body(&mut run.mock, 3, false, NOW), Verdict::Pause);
    assert_eq!(run.machine.on_trailers(&mut run.mock, NOW), Verdict::Pause);
    assert_eq!(run.mock.log.len(), 3);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn the_host_map_layout_decodes_any_bytes_and_never_panics_on_garbage() {
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = vec![
        (b":path".to_vec(), b"/a".to_vec()),
        (b"x".to_vec(), vec![0x80, 0xff, 0x00, 0x7f]),
        (Vec::new(), Vec::new()),
    ];
    let enc = encode_pairs(&pairs);
    assert_eq!(decode_pairs(&enc).unwrap(), pairs);
    assert_eq!(decode_pairs(&[]).unwrap(), Vec::<(Vec<u8>, Vec<u8>)>::new());
    // Every truncation, and every single-byte corruption, is an answer, not a panic.
    for cut in 0..enc.len() {
        let _ = decode_pairs(enc.get(..cut).unwrap());
    }
    for at in 0..enc.len() {
        for b in [0x00, 0x01, 0x7f, 0xff] {
            let mut e = enc.clone();
            e[at] = b;
            let _ = decode_pairs(&e);
        }
    }
    assert_eq!(decode_pairs(&[0xff, 0xff, 0xff, 0xff]), None);
}

#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn a_ledger_bucket_is_bounded_and_refuses_when_full() {
    let mut text = "#\n".to_owned();
    for i in 0..MAX_PER_BUCKET {
        match insert(&text, &format!("k{i}"), 100, 10) {
            Insert::Text(t) => text = t,
            other => panic!("insert {i}: {other:?}"),
        }
    }
    assert_eq!(text.lines().count(), MAX_PER_BUCKET);
    assert_eq!(insert(&text, "k3", 100, 10), Insert::Seen);
    assert_eq!(insert(&text, "new", 100, 10), Insert::Full);
    // Once they expire the room comes back, and the stale lines are pruned.
    assert_eq!(insert(&text, "new", 300, 100), Insert::Text("300 new\n".to_owned()));
    // An oversized bucket (written by an older build) is never grown.
    let big: String = (0..MAX_PER_BUCKET * 2).map(|i| format!("100 x{i}\n")).collect();
    assert_eq!(insert(&big, "y", 100, 10), Insert::Full);
    assert_eq!(Reason::ReplayStoreFull.status(), 503);
    let r = Denial::new(Reason::ReplayStoreFull, "full").render("mg", None, "d");
    assert!(r.headers.iter().any(|(k, v)| k == "retry-after" && v == "1"));
}

// ------------------------------------------------------------------ raw bodies, hashed as they arrive

/// What the engine was given: the body and its SHA-256, if the machine computed it.
type Decided = (Option<Vec<u8>>, Option<[u8; 32]>);

/// A host that holds the body Envoy buffered so far and can read any part of it.
struct ChunkHost {
    buffered: Vec<u8>,
    /// `Some(n)`: ranged reads fail from the `n`-th on.
    fail_ranged_from: Option<usize>,
    ranged: Vec<(usize, usize)>,
    whole: Vec<usize>,
    decided: Vec<Decided>,
    fell_back: usize,
}

impl Host for ChunkHost {
    fn decide(&mut self, head: &Head, body: Option<&[u8]>, pdp: Option<&PdpAnswer>, attempts: Attempts) -> Outcome {
        self.decide_hashed(head, body, None, pdp, attempts)
    }
    fn decide_hashed(
        &mut self,
        _head: &Head,
        body: Option<&[u8]>,
        body_sha256: Option<&[u8; 32]>,
        _pdp: Option<&PdpAnswer>,
        _attempts: Attempts,
    ) -> Outcome {
        self.decided.push((body.map(<[u8]>::to_vec), body_sha256.copied()));
        if body.is_none() {
            return Outcome::Need(Need::Body);
        }
        Outcome::Allow(Evidence { decision: Decision::Allow, ..Evidence::default() })
    }
    fn refuse(&mut self, reason: Reason, detail: &str) -> (Response, Evidence) {
        (Denial::new(reason, detail).render("mg", None, "d"), Evidence::default())
    }
    fn evidence(&mut self, _: &Evidence) {}
    fn reply(&mut self, _: &Response) {}
    fn read_body(&mut self, len: usize) -> Option<Vec<u8>> {
        self.whole.push(len);
        self.buffered.get(..len).map(<[u8]>::to_vec)
    }
    fn read_body_at(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        self.ranged.push((start, len));
        if self.fail_ranged_from.is_some_and(|n| self.ranged.len() > n) {
            return None;
        }
        self.buffered.get(start..start + len).map(<[u8]>::to_vec)
    }
    fn wait(&mut self, _: &Need) -> Option<u64> {
        None
    }
    fn dispatch_pdp(&mut self, _: &Callout) -> bool {
        false
    }
    fn resume(&mut self) {}
    fn max_body(&self) -> usize {
        1 << 20
    }
    fn hash_fell_back(&mut self) {
        self.fell_back += 1;
    }
}

fn chunk_run(content_type: Option<&str>, fail_ranged_from: Option<usize>) -> ChunkHost {
    let mut pairs = vec![
        (":method", "POST"),
        (":scheme", "https"),
        (":authority", "api.example"),
        (":path", "/v1/x"),
        ("authorization", "Bearer t"),
    ];
    if let Some(ct) = content_type {
        pairs.push(("content-type", ct));
    }
    let mut host = ChunkHost {
        buffered: Vec::new(),
        fail_ranged_from,
        ranged: Vec::new(),
        whole: Vec::new(),
        decided: Vec::new(),
        fell_back: 0,
    };
    let mut s = Stream::new();
    assert_eq!(s.on_headers(&mut host, Head::from_pairs(&pairs), false, NOW), Verdict::Pause);
    assert_eq!(*s.state(), State::BufferingBody);
    let body: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let chunks: Vec<&[u8]> = body.chunks(16_384).collect();
    for (i, c) in chunks.iter().enumerate() {
        host.buffered.extend_from_slice(c);
        let eos = i + 1 == chunks.len();
        let size = host.buffered.len();
        let v = s.on_body(&mut host, size, eos, NOW);
        assert_eq!(v, if eos { Verdict::Continue } else { Verdict::Pause });
    }
    assert_eq!(*s.state(), State::Allowed);
    let (got, _) = host.decided.last().unwrap();
    assert_eq!(got.as_deref(), Some(&body[..]), "the engine sees the whole body, unchanged");
    host
}

/// A body bound by its hash (not JSON) is read and hashed chunk by chunk: each range once, in
/// order, and the engine gets its SHA-256 with the bytes; a JSON body is read once, whole, as before;
/// a host that cannot read a range leaves the whole body to be read at its end.
#[cfg_attr(not(target_arch = "wasm32"), test)]
#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test::wasm_bindgen_test)]
fn raw_bodies_are_hashed_as_their_chunks_arrive() {
    for ct in [Some("text/plain; charset=utf-8"), None, Some("application/octet-stream")] {
        let host = chunk_run(ct, None);
        let mut at = 0;
        for &(start, len) in &host.ranged {
            assert_eq!(start, at, "{ct:?}: ranges are read in order, once each");
            at += len;
        }
        assert_eq!(at, host.buffered.len());
        assert!(host.ranged.len() >= 6, "{ct:?}: {:?}", host.ranged);
        assert!(host.whole.is_empty(), "{ct:?}: the whole body is never read again");
        assert_eq!(host.fell_back, 0, "{ct:?}");
        let (_, sha) = host.decided.last().unwrap();
        assert_eq!(*sha, Some(missiongate_wire::digest::sha256(&host.buffered)), "{ct:?}");
    }
    for ct in ["application/json", "application/problem+json", "not a media type"] {
        let host = chunk_run(Some(ct), None);
        assert!(host.ranged.is_empty(), "{ct}: {:?}", host.ranged);
        assert_eq!(host.whole, vec![host.buffered.len()], "{ct}");
        assert_eq!(host.decided.last().unwrap().1, None, "{ct}");
        assert_eq!(host.fell_back, 0, "{ct}: a JSON body read whole is not a fallback");
    }
    let host = chunk_run(Some("text/plain"), Some(2));
    assert_eq!(host.whole, vec![host.buffered.len()], "after a failed range the body is read whole");
    assert_eq!(host.decided.last().unwrap().1, None);
    assert_eq!(host.fell_back, 1, "the fallback is reported to the host once");
}
