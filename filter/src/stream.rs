//! The HTTP context: maps Envoy's request callbacks onto the core's per-request state machine and
//! implements what the machine asks of the host ([`Host`]).

use crate::shared::SharedReplay;
use crate::{abi, log, send, Vm};
use missiongate_core::decision::{Evidence, Reason, Response};
use missiongate_core::engine::{Attempts, Callout, Need, Outcome, PdpAnswer, Stat};
use missiongate_core::head::Head;
use missiongate_core::stream::{Host, State, Stream, Verdict};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use std::rc::Rc;

/// The host side of one request's state machine.
pub(crate) struct Glue<'a> {
    vm: &'a Vm,
    ctx: u32,
}

impl Host for Glue<'_> {
    fn decide(&mut self, head: &Head, body: Option<&[u8]>, pdp: Option<&PdpAnswer>, attempts: Attempts) -> Outcome {
        self.decide_hashed(head, body, None, pdp, attempts)
    }

    fn decide_hashed(
        &mut self,
        head: &Head,
        body: Option<&[u8]>,
        body_sha256: Option<&[u8; 32]>,
        pdp: Option<&PdpAnswer>,
        attempts: Attempts,
    ) -> Outcome {
        let now = self.vm.now();
        let refused = |vm: &Vm, detail: &str| {
            let (resp, ev) = vm.refusal(Reason::GatewayError, detail);
            Outcome::Deny(resp, ev)
        };
        let Ok(mut guard) = self.vm.engine.try_borrow_mut() else {
            return refused(self.vm, "the decision engine is busy (re-entrant call)");
        };
        let Some(engine) = guard.as_mut() else {
            drop(guard);
            return refused(self.vm, "the filter is not configured");
        };
        let mut extra = head.extra(body, pdp);
        extra.body_sha256 = body_sha256;
        engine.decide_full(&head.request(), &extra, now, attempts, &mut SharedReplay)
    }

    fn refuse(&mut self, reason: Reason, detail: &str) -> (Response, Evidence) {
        self.vm.refusal(reason, detail)
    }

    fn evidence(&mut self, evidence: &Evidence) {
        self.vm.evidence(evidence);
    }

    fn reply(&mut self, response: &Response) {
        send(response);
    }

    fn read_body(&mut self, len: usize) -> Option<Vec<u8>> {
        match abi::buffer(abi::Buffer::RequestBody, len) {
            Ok(b) if b.len() == len => Some(b),
            Ok(b) => {
                log(abi::Level::Error, &format!("missiongate: request body: {} of {len} bytes", b.len()));
                None
            }
            Err(e) => {
                log(abi::Level::Error, &format!("missiongate: cannot read request body: status {}", e.0));
                None
            }
        }
    }

    fn read_body_at(&mut self, start: usize, len: usize) -> Option<Vec<u8>> {
        match abi::buffer_at(abi::Buffer::RequestBody, start, len) {
            Ok(b) if b.len() == len => Some(b),
            Ok(b) => {
                log(abi::Level::Warn, &format!("missiongate: request body at {start}: {} of {len} bytes", b.len()));
                None
            }
            Err(e) => {
                log(abi::Level::Warn, &format!("missiongate: cannot read request body at {start}: status {}", e.0));
                None
            }
        }
    }

    fn wait(&mut self, need: &Need) -> Option<u64> {
        self.vm.wait(self.ctx, need)
    }

    fn dispatch_pdp(&mut self, callout: &Callout) -> bool {
        self.vm.dispatch_pdp(self.ctx, callout)
    }

    fn resume(&mut self) {
        if let Err(e) = abi::resume_request() {
            log(abi::Level::Warn, &format!("missiongate: resume failed: status {}", e.0));
        }
    }

    fn max_body(&self) -> usize {
        self.vm.engine.try_borrow().ok().and_then(|g| g.as_ref().map(|e| e.config.max_body_bytes)).unwrap_or(0)
    }

    fn hash_fell_back(&mut self) {
        if let Ok(mut guard) = self.vm.engine.try_borrow_mut() {
            if let Some(engine) = guard.as_mut() {
                engine.stat(Stat::BodyHashFallback);
            }
        }
    }
}

impl Vm {
    /// Run one event on the machine of `ctx` (the effective context), taken out of the map while
    /// it runs so the host calls it makes can reach the rest of the VM.
    pub(crate) fn drive<R>(&self, ctx: u32, f: impl FnOnce(&mut Stream, &mut Glue<'_>) -> R) -> Option<R> {
        let mut machine = self.streams.borrow_mut().remove(&ctx)?;
        let mut glue = Glue { vm: self, ctx };
        let r = f(&mut machine, &mut glue);
        if *machine.state() != State::Gone {
            self.streams.borrow_mut().insert(ctx, machine);
        }
        Some(r)
    }

    /// Run an event on another request's machine, from a callout answer or the tick.
    // Out of line: each of its callers' closures inlined the stream machine's event here, into the
    // tick's one large function (issue 16: VM start, VMSTART-FINDINGS.md).
    #[inline(never)]
    pub(crate) fn drive_from_afar(&self, ctx: u32, f: impl FnOnce(&mut Stream, &mut Glue<'_>)) {
        if !self.streams.borrow().contains_key(&ctx) {
            return;
        }
        if !self.switch_to(ctx) {
            self.streams.borrow_mut().remove(&ctx); // the request is gone
            return;
        }
        self.drive(ctx, f);
    }

    /// Go back to the context whose callback is running.
    pub(crate) fn switch_back(&self) {
        let active = self.active.get();
        if !self.switch_to(active) {
            log(abi::Level::Warn, "missiongate: cannot return to the running context");
        }
    }
}

pub(crate) struct HttpStream {
    pub(crate) id: u32,
    pub(crate) vm: Rc<Vm>,
}

fn action(v: Verdict) -> Action {
    match v {
        Verdict::Continue => Action::Continue,
        Verdict::Pause => Action::Pause,
    }
}

impl Context for HttpStream {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.vm.enter(self.id);
        self.vm.on_response(token_id, body_size);
    }

    fn on_done(&mut self) -> bool {
        self.vm.enter(self.id);
        self.vm.forget(self.id);
        true
    }
}

impl HttpContext for HttpStream {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.vm.enter(self.id);
        let head = match abi::header_pairs(abi::Map::RequestHeaders) {
            Ok(pairs) => Head::from_pairs(&pairs),
            Err(e) => {
                log(abi::Level::Error, &format!("missiongate: cannot read request headers: status {}", e.0));
                Head::refused(Reason::GatewayError, "the request headers could not be read")
            }
        };
        let now = self.vm.now();
        let v = self.vm.drive(self.id, |m, g| m.on_headers(g, head, end_of_stream, now));
        action(v.unwrap_or(Verdict::Pause))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        self.vm.enter(self.id);
        // The core decides (and reads `now`) only when the body is complete; a chunk before that is
        // counted and, for a raw body bound to its digest, hashed as it arrives, with no clock read.
        // (A refusal for size reads the clock itself.)
        let now = if end_of_stream { self.vm.now() } else { self.vm.recent_now() };
        let v = self.vm.drive(self.id, |m, g| m.on_body(g, body_size, end_of_stream, now));
        action(v.unwrap_or(Verdict::Pause))
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.vm.enter(self.id);
        let now = self.vm.now();
        let v = self.vm.drive(self.id, |m, g| m.on_trailers(g, now));
        action(v.unwrap_or(Verdict::Pause))
    }
}
