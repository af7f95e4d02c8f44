-- Mirrors ../0004_notify.sql: approver notifications through a transactional outbox, written by
-- triggers in the same transaction as the task's change.

CREATE TABLE notify_events (
    seq      BIGSERIAL PRIMARY KEY,
    task_id  TEXT NOT NULL,
    event    TEXT NOT NULL,
    at       BIGINT NOT NULL,
    expanded BIGINT NOT NULL DEFAULT 0
);

CREATE INDEX notify_events_unexpanded ON notify_events (seq) WHERE expanded = 0;

CREATE FUNCTION notify_task_created() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notify_events (task_id, event, at) VALUES (NEW.id, 'created', NEW.created_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER notify_task_created AFTER INSERT ON access_tasks
    FOR EACH ROW EXECUTE FUNCTION notify_task_created();

CREATE FUNCTION notify_task_ended() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO notify_events (task_id, event, at) VALUES (NEW.id, NEW.status, NEW.updated_at);
    RETURN NEW;
END
$$;

CREATE TRIGGER notify_task_ended AFTER UPDATE OF status ON access_tasks
    FOR EACH ROW WHEN (OLD.status = 'pending' AND NEW.status <> 'pending')
    EXECUTE FUNCTION notify_task_ended();

CREATE TABLE notify_deliveries (
    id             BIGSERIAL PRIMARY KEY,
    event_seq      BIGINT NOT NULL,
    webhook        TEXT NOT NULL,
    format         TEXT NOT NULL,
    body           TEXT NOT NULL,
    attempts       BIGINT NOT NULL DEFAULT 0,
    next_at_ms     BIGINT NOT NULL,
    lease_until_ms BIGINT NOT NULL DEFAULT 0,
    delivered_at   BIGINT,
    failed_at      BIGINT,
    last_error     TEXT,
    created_at     BIGINT NOT NULL,
    UNIQUE (event_seq, webhook)
);

CREATE INDEX notify_deliveries_due ON notify_deliveries (next_at_ms)
    WHERE delivered_at IS NULL AND failed_at IS NULL;
CREATE INDEX notify_deliveries_by_created ON notify_deliveries (created_at);
