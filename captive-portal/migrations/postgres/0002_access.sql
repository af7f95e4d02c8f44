-- Postgres schema of the PDP, Access Requests and the approver portal (mirrors ../0002_access.sql).

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
    created_at       BIGINT NOT NULL,
    hint_issued_at   BIGINT NOT NULL,
    hint_expires_at  BIGINT NOT NULL,
    binding_token    TEXT NOT NULL
);

CREATE INDEX denials_by_mission ON denials (mission_id, hint_expires_at);

CREATE TABLE access_tasks (
    id              TEXT PRIMARY KEY,
    denial_id       TEXT NOT NULL REFERENCES denials (id),
    status          TEXT NOT NULL,
    submission      TEXT NOT NULL,
    justification   TEXT,
    parameters      TEXT,
    requested_until BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    expires_at      BIGINT NOT NULL,
    decided_by      TEXT,
    decided_at      BIGINT,
    decision_reason TEXT,
    grant_id        TEXT
);

CREATE INDEX access_tasks_by_status ON access_tasks (status, expires_at);
CREATE INDEX access_tasks_by_denial ON access_tasks (denial_id);

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
    single_use       BIGINT NOT NULL,
    approved_by      TEXT NOT NULL,
    approved_at      BIGINT NOT NULL,
    approved_until   BIGINT NOT NULL
);

CREATE INDEX access_grants_lookup ON access_grants (mission_id, resource_id, action_name, approved_until);

CREATE TABLE idempotency_keys (
    scope      TEXT NOT NULL,
    key        TEXT NOT NULL,
    body_hash  TEXT NOT NULL,
    task_id    TEXT NOT NULL REFERENCES access_tasks (id),
    created_at BIGINT NOT NULL,
    PRIMARY KEY (scope, key)
);

CREATE TABLE access_audit (
    id        BIGSERIAL PRIMARY KEY,
    at        BIGINT NOT NULL,
    actor     TEXT NOT NULL,
    action    TEXT NOT NULL,
    task_id   TEXT,
    denial_id TEXT,
    grant_id  TEXT,
    detail    TEXT NOT NULL
);

CREATE INDEX access_audit_by_task ON access_audit (task_id);

CREATE TABLE approver_sessions (
    id_sha256  BYTEA PRIMARY KEY,
    approver   TEXT NOT NULL,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
