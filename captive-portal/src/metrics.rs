//! Prometheus metrics of the portal, served at `GET /metrics` in the text exposition format
//! (`prometheus-client`).
//!
//! Every label is bounded: decisions, statuses, outcomes and Mission states are closed sets, and HTTP
//! requests are labelled by the matched route *template* (`/access/v1/requests/:id`), never by a
//! path, Mission id, host or token. See the README ("Metrics") for the table.
//!
//! `/metrics` answers the operator token or a dedicated scraper credential (`--metrics-token`), never
//! a gateway credential or an anonymous caller: counts of requests, approvals and Missions are
//! operational data an outsider should not read.

use std::sync::{LazyLock, Mutex};
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Metric names (without the `_total` suffix the encoder adds to counters), as exposed. The Grafana
/// dashboard test checks its queries against these.
pub const NAMES: &[&str] = &[
    "missiongate_portal_evaluations_total",
    "missiongate_portal_access_requests_total",
    "missiongate_portal_access_requests_pending",
    "missiongate_portal_approval_latency_seconds",
    "missiongate_portal_webhook_deliveries_total",
    "missiongate_portal_webhook_pending",
    "missiongate_portal_mission_transitions_total",
    "missiongate_portal_http_request_duration_seconds",
];

/// A PDP decision.
#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Decision {
    /// Permitted (an approval exists).
    permit,
    /// Refused, not requestable.
    deny,
    /// Refused with a requestable denial (`next_action: request`).
    request,
    /// The evaluation itself failed (4xx/5xx or a batch item error).
    error,
}

/// `decision` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// The decision.
    pub decision: Decision,
}

/// `status` label: `created` or the status a pending request ended in.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// `created`, `approved`, `denied`, `expired`, `cancelled`, `failed`.
    pub status: &'static str,
}

/// `format` and `result` of a webhook delivery attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DeliveryLabels {
    /// `slack` or `generic`.
    pub format: &'static str,
    /// `delivered`, `failed` (will be retried) or `abandoned` (no attempts left).
    pub result: &'static str,
}

/// `to` state of a Mission transition.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransitionLabels {
    /// The state entered.
    pub to: String,
}

/// HTTP request labels: all bounded.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    /// Method (the router has a handful; anything else is `other`).
    pub method: &'static str,
    /// The matched route template, or `unmatched`.
    pub route: String,
    /// `2xx`, `3xx`, `4xx`, `5xx`.
    pub status: &'static str,
}

/// The portal's metrics.
pub struct Metrics {
    registry: Registry,
    /// PDP evaluations by decision.
    pub evaluations: Family<DecisionLabels, Counter>,
    /// Access requests created and ended, by status.
    pub access_requests: Family<StatusLabels, Counter>,
    /// Pending access requests (read from the database at scrape time).
    pub pending: Gauge,
    /// Time from an access request's creation to its end, by the status it ended in.
    pub approval_latency: Family<StatusLabels, Histogram>,
    /// Webhook delivery attempts by format and result.
    pub deliveries: Family<DeliveryLabels, Counter>,
    /// Webhook deliveries not yet delivered nor abandoned (read at scrape time).
    pub webhook_pending: Gauge,
    /// Mission lifecycle transitions recorded in the audit trail, by the state entered.
    pub transitions: Family<TransitionLabels, Counter>,
    transitions_seen: Mutex<std::collections::HashMap<String, u64>>,
    /// HTTP request latency.
    pub http: Family<HttpLabels, Histogram>,
}

fn latency_buckets() -> Histogram {
    Histogram::new([1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14_400.0, 86_400.0])
}

fn http_buckets() -> Histogram {
    Histogram::new([0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0])
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let evaluations = Family::<DecisionLabels, Counter>::default();
        let access_requests = Family::<StatusLabels, Counter>::default();
        let pending = Gauge::default();
        let approval_latency =
            Family::<StatusLabels, Histogram>::new_with_constructor(latency_buckets as fn() -> Histogram);
        let deliveries = Family::<DeliveryLabels, Counter>::default();
        let webhook_pending = Gauge::default();
        let transitions = Family::<TransitionLabels, Counter>::default();
        let http = Family::<HttpLabels, Histogram>::new_with_constructor(http_buckets as fn() -> Histogram);
        registry.register("missiongate_portal_evaluations", "PDP evaluations by decision", evaluations.clone());
        registry.register(
            "missiongate_portal_access_requests",
            "Access requests created (status=created) and ended (approved, denied, expired, cancelled)",
            access_requests.clone(),
        );
        registry.register(
            "missiongate_portal_access_requests_pending",
            "Access requests awaiting a decision",
            pending.clone(),
        );
        registry.register(
            "missiongate_portal_approval_latency_seconds",
            "Time from an access request's creation to its end, by final status",
            approval_latency.clone(),
        );
        registry.register(
            "missiongate_portal_webhook_deliveries",
            "Webhook delivery attempts by format and result (delivered, failed, abandoned)",
            deliveries.clone(),
        );
        registry.register(
            "missiongate_portal_webhook_pending",
            "Webhook deliveries waiting to be sent or retried",
            webhook_pending.clone(),
        );
        registry.register(
            "missiongate_portal_mission_transitions",
            "Mission lifecycle transitions recorded in the audit trail, by the state entered",
            transitions.clone(),
        );
        registry.register(
            "missiongate_portal_http_request_duration_seconds",
            "HTTP request latency by method, matched route template and status class",
            http.clone(),
        );
        Metrics {
            registry,
            evaluations,
            access_requests,
            pending,
            approval_latency,
            deliveries,
            webhook_pending,
            transitions,
            transitions_seen: Mutex::new(std::collections::HashMap::new()),
            http,
        }
    }

    /// Count one evaluation.
    pub fn evaluation(&self, decision: Decision) {
        self.evaluations.get_or_create(&DecisionLabels { decision }).inc();
    }

    /// Bring the transition counters up to the audit trail's per-state totals (monotonic: a total
    /// that went down, after pruning, is ignored).
    pub fn sync_transitions(&self, totals: &[(String, i64)]) {
        let Ok(mut seen) = self.transitions_seen.lock() else { return };
        for (to, total) in totals {
            let total = u64::try_from(*total).unwrap_or(0);
            let last = seen.entry(to.clone()).or_insert(0);
            if total > *last {
                self.transitions.get_or_create(&TransitionLabels { to: to.clone() }).inc_by(total - *last);
                *last = total;
            }
        }
    }

    /// The text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// The process's metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The `status` label value of a task status (a closed set; anything else is `other`).
pub fn status_label(status: &str) -> &'static str {
    match status {
        "created" => "created",
        "approved" => "approved",
        "denied" => "denied",
        "expired" => "expired",
        "cancelled" => "cancelled",
        "failed" => "failed",
        _ => "other",
    }
}

fn method_label(m: &axum::http::Method) -> &'static str {
    match m.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "PUT" => "PUT",
        _ => "other",
    }
}

fn status_class(s: u16) -> &'static str {
    match s {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}

/// Middleware: observe every request's latency under its route template.
pub async fn observe_http(req: Request, next: Next) -> Response {
    // `{id}` is written `:id`: some text-format parsers stop a label set at the first `}`.
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |m| m.as_str().replace('{', ":").replace('}', ""));
    let method = method_label(req.method());
    let start = Instant::now();
    let resp = next.run(req).await;
    let labels = HttpLabels { method, route, status: status_class(resp.status().as_u16()) };
    METRICS.http.get_or_create(&labels).observe(start.elapsed().as_secs_f64());
    resp
}
