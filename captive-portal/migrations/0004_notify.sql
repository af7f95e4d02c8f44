-- Issue 14: approver notifications (a transactional outbox).

-- One row per access-request event. Written by triggers, in the same transaction as the task's
-- change, so no event is lost to a crash between "decided" and "notified", whoever changed the task
-- (submission, the portal, the operator API, the expiry clock).
CREATE TABLE notify_events (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    task_id  TEXT NOT NULL,
    event    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    expanded INTEGER NOT NULL DEFAULT 0
) STRICT;

CREATE INDEX notify_events_unexpanded ON notify_events (seq) WHERE expanded = 0;

CREATE TRIGGER notify_task_created AFTER INSERT ON access_tasks
BEGIN
    INSERT INTO notify_events (task_id, event, at) VALUES (NEW.id, 'created', NEW.created_at);
END;

CREATE TRIGGER notify_task_ended AFTER UPDATE OF status ON access_tasks
WHEN OLD.status = 'pending' AND NEW.status <> 'pending'
BEGIN
    INSERT INTO notify_events (task_id, event, at) VALUES (NEW.id, NEW.status, NEW.updated_at);
END;

-- One delivery of one event to one webhook. `lease_until_ms` is the claim: a worker takes a due row
-- with one conditional UPDATE, so two workers never send the same row at once; a worker killed while
-- sending leaves a lease that runs out, and the row is retried (receivers de-duplicate on the event id).
CREATE TABLE notify_deliveries (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    event_seq      INTEGER NOT NULL,
    webhook        TEXT NOT NULL,
    format         TEXT NOT NULL,
    body           TEXT NOT NULL,
    attempts       INTEGER NOT NULL DEFAULT 0,
    next_at_ms     INTEGER NOT NULL,
    lease_until_ms INTEGER NOT NULL DEFAULT 0,
    delivered_at   INTEGER,
    failed_at      INTEGER,
    last_error     TEXT,
    created_at     INTEGER NOT NULL,
    UNIQUE (event_seq, webhook)
) STRICT;

CREATE INDEX notify_deliveries_due ON notify_deliveries (next_at_ms)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX notify_deliveries_by_created ON notify_deliveries (created_at);
