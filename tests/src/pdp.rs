//! A stand-in AuthZEN PDP (`POST /access/v1/evaluation`) on a real hyper server, controllable by the
//! tests: the answer it gives, and failure modes (closed, unavailable, slow, garbage). It records
//! every evaluation request it receives, so tests can check the filter's side of the wire.

use crate::authority::{Gate, Mode};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A test's own policy: for the evaluation requests it recognises (say, by Mission id), how long
/// to wait and what to answer; `None` leaves the request to the next rule or the default answer.
type Rule = Box<dyn Fn(&Value) -> Option<(Duration, Value)> + Send + Sync>;

/// One evaluation as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// The request body (`null` when not JSON).
    pub request: Value,
    /// When it arrived.
    pub received: Instant,
    /// When the answer was sent (after any delay).
    pub answered: Instant,
}

struct Inner {
    mode: Mode,
    answer: Value,
    requests: Vec<Value>,
    rules: Vec<Rule>,
    log: Vec<Evaluation>,
    /// Holds every answer while closed.
    gate: Arc<Gate>,
}

/// A running stand-in PDP.
pub struct Pdp {
    /// Port.
    pub port: u16,
    inner: Arc<Mutex<Inner>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

async fn evaluation(State(inner): State<Arc<Mutex<Inner>>>, body: axum::body::Bytes) -> Response {
    let received = Instant::now();
    let gate = Arc::clone(&inner.lock().unwrap().gate);
    gate.pass().await;
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let ruled = inner.lock().unwrap().rules.iter().find_map(|r| r(&request));
    if let Some((delay, answer)) = ruled {
        tokio::time::sleep(delay).await;
        let mut g = inner.lock().unwrap();
        g.requests.push(request.clone());
        g.log.push(Evaluation { request, received, answered: Instant::now() });
        return axum::Json(answer).into_response();
    }
    let mode = inner.lock().unwrap().mode;
    if let Mode::Slow(d) = mode {
        tokio::time::sleep(d).await;
    }
    let mut g = inner.lock().unwrap();
    g.requests.push(request.clone());
    g.log.push(Evaluation { request, received, answered: Instant::now() });
    match mode {
        Mode::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "down").into_response(),
        Mode::Garbage => {
            (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], "{\"decision\": \"maybe\"").into_response()
        }
        Mode::Normal | Mode::Slow(_) | Mode::Bare404 => axum::Json(g.answer.clone()).into_response(),
    }
}

impl Pdp {
    /// Start on an ephemeral port, answering `{"decision": true}`.
    pub fn start() -> Pdp {
        let inner = Arc::new(Mutex::new(Inner {
            mode: Mode::Normal,
            answer: json!({"decision": true}),
            requests: Vec::new(),
            rules: Vec::new(),
            log: Vec::new(),
            gate: Arc::new(Gate::default()),
        }));
        let p = Pdp { port: crate::free_port(), inner, task: Mutex::new(None) };
        p.open();
        p
    }

    /// (Re)open the listener on the same port.
    pub fn open(&self) {
        let app = Router::new().route("/access/v1/evaluation", post(evaluation)).with_state(Arc::clone(&self.inner));
        *self.task.lock().unwrap() = Some(crate::serve_on(self.port, app));
    }

    /// Close the listener: connections are refused.
    pub fn close(&self) {
        crate::stop_serving(self.task.lock().unwrap().take());
    }

    /// The failure mode.
    pub fn set_mode(&self, m: Mode) {
        self.inner.lock().unwrap().mode = m;
    }

    /// The gate in front of every answer.
    pub fn gate(&self) -> Arc<Gate> {
        Arc::clone(&self.inner.lock().unwrap().gate)
    }

    /// The answer to every evaluation from now on.
    pub fn answer(&self, v: Value) {
        self.inner.lock().unwrap().answer = v;
    }

    /// Add a rule (checked in the order added, before the mode and the default answer), so tests
    /// sharing one PDP each answer their own requests, with a delay of their own.
    pub fn rule(&self, f: impl Fn(&Value) -> Option<(Duration, Value)> + Send + Sync + 'static) {
        self.inner.lock().unwrap().rules.push(Box::new(f));
    }

    /// Every evaluation so far, with when it arrived and when it was answered.
    pub fn evaluations(&self) -> Vec<Evaluation> {
        self.inner.lock().unwrap().log.clone()
    }

    /// Evaluation requests received so far (`null` for a body that was not JSON).
    pub fn requests(&self) -> Vec<Value> {
        self.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for Pdp {
    fn drop(&mut self) {
        self.close();
    }
}
