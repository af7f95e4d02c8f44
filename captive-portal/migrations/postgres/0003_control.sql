-- Mirrors ../0003_control.sql: single use at the source, bounded storage.

ALTER TABLE access_grants ADD COLUMN used_at BIGINT;

CREATE INDEX idempotency_keys_by_created ON idempotency_keys (created_at);
CREATE INDEX idempotency_keys_by_task ON idempotency_keys (task_id);
CREATE INDEX access_tasks_by_updated ON access_tasks (updated_at);
CREATE INDEX access_grants_by_until ON access_grants (approved_until);
CREATE INDEX access_grants_by_task ON access_grants (task_id);
CREATE INDEX access_grants_by_denial ON access_grants (denial_id);
CREATE INDEX denials_by_hint_expiry ON denials (hint_expires_at);
CREATE INDEX denials_by_requester ON denials (mission_issuer, mission_id, subject_id);
CREATE INDEX access_audit_by_at ON access_audit (at);
