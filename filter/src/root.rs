//! The root context: configuration, the tick (callout housekeeping, JWKS refresh, event polls,
//! counters) and the HTTP contexts it creates.

use crate::shared::init_buckets;
use crate::stream::HttpStream;
use crate::{abi, log, Vm};
use missiongate_core::decision::Reason;
use missiongate_core::engine::{counter_names, Stat};
use missiongate_core::stream::Stream;
use missiongate_core::verifier::{HostVerifier, FOREIGN_FUNCTION};
use missiongate_core::{Config, Engine};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;
use std::collections::HashMap;
use std::rc::Rc;

const TICK_MS: u32 = 200;
const METRIC_PREFIX: &str = "missiongate.";

pub(crate) struct Root {
    vm: Rc<Vm>,
    /// The P-256 generator table is still to be built (on the first tick).
    generator_pending: bool,
}

impl Root {
    pub(crate) fn new(context_id: u32) -> Root {
        let vm = Vm::default();
        vm.root_id.set(context_id);
        Root { vm: Rc::new(vm), generator_pending: false }
    }
}

fn seed() -> [u8; 32] {
    let mut seed = [0u8; 32];
    if getrandom::getrandom(&mut seed).is_err() {
        log(abi::Level::Warn, "missiongate: no random source; seeding from the clock");
        for (s, b) in seed.iter_mut().zip(u128::from(abi::now_nanos()).to_le_bytes()) {
            *s = b;
        }
    }
    seed
}

/// Envoy's `verify_signature` foreign function, through [`abi::call_foreign`].
fn envoy_verify_signature(arguments: &[u8]) -> Option<Vec<u8>> {
    abi::call_foreign(FOREIGN_FUNCTION, arguments).ok()
}

/// Hand ES256 under keys without tables and RS256 to Envoy's BoringSSL when this host has
/// `verify_signature` and it answers a known vector right (probed once per configuration); the pure
/// path otherwise, and always when the VM's environment sets `MISSIONGATE_VERIFIER=pure` (the
/// operator's way back, and the e2e test's reference). Returns the line to log.
fn choose_verifier(engine: &mut Engine) -> (String, Option<Rc<HostVerifier>>) {
    if std::env::var("MISSIONGATE_VERIFIER").is_ok_and(|v| v == "pure") {
        return ("missiongate: signatures verified in Rust (MISSIONGATE_VERIFIER=pure)".into(), None);
    }
    match HostVerifier::probe(envoy_verify_signature) {
        Ok(v) => {
            let v = Rc::new(v);
            engine.set_verifier(v.clone());
            (
                "missiongate: signatures verified by Envoy's verify_signature for ES256 without key tables and RS256, \
                 in Rust otherwise"
                    .into(),
                Some(v),
            )
        }
        Err(why) => (format!("missiongate: signatures verified in Rust ({why})"), None),
    }
}

impl Vm {
    fn tick(&self) {
        let now = self.now();
        self.tick_requests(now);
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
        let foreign = self.verifier.borrow().as_ref().map_or(0, |v| v.take_answered());
        let mut deltas = match self.engine.borrow_mut().as_mut() {
            Some(e) => {
                e.stat_n(Stat::VerifyForeign, foreign);
                e.take_counters()
            }
            None => return,
        };
        let uncounted = self.uncounted.replace(0);
        if uncounted > 0 {
            deltas.push((format!("decision.{}", Reason::GatewayError.as_str()), uncounted));
        }
        let calls = abi::take_hostcalls();
        if calls > 0 {
            deltas.push(("hostcalls".to_owned(), calls));
        }
        let metrics = self.metrics.borrow();
        for (name, delta) in deltas {
            if let Some(id) = metrics.get(&name) {
                let _ = abi::increment_counter(*id, i64::try_from(delta).unwrap_or(i64::MAX));
            }
        }
    }
}

impl Context for Root {
    fn on_http_call_response(&mut self, token_id: u32, _num_headers: usize, body_size: usize, _num_trailers: usize) {
        self.vm.enter(self.vm.root_id.get());
        self.vm.on_response(token_id, body_size);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.vm.enter(self.vm.root_id.get());
        let bytes = match abi::buffer(abi::Buffer::PluginConfiguration, usize::MAX) {
            Ok(b) if !b.is_empty() => b,
            Ok(_) => {
                log(abi::Level::Critical, "invalid missiongate config: (root): configuration is empty");
                return false;
            }
            Err(e) => {
                log(abi::Level::Critical, &format!("missiongate: cannot read configuration: status {}", e.0));
                return false;
            }
        };
        let config = match Config::parse(&bytes) {
            Ok(c) => c,
            Err(e) => {
                log(abi::Level::Critical, &e.to_string());
                return false;
            }
        };
        self.vm.evidence_log.set(Some(config.evidence_log));
        let mut metrics = HashMap::new();
        let counting = cfg!(feature = "hostcalls").then(|| "hostcalls".to_owned());
        for name in counter_names().into_iter().chain(counting) {
            match abi::define_counter(&format!("{METRIC_PREFIX}{name}")) {
                Ok(id) => {
                    metrics.insert(name, id);
                }
                Err(e) => log(abi::Level::Warn, &format!("missiongate: define_metric {name}: status {}", e.0)),
            }
        }
        *self.vm.metrics.borrow_mut() = metrics;
        init_buckets();
        // The P-256 generator table (256 KiB, about 2.7 ms of warm V8 code but well over 100 ms in the
        // baseline-compiled code a fresh VM runs) is built on the first tick, after start rather
        // than in the way of Envoy's readiness; a request that needs it before then builds it itself.
        self.generator_pending = true;
        let mut engine = Engine::new(Rc::new(config), missiongate_core::Seeds { nonce: seed(), ids: seed() });
        let (line, verifier) = choose_verifier(&mut engine);
        log(abi::Level::Info, &line);
        *self.vm.verifier.borrow_mut() = verifier;
        *self.vm.engine.borrow_mut() = Some(engine);
        if let Err(e) = abi::set_tick_period_ms(TICK_MS) {
            log(abi::Level::Critical, &format!("missiongate: set_tick_period failed: status {}", e.0));
            return false;
        }
        // Load remote keys and start event polls at once rather than on the first tick.
        self.vm.tick();
        log(abi::Level::Info, "missiongate: configured");
        true
    }

    fn on_tick(&mut self) {
        self.vm.enter(self.vm.root_id.get());
        if std::mem::take(&mut self.generator_pending) {
            missiongate_wire::p256_fast::precompute_generator();
        }
        self.vm.tick();
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        self.vm.streams.borrow_mut().insert(context_id, Stream::new());
        Some(Box::new(HttpStream { id: context_id, vm: Rc::clone(&self.vm) }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
