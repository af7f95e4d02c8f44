//! Persistence of the PDP and Access Request side: denials, tasks, grants, idempotency keys, the
//! access audit trail and approver sessions (schema in `migrations/0002_access.sql`).
//!
//! Same rules as [`crate::store`]: one writer (SQLite: one connection and `BEGIN IMMEDIATE`; Postgres:
//! the global write advisory lock, see [`Store::write_tx`]) for every read-decide-write,
//! WAL with `synchronous=FULL`, so an answer is only sent after its write is durable (a `kill -9` after
//! an approval was acknowledged loses nothing).
//!
//! Reads that answer agents, approvers and the captive API go to the reader pool: in WAL mode a
//! reader sees the last committed state and never waits for the writer, so a queue of writes cannot
//! slow them down. Only a decision that must be atomic with what it read (consuming a single-use
//! grant, creating a task under the per-requester limits) goes through the writer.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::{Any, Row, Transaction};

use missiongate_wire::authzen::EvaluationRequest;

use crate::store::{Store, StoreError};

/// The state of an Access Request task (ARAP). It is written to the database and to JSON as its
/// lower-case name (`pending`, `approved`, ...), the strings the wire and the schema have always used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    /// Awaiting a decision.
    Pending,
    /// Approved: a grant exists.
    Approved,
    /// Refused by an approver.
    Denied,
    /// Not decided before `expires_at`.
    Expired,
    /// Withdrawn by the requester.
    Cancelled,
    /// Could not be completed.
    Failed,
}

impl TaskStatus {
    /// Every state.
    pub const ALL: [TaskStatus; 6] = [
        TaskStatus::Pending,
        TaskStatus::Approved,
        TaskStatus::Denied,
        TaskStatus::Expired,
        TaskStatus::Cancelled,
        TaskStatus::Failed,
    ];

    /// Its name on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            TaskStatus::Pending => "pending",
            TaskStatus::Approved => "approved",
            TaskStatus::Denied => "denied",
            TaskStatus::Expired => "expired",
            TaskStatus::Cancelled => "cancelled",
            TaskStatus::Failed => "failed",
        }
    }

    /// The state named `s`, if any.
    pub fn parse(s: &str) -> Option<TaskStatus> {
        TaskStatus::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A requestable denial.
#[derive(Debug, Clone)]
pub struct DenialRow {
    /// Denial id (capability in the captive API and portal URLs).
    pub id: String,
    /// `evaluation_id` given to the PEP.
    pub evaluation_id: String,
    /// base64url SHA-256 of the JCS of the bound {subject, resource, action, context}.
    pub binding_hash: String,
    /// The evaluation request as received.
    pub request: EvaluationRequest,
    /// Mission id.
    pub mission_id: String,
    /// Mission issuer.
    pub mission_issuer: String,
    /// Subject id (the agent's client id).
    pub subject_id: String,
    /// Resource type (`egress`).
    pub resource_type: String,
    /// Resource id (the origin).
    pub resource_id: String,
    /// Action name.
    pub action_name: String,
    /// The call's `parameter_digest`, for operation-level denials.
    pub parameter_digest: Option<String>,
    /// `egress_not_allowed` or `approval_required`.
    pub reason: String,
    /// First denied.
    pub created_at: i64,
    /// When the current hint was issued.
    pub hint_issued_at: i64,
    /// When the current hint expires.
    pub hint_expires_at: i64,
    /// The current hint's binding token.
    pub binding_token: String,
}

/// A denial about to be stored (ids are used only if no denial exists for `binding_hash`).
#[derive(Debug, Clone)]
pub struct DenialDraft {
    /// New denial id.
    pub id: String,
    /// New evaluation id.
    pub evaluation_id: String,
    /// The binding hash.
    pub binding_hash: String,
    /// The request.
    pub request: EvaluationRequest,
    /// Mission id.
    pub mission_id: String,
    /// Mission issuer.
    pub mission_issuer: String,
    /// Subject id.
    pub subject_id: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Action name.
    pub action_name: String,
    /// Digest.
    pub parameter_digest: Option<String>,
    /// Reason.
    pub reason: String,
}

/// What [`Store::ensure_denial`] did.
#[derive(Debug)]
pub enum EnsureDenial {
    /// The denial (new, reused, or with a refreshed hint).
    Denial(Box<DenialRow>),
    /// Too many open denials for this Mission: refuse without a hint.
    Limit,
}

/// An Access Request task.
#[derive(Debug, Clone)]
pub struct TaskRow {
    /// Task id.
    pub id: String,
    /// Its denial.
    pub denial_id: String,
    /// Status.
    pub status: TaskStatus,
    /// The submission body.
    pub submission: Value,
    /// The agent's justification (untrusted text).
    pub justification: Option<String>,
    /// The parameter object the agent asked to have approved (verified against the digest).
    pub parameters: Option<Value>,
    /// `requested_access.requested_until`.
    pub requested_until: Option<i64>,
    /// Created.
    pub created_at: i64,
    /// Last change.
    pub updated_at: i64,
    /// Pending tasks expire then.
    pub expires_at: i64,
    /// Who decided.
    pub decided_by: Option<String>,
    /// When.
    pub decided_at: Option<i64>,
    /// Why (denial or cancellation reason).
    pub decision_reason: Option<String>,
    /// The grant of an approved task.
    pub grant_id: Option<String>,
}

/// What a grant is looked up by: the request tuple, its action and its `parameter_digest`.
#[derive(Debug, Clone, Copy)]
pub struct GrantTuple<'a> {
    pub mission_id: &'a str,
    pub mission_issuer: &'a str,
    pub subject_id: &'a str,
    pub resource_type: &'a str,
    pub resource_id: &'a str,
    pub action_name: &'a str,
    pub digest: Option<&'a str>,
}

/// An approval the PDP consults.
#[derive(Debug, Clone)]
pub struct GrantRow {
    /// Grant id (also the ARAP `approval.id`).
    pub id: String,
    /// Task.
    pub task_id: String,
    /// Denial.
    pub denial_id: String,
    /// Mission id.
    pub mission_id: String,
    /// Mission issuer.
    pub mission_issuer: String,
    /// Subject id.
    pub subject_id: String,
    /// Resource type.
    pub resource_type: String,
    /// Resource id.
    pub resource_id: String,
    /// Action name.
    pub action_name: String,
    /// Bound digest, if any.
    pub parameter_digest: Option<String>,
    /// `use_limit: 1`.
    pub single_use: bool,
    /// Approver.
    pub approved_by: String,
    /// When.
    pub approved_at: i64,
    /// Until.
    pub approved_until: i64,
}

/// One audit record.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// When.
    pub at: i64,
    /// Who (`approver:NAME`, `operator`, `requester:SUBJECT`, `system:clock`).
    pub actor: String,
    /// What (`submit`, `approve`, `deny`, `cancel`, `expire`).
    pub action: String,
    /// Task.
    pub task_id: Option<String>,
    /// Denial.
    pub denial_id: Option<String>,
    /// Grant.
    pub grant_id: Option<String>,
    /// Details.
    pub detail: Value,
}

/// What a new submission did.
#[derive(Debug)]
pub enum CreateTask {
    /// A new task.
    Created(TaskRow),
    /// The same key and body were seen before: that task.
    Replayed(TaskRow),
    /// The same key came with another body.
    Conflict,
    /// The requester already stores as many Idempotency-Keys as allowed; the oldest is pruned at
    /// the given time.
    KeyLimit(i64),
    /// The requester already has as many pending access requests as allowed.
    OpenLimit,
    /// The denial already has a pending task: that one (the key now names it too).
    Existing(TaskRow),
}

/// How a pending task ends.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Approve with this grant.
    Approve(Box<GrantRow>),
    /// Deny, with a reason.
    Deny(String),
    /// Cancelled by the requester.
    Cancel,
}

/// What [`Store::decide_task`] did.
#[derive(Debug)]
pub enum Decided {
    /// No such task.
    NotFound,
    /// The task is not pending (or just expired): unchanged.
    NotPending(TaskRow),
    /// Done; the task as it is now.
    Done(TaskRow),
}

/// An approver session.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// Approver name.
    pub approver: String,
    /// CSRF token of the session.
    pub csrf: String,
    /// Expiry.
    pub expires_at: i64,
}

const DENIAL_COLUMNS: &str = "id, evaluation_id, binding_hash, request, mission_id, mission_issuer, subject_id, \
     resource_type, resource_id, action_name, parameter_digest, reason, created_at, hint_issued_at, hint_expires_at, \
     binding_token";
const TASK_COLUMNS: &str =
    "id, denial_id, status, submission, justification, parameters, requested_until, created_at, \
     updated_at, expires_at, decided_by, decided_at, decision_reason, grant_id";
const GRANT_COLUMNS: &str =
    "id, task_id, denial_id, mission_id, mission_issuer, subject_id, resource_type, resource_id, \
     action_name, parameter_digest, single_use, approved_by, approved_at, approved_until";

fn json_col<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, StoreError> {
    let text: String = row.try_get(col)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))
}

fn opt_json_col(row: &AnyRow, col: &str) -> Result<Option<Value>, StoreError> {
    let text: Option<String> = row.try_get(col)?;
    text.map(|t| serde_json::from_str(&t).map_err(|e| StoreError::Corrupt(format!("{col}: {e}")))).transpose()
}

fn to_text(v: &impl serde::Serialize) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

fn denial_from_row(row: &AnyRow) -> Result<DenialRow, StoreError> {
    Ok(DenialRow {
        id: row.try_get("id")?,
        evaluation_id: row.try_get("evaluation_id")?,
        binding_hash: row.try_get("binding_hash")?,
        request: json_col(row, "request")?,
        mission_id: row.try_get("mission_id")?,
        mission_issuer: row.try_get("mission_issuer")?,
        subject_id: row.try_get("subject_id")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        action_name: row.try_get("action_name")?,
        parameter_digest: row.try_get("parameter_digest")?,
        reason: row.try_get("reason")?,
        created_at: row.try_get("created_at")?,
        hint_issued_at: row.try_get("hint_issued_at")?,
        hint_expires_at: row.try_get("hint_expires_at")?,
        binding_token: row.try_get("binding_token")?,
    })
}

fn task_from_row(row: &AnyRow) -> Result<TaskRow, StoreError> {
    Ok(TaskRow {
        id: row.try_get("id")?,
        denial_id: row.try_get("denial_id")?,
        status: {
            let name: String = row.try_get("status")?;
            TaskStatus::parse(&name).ok_or_else(|| StoreError::Corrupt(format!("unknown task status {name:?}")))?
        },
        submission: json_col(row, "submission")?,
        justification: row.try_get("justification")?,
        parameters: opt_json_col(row, "parameters")?,
        requested_until: row.try_get("requested_until")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        expires_at: row.try_get("expires_at")?,
        decided_by: row.try_get("decided_by")?,
        decided_at: row.try_get("decided_at")?,
        decision_reason: row.try_get("decision_reason")?,
        grant_id: row.try_get("grant_id")?,
    })
}

fn grant_from_row(row: &AnyRow) -> Result<GrantRow, StoreError> {
    let single: i64 = row.try_get("single_use")?;
    Ok(GrantRow {
        id: row.try_get("id")?,
        task_id: row.try_get("task_id")?,
        denial_id: row.try_get("denial_id")?,
        mission_id: row.try_get("mission_id")?,
        mission_issuer: row.try_get("mission_issuer")?,
        subject_id: row.try_get("subject_id")?,
        resource_type: row.try_get("resource_type")?,
        resource_id: row.try_get("resource_id")?,
        action_name: row.try_get("action_name")?,
        parameter_digest: row.try_get("parameter_digest")?,
        single_use: single != 0,
        approved_by: row.try_get("approved_by")?,
        approved_at: row.try_get("approved_at")?,
        approved_until: row.try_get("approved_until")?,
    })
}

async fn insert_audit(tx: &mut Transaction<'_, Any>, audit: &AuditRow) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO access_audit (at, actor, action, task_id, denial_id, grant_id, detail) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(audit.at)
    .bind(&audit.actor)
    .bind(&audit.action)
    .bind(&audit.task_id)
    .bind(&audit.denial_id)
    .bind(&audit.grant_id)
    .bind(to_text(&audit.detail)?)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn task_in(tx: &mut Transaction<'_, Any>, id: &str) -> Result<Option<TaskRow>, StoreError> {
    let sql = format!("SELECT {TASK_COLUMNS} FROM access_tasks WHERE id = $1");
    let row = sqlx::query(&sql).bind(id).fetch_optional(&mut **tx).await?;
    row.as_ref().map(task_from_row).transpose()
}

impl Store {
    // ---------------------------------------------------------------------------------------------
    // Denials
    // ---------------------------------------------------------------------------------------------

    /// Find or create the denial for `draft.binding_hash`, making sure its hint is valid until at least
    /// `min_valid_until`; a new or refreshed hint expires at `hint_expires_at` and its binding token is
    /// made by `sign(evaluation_id, issued_at, expires_at)` inside the transaction. A new denial is
    /// refused ([`EnsureDenial::Limit`]) when the Mission already has `max_open` denials with a live hint.
    #[allow(clippy::too_many_arguments)]
    pub async fn ensure_denial<S>(
        &self,
        draft: &DenialDraft,
        now: i64,
        min_valid_until: i64,
        hint_expires_at: i64,
        max_open: i64,
        sign: S,
    ) -> Result<EnsureDenial, StoreError>
    where
        S: FnOnce(&str, i64, i64) -> String,
    {
        // Most evaluations of a blocked call find its denial with a live hint: answer from a reader,
        // without queueing for the write lock.
        if let Some(d) = self.denial_by_binding(&draft.binding_hash).await? {
            if d.hint_expires_at >= min_valid_until {
                return Ok(EnsureDenial::Denial(Box::new(d)));
            }
        }
        let mut tx = self.write_tx().await?;
        let sql = format!("SELECT {DENIAL_COLUMNS} FROM denials WHERE binding_hash = $1");
        let existing = sqlx::query(&sql).bind(&draft.binding_hash).fetch_optional(&mut *tx).await?;
        let existing = existing.as_ref().map(denial_from_row).transpose()?;
        let row = match existing {
            Some(d) if d.hint_expires_at >= min_valid_until => {
                tx.rollback().await?;
                return Ok(EnsureDenial::Denial(Box::new(d)));
            }
            Some(mut d) => {
                let token = sign(&d.evaluation_id, now, hint_expires_at);
                sqlx::query(
                    "UPDATE denials SET hint_issued_at = $1, hint_expires_at = $2, binding_token = $3, reason = $4 WHERE id = $5",
                )
                .bind(now)
                .bind(hint_expires_at)
                .bind(&token)
                .bind(&draft.reason)
                .bind(&d.id)
                .execute(&mut *tx)
                .await?;
                d.hint_issued_at = now;
                d.hint_expires_at = hint_expires_at;
                d.binding_token = token;
                d.reason = draft.reason.clone();
                d
            }
            None => {
                let open: i64 =
                    sqlx::query_scalar("SELECT COUNT(*) FROM denials WHERE mission_id = $1 AND hint_expires_at > $2")
                        .bind(&draft.mission_id)
                        .bind(now)
                        .fetch_one(&mut *tx)
                        .await?;
                if open >= max_open {
                    tx.rollback().await?;
                    return Ok(EnsureDenial::Limit);
                }
                let token = sign(&draft.evaluation_id, now, hint_expires_at);
                let d = DenialRow {
                    id: draft.id.clone(),
                    evaluation_id: draft.evaluation_id.clone(),
                    binding_hash: draft.binding_hash.clone(),
                    request: draft.request.clone(),
                    mission_id: draft.mission_id.clone(),
                    mission_issuer: draft.mission_issuer.clone(),
                    subject_id: draft.subject_id.clone(),
                    resource_type: draft.resource_type.clone(),
                    resource_id: draft.resource_id.clone(),
                    action_name: draft.action_name.clone(),
                    parameter_digest: draft.parameter_digest.clone(),
                    reason: draft.reason.clone(),
                    created_at: now,
                    hint_issued_at: now,
                    hint_expires_at,
                    binding_token: token,
                };
                sqlx::query(&format!(
                    "INSERT INTO denials ({DENIAL_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
                ))
                .bind(&d.id)
                .bind(&d.evaluation_id)
                .bind(&d.binding_hash)
                .bind(to_text(&d.request)?)
                .bind(&d.mission_id)
                .bind(&d.mission_issuer)
                .bind(&d.subject_id)
                .bind(&d.resource_type)
                .bind(&d.resource_id)
                .bind(&d.action_name)
                .bind(&d.parameter_digest)
                .bind(&d.reason)
                .bind(d.created_at)
                .bind(d.hint_issued_at)
                .bind(d.hint_expires_at)
                .bind(&d.binding_token)
                .execute(&mut *tx)
                .await?;
                d
            }
        };
        tx.commit().await?;
        Ok(EnsureDenial::Denial(Box::new(row)))
    }

    /// One denial by id.
    pub async fn denial(&self, id: &str) -> Result<Option<DenialRow>, StoreError> {
        let sql = format!("SELECT {DENIAL_COLUMNS} FROM denials WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(denial_from_row).transpose()
    }

    /// One denial by its binding hash.
    pub async fn denial_by_binding(&self, binding_hash: &str) -> Result<Option<DenialRow>, StoreError> {
        let sql = format!("SELECT {DENIAL_COLUMNS} FROM denials WHERE binding_hash = $1");
        let row = sqlx::query(&sql).bind(binding_hash).fetch_optional(&self.reader).await?;
        row.as_ref().map(denial_from_row).transpose()
    }

    /// One denial by evaluation id.
    pub async fn denial_by_evaluation_id(&self, evaluation_id: &str) -> Result<Option<DenialRow>, StoreError> {
        let sql = format!("SELECT {DENIAL_COLUMNS} FROM denials WHERE evaluation_id = $1");
        let row = sqlx::query(&sql).bind(evaluation_id).fetch_optional(&self.reader).await?;
        row.as_ref().map(denial_from_row).transpose()
    }

    // ---------------------------------------------------------------------------------------------
    // Grants
    // ---------------------------------------------------------------------------------------------

    /// The live grant covering a request tuple: unexpired, not a single-use grant already used, same
    /// Mission, subject, resource and action, and either bound to `digest` or not bound to any digest.
    /// A digest-bound grant wins, then a reusable one, then the one that lasts longest. (A reader: the
    /// caller consumes a single-use grant with [`Store::consume_grant`].)
    pub async fn find_grant(&self, t: &GrantTuple<'_>, now: i64) -> Result<Option<GrantRow>, StoreError> {
        self.select_grant(
            t,
            now,
            "(parameter_digest IS NULL OR parameter_digest = $8) AND (single_use = 0 OR used_at IS NULL)",
            "parameter_digest IS NULL, single_use, approved_until DESC, id",
        )
        .await
    }

    /// Consume a single-use grant: true for the one caller that marks it used (a conditional UPDATE,
    /// durable before this returns), false when it was already used.
    pub async fn consume_grant(&self, id: &str, now: i64) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE access_grants SET used_at = $1 WHERE id = $2 AND single_use = 1 AND used_at IS NULL")
                .bind(now)
                .bind(id)
                .execute(&self.writer)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// A used single-use grant, still within its validity, that would have covered this request tuple.
    pub async fn used_grant(&self, t: &GrantTuple<'_>, now: i64) -> Result<Option<GrantRow>, StoreError> {
        self.select_grant(
            t,
            now,
            "(parameter_digest IS NULL OR parameter_digest = $8) AND single_use = 1 AND used_at IS NOT NULL",
            "used_at DESC, id",
        )
        .await
    }

    /// A live grant for the same tuple bound to another digest: the call was approved with other
    /// parameters (SPEC section 6: a changed amount after approval is `parameter_violation`).
    pub async fn grant_for_other_parameters(
        &self,
        t: &GrantTuple<'_>,
        now: i64,
    ) -> Result<Option<GrantRow>, StoreError> {
        if t.digest.is_none() {
            return Ok(None);
        }
        self.select_grant(
            t,
            now,
            "parameter_digest IS NOT NULL AND parameter_digest <> $8 AND (single_use = 0 OR used_at IS NULL)",
            "approved_until DESC, id",
        )
        .await
    }

    /// One grant of the tuple, unexpired, matching `condition` (over `$8`, the digest), first by `order`.
    async fn select_grant(
        &self,
        t: &GrantTuple<'_>,
        now: i64,
        condition: &str,
        order: &str,
    ) -> Result<Option<GrantRow>, StoreError> {
        let sql = format!(
            "SELECT {GRANT_COLUMNS} FROM access_grants WHERE mission_id = $1 AND mission_issuer = $2 AND subject_id = $3 \
             AND resource_type = $4 AND resource_id = $5 AND action_name = $6 AND approved_until > $7 \
             AND {condition} ORDER BY {order} LIMIT 1"
        );
        let row = sqlx::query(&sql)
            .bind(t.mission_id)
            .bind(t.mission_issuer)
            .bind(t.subject_id)
            .bind(t.resource_type)
            .bind(t.resource_id)
            .bind(t.action_name)
            .bind(now)
            .bind(t.digest)
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    /// One grant.
    pub async fn grant(&self, id: &str) -> Result<Option<GrantRow>, StoreError> {
        let sql = format!("SELECT {GRANT_COLUMNS} FROM access_grants WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(grant_from_row).transpose()
    }

    // ---------------------------------------------------------------------------------------------
    // Tasks
    // ---------------------------------------------------------------------------------------------

    /// The task an Idempotency-Key names in `scope`, with the hash of the body first sent with it.
    pub async fn idempotency(&self, scope: &str, key: &str) -> Result<Option<(String, TaskRow)>, StoreError> {
        let row: Option<(String, String)> =
            sqlx::query_as("SELECT body_hash, task_id FROM idempotency_keys WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(&self.reader)
                .await?;
        let Some((hash, task_id)) = row else { return Ok(None) };
        let task =
            self.task(&task_id).await?.ok_or_else(|| StoreError::Corrupt("idempotency key without task".into()))?;
        Ok(Some((hash, task)))
    }

    /// Store a new task for a submission (or find what an earlier identical one made), atomically with
    /// its Idempotency-Key and an audit row, within the requester's limits: at most `limits.keys`
    /// stored Idempotency-Keys in `scope` (they are pruned `limits.retention` after they were made)
    /// and at most `limits.open` pending tasks for the denial's requester.
    pub async fn create_task(
        &self,
        task: &TaskRow,
        scope: &str,
        key: &str,
        body_hash: &str,
        audit: &AuditRow,
        limits: RequesterLimits,
    ) -> Result<CreateTask, StoreError> {
        let mut tx = self.write_tx().await?;
        let seen: Option<(String, String)> =
            sqlx::query_as("SELECT body_hash, task_id FROM idempotency_keys WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some((hash, task_id)) = seen {
            let found = task_in(&mut tx, &task_id).await?;
            tx.rollback().await?;
            return match found {
                Some(t) if hash == body_hash => Ok(CreateTask::Replayed(t)),
                Some(_) => Ok(CreateTask::Conflict),
                None => Err(StoreError::Corrupt("idempotency key without task".into())),
            };
        }
        let (keys, oldest): (i64, Option<i64>) =
            sqlx::query_as("SELECT COUNT(*), MIN(created_at) FROM idempotency_keys WHERE scope = $1")
                .bind(scope)
                .fetch_one(&mut *tx)
                .await?;
        if keys >= limits.keys {
            tx.rollback().await?;
            return Ok(CreateTask::KeyLimit(oldest.unwrap_or(task.created_at) + limits.retention));
        }
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM access_tasks WHERE denial_id = $1 AND status = 'pending' AND expires_at > $2 \
             ORDER BY created_at LIMIT 1"
        );
        let pending = sqlx::query(&sql).bind(&task.denial_id).bind(task.created_at).fetch_optional(&mut *tx).await?;
        let pending = pending.as_ref().map(task_from_row).transpose()?;
        let (outcome, task_id) = match pending {
            Some(p) => {
                let id = p.id.clone();
                (CreateTask::Existing(p), id)
            }
            None => {
                let open: i64 = sqlx::query_scalar(
                    "SELECT COUNT(*) FROM access_tasks t JOIN denials d ON d.id = t.denial_id \
                     JOIN denials mine ON mine.id = $1 \
                     WHERE d.mission_issuer = mine.mission_issuer AND d.mission_id = mine.mission_id \
                     AND d.subject_id = mine.subject_id AND t.status = 'pending' AND t.expires_at > $2",
                )
                .bind(&task.denial_id)
                .bind(task.created_at)
                .fetch_one(&mut *tx)
                .await?;
                if open >= limits.open {
                    tx.rollback().await?;
                    return Ok(CreateTask::OpenLimit);
                }
                sqlx::query(&format!(
                    "INSERT INTO access_tasks ({TASK_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(&task.id)
                .bind(&task.denial_id)
                .bind(task.status.as_str())
                .bind(to_text(&task.submission)?)
                .bind(&task.justification)
                .bind(task.parameters.as_ref().map(to_text).transpose()?)
                .bind(task.requested_until)
                .bind(task.created_at)
                .bind(task.updated_at)
                .bind(task.expires_at)
                .bind(&task.decided_by)
                .bind(task.decided_at)
                .bind(&task.decision_reason)
                .bind(&task.grant_id)
                .execute(&mut *tx)
                .await?;
                insert_audit(&mut tx, audit).await?;
                (CreateTask::Created(task.clone()), task.id.clone())
            }
        };
        sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, body_hash, task_id, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(scope)
        .bind(key)
        .bind(body_hash)
        .bind(&task_id)
        .bind(task.created_at)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(outcome)
    }

    /// One task.
    pub async fn task(&self, id: &str) -> Result<Option<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM access_tasks WHERE id = $1");
        let row = sqlx::query(&sql).bind(id).fetch_optional(&self.reader).await?;
        row.as_ref().map(task_from_row).transpose()
    }

    /// The tasks of a denial, newest first.
    pub async fn tasks_for_denial(&self, denial_id: &str) -> Result<Vec<TaskRow>, StoreError> {
        let sql = format!("SELECT {TASK_COLUMNS} FROM access_tasks WHERE denial_id = $1 ORDER BY created_at DESC, id");
        let rows = sqlx::query(&sql).bind(denial_id).fetch_all(&self.reader).await?;
        rows.iter().map(task_from_row).collect()
    }

    /// Tasks (optionally in one status), newest first, with their denials.
    pub async fn list_tasks(&self, status: Option<&str>, limit: u32) -> Result<Vec<(TaskRow, DenialRow)>, StoreError> {
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM access_tasks WHERE ($1 IS NULL OR status = $2) \
             ORDER BY created_at DESC, id LIMIT $3"
        );
        let rows = sqlx::query(&sql).bind(status).bind(status).bind(i64::from(limit)).fetch_all(&self.reader).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let task = task_from_row(r)?;
            let denial =
                self.denial(&task.denial_id).await?.ok_or_else(|| StoreError::Corrupt("task without denial".into()))?;
            out.push((task, denial));
        }
        Ok(out)
    }

    /// End a pending task: approve (storing the grant), deny or cancel, with an audit row, atomically.
    /// A task past `expires_at` is expired instead and reported as not pending.
    pub async fn decide_task(
        &self,
        id: &str,
        decision: &Decision,
        actor: &str,
        now: i64,
    ) -> Result<Decided, StoreError> {
        let mut tx = self.write_tx().await?;
        let Some(mut task) = task_in(&mut tx, id).await? else {
            tx.rollback().await?;
            return Ok(Decided::NotFound);
        };
        if task.status != TaskStatus::Pending {
            tx.rollback().await?;
            return Ok(Decided::NotPending(task));
        }
        if task.expires_at <= now {
            expire_in(&mut tx, &task, now).await?;
            tx.commit().await?;
            task.status = TaskStatus::Expired;
            task.updated_at = now;
            return Ok(Decided::NotPending(task));
        }
        let (new_status, reason, grant_id, detail) = match decision {
            Decision::Approve(g) => {
                sqlx::query(&format!(
                    "INSERT INTO access_grants ({GRANT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
                ))
                .bind(&g.id)
                .bind(&g.task_id)
                .bind(&g.denial_id)
                .bind(&g.mission_id)
                .bind(&g.mission_issuer)
                .bind(&g.subject_id)
                .bind(&g.resource_type)
                .bind(&g.resource_id)
                .bind(&g.action_name)
                .bind(&g.parameter_digest)
                .bind(i64::from(g.single_use))
                .bind(&g.approved_by)
                .bind(g.approved_at)
                .bind(g.approved_until)
                .execute(&mut *tx)
                .await?;
                let detail = serde_json::json!({
                    "approved_until": g.approved_until, "single_use": g.single_use,
                    "parameter_digest": g.parameter_digest, "resource": g.resource_id, "action": g.action_name,
                });
                (TaskStatus::Approved, None, Some(g.id.clone()), detail)
            }
            Decision::Deny(r) => (TaskStatus::Denied, Some(r.clone()), None, serde_json::json!({"reason": r})),
            Decision::Cancel => (TaskStatus::Cancelled, None, None, serde_json::json!({})),
        };
        sqlx::query(
            "UPDATE access_tasks SET status = $1, updated_at = $2, decided_by = $3, decided_at = $4, decision_reason = $5, \
             grant_id = $6 WHERE id = $7",
        )
        .bind(new_status.as_str())
        .bind(now)
        .bind(actor)
        .bind(now)
        .bind(&reason)
        .bind(&grant_id)
        .bind(id)
        .execute(&mut *tx)
        .await?;
        let action = match decision {
            Decision::Approve(_) => "approve",
            Decision::Deny(_) => "deny",
            Decision::Cancel => "cancel",
        };
        let audit = AuditRow {
            at: now,
            actor: actor.to_owned(),
            action: action.to_owned(),
            task_id: Some(task.id.clone()),
            denial_id: Some(task.denial_id.clone()),
            grant_id: grant_id.clone(),
            detail,
        };
        insert_audit(&mut tx, &audit).await?;
        tx.commit().await?;
        task.status = new_status;
        task.updated_at = now;
        task.decided_by = Some(actor.to_owned());
        task.decided_at = Some(now);
        task.decision_reason = reason;
        task.grant_id = grant_id;
        Ok(Decided::Done(task))
    }

    /// Expire pending tasks whose `expires_at` has passed. Returns how many.
    pub async fn expire_tasks(&self, now: i64) -> Result<usize, StoreError> {
        let mut tx = self.write_tx().await?;
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM access_tasks WHERE status = 'pending' AND expires_at <= $1 LIMIT 500");
        let rows = sqlx::query(&sql).bind(now).fetch_all(&mut *tx).await?;
        let tasks: Vec<TaskRow> = rows.iter().map(task_from_row).collect::<Result<_, _>>()?;
        for t in &tasks {
            expire_in(&mut tx, t, now).await?;
        }
        tx.commit().await?;
        Ok(tasks.len())
    }

    /// Audit records of a denial (all its tasks), oldest first.
    pub async fn audit_for_denial(&self, denial_id: &str) -> Result<Vec<AuditRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, actor, action, task_id, denial_id, grant_id, detail FROM access_audit \
             WHERE denial_id = $1 ORDER BY id",
        )
        .bind(denial_id)
        .fetch_all(&self.reader)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AuditRow {
                    at: r.try_get("at")?,
                    actor: r.try_get("actor")?,
                    action: r.try_get("action")?,
                    task_id: r.try_get("task_id")?,
                    denial_id: r.try_get("denial_id")?,
                    grant_id: r.try_get("grant_id")?,
                    detail: json_col(r, "detail")?,
                })
            })
            .collect()
    }

    // ---------------------------------------------------------------------------------------------
    // Approver sessions
    // ---------------------------------------------------------------------------------------------

    /// Store a session.
    pub async fn create_session(
        &self,
        id_sha256: &[u8],
        approver: &str,
        csrf: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO approver_sessions (id_sha256, approver, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id_sha256)
        .bind(approver)
        .bind(csrf)
        .bind(now)
        .bind(expires_at)
        .execute(&self.writer)
        .await?;
        Ok(())
    }

    /// A live session.
    pub async fn session(&self, id_sha256: &[u8], now: i64) -> Result<Option<SessionRow>, StoreError> {
        let row: Option<(String, String, i64)> = sqlx::query_as(
            "SELECT approver, csrf, expires_at FROM approver_sessions WHERE id_sha256 = $1 AND expires_at > $2",
        )
        .bind(id_sha256)
        .bind(now)
        .fetch_optional(&self.reader)
        .await?;
        Ok(row.map(|(approver, csrf, expires_at)| SessionRow { approver, csrf, expires_at }))
    }

    /// End a session.
    pub async fn delete_session(&self, id_sha256: &[u8]) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM approver_sessions WHERE id_sha256 = $1").bind(id_sha256).execute(&self.writer).await?;
        Ok(())
    }

    /// Housekeeping, in batches of at most [`PRUNE_BATCH`] rows per statement (each its own short
    /// write, so evaluations never wait long behind it): ended approver sessions; Idempotency-Keys
    /// older than `retention`; grants that ended more than `retention` ago; tasks that ended (or whose
    /// handle retention ran out) more than `retention` ago and nothing refers to any more; denials
    /// whose hint expired more than `retention` ago and nothing refers to any more; audit records
    /// older than `audit_retention`. Returns the rows deleted per kind.
    pub async fn prune_access(
        &self,
        now: i64,
        retention: i64,
        task_retention: i64,
        audit_retention: i64,
    ) -> Result<Pruned, StoreError> {
        let cut = now - retention;
        let mut out = Pruned {
            sessions: self
                .prune_batches(
                    "DELETE FROM approver_sessions WHERE id_sha256 IN \
                 (SELECT id_sha256 FROM approver_sessions WHERE expires_at <= $1 LIMIT $2)",
                    now,
                )
                .await?,
            ..Pruned::default()
        };
        out.idempotency_keys = self
            .prune_batches(
                "DELETE FROM idempotency_keys WHERE (scope, key) IN \
                 (SELECT scope, key FROM idempotency_keys WHERE created_at <= $1 LIMIT $2)",
                cut,
            )
            .await?;
        out.grants = self
            .prune_batches(
                "DELETE FROM access_grants WHERE id IN \
                 (SELECT id FROM access_grants WHERE approved_until <= $1 LIMIT $2)",
                cut,
            )
            .await?;
        let task_sql = format!(
            "DELETE FROM access_tasks WHERE id IN (SELECT t.id FROM access_tasks t WHERE t.status <> 'pending' \
             AND t.updated_at <= $1 AND t.expires_at + {task_retention} <= $1 + {retention} \
             AND NOT EXISTS (SELECT 1 FROM idempotency_keys k WHERE k.task_id = t.id) \
             AND NOT EXISTS (SELECT 1 FROM access_grants g WHERE g.task_id = t.id) LIMIT $2)"
        );
        out.tasks = self.prune_batches(&task_sql, cut).await?;
        out.denials = self
            .prune_batches(
                "DELETE FROM denials WHERE id IN (SELECT d.id FROM denials d WHERE d.hint_expires_at <= $1 \
                 AND NOT EXISTS (SELECT 1 FROM access_tasks t WHERE t.denial_id = d.id) \
                 AND NOT EXISTS (SELECT 1 FROM access_grants g WHERE g.denial_id = d.id) LIMIT $2)",
                cut,
            )
            .await?;
        out.audit = self
            .prune_batches(
                "DELETE FROM access_audit WHERE id IN (SELECT id FROM access_audit WHERE at <= $1 LIMIT $2)",
                now - audit_retention,
            )
            .await?;
        Ok(out)
    }

    /// Run a `DELETE` (bound `?1` = `cut`, `?2` = the batch size) until it deletes less than a batch.
    async fn prune_batches(&self, sql: &str, cut: i64) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let done = sqlx::query(sql).bind(cut).bind(PRUNE_BATCH).execute(&self.writer).await?;
            total += done.rows_affected();
            if done.rows_affected() < PRUNE_BATCH as u64 {
                return Ok(total);
            }
            tokio::task::yield_now().await;
        }
    }

    /// Row counts of the access tables (for operators and tests).
    pub async fn access_counts(&self) -> Result<Vec<(&'static str, i64)>, StoreError> {
        let mut out = Vec::new();
        for t in ["denials", "access_tasks", "access_grants", "idempotency_keys", "access_audit", "approver_sessions"] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {t}")).fetch_one(&self.reader).await?;
            out.push((t, n));
        }
        Ok(out)
    }
}

/// Most rows one pruning statement deletes.
pub const PRUNE_BATCH: i64 = 500;

/// The per-requester limits [`Store::create_task`] applies.
#[derive(Debug, Clone, Copy)]
pub struct RequesterLimits {
    /// Stored Idempotency-Keys.
    pub keys: i64,
    /// Pending tasks.
    pub open: i64,
    /// How long an Idempotency-Key is kept.
    pub retention: i64,
}

/// What [`Store::prune_access`] deleted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Approver sessions.
    pub sessions: u64,
    /// Idempotency-Keys.
    pub idempotency_keys: u64,
    /// Grants.
    pub grants: u64,
    /// Tasks.
    pub tasks: u64,
    /// Denials.
    pub denials: u64,
    /// Audit records.
    pub audit: u64,
}

impl Pruned {
    /// Everything deleted.
    pub fn total(&self) -> u64 {
        self.sessions + self.idempotency_keys + self.grants + self.tasks + self.denials + self.audit
    }
}

async fn expire_in(tx: &mut Transaction<'_, Any>, t: &TaskRow, now: i64) -> Result<(), StoreError> {
    sqlx::query("UPDATE access_tasks SET status = 'expired', updated_at = $1 WHERE id = $2 AND status = 'pending'")
        .bind(now)
        .bind(&t.id)
        .execute(&mut **tx)
        .await?;
    let audit = AuditRow {
        at: now,
        actor: "system:clock".into(),
        action: "expire".into(),
        task_id: Some(t.id.clone()),
        denial_id: Some(t.denial_id.clone()),
        grant_id: None,
        detail: serde_json::json!({}),
    };
    insert_audit(tx, &audit).await
}
