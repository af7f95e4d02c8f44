//! A stand-in state authority (JWKS + signed Mission Status) on a real hyper server, controllable
//! by the tests: Mission states, key rotation, and failure modes (unavailable, slow, garbage, closed).

use axum::extract::{Form, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p256::pkcs8::EncodePrivateKey;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How the authority behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Answers correctly.
    Normal,
    /// Every endpoint answers 503.
    Unavailable,
    /// Every endpoint waits this long first.
    Slow(Duration),
    /// Status answers 200 with a body that is not a JWS; JWKS answers garbage too.
    Garbage,
    /// Status answers a bare 404 (no body): what a wrong endpoint path looks like.
    Bare404,
}

/// A gate a test closes to hold every answer of a stand-in until it opens it again: the test sees
/// the filter waiting on the dependency (a request has arrived at the closed gate), checks what must
/// hold meanwhile, then lets the answer go. Nothing races a clock.
#[derive(Debug, Default)]
pub struct Gate {
    closed: AtomicBool,
    arrived: AtomicU64,
}

impl Gate {
    /// Hold every answer from now on (and count arrivals from zero).
    pub fn close(&self) {
        self.arrived.store(0, Ordering::SeqCst);
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Let every held answer, and those after it, go.
    pub fn open(&self) {
        self.closed.store(false, Ordering::SeqCst);
    }

    /// Requests that reached the gate since it was closed.
    pub fn arrived(&self) -> u64 {
        self.arrived.load(Ordering::SeqCst)
    }

    /// Block until a request has reached the closed gate (true), or `within` passed (false).
    pub fn wait_for_arrival(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while self.arrived() == 0 {
            if Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        true
    }

    /// In a handler: wait here while the gate is closed.
    pub(crate) async fn pass(&self) {
        if !self.closed.load(Ordering::SeqCst) {
            return;
        }
        self.arrived.fetch_add(1, Ordering::SeqCst);
        while self.closed.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// How a [`Signer`] signs.
#[derive(Clone)]
enum Enc {
    /// ES256 through jsonwebtoken (an implementation independent of the filter's).
    Jwt(EncodingKey),
    /// RS256 / PS256 through missiongate-wire's test signer (RustCrypto `rsa`; the filter's RSA
    /// verification is checked against pyca/cryptography vectors in wire/tests/rsa_vectors.rs).
    Wire(missiongate_wire::jose::SigningKey),
}

/// A signing key with its public JWK: ES256 (fresh) or RSA (fixed test keys).
#[derive(Clone)]
pub struct Signer {
    /// Key id.
    pub kid: String,
    enc: Enc,
    /// Public JWK.
    pub jwk: Value,
    /// The raw key, for tests that need to misuse its public bytes (EC keys; empty for RSA).
    pub public_sec1: Vec<u8>,
}

const RSA_TEST_KEYS: &str = include_str!("../../wire/tests/data/rsa_test_keys.json");

impl Signer {
    /// A fresh P-256 key.
    pub fn new(kid: &str) -> Signer {
        let sk = p256::ecdsa::SigningKey::random(&mut rand_core::OsRng);
        let der = sk.to_pkcs8_der().unwrap();
        let enc = Enc::Jwt(EncodingKey::from_ec_der(der.as_bytes()));
        let point = sk.verifying_key().to_encoded_point(false);
        let b = |x: &[u8]| missiongate_wire::b64::encode(x);
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": b(point.x().unwrap()), "y": b(point.y().unwrap()), "kid": kid, "alg": "ES256", "use": "sig"});
        Signer { kid: kid.into(), enc, jwk, public_sec1: point.as_bytes().to_vec() }
    }

    /// One of the fixed RSA test keys (`a2048`, `b2048`, `c2048`, `short1024` in
    /// wire/tests/data/rsa_test_keys.json), signing `alg` ("RS256" or "PS256"). Its JWK has no
    /// `alg` member, so the filter takes it for both.
    pub fn rsa(kid: &str, key: &str, alg: &str) -> Signer {
        use missiongate_wire::jose::{Alg, SigningKey};
        let keys: Value = serde_json::from_str(RSA_TEST_KEYS).unwrap();
        let unhex = |s: &str| {
            let s = if s.len() % 2 == 1 { format!("0{s}") } else { s.to_owned() };
            (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect::<Vec<u8>>()
        };
        let p = unhex(keys[key]["p"].as_str().expect("test key name"));
        let q = unhex(keys[key]["q"].as_str().unwrap());
        let sk = SigningKey::rsa_from_primes(Alg::from_name(alg).unwrap(), &p, &q).unwrap();
        let mut jwk = serde_json::to_value(sk.public_jwk(Some(kid))).unwrap();
        jwk.as_object_mut().unwrap().remove("alg");
        Signer { kid: kid.into(), enc: Enc::Wire(sk), jwk, public_sec1: Vec::new() }
    }

    /// The same RSA key signing another algorithm ("RS256" or "PS256").
    pub fn with_alg(&self, alg: &str) -> Signer {
        let mut s = self.clone();
        if let Enc::Wire(k) = &self.enc {
            s.enc = Enc::Wire(k.with_alg(missiongate_wire::jose::Alg::from_name(alg).unwrap()));
        }
        s
    }

    /// The JOSE `alg` this signer uses.
    pub fn alg(&self) -> &'static str {
        match &self.enc {
            Enc::Jwt(_) => "ES256",
            Enc::Wire(k) => k.alg().name(),
        }
    }

    /// Sign claims with a given header (its `alg` is taken as given: tests craft mismatches).
    pub fn sign_with_header(&self, h: Header, claims: &Value) -> String {
        match &self.enc {
            Enc::Jwt(enc) => jsonwebtoken::encode(&h, claims, enc).unwrap(),
            Enc::Wire(k) => k.sign_compact(&serde_json::to_value(&h).unwrap(), claims),
        }
    }

    /// Sign claims as a JWS with this `typ`.
    pub fn sign(&self, typ: &str, claims: &Value) -> String {
        match &self.enc {
            Enc::Jwt(enc) => {
                let mut h = Header::new(Algorithm::ES256);
                h.typ = Some(typ.into());
                h.kid = Some(self.kid.clone());
                jsonwebtoken::encode(&h, claims, enc).unwrap()
            }
            Enc::Wire(k) => k.sign_compact(&json!({"alg": self.alg(), "typ": typ, "kid": self.kid}), claims),
        }
    }

    /// Sign with an arbitrary JSON header (e.g. an `alg` that does not match the key).
    pub fn sign_raw_header(&self, header: &Value, claims: &Value) -> String {
        match &self.enc {
            Enc::Wire(k) => k.sign_compact(header, claims),
            Enc::Jwt(_) => panic!("sign_raw_header is for RSA test keys"),
        }
    }
}

struct Inner {
    issuer: String,
    keys: Vec<Signer>,
    missions: HashMap<String, (String, u64)>,
    /// Current Authority Set per Mission, sent as `authorization_details` in Status answers.
    current: HashMap<String, Value>,
    /// A header (name, value) every Status request must carry, else 401.
    required_header: Option<(String, String)>,
    /// Every `ack` and `set_errs_seen` jti received, in order.
    acks: Vec<String>,
    set_errs_seen: Vec<(String, String)>,
    /// The next poll ignores its acknowledgement (delivers every SET again).
    ignore_next_ack: bool,
    mode: Mode,
    fresh_seconds: i64,
    status_hits: u64,
    jwks_hits: u64,
    /// Every state-event SET published: (jti, compact JWS).
    events: Vec<(String, String)>,
    /// Extra delay before answering Mission Status for these Missions.
    status_delays: HashMap<String, Duration>,
    /// Extra delay before answering the JWKS.
    jwks_delay: Duration,
    /// Status answers: (mission id, received, answered).
    status_log: Vec<(String, Instant, Instant)>,
    /// JWKS answers: (received, answered).
    jwks_log: Vec<(Instant, Instant)>,
    /// JWKS requests received (counted on arrival, before any delay).
    jwks_received: u64,
    /// Holds every answer while closed.
    gate: Arc<Gate>,
}

/// A running stand-in authority.
pub struct Authority {
    /// Port.
    pub port: u16,
    /// `iss` it signs with.
    pub issuer: String,
    inner: Arc<Mutex<Inner>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(serde::Deserialize)]
struct StatusForm {
    mission_id: Option<String>,
    audience: Option<String>,
    nonce: Option<String>,
}

async fn delay(inner: &Arc<Mutex<Inner>>) -> Mode {
    let gate = Arc::clone(&inner.lock().unwrap().gate);
    gate.pass().await;
    let mode = inner.lock().unwrap().mode;
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    mode
}

async fn jwks(State(inner): State<Arc<Mutex<Inner>>>) -> Response {
    let received = Instant::now();
    inner.lock().unwrap().jwks_received += 1;
    let mode = delay(&inner).await;
    let extra = inner.lock().unwrap().jwks_delay;
    tokio::time::sleep(extra).await;
    let mut g = inner.lock().unwrap();
    g.jwks_hits += 1;
    g.jwks_log.push((received, Instant::now()));
    match mode {
        Mode::Unavailable => StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Mode::Garbage => (StatusCode::OK, "{\"keys\": 42").into_response(),
        _ => {
            let keys: Vec<Value> = g.keys.iter().map(|k| k.jwk.clone()).collect();
            axum::Json(json!({ "keys": keys })).into_response()
        }
    }
}

async fn status(
    State(inner): State<Arc<Mutex<Inner>>>,
    headers: axum::http::HeaderMap,
    Form(f): Form<StatusForm>,
) -> Response {
    let received = Instant::now();
    let mode = delay(&inner).await;
    let id = f.mission_id.clone().unwrap_or_default();
    let extra = inner.lock().unwrap().status_delays.get(&id).copied().unwrap_or_default();
    tokio::time::sleep(extra).await;
    let mut g = inner.lock().unwrap();
    g.status_hits += 1;
    g.status_log.push((id, received, Instant::now()));
    match mode {
        Mode::Unavailable => return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Mode::Garbage => return (StatusCode::OK, "this is not a JWS {]").into_response(),
        Mode::Bare404 => return StatusCode::NOT_FOUND.into_response(),
        _ => {}
    }
    // The draft's error body: `error`, `error_description`, the echoed `nonce`.
    let error = |code: StatusCode, error: &str, description: &str, nonce: &Option<String>| {
        let body = json!({"error": error, "error_description": description, "nonce": nonce});
        (code, [(header::CACHE_CONTROL, "no-store")], axum::Json(body)).into_response()
    };
    if let Some((name, value)) = &g.required_header {
        if headers.get(name.as_str()).and_then(|v| v.to_str().ok()) != Some(value.as_str()) {
            return error(StatusCode::UNAUTHORIZED, "unauthorized", "client authentication failed", &f.nonce);
        }
    }
    if headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()) != Some("application/mission-status-response+jwt") {
        return error(StatusCode::BAD_REQUEST, "invalid_request", "Accept must name the registered type", &f.nonce);
    }
    let (Some(id), Some(aud), Some(nonce)) = (f.mission_id, f.audience, f.nonce.clone()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "mission_id, audience and nonce are required",
            &f.nonce,
        );
    };
    let Some((state, version)) = g.missions.get(&id).cloned() else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such mission", &f.nonce);
    };
    let now = crate::now();
    let mut claims = json!({
        "iss": g.issuer, "aud": aud, "nonce": nonce, "iat": now, "exp": now + 60,
        "mission": { "id": id, "issuer": g.issuer, "state": state, "version": version,
                     "fresh_until": missiongate_wire::time::format_rfc3339(now + g.fresh_seconds) }
    });
    if let Some(set) = g.current.get(&id) {
        claims["authorization_details"] = set.clone();
    }
    let jws = g.keys.last().unwrap().sign("mission-status-response+jwt", &claims);
    ([(header::CONTENT_TYPE, "application/mission-status-response+jwt"), (header::CACHE_CONTROL, "no-store")], jws)
        .into_response()
}

/// RFC 8936 poll delivery. Every Envoy worker polls on its own and acknowledges each SET it
/// processed by `jti` (opaque strings here), so the feed keeps every SET and delivers those published
/// after the last one a poll acknowledges (in `ack` or `setErrs`); an empty answer holds a long
/// poll for up to a second.
async fn events(State(inner): State<Arc<Mutex<Inner>>>, axum::Json(poll): axum::Json<Value>) -> Response {
    let immediately = poll["returnImmediately"].as_bool().unwrap_or(false);
    let position = {
        let mut g = inner.lock().unwrap();
        let acked: Vec<String> =
            poll["ack"].as_array().into_iter().flatten().filter_map(|j| j.as_str().map(str::to_owned)).collect();
        let errs: Vec<(String, String)> = poll["setErrs"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(j, e)| (j.clone(), e["err"].as_str().unwrap_or_default().to_owned()))
            .collect();
        g.acks.extend(acked.iter().cloned());
        g.set_errs_seen.extend(errs.iter().cloned());
        if std::mem::take(&mut g.ignore_next_ack) {
            None
        } else {
            acked
                .iter()
                .chain(errs.iter().map(|(j, _)| j))
                .filter_map(|j| g.events.iter().position(|(e, _)| e == j))
                .max()
        }
    };
    let first = position.map_or(0, |p| p + 1);
    for round in 0..20 {
        {
            let g = inner.lock().unwrap();
            if g.mode == Mode::Unavailable {
                return (StatusCode::SERVICE_UNAVAILABLE, "down").into_response();
            }
            let sets: serde_json::Map<String, Value> =
                g.events.iter().skip(first).map(|(j, s)| (j.clone(), Value::String(s.clone()))).collect();
            if !sets.is_empty() || immediately || round == 19 {
                return axum::Json(json!({ "sets": sets, "moreAvailable": false })).into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    axum::Json(json!({ "sets": {}, "moreAvailable": false })).into_response()
}

impl Authority {
    /// Publish a signed `mission.lifecycle-change` SET (signals draft) for a Mission with this state
    /// and version, whatever the Mission's current state: tests publish stale and replayed events too.
    /// Returns its `jti`.
    pub fn publish_event(&self, mission_id: &str, state: &str, version: u64) -> String {
        self.publish_event_with(mission_id, state, version, &json!({}))
    }

    /// [`Authority::publish_event`] with `extra` merged: into the event for `prior_state`,
    /// `authority_changed`, `successor`; a top-level `"aud"` in `extra` replaces the SET's audience.
    pub fn publish_event_with(&self, mission_id: &str, state: &str, version: u64, extra: &Value) -> String {
        let mut g = self.inner.lock().unwrap();
        let jti = crate::rand_id("set-");
        let now = crate::now();
        let mut event = json!({
            "mission": { "id": mission_id, "issuer": g.issuer }, "state": state, "version": version,
            "committed_at": missiongate_wire::time::format_rfc3339(now),
            "expires_at": missiongate_wire::time::format_rfc3339(now + 3600),
        });
        if version > 1 {
            event["prior_state"] = json!("active");
        }
        let mut aud = json!(crate::portal::GATEWAY_AUDIENCE);
        for (k, v) in extra.as_object().into_iter().flatten() {
            if k == "aud" {
                aud = v.clone();
            } else {
                event[k] = v.clone();
            }
        }
        let claims = json!({
            "iss": g.issuer, "iat": now, "jti": jti, "aud": aud,
            "sub_id": {"format": "opaque", "id": mission_id},
            "events": { missiongate_wire::claims::EVENT_MISSION_LIFECYCLE_CHANGE: event }
        });
        let jws = g.keys.last().unwrap().sign(missiongate_wire::claims::TYP_SET, &claims);
        g.events.push((jti.clone(), jws));
        jti
    }

    /// Every jti acknowledged in `ack` so far, in order.
    pub fn acks(&self) -> Vec<String> {
        self.inner.lock().unwrap().acks.clone()
    }

    /// Every (jti, err) reported in `set_errs_seen` so far.
    pub fn set_errs(&self) -> Vec<(String, String)> {
        self.inner.lock().unwrap().set_errs_seen.clone()
    }

    /// The next poll ignores its acknowledgement: every SET is delivered again (duplicates).
    pub fn redeliver_all(&self) {
        self.inner.lock().unwrap().ignore_next_ack = true;
    }

    /// Set the Mission's state and version exactly (no bump).
    pub fn set_mission_version(&self, id: &str, state: &str, version: u64) {
        self.inner.lock().unwrap().missions.insert(id.into(), (state.into(), version));
    }

    /// The current Authority Set sent in this Mission's Status answers (`None`: not sent).
    pub fn set_current_authority(&self, id: &str, details: Option<Value>) {
        let mut g = self.inner.lock().unwrap();
        match details {
            Some(d) => g.current.insert(id.into(), d),
            None => g.current.remove(id),
        };
    }

    /// Require this header on every Status request (else 401 with the draft's error body).
    pub fn require_status_header(&self, name: &str, value: &str) {
        self.inner.lock().unwrap().required_header = Some((name.to_ascii_lowercase(), value.into()));
    }

    /// Start with one key on an ephemeral port.
    pub fn start() -> Authority {
        let port = crate::free_port();
        let issuer = format!("http://127.0.0.1:{port}");
        let inner = Arc::new(Mutex::new(Inner {
            issuer: issuer.clone(),
            keys: vec![Signer::new("k1")],
            missions: HashMap::new(),
            current: HashMap::new(),
            required_header: None,
            acks: Vec::new(),
            set_errs_seen: Vec::new(),
            ignore_next_ack: false,
            mode: Mode::Normal,
            fresh_seconds: 30,
            status_hits: 0,
            jwks_hits: 0,
            events: Vec::new(),
            status_delays: HashMap::new(),
            jwks_delay: Duration::ZERO,
            status_log: Vec::new(),
            jwks_log: Vec::new(),
            jwks_received: 0,
            gate: Arc::new(Gate::default()),
        }));
        let a = Authority { port, issuer, inner, task: Mutex::new(None) };
        a.open();
        a
    }

    /// The authority's routes (JWKS, Mission Status, events), to serve elsewhere too (over TLS).
    pub fn router(&self) -> Router {
        Router::new()
            .route("/jwks.json", get(jwks))
            .route("/mission/status", post(status))
            .route("/mission/events", post(events))
            .with_state(Arc::clone(&self.inner))
    }

    /// (Re)open the listener on the same port.
    pub fn open(&self) {
        *self.task.lock().unwrap() = Some(crate::serve_on(self.port, self.router()));
    }

    /// Close the listener: connections are refused.
    pub fn close(&self) {
        crate::stop_serving(self.task.lock().unwrap().take());
    }

    /// Set a Mission's state (version bumps).
    pub fn set_mission(&self, id: &str, state: &str) {
        let mut g = self.inner.lock().unwrap();
        let v = g.missions.get(id).map_or(1, |(_, v)| v + 1);
        g.missions.insert(id.into(), (state.into(), v));
    }

    /// How long status answers are fresh.
    pub fn set_fresh_seconds(&self, s: i64) {
        self.inner.lock().unwrap().fresh_seconds = s;
    }

    /// Set the failure mode.
    pub fn set_mode(&self, m: Mode) {
        self.inner.lock().unwrap().mode = m;
    }

    /// The gate in front of the JWKS and Mission Status answers.
    pub fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.inner.lock().unwrap().gate)
    }

    /// Publish a new key; it becomes the signing key. Returns it.
    pub fn rotate(&self, kid: &str) -> Signer {
        let s = Signer::new(kid);
        self.inner.lock().unwrap().keys.push(s.clone());
        s
    }

    /// Publish another key in the JWKS (before the others: the last one keeps signing the
    /// authority's own answers).
    pub fn publish_extra(&self, s: Signer) {
        self.inner.lock().unwrap().keys.insert(0, s);
    }

    /// Replace the published key under `kid` by `s` (same `kid`, new key material), as an
    /// authority that makes a new key on every restart does. Panics if no key has that `kid`.
    pub fn replace_key(&self, kid: &str, s: Signer) {
        let mut g = self.inner.lock().unwrap();
        let slot = g.keys.iter_mut().find(|k| k.kid == kid).expect("a key with this kid");
        *slot = s;
    }

    /// The current signing key (the last published).
    pub fn signer(&self) -> Signer {
        self.inner.lock().unwrap().keys.last().unwrap().clone()
    }

    /// Delay Mission Status answers for this Mission only (on top of the mode).
    pub fn set_status_delay(&self, mission_id: &str, d: Duration) {
        self.inner.lock().unwrap().status_delays.insert(mission_id.into(), d);
    }

    /// Delay every JWKS answer (on top of the mode).
    pub fn set_jwks_delay(&self, d: Duration) {
        self.inner.lock().unwrap().jwks_delay = d;
    }

    /// Status answers for this Mission: (received, answered).
    pub fn status_answers(&self, mission_id: &str) -> Vec<(Instant, Instant)> {
        let g = self.inner.lock().unwrap();
        g.status_log.iter().filter(|(m, _, _)| m == mission_id).map(|(_, r, a)| (*r, *a)).collect()
    }

    /// JWKS requests received so far (answered or not).
    pub fn jwks_requests(&self) -> u64 {
        self.inner.lock().unwrap().jwks_received
    }

    /// JWKS answers: (received, answered).
    pub fn jwks_answers(&self) -> Vec<(Instant, Instant)> {
        self.inner.lock().unwrap().jwks_log.clone()
    }

    /// Status requests served.
    pub fn status_hits(&self) -> u64 {
        self.inner.lock().unwrap().status_hits
    }

    /// JWKS requests served.
    pub fn jwks_hits(&self) -> u64 {
        self.inner.lock().unwrap().jwks_hits
    }

    /// Default claims of a valid token for `mission_id` (active Missions need `set_mission`).
    pub fn claims(&self, mission_id: &str) -> Value {
        let now = crate::now();
        json!({
            "iss": self.issuer, "sub": "user-1", "client_id": "agent-7",
            "aud": ["https://api.partner.example"],
            "iat": now, "exp": now + 300, "jti": crate::rand_id("at_"),
            "mission": { "id": mission_id, "issuer": self.issuer, "authority_hash": "sha-256:l3KvZ4mP5x0wQrR6tY2nD9bM7sX1cF8gH2vJ4kE5pNQ" },
            "authorization_details": [
                { "type": "mission_resource_access", "resource": "https://api.partner.example/v1",
                  "resource_match": "prefix", "actions": ["http.get", "invoices.*"] },
                { "type": "mission_resource_access", "resource": "https://api.partner.example/v1/payments",
                  "actions": ["payments.create"] }
            ]
        })
    }

    /// Sign access-token claims with the current key (`typ: at+jwt`).
    pub fn token(&self, claims: &Value) -> String {
        self.signer().sign("at+jwt", claims)
    }

    /// A fresh active Mission and a valid token for it.
    pub fn active_token(&self) -> (String, String) {
        let id = crate::rand_id("msn_");
        self.set_mission(&id, "active");
        let t = self.token(&self.claims(&id));
        (id, t)
    }
}

impl Drop for Authority {
    fn drop(&mut self) {
        self.close();
    }
}
