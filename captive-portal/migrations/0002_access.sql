-- PDP, Access Requests (AuthZEN ARAP), captive-portal denials and the approver portal.
-- Times are Unix seconds. JSON columns hold documents as validated.

-- A requestable denial: one row per distinct bound evaluation (subject, resource, action and the
-- authorization-relevant context, hashed as `binding_hash`). Its id is the capability in the per-denial
-- Captive Portal API URL and the approver page URL. The hint (`binding_token`, `hint_expires_at`) is
-- refreshed in place when it runs out, so the URLs of a denial stay stable.
CREATE TABLE denials (
    id               TEXT PRIMARY KEY,
    evaluation_id    TEXT NOT NULL UNIQUE,
    binding_hash     TEXT NOT NULL UNIQUE,
    request          TEXT NOT NULL,
    mission_id       TEXT NOT NULL,
    mission_issuer   TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    action_name      TEXT NOT NULL,
    parameter_digest TEXT,
    reason           TEXT NOT NULL,
    created_at       INTEGER NOT NULL,
    hint_issued_at   INTEGER NOT NULL,
    hint_expires_at  INTEGER NOT NULL,
    binding_token    TEXT NOT NULL
) STRICT;

CREATE INDEX denials_by_mission ON denials (mission_id, hint_expires_at);

-- An Access Request task. `submission` is the request body as received (I-JSON, bounded).
CREATE TABLE access_tasks (
    id              TEXT PRIMARY KEY,
    denial_id       TEXT NOT NULL REFERENCES denials (id),
    status          TEXT NOT NULL,
    submission      TEXT NOT NULL,
    justification   TEXT,
    parameters      TEXT,
    requested_until INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    decided_by      TEXT,
    decided_at      INTEGER,
    decision_reason TEXT,
    grant_id        TEXT
) STRICT;

CREATE INDEX access_tasks_by_status ON access_tasks (status, expires_at);
CREATE INDEX access_tasks_by_denial ON access_tasks (denial_id);

-- What the PDP consults: an approval of one bound request tuple until `approved_until`.
CREATE TABLE access_grants (
    id               TEXT PRIMARY KEY,
    task_id          TEXT NOT NULL REFERENCES access_tasks (id),
    denial_id        TEXT NOT NULL REFERENCES denials (id),
    mission_id       TEXT NOT NULL,
    mission_issuer   TEXT NOT NULL,
    subject_id       TEXT NOT NULL,
    resource_type    TEXT NOT NULL,
    resource_id      TEXT NOT NULL,
    action_name      TEXT NOT NULL,
    parameter_digest TEXT,
    single_use       INTEGER NOT NULL,
    approved_by      TEXT NOT NULL,
    approved_at      INTEGER NOT NULL,
    approved_until   INTEGER NOT NULL
) STRICT;

CREATE INDEX access_grants_lookup ON access_grants (mission_id, resource_id, action_name, approved_until);

-- Idempotency-Key state of submissions, scoped to the bound subject.
CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    task_id    TEXT NOT NULL REFERENCES access_tasks (id),
    created_at INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) STRICT;

-- Who did what to which access request, and when.
CREATE TABLE access_audit (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    at        INTEGER NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    task_id   TEXT,
    denial_id TEXT,
    grant_id  TEXT,
    detail    TEXT NOT NULL
) STRICT;

CREATE INDEX access_audit_by_task ON access_audit (task_id);

-- Approver sessions of the portal: only the SHA-256 of the cookie value is stored.
CREATE TABLE approver_sessions (
    id_sha256  BLOB PRIMARY KEY,
    approver   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
) STRICT;
