//! One request's life in the filter, as an explicit state machine.
//!
//! Envoy forwards a request as soon as any callback of the filter answers `Continue`: the headers,
//! a body chunk, the trailers (HTTP/2; HTTP/1.1 chunked trailers) or the tunnel data of CONNECT and
//! upgrades. So the rule this machine enforces is simple: **in every state in which the request is
//! not decided, every event the client can cause answers [`Verdict::Pause`]**, and only an allow
//! lets anything through (answered `Continue` in the client's own callback, or [`Host::resume`]
//! when the decision is reached from a callout answer or a tick).
//!
//! ```text
//!            headers                 need keys / Mission Status
//!   Start ───────────► decide ─────────────────────────────► WaitingCallout ─┐ answer / timeout
//!                        │  ▲                                                │
//!                        │  └────────────────────────────────────────────────┘
//!                        │  need body (not complete)   body eos / trailers
//!                        ├─────────────────────────► BufferingBody ───────► decide
//!                        │  need PDP                   answer / timeout / callout lost
//!                        ├─────────────────────────► WaitingPdp ──────────► decide
//!                        ├── allow ─► Allowed  (everything continues)
//!                        └── deny ──► Denied   (a local reply was sent; nothing continues)
//!   any state ── reset / done ──► Gone
//! ```
//!
//! The machine holds no proxy-wasm state: the host layer implements [`Host`] (the engine call, body
//! reads, callouts, local replies, resume) and maps Envoy's callbacks onto the event methods.
//! The clock is an input (`now`, Unix seconds).

use crate::decision::{Evidence, Reason, Response};
use crate::engine::{Attempts, Callout, Need, Outcome, PdpAnswer};
use crate::head::Head;
use missiongate_wire::digest;
use sha2::{Digest, Sha256};

/// How a client event is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let the request (this part, and everything held before it) through.
    Continue,
    /// Hold it: `StopIteration` for headers and trailers, `StopIterationAndBuffer` for body data.
    Pause,
}

/// Where a request stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// No headers seen yet.
    Start,
    /// Waiting for a shared callout (JWKS or Mission Status) until `deadline`.
    WaitingCallout {
        /// What is being fetched.
        need: Need,
        /// Give up after this instant (the engine then denies with 503).
        deadline: i64,
    },
    /// Holding the body of a bound (consequential) call until it is complete.
    BufferingBody,
    /// Waiting for this request's PDP answer until `deadline`.
    WaitingPdp {
        /// Give up after this instant (answered as "PDP unavailable").
        deadline: i64,
    },
    /// Decided: forwarded.
    Allowed,
    /// Decided: answered locally. Nothing of the request ever continues.
    Denied,
    /// The stream was reset or is done.
    Gone,
}

impl State {
    /// True while the request is held without a decision.
    pub fn undecided(&self) -> bool {
        matches!(self, State::Start | State::WaitingCallout { .. } | State::BufferingBody | State::WaitingPdp { .. })
    }
}

/// What the machine asks of the host layer.
pub trait Host {
    /// Run the engine on the head with what has been gathered so far.
    fn decide(&mut self, head: &Head, body: Option<&[u8]>, pdp: Option<&PdpAnswer>, attempts: Attempts) -> Outcome;
    /// Render a refusal the machine found itself (problem+json, counted, with evidence).
    fn refuse(&mut self, reason: Reason, detail: &str) -> (Response, Evidence);
    /// Record a decision's evidence.
    fn evidence(&mut self, evidence: &Evidence);
    /// Send a local reply. On failure the host resets the stream; either way nothing continues.
    fn reply(&mut self, response: &Response);
    /// Read the first `len` bytes of the request body Envoy holds (`None`: it could not be read).
    fn read_body(&mut self, len: usize) -> Option<Vec<u8>>;
    /// Read `len` bytes of the request body Envoy holds, from byte `start`: how a body that is not
    /// JSON is hashed as its chunks arrive. `None` (also the default): not read; the machine then
    /// reads the whole body once it is complete, with [`Host::read_body`].
    fn read_body_at(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        let _ = (start, len);
        None
    }
    /// [`Host::decide`] with the SHA-256 of `body` when the machine computed it as the body arrived
    /// (a body bound by its hash); the default ignores it (the engine then hashes the body itself).
    fn decide_hashed(
        &mut self,
        head: &Head,
        body: Option<&[u8]>,
        body_sha256: Option<&[u8; 32]>,
        pdp: Option<&PdpAnswer>,
        attempts: Attempts,
    ) -> Outcome {
        let _ = body_sha256;
        self.decide(head, body, pdp, attempts)
    }
    /// Wait for a shared callout (keys, Mission Status): register and dispatch it if nobody has.
    /// Returns its timeout in milliseconds, or `None` when it could not be dispatched.
    fn wait(&mut self, need: &Need) -> Option<u64>;
    /// Dispatch this request's PDP callout. `false` when it could not be dispatched.
    fn dispatch_pdp(&mut self, callout: &Callout) -> bool;
    /// Resume the paused request (used when a decision is reached outside the client's callbacks).
    fn resume(&mut self);
    /// Largest body a bound call may have.
    fn max_body(&self) -> usize;
    /// A body that was being hashed as it arrived could not be (a part of it could not be read),
    /// so it will be read and hashed whole at its end: counted, so that operators see it.
    fn hash_fell_back(&mut self) {}
}

/// How long beyond a callout's own timeout a request waits before the tick gives up on it.
pub const WAIT_MARGIN_SECS: i64 = 2;

/// A bound on decision steps per event (a well-behaved engine needs at most four).
const MAX_STEPS: usize = 8;

/// One request.
#[derive(Debug, Clone)]
pub struct Stream {
    state: State,
    head: Option<Head>,
    attempts: Attempts,
    body: Option<Vec<u8>>,
    pdp: Option<PdpAnswer>,
    /// The client has sent everything (end of stream on headers or body, or trailers).
    complete: bool,
    /// Body bytes Envoy holds for the request (the last body callback's size).
    buffered: usize,
    /// A body bound by its hash (not JSON), read and hashed chunk by chunk while it arrives, so
    /// its end never costs a hash of the whole body at once.
    raw: Option<RawBody>,
    /// The SHA-256 of `body`, when `raw` computed it.
    body_sha256: Option<[u8; 32]>,
}

/// The part of a body read so far, and its running SHA-256.
#[derive(Debug, Clone, Default)]
struct RawBody {
    sha: Sha256,
    bytes: Vec<u8>,
}

/// Whether a bound body of this request is digested by its hash (SPEC §6: any media type other than
/// JSON, or no `Content-Type`), so it can be hashed as it arrives. Anything unusual (a repeated or
/// unreadable `Content-Type`, one that is not a media type) is left to the engine on the whole body.
fn bound_by_hash(head: &Head) -> bool {
    if head.unreadable.iter().any(|h| h.eq_ignore_ascii_case("content-type")) {
        return false;
    }
    let mut types = head.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case("content-type"));
    match (types.next(), types.next()) {
        (None, _) => true,
        (Some((_, ct)), None) => digest::media_type_essence(ct).is_some_and(|e| !digest::is_json_media_type(&e)),
        _ => false,
    }
}

impl Default for Stream {
    fn default() -> Stream {
        Stream::new()
    }
}

impl Stream {
    /// A stream before its headers.
    pub fn new() -> Stream {
        Stream {
            state: State::Start,
            head: None,
            attempts: Attempts::default(),
            body: None,
            pdp: None,
            complete: false,
            buffered: 0,
            raw: None,
            body_sha256: None,
        }
    }

    /// Where the request stands.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The request headers arrived (`end_of_stream`: no body and no trailers follow).
    pub fn on_headers(&mut self, host: &mut dyn Host, head: Head, end_of_stream: bool, now: i64) -> Verdict {
        if self.state != State::Start {
            return self.settled();
        }
        self.complete = end_of_stream;
        if let Some(r) = head.refusal {
            self.head = Some(head);
            self.deny(host, r.reason, r.detail);
            return Verdict::Pause;
        }
        self.head = Some(head);
        self.run(host, now, true)
    }

    /// A body chunk arrived; `size` is what Envoy holds for the request now.
    pub fn on_body(&mut self, host: &mut dyn Host, size: usize, end_of_stream: bool, now: i64) -> Verdict {
        match self.state {
            State::WaitingCallout { .. } | State::WaitingPdp { .. } => {
                self.buffered = size;
                self.complete |= end_of_stream;
                Verdict::Pause
            }
            State::BufferingBody => {
                self.buffered = size;
                self.complete |= end_of_stream;
                if size > host.max_body() {
                    self.deny(host, Reason::BodyTooLarge, "request body exceeds the limit for a bound call");
                    return Verdict::Pause;
                }
                self.hash_arrived(host);
                if !self.complete {
                    return Verdict::Pause;
                }
                self.run(host, now, true)
            }
            _ => self.settled(),
        }
    }

    /// The request trailers arrived: the client has sent everything.
    pub fn on_trailers(&mut self, host: &mut dyn Host, now: i64) -> Verdict {
        match self.state {
            State::WaitingCallout { .. } | State::WaitingPdp { .. } => {
                self.complete = true;
                Verdict::Pause
            }
            State::BufferingBody => {
                self.complete = true;
                self.run(host, now, true)
            }
            _ => self.settled(),
        }
    }

    /// The shared callout for `need` finished (answered or failed; the engine holds the result).
    pub fn on_callout_done(&mut self, host: &mut dyn Host, need: &Need, now: i64) {
        match &self.state {
            State::WaitingCallout { need: n, .. } if n == need => {}
            _ => return,
        }
        self.mark_tried(need);
        self.run(host, now, false);
    }

    /// This request's PDP answered (`status: None`: the callout failed).
    pub fn on_pdp_answer(&mut self, host: &mut dyn Host, answer: PdpAnswer, now: i64) {
        if !matches!(self.state, State::WaitingPdp { .. }) {
            return;
        }
        self.pdp = Some(answer);
        self.run(host, now, false);
    }

    /// This request's PDP callout was cancelled by Envoy (the context that dispatched it is gone):
    /// ask again.
    pub fn on_pdp_lost(&mut self, host: &mut dyn Host, now: i64) {
        if !matches!(self.state, State::WaitingPdp { .. }) {
            return;
        }
        self.pdp = None;
        self.run(host, now, false);
    }

    /// The periodic tick: a wait past its deadline ends (the engine then answers 503).
    pub fn on_tick(&mut self, host: &mut dyn Host, now: i64) {
        match self.state.clone() {
            State::WaitingCallout { need, deadline } if deadline < now => {
                self.mark_tried(&need);
                self.run(host, now, false);
            }
            State::WaitingPdp { deadline } if deadline < now => {
                self.pdp = Some(PdpAnswer { status: None, body: Vec::new() });
                self.run(host, now, false);
            }
            _ => {}
        }
    }

    /// The stream was reset or is done: forget everything, answer nothing more.
    pub fn on_gone(&mut self) {
        self.state = State::Gone;
        self.head = None;
        self.forget_body();
        self.pdp = None;
    }

    fn forget_body(&mut self) {
        self.body = None;
        self.raw = None;
        self.body_sha256 = None;
    }

    /// Read and hash the body bytes that arrived since the last call, if the body is hashed as it
    /// arrives. If a part cannot be read, the whole body is read once complete instead.
    fn hash_arrived(&mut self, host: &mut dyn Host) {
        let Some(raw) = self.raw.as_mut() else { return };
        let from = raw.bytes.len();
        if self.buffered <= from {
            if self.buffered < from {
                self.raw = None;
                host.hash_fell_back();
            }
            return;
        }
        let len = self.buffered - from;
        match host.read_body_at(from, len) {
            Some(chunk) if chunk.len() == len => {
                raw.sha.update(&chunk);
                raw.bytes.extend_from_slice(&chunk);
            }
            _ => {
                self.raw = None;
                host.hash_fell_back();
            }
        }
    }

    /// The complete body and its SHA-256, if it was hashed as it arrived.
    fn finish_raw(&mut self, host: &mut dyn Host) -> Option<Vec<u8>> {
        self.hash_arrived(host);
        let raw = self.raw.take()?;
        if raw.bytes.len() != self.buffered {
            host.hash_fell_back();
            return None;
        }
        self.body_sha256 = Some(raw.sha.finalize().into());
        Some(raw.bytes)
    }

    /// The answer to a client event once nothing is left to decide.
    fn settled(&self) -> Verdict {
        match self.state {
            State::Allowed => Verdict::Continue,
            _ => Verdict::Pause,
        }
    }

    fn mark_tried(&mut self, need: &Need) {
        match need {
            Need::Keys(_) => self.attempts.keys = true,
            Need::Status(..) => self.attempts.status = true,
            Need::Body | Need::Pdp(_) => {}
        }
    }

    fn deny(&mut self, host: &mut dyn Host, reason: Reason, detail: &str) {
        let (resp, ev) = host.refuse(reason, detail);
        self.finish_deny(host, &resp, &ev);
    }

    fn finish_deny(&mut self, host: &mut dyn Host, resp: &Response, ev: &Evidence) {
        self.state = State::Denied;
        host.evidence(ev);
        host.reply(resp);
        self.forget_body();
        self.pdp = None;
    }

    /// Decide with what has been gathered; loop while the engine's needs can be met at once.
    /// `client`: inside one of the client's callbacks (an allow answers `Continue`), else an allow
    /// resumes the paused request.
    fn run(&mut self, host: &mut dyn Host, now: i64, client: bool) -> Verdict {
        for _ in 0..MAX_STEPS {
            let Some(head) = self.head.as_ref() else {
                self.deny(host, Reason::GatewayError, "the request headers are missing");
                return Verdict::Pause;
            };
            let outcome = host.decide_hashed(
                head,
                self.body.as_deref(),
                self.body_sha256.as_ref(),
                self.pdp.as_ref(),
                self.attempts,
            );
            match outcome {
                Outcome::Allow(ev) => {
                    self.state = State::Allowed;
                    host.evidence(&ev);
                    self.forget_body();
                    self.pdp = None;
                    if client {
                        return Verdict::Continue;
                    }
                    host.resume();
                    return Verdict::Pause;
                }
                Outcome::Deny(resp, ev) => {
                    self.finish_deny(host, &resp, &ev);
                    return Verdict::Pause;
                }
                Outcome::Need(Need::Body) => {
                    if self.body.is_some() {
                        self.deny(host, Reason::GatewayError, "the engine asked twice for the request body");
                        return Verdict::Pause;
                    }
                    if self.buffered > host.max_body() {
                        self.deny(host, Reason::BodyTooLarge, "request body exceeds the limit for a bound call");
                        return Verdict::Pause;
                    }
                    if !self.complete {
                        self.state = State::BufferingBody;
                        if self.raw.is_none() && self.head.as_ref().is_some_and(bound_by_hash) {
                            self.raw = Some(RawBody::default());
                        }
                        self.hash_arrived(host);
                        return Verdict::Pause;
                    }
                    let body = if self.buffered == 0 {
                        self.raw = None;
                        Some(Vec::new())
                    } else {
                        match self.finish_raw(host) {
                            Some(b) => Some(b),
                            None => host.read_body(self.buffered),
                        }
                    };
                    match body {
                        Some(b) => self.body = Some(b),
                        None => {
                            self.deny(host, Reason::GatewayError, "the request body could not be read");
                            return Verdict::Pause;
                        }
                    }
                }
                Outcome::Need(Need::Pdp(callout)) => {
                    if self.pdp.is_some() {
                        self.deny(host, Reason::GatewayError, "the engine asked twice for the PDP");
                        return Verdict::Pause;
                    }
                    if host.dispatch_pdp(&callout) {
                        let secs = i64::try_from(callout.timeout_ms.div_ceil(1000)).unwrap_or(i64::MAX / 4);
                        self.state = State::WaitingPdp { deadline: now.saturating_add(secs + WAIT_MARGIN_SECS) };
                        return Verdict::Pause;
                    }
                    self.pdp = Some(PdpAnswer { status: None, body: Vec::new() });
                }
                Outcome::Need(need) => {
                    let tried = match need {
                        Need::Keys(_) => self.attempts.keys,
                        Need::Status(..) => self.attempts.status,
                        Need::Body | Need::Pdp(_) => false,
                    };
                    if tried {
                        self.deny(host, Reason::GatewayError, "the engine asked twice for the same fetch");
                        return Verdict::Pause;
                    }
                    // Waiting first, so a synchronous answer from the host finds the stream waiting.
                    self.state = State::WaitingCallout { need: need.clone(), deadline: now };
                    match host.wait(&need) {
                        Some(ms) => {
                            let secs = i64::try_from(ms.div_ceil(1000)).unwrap_or(i64::MAX / 4);
                            let deadline = now.saturating_add(secs + WAIT_MARGIN_SECS);
                            self.state = State::WaitingCallout { need, deadline };
                            return Verdict::Pause;
                        }
                        // Could not even ask: decide now as if the fetch failed.
                        None => self.mark_tried(&need),
                    }
                }
            }
        }
        self.deny(host, Reason::GatewayError, "the decision did not settle");
        Verdict::Pause
    }
}
