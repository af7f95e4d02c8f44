//! Approver notifications: webhooks told when an access request is created, decided, cancelled or
//! expires.
//!
//! Two formats per event:
//! - **Slack-compatible** (`--notify-slack URL`): an incoming-webhook message (`text` plus a `blocks`
//!   section) naming the agent, the Mission, the destination, the operation and the approval page.
//! - **Generic** (`--notify-webhook URL`): a JSON event signed with HMAC-SHA-256 under
//!   `--notify-secret`. The header `X-Missiongate-Signature: t=<unix seconds>,v1=<hex>` carries the
//!   time of sending and the hex HMAC of `<t>.<body>` (the body's exact bytes). A receiver recomputes
//!   it, compares in constant time and refuses an old `t` (replay). `X-Missiongate-Event-Id` (also the
//!   body's `id`) is stable across retries: receivers de-duplicate on it.
//!
//! Delivery is a transactional outbox in SQLite (migration 0004): triggers on `access_tasks` write a
//! `notify_events` row in the same transaction as the task's change, so an event cannot be lost
//! between "decided" and "notified". A background worker expands each event into one
//! `notify_deliveries` row per webhook, claims due rows with a conditional `UPDATE` (a lease), posts
//! them and records the outcome; a failure is retried with exponential backoff
//! (`--notify-retry-base-ms`, doubling, at most 5 minutes apart) until `--notify-max-attempts`. None
//! of this runs on the agent's request path: a slow or dead receiver never delays nor fails it.

use std::sync::Arc;
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use sqlx::Row;
use tokio::sync::watch;

use missiongate_wire::time::format_rfc3339;

use crate::access::Access;
use crate::metrics::{status_label, DeliveryLabels, StatusLabels, METRICS};
use crate::store::StoreError;
use crate::util::now_secs;

/// Header of the generic format's signature.
pub const SIGNATURE_HEADER: &str = "x-missiongate-signature";
/// Header of the event id.
pub const EVENT_ID_HEADER: &str = "x-missiongate-event-id";
/// Header of the event type.
pub const EVENT_TYPE_HEADER: &str = "x-missiongate-event";

/// Longest wait between two attempts.
const MAX_BACKOFF_MS: i64 = 300_000;
/// A claim lasts this long (longer than a request may take).
const LEASE_MS: i64 = 15_000;
/// Timeout of one webhook call.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook and its format.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Where to post.
    pub url: String,
    /// `slack` or `generic`.
    pub format: &'static str,
}

impl Webhook {
    /// The stable key of this webhook in the outbox (format and URL, hashed: the URL of an incoming
    /// webhook is a secret).
    fn key(&self) -> String {
        let digest = crate::util::sha256(format!("{}\n{}", self.format, self.url));
        format!("{}:{}", self.format, hex::encode(&digest[..12]))
    }
}

/// Notification settings.
#[derive(Debug, Clone)]
pub struct NotifySettings {
    /// The webhooks.
    pub webhooks: Vec<Webhook>,
    /// HMAC key of the generic format.
    pub secret: Vec<u8>,
    /// First retry delay; doubles per attempt.
    pub retry_base_ms: i64,
    /// Attempts before a delivery is abandoned.
    pub max_attempts: i64,
    /// Delivered and abandoned rows (and expanded events) are deleted this long after.
    pub retention_seconds: i64,
}

/// The worker.
#[derive(Debug)]
pub struct Notifier {
    settings: NotifySettings,
    access: Arc<Access>,
    http: reqwest::Client,
}

/// `t=<unix>,v1=<hex of HMAC-SHA-256(secret, "<t>.<body>")>`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    // HMAC accepts a key of any length.
    let mut mac = match <Hmac<Sha256> as Mac>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A claimed delivery.
struct Claimed {
    id: i64,
    webhook: String,
    format: String,
    body: String,
    attempts: i64,
    event_id: String,
    event_type: String,
}

impl Notifier {
    /// A worker over `access` (its store and public URLs).
    pub fn new(settings: NotifySettings, access: Arc<Access>) -> Result<Arc<Notifier>, String> {
        let http = reqwest::Client::builder()
            .timeout(SEND_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook client: {e}"))?;
        Ok(Arc::new(Notifier { settings, access, http }))
    }

    /// Run until shutdown: expand new events, send due deliveries, prune old rows.
    pub async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_prune = 0i64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
            if let Err(e) = self.expand().await {
                tracing::warn!(error = %e, "notification events could not be expanded");
            }
            loop {
                match self.claim().await {
                    Ok(Some(c)) => self.send(c).await,
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "webhook deliveries could not be claimed");
                        break;
                    }
                }
                if *shutdown.borrow() {
                    return;
                }
            }
            let now = now_secs();
            if now - last_prune >= 60 {
                last_prune = now;
                if let Err(e) = self.prune(now).await {
                    tracing::warn!(error = %e, "notification pruning failed");
                }
            }
        }
    }

    /// Turn each new event into one delivery per webhook (one transaction per event), and count it.
    async fn expand(&self) -> Result<(), StoreError> {
        let store = self.access.authority().store();
        let rows =
            sqlx::query("SELECT seq, task_id, event, at FROM notify_events WHERE expanded = 0 ORDER BY seq LIMIT 100")
                .fetch_all(&store.reader)
                .await?;
        for r in rows {
            let seq: i64 = r.try_get("seq")?;
            let task_id: String = r.try_get("task_id")?;
            let event: String = r.try_get("event")?;
            let at: i64 = r.try_get("at")?;
            let task = store.task(&task_id).await?;
            let created_at = task.as_ref().map(|t| t.created_at);
            let bodies = match task {
                Some(t) => self.bodies(seq, t, &event, at).await?,
                None => None,
            };
            let now = now_secs();
            let mut tx = store.write_tx().await?;
            let done = sqlx::query("UPDATE notify_events SET expanded = 1 WHERE seq = $1 AND expanded = 0")
                .bind(seq)
                .execute(&mut *tx)
                .await?;
            if done.rows_affected() == 0 {
                continue;
            }
            if let Some(bodies) = &bodies {
                for (hook, body) in bodies {
                    sqlx::query(
                        "INSERT INTO notify_deliveries (event_seq, webhook, format, body, next_at_ms, created_at) \
                         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_seq, webhook) DO NOTHING",
                    )
                    .bind(seq)
                    .bind(hook.key())
                    .bind(hook.format)
                    .bind(body)
                    .bind(now_ms())
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            // Counted once per event, when it is expanded (exactly once across restarts).
            let status = if event == "created" { "created" } else { status_label(&event) };
            METRICS.access_requests.get_or_create(&StatusLabels { status }).inc();
            if event != "created" {
                if let Some(created) = created_at {
                    let secs = (at - created).max(0) as f64;
                    METRICS.approval_latency.get_or_create(&StatusLabels { status }).observe(secs);
                }
            }
        }
        Ok(())
    }

    /// The body of each webhook for an event; `None` when the task is gone (pruned) or nobody listens.
    async fn bodies(
        &self,
        seq: i64,
        task: crate::access_store::TaskRow,
        event: &str,
        at: i64,
    ) -> Result<Option<Vec<(Webhook, String)>>, StoreError> {
        if self.settings.webhooks.is_empty() {
            return Ok(None);
        }
        let store = self.access.authority().store();
        let Some(denial) = store.denial(&task.denial_id).await? else { return Ok(None) };
        let mission = store.get_mission(&denial.mission_id).await?.filter(|m| m.issuer == denial.mission_issuer);
        let goal = mission.as_ref().map(|m| m.intent.goal.clone());
        let approval_url = self.access.settings().user_portal(&denial.id);
        let event_type = format!("access_request.{event}");
        let generic = json!({
            "id": format!("evt_{seq}"),
            "type": event_type,
            "occurred_at": format_rfc3339(at),
            "access_request": {
                "id": task.id,
                "status": if event == "created" { "pending" } else { event },
                "created_at": format_rfc3339(task.created_at),
                "expires_at": format_rfc3339(task.expires_at),
                "decided_by": if event == "created" { None } else { task.decided_by.clone() },
                "reason": if event == "created" { None } else { task.decision_reason.clone() },
                "justification": task.justification,
            },
            "agent": denial.subject_id,
            "mission": {"id": denial.mission_id, "issuer": denial.mission_issuer, "goal": goal},
            "destination": denial.resource_id,
            "operation": denial.action_name,
            "parameter_digest": denial.parameter_digest,
            "approval_url": approval_url,
        });
        let headline = match event {
            "created" => "An agent asks for access",
            "approved" => "Access request approved",
            "denied" => "Access request denied",
            "expired" => "Access request expired undecided (denied)",
            "cancelled" => "Access request withdrawn by the agent",
            _ => "Access request ended",
        };
        // Agent-controlled text is quoted as code, where Slack renders no mentions or links.
        let code = |s: &str| s.replace('`', "'");
        let mut text = format!(
            "*{headline}*\nAgent: `{}`\nMission: `{}`{}\nDestination: `{}`\nOperation: `{}`",
            code(&denial.subject_id),
            code(&denial.mission_id),
            goal.as_deref().map(|g| format!(" `{}`", code(g))).unwrap_or_default(),
            code(&denial.resource_id),
            code(&denial.action_name),
        );
        if let (false, Some(by)) = (event == "created", &task.decided_by) {
            text.push_str(&format!("\nDecided by: `{}`", code(by)));
        }
        text.push_str(&format!("\nApproval page: <{approval_url}|open>"));
        let slack = json!({
            "text": text,
            "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}],
        });
        let generic = serde_json::to_string(&generic).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let slack = serde_json::to_string(&slack).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        Ok(Some(
            self.settings
                .webhooks
                .iter()
                .map(|w| (w.clone(), if w.format == "slack" { slack.clone() } else { generic.clone() }))
                .collect(),
        ))
    }

    /// Claim one due delivery: a conditional UPDATE takes the lease, so it is sent by one worker.
    async fn claim(&self) -> Result<Option<Claimed>, StoreError> {
        let store = self.access.authority().store();
        let now = now_ms();
        let row = sqlx::query(
            "UPDATE notify_deliveries SET lease_until_ms = $1 + $2, attempts = attempts + 1 \
             WHERE id = (SELECT id FROM notify_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL \
                         AND next_at_ms <= $1 AND lease_until_ms <= $1 ORDER BY next_at_ms, id LIMIT 1) \
             AND lease_until_ms <= $1 AND delivered_at IS NULL AND failed_at IS NULL \
             RETURNING id, webhook, format, body, attempts, event_seq, \
                       (SELECT event FROM notify_events WHERE seq = event_seq) AS event",
        )
        .bind(now)
        .bind(LEASE_MS)
        .fetch_optional(&store.writer)
        .await?;
        let Some(r) = row else { return Ok(None) };
        let seq: i64 = r.try_get("event_seq")?;
        let event: Option<String> = r.try_get("event")?;
        Ok(Some(Claimed {
            id: r.try_get("id")?,
            webhook: r.try_get("webhook")?,
            format: r.try_get("format")?,
            body: r.try_get("body")?,
            attempts: r.try_get("attempts")?,
            event_id: format!("evt_{seq}"),
            event_type: format!("access_request.{}", event.unwrap_or_default()),
        }))
    }

    async fn send(&self, c: Claimed) {
        let format: &'static str = if c.format == "slack" { "slack" } else { "generic" };
        let hook = self.settings.webhooks.iter().find(|w| w.key() == c.webhook);
        let outcome = match hook {
            None => Err("the webhook is no longer configured".to_owned()),
            Some(w) => {
                let mut req = self.http.post(&w.url).header("content-type", "application/json");
                if format == "generic" {
                    let sig = signature(&self.settings.secret, now_secs(), c.body.as_bytes());
                    req = req
                        .header(SIGNATURE_HEADER, sig)
                        .header(EVENT_ID_HEADER, &c.event_id)
                        .header(EVENT_TYPE_HEADER, &c.event_type);
                }
                match req.body(c.body.clone()).send().await {
                    Ok(resp) if resp.status().is_success() => Ok(()),
                    Ok(resp) => Err(format!("HTTP {}", resp.status().as_u16())),
                    Err(e) => Err(format!("{e}")),
                }
            }
        };
        let store = self.access.authority().store();
        let result = match outcome {
            Ok(()) => {
                METRICS.deliveries.get_or_create(&DeliveryLabels { format, result: "delivered" }).inc();
                tracing::info!(delivery = c.id, event = %c.event_id, format, "webhook delivered");
                sqlx::query("UPDATE notify_deliveries SET delivered_at = $1, last_error = NULL WHERE id = $2")
                    .bind(now_secs())
                    .bind(c.id)
                    .execute(&store.writer)
                    .await
            }
            Err(err) if c.attempts >= self.settings.max_attempts || hook.is_none() => {
                METRICS.deliveries.get_or_create(&DeliveryLabels { format, result: "abandoned" }).inc();
                tracing::warn!(delivery = c.id, event = %c.event_id, format, attempts = c.attempts, error = %err, "webhook delivery abandoned");
                sqlx::query("UPDATE notify_deliveries SET failed_at = $1, last_error = $2 WHERE id = $3")
                    .bind(now_secs())
                    .bind(&err)
                    .bind(c.id)
                    .execute(&store.writer)
                    .await
            }
            Err(err) => {
                METRICS.deliveries.get_or_create(&DeliveryLabels { format, result: "failed" }).inc();
                let shift = u32::try_from((c.attempts - 1).clamp(0, 30)).unwrap_or(30);
                let delay = self.settings.retry_base_ms.saturating_mul(1i64 << shift).min(MAX_BACKOFF_MS);
                tracing::warn!(delivery = c.id, event = %c.event_id, format, attempts = c.attempts, retry_in_ms = delay, error = %err, "webhook delivery failed");
                sqlx::query(
                    "UPDATE notify_deliveries SET next_at_ms = $1, lease_until_ms = 0, last_error = $2 WHERE id = $3",
                )
                .bind(now_ms() + delay)
                .bind(&err)
                .bind(c.id)
                .execute(&store.writer)
                .await
            }
        };
        if let Err(e) = result {
            // The lease runs out and the row is tried again.
            tracing::warn!(delivery = c.id, error = %e, "webhook delivery outcome not recorded");
        }
    }

    async fn prune(&self, now: i64) -> Result<(), StoreError> {
        let store = self.access.authority().store();
        let before = now - self.settings.retention_seconds;
        sqlx::query(
            "DELETE FROM notify_deliveries WHERE (delivered_at IS NOT NULL AND delivered_at < $1) \
             OR (failed_at IS NOT NULL AND failed_at < $1)",
        )
        .bind(before)
        .execute(&store.writer)
        .await?;
        sqlx::query(
            "DELETE FROM notify_events WHERE expanded = 1 AND at < $1 \
             AND NOT EXISTS (SELECT 1 FROM notify_deliveries d WHERE d.event_seq = notify_events.seq)",
        )
        .bind(before)
        .execute(&store.writer)
        .await?;
        Ok(())
    }
}

/// Scrape-time gauges and the Mission transition totals, read from the database.
pub async fn refresh_gauges(access: &Access) -> Result<(), StoreError> {
    let store = access.authority().store();
    let pending: i64 = sqlx::query_scalar("SELECT count(*) FROM access_tasks WHERE status = 'pending'")
        .fetch_one(&store.reader)
        .await?;
    METRICS.pending.set(pending);
    let webhook: i64 =
        sqlx::query_scalar("SELECT count(*) FROM notify_deliveries WHERE delivered_at IS NULL AND failed_at IS NULL")
            .fetch_one(&store.reader)
            .await?;
    METRICS.webhook_pending.set(webhook);
    let rows = sqlx::query("SELECT to_state, count(*) AS n FROM mission_transitions GROUP BY to_state")
        .fetch_all(&store.reader)
        .await?;
    let mut totals = Vec::with_capacity(rows.len());
    for r in rows {
        totals.push((r.try_get::<String, _>("to_state")?, r.try_get::<i64, _>("n")?));
    }
    METRICS.sync_transitions(&totals);
    Ok(())
}
